"""Detections of a prediction: each defect found as a box, its class and a confidence (issue 20). The gallery draws
them and the API returns them.

Families that learn from drawn defects give their own (ml `Prediction.detections`, with the class); for the others
each region of the predicted mask is one detection, its confidence the normalised score of the region's peak (so
0.5 is the threshold, as for every score in Kensa). They are kept in the predicted mask PNG, in a text chunk, in
pixels of the image as it was sent: no new column, and the mask and its boxes are written, kept and deleted as one
file. Masks stored before this carry none: their regions become detections with the image's normalised score.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from ml.detections import boxes_from_mask, detections_from_map
from ml.thresholds import Calibration
from ml.types import Prediction as MlPrediction
from webapp.storage import stored_file_read

DETECTIONS_CHUNK = "kensa-detections"
MIN_REGION_PIXELS = 4  # specks below this are not reported (as the API's boxes)


def detections_of(
    prediction: MlPrediction, mask: np.ndarray, calibration: Calibration, *, input_size: tuple[int, int] | None = None
) -> list[dict]:
    """[{"box": [x0, y0, x1, y1], "label": class or "", "confidence": 0..1}], highest confidence first, in pixels of
    the image as sent: `input_size` (width, height) when the model saw a shrunk copy (the mask's size otherwise).
    `mask` is the predicted mask at the threshold in force (webapp.inference.predictions.predicted_mask)."""
    found = prediction.detections
    if not found:
        # Regions of the predicted mask; their peak is at least the threshold, so their confidence at least 0.5.
        values = np.where(mask, np.maximum(np.asarray(prediction.anomaly_map, dtype=np.float32), calibration.threshold),
                          -np.inf)  # fmt: skip
        found = detections_from_map(
            values,
            calibration.threshold,
            confidence=calibration.normalise,
            class_mask=prediction.class_mask,
            classes=prediction.classes,
            min_pixels=MIN_REGION_PIXELS,
        )
    height, width = mask.shape[:2]
    sx, sy = (input_size[0] / width, input_size[1] / height) if input_size else (1.0, 1.0)
    rows = []
    for detection in found:
        box = detection.box
        rows.append(
            {
                "box": [
                    math.floor(box.x0 * sx),
                    math.floor(box.y0 * sy),
                    math.ceil(box.x1 * sx),
                    math.ceil(box.y1 * sy),
                ],
                "label": box.label,
                "confidence": round(float(detection.confidence), 6),
            }
        )
    return rows


def mask_png_with_detections(mask: np.ndarray, detections: list[dict], *, size: tuple[int, int]) -> bytes:
    """The mask as an 8-bit 0/255 PNG (as webapp.images.services.annotation_mask_png) carrying the detections and
    the (width, height) their boxes are in."""
    info = PngInfo()
    info.add_text(DETECTIONS_CHUNK, json.dumps({"size": list(size), "detections": detections}))
    grey = np.ascontiguousarray(mask, dtype=bool).view(np.uint8) * np.uint8(255)
    buffer = io.BytesIO()
    PILImage.fromarray(grey, "L").save(buffer, format="PNG", optimize=True, pnginfo=info)
    return buffer.getvalue()


def stored_detections(prediction) -> dict:
    """{"size": [width, height], "detections": [...]} of a stored prediction row (webapp.inference.models)."""
    if not prediction.predicted_mask:
        return {"size": None, "detections": []}
    with PILImage.open(io.BytesIO(stored_file_read(prediction.predicted_mask.name))) as picture:
        text = getattr(picture, "text", {}).get(DETECTIONS_CHUNK)
        if text:
            return json.loads(text)
        mask = np.asarray(picture.convert("L")) > 127
    confidence = round(float(prediction.normalised_score), 6)
    boxes = boxes_from_mask(mask, min_pixels=MIN_REGION_PIXELS)
    return {
        "size": [mask.shape[1], mask.shape[0]],
        "detections": [{"box": [b.x0, b.y0, b.x1, b.y1], "label": "", "confidence": confidence} for b in boxes],
    }
