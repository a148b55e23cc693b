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


@dataclass
class Sample:
    """One training or evaluation image.

    image: H x W x 3 uint8 RGB. label: GOOD or DEFECT. mask: H x W bool, or None when no pixel labels exist
    (a box annotation is passed as a filled rectangle mask).
    """

    image: np.ndarray
    label: int = GOOD
    mask: np.ndarray | None = None
    name: str = ""


@dataclass
class Prediction:
    """A model's output for one image.

    score: raw image score (family specific units, higher = more anomalous).
    anomaly_map: H x W float32 at the input image's resolution, same units family as the score.
    mask: H x W bool predicted defect mask for segmentation families, else None.
    """

    score: float
    anomaly_map: np.ndarray
    mask: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


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
