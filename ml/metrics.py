"""Evaluation metrics: pure functions of numpy arrays.

Conventions: `labels` are 0 (good) / 1 (defect) per image; `scores` are raw image scores, higher = more anomalous;
an image is called defective when `score >= threshold`. `masks` are N x H x W bool and `maps` N x H x W float, or
sequences of H_i x W_i arrays when image sizes differ.
Metrics that need both classes return NaN when one is absent, rather than raising inside a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def _both_classes(labels: np.ndarray) -> bool:
    return 0 < int(np.sum(labels)) < len(labels)


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of image scores, in [0, 1]; NaN without both classes."""
    labels = np.asarray(labels).astype(int)
    return float(roc_auc_score(labels, scores)) if _both_classes(labels) else float("nan")


def image_average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, defect = positive); NaN without both classes."""
    labels = np.asarray(labels).astype(int)
    return float(average_precision_score(labels, scores)) if _both_classes(labels) else float("nan")


@dataclass(frozen=True)
class Confusion:
    """Counts of images by truth and call at one threshold."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Confusion:
    """Confusion counts when images with `score >= threshold` are called defective."""
    truth = np.asarray(labels).astype(bool)
    called = np.asarray(scores) >= threshold
    return Confusion(
        tp=int(np.sum(truth & called)),
        fp=int(np.sum(~truth & called)),
        tn=int(np.sum(~truth & ~called)),
        fn=int(np.sum(truth & ~called)),
    )


def precision_recall_f1(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(precision, recall, F1) of the defect class at `threshold`."""
    counts = confusion(labels, scores, threshold)
    return counts.precision, counts.recall, counts.f1


def f1_best_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 over all cut points; the threshold is an observed score (`>=` calls defect).

    NaN threshold and 0 F1 when there are no defects.
    """
    labels = np.asarray(labels).astype(int)
    if labels.sum() == 0:
        return float("nan"), 0.0
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last point (precision 1, recall 0) has no threshold.
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)[:-1]
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def precision_at_full_recall(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(precision, threshold) at the highest threshold that still catches every defect (recall = 1).

    This is the "miss nothing" operating point: the threshold is the lowest defect score. NaN without defects.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if not labels.any():
        return float("nan"), float("nan")
    threshold = float(scores[labels].min())
    return confusion(labels, scores, threshold).precision, threshold


def _flat(arrays: Sequence[np.ndarray] | np.ndarray, dtype: type) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])


def pixel_auroc(
    masks: Sequence[np.ndarray] | np.ndarray,
    maps: Sequence[np.ndarray] | np.ndarray,
    *,
    max_pixels: int = 4_000_000,
    seed: int = 0,
) -> float:
    """ROC AUC over all pixels of all images (defect pixel = positive).

    When there are more than `max_pixels` pixels, a seeded uniform subsample of that many is used (the estimate's
    standard error is far below the third decimal at this size). NaN without both classes.
    """
    truth = _flat(masks, bool)
    values = _flat(maps, np.float32)
    if truth.size > max_pixels:
        keep = np.random.default_rng(seed).choice(truth.size, size=max_pixels, replace=False)
        truth, values = truth[keep], values[keep]
    if not _both_classes(truth):
        return float("nan")
    return float(roc_auc_score(truth, values))


def aupro(
    masks: Sequence[np.ndarray] | np.ndarray, maps: Sequence[np.ndarray] | np.ndarray, *, fpr_limit: float = 0.3
) -> float:
    """Area under the per-region-overlap (PRO) curve up to `fpr_limit` false-positive rate, divided by `fpr_limit`.

    Each connected defect region (4-connectivity, `scipy.ndimage.label`) in each mask counts equally, whatever its
    size; the FPR is over all defect-free pixels of all images. Exact over every threshold: pixels are sorted by
    score once and the curve is built by cumulative sums, so it costs O(P log P) for P pixels. Result in [0, 1];
    NaN when there are no defect regions.
    """
    # Weight of each pixel in the mean overlap: 1 / (region size * number of regions); 0 for background.
    region_weights = []
    n_regions = 0
    for mask in masks:
        labelled, count = ndimage.label(np.asarray(mask, dtype=bool))
        sizes = np.bincount(labelled.ravel())
        region_weights.append(np.where(labelled > 0, 1.0 / sizes[labelled], 0.0).ravel())
        n_regions += count
    region_weight = np.concatenate(region_weights)
    background = ~_flat(masks, bool)
    values = _flat(maps, np.float32)
    n_background = int(background.sum())
    if n_regions == 0 or n_background == 0:
        return float("nan")

    order = np.argsort(-values, kind="stable")
    sorted_scores = values[order]
    pro = np.cumsum(region_weight[order]) / n_regions
    fpr = np.cumsum(background[order]) / n_background
    # Only the last pixel of each run of equal scores is a valid cut point (ties are called together).
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    fpr = np.r_[0.0, fpr[last_of_tie]]
    pro = np.r_[0.0, pro[last_of_tie]]

    # Cut the curve at fpr_limit, interpolating the overlap there.
    inside = fpr <= fpr_limit
    fpr_in, pro_in = fpr[inside], pro[inside]
    if fpr_in[-1] < fpr_limit and inside.sum() < len(fpr):
        nxt = int(inside.sum())
        t = (fpr_limit - fpr[nxt - 1]) / (fpr[nxt] - fpr[nxt - 1])
        fpr_in = np.r_[fpr_in, fpr_limit]
        pro_in = np.r_[pro_in, pro[nxt - 1] + t * (pro[nxt] - pro[nxt - 1])]
    return float(np.trapezoid(pro_in, fpr_in) / fpr_limit)
