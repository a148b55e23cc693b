"""Amazon Lookout for Vision manifests (JSON Lines), classification and segmentation, both ways.

One JSON object per line and image:
    source-ref                  the image (an s3:// URI in the service; a path inside the zip here)
    anomaly-label               1 anomaly, 0 normal
    anomaly-label-metadata      {"class-name": "anomaly" | "normal", "type": "groundtruth/image-classification", ...}
    anomaly-mask-ref            (segmentation) a colour PNG, one colour per anomaly class
    anomaly-mask-ref-metadata   {"internal-color-map": {"0": {"class-name": "BACKGROUND", "hex-color": ...},
                                 "1": {"class-name": "scratch", "hex-color": "#2ca02c"}, ...},
                                 "type": "groundtruth/semantic-segmentation", ...}
A line without anomaly-label is an unlabelled image. The service keeps training and test images in two datasets,
so an export writes train.manifest (train and validation splits) and test.manifest; on import a manifest named
train or test sets the split and any other name leaves it to Kensa.

A mask pixel has one colour, so where classes overlap the class listed last wins. Background pixels are written
black; on import every pixel that is not exactly a class colour is background (the documentation's example map
lists BACKGROUND as #ffffff while masks have a black background, so neither is trusted).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

import numpy as np
from PIL import Image as PILImage

from webapp.annotations.formats import (
    DEFECT,
    GOOD,
    UNLABELLED,
    ClassDrawing,
    DatasetClass,
    DatasetItem,
    FormatError,
    member_for_reference,
)
from webapp.images.intake.decoding import image_header

MANIFEST_SUFFIXES = {".manifest", ".jsonl"}
MASKS_FOLDER = "masks"
BACKGROUND = "BACKGROUND"
NO_MANIFEST = "The zip has no Lookout for Vision manifest (a .manifest or .jsonl file)."
BAD_LINE = "{manifest}, line {line}: {problem}."
MISSING_FILE = "{manifest}, line {line}: {reference} is not in the zip."
MASK_SIZE_MISMATCH = (
    "The mask {path} is {mask_w}x{mask_h} pixels, but its image is {w}x{h}: its {class_name} pixels were not applied."
)
# Mask rows compared at a time: the colour mask is never copied whole as an RGB array.
_STRIPE_PIXELS = 1 << 20


@dataclass
class LookoutDrawing(ClassDrawing):
    """One class's pixels of a colour mask PNG, still encoded: `mask_for` decodes them one image at a time, once the
    image is known to have the mask's size (from its header), so a dataset's masks are never all held decoded and
    a mask far larger than its image is never decoded at all."""

    mask_png: bytes = b""
    mask_path: str = ""
    mask_size: tuple[int, int] = (0, 0)  # width, height
    colour: str = ""  # "#rrggbb"

    def mask_for(self, *, width: int, height: int) -> np.ndarray | None:
        if not self.mask_png:
            return self.mask
        if self.mask_size != (width, height):
            mask_w, mask_h = self.mask_size
            raise FormatError(
                MASK_SIZE_MISMATCH.format(
                    path=self.mask_path, mask_w=mask_w, mask_h=mask_h, w=width, h=height, class_name=self.class_name
                )
            )
        mask = _colour_pixels(self.mask_png, self.colour)
        return mask if mask.any() else None


def _colour_pixels(data: bytes, colour: str) -> np.ndarray:
    """Where the colour mask PNG `data` has exactly `colour`, a stripe of rows at a time."""
    value = int(colour[1:], 16)
    wanted = np.array([(value >> 16) & 255, (value >> 8) & 255, value & 255], np.uint8)
    with PILImage.open(io.BytesIO(data)) as picture:
        picture.load()
        mask = np.zeros((picture.height, picture.width), dtype=bool)
        rows = max(1, _STRIPE_PIXELS // max(1, picture.width))
        for top in range(0, picture.height, rows):
            bottom = min(picture.height, top + rows)
            stripe = np.asarray(picture.crop((0, top, picture.width, bottom)).convert("RGB"))
            mask[top:bottom] = (stripe == wanted).all(axis=2)
    return mask


def distinct_colours(classes: list[DatasetClass]) -> dict[str, str]:
    """Each class's colour, changed slightly where two classes share one (a mask colour must name one class)."""
    used: set[str] = {"#000000"}
    out = {}
    for defect_class in classes:
        colour = (defect_class.colour or "#ff0000").lower()
        value = int(colour[1:], 16)
        while f"#{value:06x}" in used:
            value = (value + 0x010101) % 0x1000000
        out[defect_class.name] = f"#{value:06x}"
        used.add(out[defect_class.name])
    return out


def lookout_write(
    items: list[DatasetItem], classes: list[DatasetClass], *, now: datetime | None = None
) -> tuple[dict[str, str], dict[str, bytes]]:
    """(manifest name -> JSON Lines text, mask path -> PNG bytes) for `items`, whose paths are archive paths."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")
    colours = distinct_colours(classes)
    colour_map = {"0": {"class-name": BACKGROUND, "hex-color": "#ffffff", "confidence": 0.0}}
    for index, defect_class in enumerate(classes, start=1):
        colour_map[str(index)] = {
            "class-name": defect_class.name,
            "hex-color": colours[defect_class.name],
            "confidence": 0.0,
        }
    manifests: dict[str, list[str]] = {"train.manifest": [], "test.manifest": []}
    masks: dict[str, bytes] = {}
    for item in items:
        line: dict = {"source-ref": item.path}
        if item.label in (GOOD, DEFECT):
            anomalous = item.label == DEFECT
            line["anomaly-label"] = 1 if anomalous else 0
            line["anomaly-label-metadata"] = {
                "class-name": "anomaly" if anomalous else "normal",
                "confidence": 1,
                "human-annotated": "yes",
                "type": "groundtruth/image-classification",
                "creation-date": stamp,
                "job-name": "kensa-export",
            }
        mask_drawings = [d for d in item.drawings if d.mask is not None and d.mask.any()]
        if mask_drawings:
            mask_path = f"{MASKS_FOLDER}/{PurePosixPath(item.path).stem}.png"
            masks[mask_path] = _colour_mask(item, mask_drawings, colours)
            line["anomaly-mask-ref"] = mask_path
            line["anomaly-mask-ref-metadata"] = {
                "internal-color-map": colour_map,
                "type": "groundtruth/semantic-segmentation",
                "human-annotated": "yes",
                "creation-date": stamp,
                "job-name": "kensa-export",
            }
        manifest = "test.manifest" if item.split == "test" else "train.manifest"
        manifests[manifest].append(json.dumps(line))
    return {name: "\n".join(lines) + "\n" for name, lines in manifests.items() if lines}, masks


def _colour_mask(item: DatasetItem, drawings: list[ClassDrawing], colours: dict[str, str]) -> bytes:
    pixels = np.zeros((item.height, item.width, 3), np.uint8)
    for drawing in drawings:
        value = int(colours[drawing.class_name][1:], 16)
        pixels[drawing.mask] = ((value >> 16) & 255, (value >> 8) & 255, value & 255)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, "RGB").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def lookout_read(
    manifest_name: str, text: str, paths: list[str], read_member
) -> tuple[list[DatasetItem], list[DatasetClass]]:
    """Items and classes from one manifest. `read_member(path) -> bytes` reads mask PNGs from the archive;
    image sizes come from the masks' headers (or are 0 when there is none: the image file is the authority).
    Drawings are LookoutDrawings: one per class of the line's colour map, decoded by `mask_for`."""
    stem = PurePosixPath(manifest_name).stem.lower()
    split = stem if stem in ("train", "test") else None
    items: list[DatasetItem] = []
    classes: dict[str, DatasetClass] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            reference = str(line["source-ref"])
        except (ValueError, KeyError, TypeError):
            raise FormatError(
                BAD_LINE.format(manifest=manifest_name, line=number, problem="not a JSON object with source-ref")
            ) from None  # noqa: E501
        path = member_for_reference(reference, paths)
        if path is None:
            raise FormatError(MISSING_FILE.format(manifest=manifest_name, line=number, reference=reference))
        label = {1: DEFECT, 0: GOOD}.get(_as_int(line.get("anomaly-label")), UNLABELLED)
        item = DatasetItem(path=path, width=0, height=0, label=label, split=split)
        if line.get("anomaly-mask-ref"):
            colour_map = (line.get("anomaly-mask-ref-metadata") or {}).get("internal-color-map") or {}
            named = {}
            for entry in colour_map.values():
                name, colour = str(entry.get("class-name", "")), str(entry.get("hex-color", "")).lower()
                if name and name.upper() != BACKGROUND and len(colour) == 7:
                    named[name] = colour
                    classes.setdefault(name, DatasetClass(name, colour))
            mask_path = member_for_reference(str(line["anomaly-mask-ref"]), paths)
            if mask_path is None:
                raise FormatError(
                    MISSING_FILE.format(manifest=manifest_name, line=number, reference=line["anomaly-mask-ref"])
                )  # noqa: E501
            data = read_member(mask_path)
            item.width, item.height = image_header(data)[1]  # the header only: pixels wait for mask_for
            for name, colour in named.items():
                item.drawings.append(
                    LookoutDrawing(
                        name, mask_png=data, mask_path=mask_path, mask_size=(item.width, item.height), colour=colour
                    )
                )
        items.append(item)
    return items, list(classes.values())


def _as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
