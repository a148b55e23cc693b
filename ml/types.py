"""The contract every model family in `ml` honours.

Images are numpy arrays, H x W x 3, uint8, RGB (grayscale inputs are converted with `ml.images.to_rgb`).
Masks are H x W bool arrays at the image's own resolution. Scores: higher means more anomalous.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Self

import numpy as np

GOOD = 0
DEFECT = 1

# progress(stage, fraction, message): stage is a short word ("features", "coreset", "epoch"), fraction in [0, 1].
# A caller may raise from the callback (for example to cancel a training run); models let it propagate.
ProgressCallback = Callable[[str, float, str], None]


def no_progress(stage: str, fraction: float, message: str) -> None:
    """The default progress callback: ignores everything."""


@dataclass(frozen=True)
class Box:
    """A drawn or predicted defect box in pixel coordinates of the image: x0, y0 inclusive, x1, y1 exclusive
    (so a box covering the whole W x H image is (0, 0, W, H)). label: the defect class name ("" when unnamed)."""

    x0: int
    y0: int
    x1: int
    y1: int
    label: str = ""

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


@dataclass(frozen=True)
class Detection:
    """One defect a model found: its box (label = the predicted class, "" for one-class models) and a confidence
    in [0, 1] (the family's probability, or the normalised score of the region's peak)."""

    box: Box
    confidence: float

    def to_dict(self) -> dict:
        b = self.box
        return {"box": [b.x0, b.y0, b.x1, b.y1], "label": b.label, "confidence": float(self.confidence)}


@dataclass
class Sample:
    """One training or evaluation image.

    image: H x W x 3 uint8 RGB. label: GOOD or DEFECT. mask: H x W bool, or None when no pixel labels exist
    (a box annotation is passed as a filled rectangle mask, and its boxes in `boxes`).
    boxes: the drawn boxes when the defects were boxed rather than outlined (then `mask` is only their union, so a
    family may learn from boxes as boxes); None for outlines or no annotation.
    class_mask: H x W int, 0 = good, k = the defect class classes[k - 1], where several classes were drawn; None
    when only `mask` is known. classes: the defect class names class_mask indexes (the project's whole list, so
    every sample of one data set gives the same order).
    """

    image: np.ndarray
    label: int = GOOD
    mask: np.ndarray | None = None
    name: str = ""
    boxes: list[Box] | None = None
    class_mask: np.ndarray | None = None
    classes: tuple[str, ...] = ()


@dataclass
class Prediction:
    """A model's output for one image.

    score: raw image score (family specific units, higher = more anomalous).
    anomaly_map: H x W float32 at the input image's resolution, same units family as the score.
    mask: H x W bool predicted defect mask for segmentation families, else None.
    detections: the defects found as boxes (families that learn from drawn defects fill it; for the others a
    caller may derive them from the map at its threshold with `ml.detections.detections_from_map`).
    class_mask: H x W int (0 = good, k = classes[k - 1]) for families trained on several defect classes, else None.
    """

    score: float
    anomaly_map: np.ndarray
    mask: np.ndarray | None = None
    extras: dict = field(default_factory=dict)
    detections: list[Detection] = field(default_factory=list)
    class_mask: np.ndarray | None = None
    classes: tuple[str, ...] = ()


class AnomalyModel(Protocol):
    """One interface for PatchCore, the autoencoder, the U-Net and the Gaussian baseline.

    `samples` may be any Sequence (a lazy one that loads images on __getitem__ keeps memory flat).
    """

    family: str

    def fit(self, samples: Sequence[Sample], *, progress: ProgressCallback = no_progress) -> None: ...

    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> list[Prediction]: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Self: ...
