"""The default decision threshold from validation scores, and the normalised score that maps it to 0.5.

A threshold is not part of any model: a model version stores its `Calibration` beside the model, and callers keep
both the raw and the normalised score, so a user can move the threshold without rerunning anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ml.metrics import f1_best_threshold

# With no defects in validation, the threshold sits this fraction of the good scores' spread above the highest good
# score: validation sets are small, so a 99% quantile would be the maximum anyway, and calling a validated good part
# defective is the first thing users notice.
NO_DEFECT_MARGIN = 0.1


@dataclass(frozen=True)
class Calibration:
    """threshold: raw score at which an image is called defective (`>=`). scale: raw-score units per logit."""

    threshold: float
    scale: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(threshold=float(data["threshold"]), scale=float(data["scale"]))

    def normalise(self, raw: np.ndarray | float) -> np.ndarray | float:
        return normalise(raw, threshold=self.threshold, scale=self.scale)


def _spread(good_scores: np.ndarray) -> float:
    """A robust standard deviation of good scores (IQR / 1.349), falling back to the plain one for tiny sets."""
    if len(good_scores) >= 4:
        q25, q75 = np.percentile(good_scores, [25, 75])
        spread = (q75 - q25) / 1.349
        if spread > 0:
            return float(spread)
    return float(np.std(good_scores)) if len(good_scores) > 1 else 0.0


def default_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold to propose from validation images.

    With defects: the F1-best cut, placed halfway between the chosen defect score and the highest score below it,
    so a slightly different image does not flip. Without defects: the highest good score plus
    NO_DEFECT_MARGIN times the good scores' spread (no validated good part is called defective).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if len(scores) == 0:
        raise ValueError("no validation scores to choose a threshold from")
    if labels.any() and (~labels).any():
        cut, _ = f1_best_threshold(labels.astype(int), scores)
        below = scores[scores < cut]
        return float((cut + below.max()) / 2) if len(below) else cut
    good = scores[~labels] if (~labels).any() else scores
    spread = _spread(good) or abs(float(good.max())) * 0.05 or 1.0
    return float(good.max() + NO_DEFECT_MARGIN * spread)


def normalise(raw: np.ndarray | float, *, threshold: float, scale: float) -> np.ndarray | float:
    """Monotone map of raw scores to (0, 1): logistic((raw - threshold) / scale), so the threshold maps to 0.5.

    One `scale` above the threshold reads 0.73, two read 0.88; the same for every family.
    """
    z = (np.asarray(raw, dtype=np.float64) - threshold) / scale
    value = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return float(value) if np.ndim(value) == 0 else value


def calibrate(scores: np.ndarray, labels: np.ndarray) -> Calibration:
    """Threshold from `default_threshold`, scale from the spread of the good validation scores.

    The scale never collapses to zero (identical good scores): it falls back to 5% of |threshold|, then to 1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    threshold = default_threshold(scores, labels)
    good = scores[~labels] if (~labels).any() else scores
    scale = _spread(good) or abs(threshold) * 0.05 or 1.0
    return Calibration(threshold=threshold, scale=scale)
