"""Folder sink: each judged image is written into OK/, NG/ or REVIEW/ under ``path``, with its defect regions drawn
over it (mask tinted red, boxes outlined), as PNG named after the source file. Settings: ``path``."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from webapp.stations.sinks.base import SinkError, SinkSettingsError
from webapp.storage import stored_file_read

VERDICT_FOLDERS = {"ok": "OK", "ng": "NG", "review": "REVIEW"}


def overlay_png(image_bytes: bytes, mask_bytes: bytes | None, regions: list[dict]) -> bytes:
    """The image with the mask tinted red (45 %) and each region's box outlined."""
    picture = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    pixels = np.asarray(picture).astype(np.float32)
    if mask_bytes:
        mask = Image.open(io.BytesIO(mask_bytes)).convert("L").resize(picture.size, Image.NEAREST)
        defect = np.asarray(mask) > 127
        pixels[defect] = pixels[defect] * 0.55 + np.array([255.0, 0.0, 0.0]) * 0.45
    picture = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for region in regions:
        draw.rectangle((region["x0"], region["y0"], region["x1"] - 1, region["y1"] - 1), outline=(255, 0, 0), width=2)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class FolderSender:
    max_attempts = 5  # a file that cannot be written five times (disk full, no permission) is dead-lettered

    def __init__(self, settings: dict):
        path = str(settings.get("path") or "").strip()
        if not path:
            raise SinkSettingsError("A folder sink needs a path.")
        self.root = Path(path)
        self._health = {"state": "ok", "detail": f"writing to {self.root}"}

    def send(self, message) -> None:
        payload = message.payload
        prediction = message.inspection.prediction
        try:
            if prediction is None or not prediction.input_file:
                raise SinkError("the image is no longer stored (retention)")
            image = stored_file_read(prediction.input_file.name)
            mask = stored_file_read(prediction.predicted_mask.name) if prediction.predicted_mask else None
            data = overlay_png(image, mask, payload.get("regions") or [])
            folder = self.root / VERDICT_FOLDERS[payload["verdict"]]
            folder.mkdir(parents=True, exist_ok=True)
            stem = os.path.splitext(os.path.basename(payload["image"]))[0] or "frame"
            target = folder / f"{stem}-{payload['inspection']}.png"
            partial = target.with_name("." + target.name + ".part")
            partial.write_bytes(data)
            os.replace(partial, target)  # readers of the folder never see half a file
        except OSError as error:
            self._health = {"state": "retrying", "detail": f"cannot write to {self.root}: {error}"}
            raise SinkError(f"cannot write: {error}") from None
        self._health = {"state": "ok", "detail": f"writing to {self.root}"}

    def health(self) -> dict:
        return dict(self._health)

    def close(self) -> None:
        pass
