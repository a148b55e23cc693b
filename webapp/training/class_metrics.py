"""Per defect class figures on the test split (issue 20), as Lookout for Vision gave per anomaly label: for each
class drawn on the test images, F1 (with its precision and recall) of the image decision, and the mean IoU of the
predicted region with the drawn one.

A model that names classes (a class map or labelled detections) is judged per class over every test image: a
defect called with the wrong class is a miss for its class and a false alarm for the named one. A one-class model
(PatchCore) names none: each class is then judged on its own defects against the good images, and its region is
the whole predicted mask.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ml.types import GOOD, Sample
from ml.types import Prediction as MlPrediction


def _named_classes(prediction: MlPrediction, region: np.ndarray) -> set[str] | None:
    """The classes the prediction names inside its predicted region; None for a model that names none."""
    named = {d.box.label for d in prediction.detections if d.box.label}
    if prediction.class_mask is not None and prediction.classes:
        values = np.unique(np.asarray(prediction.class_mask)[region])
        named |= {prediction.classes[v - 1] for v in values if 0 < v <= len(prediction.classes)}
        return named
    return named or None


def _iou(truth: np.ndarray, predicted: np.ndarray) -> float:
    union = np.logical_or(truth, predicted).sum()
    return float(np.logical_and(truth, predicted).sum() / union) if union else 1.0


class ClassMetrics:
    """Accumulates one test image at a time (memory: counters and one IoU per defect image)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.counts: dict[str, Counter] = defaultdict(Counter)  # class -> tp, fp, fn (class-aware), n
        self.good_called = 0
        self.good_total = 0
        self.ious: dict[str, list[float]] = defaultdict(list)
        self.class_aware = False

    def add(self, sample: Sample, prediction: MlPrediction, predicted: np.ndarray) -> None:
        """`predicted`: the predicted mask at the threshold (H x W bool, the sample's size)."""
        called = bool(prediction.score >= self.threshold)
        named = _named_classes(prediction, predicted) if called else set()
        if named is not None and (prediction.classes or named):
            self.class_aware = True
        if sample.label == GOOD:
            self.good_total += 1
            self.good_called += called
            for name in named or ():
                self.counts[name]["fp"] += 1
            return
        if sample.class_mask is None or not sample.classes:
            return
        present = {sample.classes[v - 1] for v in np.unique(sample.class_mask) if 0 < v <= len(sample.classes)}
        for name in present:
            counts = self.counts[name]
            counts["n"] += 1
            hit = called and (named is None or name in named)
            counts["tp" if hit else "fn"] += 1
            truth = sample.class_mask == sample.classes.index(name) + 1
            region = predicted
            if prediction.class_mask is not None and name in prediction.classes:
                region = predicted & (np.asarray(prediction.class_mask) == prediction.classes.index(name) + 1)
            self.ious[name].append(_iou(truth, region))
        for name in (named or set()) - present:
            self.counts[name]["fp"] += 1

    def result(self) -> dict[str, dict]:
        """{class: {n, precision, recall, f1, mean_iou}} for the classes with test defects (None where undefined)."""
        rows = {}
        for name in sorted(self.counts):
            counts = self.counts[name]
            if not counts["n"]:
                continue
            fp = counts["fp"] if self.class_aware else self.good_called
            tp, fn = counts["tp"], counts["fn"]
            precision = tp / (tp + fp) if tp + fp else None
            recall = tp / (tp + fn) if tp + fn else None
            f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
            rows[name] = {
                "n": counts["n"],
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "mean_iou": float(np.mean(self.ious[name])) if self.ious[name] else None,
            }
        return rows
