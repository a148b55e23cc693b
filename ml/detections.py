"""Boxes from masks and maps: what a drawn mask's boxes are, and which defects a map shows as boxes.

A detection is a connected region of a map at or above a threshold: its bounding box, the class most of its pixels
carry (when the family gives a class map) and a confidence from the region's peak value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from ml.types import Box, Detection


def boxes_from_mask(mask: np.ndarray, *, label: str = "", min_pixels: int = 1) -> list[Box]:
    """The bounding box of each 8-connected region of an H x W bool mask, larger than `min_pixels`, top to bottom."""
    labelled, count = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labelled), start=1):
        if region is None or int((labelled[region] == index).sum()) < min_pixels:
            continue
        rows, cols = region
        boxes.append(Box(cols.start, rows.start, cols.stop, rows.stop, label))
    return boxes


def box_mask(boxes: Sequence[Box], shape: tuple[int, int]) -> np.ndarray:
    """H x W bool: the union of the filled boxes (clipped to the image), as box annotations arrive as masks."""
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[max(box.y0, 0) : max(box.y1, 0), max(box.x0, 0) : max(box.x1, 0)] = True
    return mask


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes, in [0, 1] (0 when either is empty)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    union = a.area + b.area - overlap
    return overlap / union if union > 0 else 0.0


def detections_from_map(
    values: np.ndarray,
    threshold: float,
    *,
    confidence: Callable[[float], float] | None = None,
    class_mask: np.ndarray | None = None,
    classes: Sequence[str] = (),
    min_pixels: int = 4,
) -> list[Detection]:
    """Detections from an H x W map: one per 8-connected region of `values >= threshold` with at least
    `min_pixels` pixels, highest confidence first.

    confidence(peak) maps the region's peak value to [0, 1] (default: the peak itself, clipped; pass a calibration's
    `normalise` for score-unit maps). class_mask (H x W int, 0 = good, k = classes[k - 1]) names each region's
    class by majority of its pixels.
    """
    values = np.asarray(values, dtype=np.float32)
    labelled, count = ndimage.label(values >= threshold, structure=np.ones((3, 3), dtype=bool))
    detections = []
    for index, region in enumerate(ndimage.find_objects(labelled), start=1):
        if region is None:
            continue
        inside = labelled[region] == index
        if int(inside.sum()) < min_pixels:
            continue
        peak = float(values[region][inside].max())
        score = float(confidence(peak)) if confidence is not None else peak
        label = ""
        if class_mask is not None and len(classes):
            votes = np.bincount(np.asarray(class_mask)[region][inside].ravel(), minlength=len(classes) + 1)
            votes[0] = 0  # a region above threshold is a defect; its class is the most common defect class in it
            if votes.any():
                label = classes[int(votes.argmax()) - 1]
        rows, cols = region
        detections.append(
            Detection(Box(cols.start, rows.start, cols.stop, rows.stop, label), min(max(score, 0.0), 1.0))
        )
    return sorted(detections, key=lambda d: -d.confidence)
