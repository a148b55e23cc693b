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

from ml.detections import box_iou
from ml.types import Box, Detection


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
    return _pro_area(fpr, pro, fpr_limit)


def _pro_area(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Normalised area under a PRO curve given as points (fpr ascending from 0), cut at `fpr_limit`."""
    # Cut the curve at fpr_limit, interpolating the overlap there.
    inside = fpr <= fpr_limit
    fpr_in, pro_in = fpr[inside], pro[inside]
    if fpr_in[-1] < fpr_limit and inside.sum() < len(fpr):
        nxt = int(inside.sum())
        t = (fpr_limit - fpr[nxt - 1]) / (fpr[nxt] - fpr[nxt - 1])
        fpr_in = np.r_[fpr_in, fpr_limit]
        pro_in = np.r_[pro_in, pro[nxt - 1] + t * (pro[nxt] - pro[nxt - 1])]
    return float(np.trapezoid(pro_in, fpr_in) / fpr_limit)


class PixelMetricStream:
    """Pixel AUROC and AU-PRO over any number of images in constant memory: each (mask, map) pair is added to
    histograms over a score grid of `bins` equal bins, and the curves are built from the histograms.

    Equal to `pixel_auroc` / `aupro` when no two distinct scores share a bin (scores in one bin count as tied);
    otherwise each threshold is off by at most one bin width, which is (score range) / `bins` or less (the grid
    starts on the first image's range and doubles its bin width, merging pairs of bins exactly, whenever a later
    score falls outside it). Memory: three arrays of `bins` numbers, plus one image's labelled regions while it is
    added. Unlike `pixel_auroc` nothing is subsampled.
    """

    def __init__(self, *, bins: int = 1 << 16):
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two, not {bins}")
        self.bins = bins
        self.low = 0.0
        self.width = 0.0  # 0 until the first pixel sets the grid
        self.defect = np.zeros(bins, dtype=np.int64)  # defect pixels per bin
        self.background = np.zeros(bins, dtype=np.int64)  # defect-free pixels per bin
        self.region_weight = np.zeros(bins, dtype=np.float64)  # sum of 1 / (size of the pixel's region) per bin
        self.n_regions = 0

    def add(self, mask: np.ndarray, anomaly_map: np.ndarray) -> None:
        """One image: H x W bool mask (defect = True) and H x W float map of the same shape."""
        mask = np.asarray(mask, dtype=bool)
        values = np.asarray(anomaly_map, dtype=np.float32)
        if mask.shape != values.shape:
            raise ValueError(f"mask {mask.shape} and map {values.shape} differ in shape")
        if values.size == 0:
            return
        self._cover(float(values.min()), float(values.max()))
        offsets = (values.astype(np.float64) - self.low) / self.width
        index = np.clip(offsets.astype(np.int64), 0, self.bins - 1).ravel()
        del offsets
        flat_mask = mask.ravel()
        self.background += np.bincount(index[~flat_mask], minlength=self.bins)
        if not flat_mask.any():
            return
        self.defect += np.bincount(index[flat_mask], minlength=self.bins)
        labelled, count = ndimage.label(mask)
        sizes = np.bincount(labelled.ravel())
        flat_labels = labelled.ravel()[flat_mask]
        self.region_weight += np.bincount(index[flat_mask], weights=1.0 / sizes[flat_labels], minlength=self.bins)
        self.n_regions += count

    def _cover(self, low: float, high: float) -> None:
        """Widens the grid (doubling the bin width, merging bin pairs) until [low, high] falls inside it."""
        if self.width == 0.0:
            self.low = low
            self.width = max(high - low, abs(low) * 1e-6, 1e-12) / self.bins * (1 + 1e-6)
            return
        while high >= self.low + self.bins * self.width or low < self.low:
            grow_down = low < self.low
            for counts in (self.defect, self.background, self.region_weight):
                merged = counts.reshape(-1, 2).sum(axis=1)
                counts[:] = 0
                if grow_down:
                    counts[self.bins // 2 :] = merged
                else:
                    counts[: self.bins // 2] = merged
            if grow_down:
                self.low -= self.bins * self.width
            self.width *= 2

    def pixel_auroc(self) -> float:
        """ROC AUC over every pixel added (defect = positive), ties counted half; NaN without both classes."""
        positives, negatives = int(self.defect.sum()), int(self.background.sum())
        if positives == 0 or negatives == 0:
            return float("nan")
        below = np.cumsum(self.background) - self.background  # negatives in lower bins
        pairs = np.sum(self.defect * (below + 0.5 * self.background))
        return float(pairs / (positives * negatives))

    def aupro(self, *, fpr_limit: float = 0.3) -> float:
        """As `aupro` over every image added; NaN without defect regions or without defect-free pixels."""
        n_background = int(self.background.sum())
        if self.n_regions == 0 or n_background == 0:
            return float("nan")
        occupied = (self.background + self.defect)[::-1] > 0  # a cut point after each non-empty bin, high first
        fpr = (np.cumsum(self.background[::-1]) / n_background)[occupied]
        pro = (np.cumsum(self.region_weight[::-1]) / self.n_regions)[occupied]
        return _pro_area(np.r_[0.0, fpr], np.r_[0.0, pro], fpr_limit)


def box_average_precision(
    truths: Sequence[Sequence[Box]],
    detections: Sequence[Sequence[Detection]],
    *,
    iou_threshold: float = 0.5,
    by_class: bool = False,
) -> float:
    """Box AP at IoU `iou_threshold` (PASCAL VOC style, all-point interpolation) over a set of images.

    truths[i]: the drawn boxes of image i (none for a good image); detections[i]: what the model found there.
    Detections of all images are ranked by confidence; each is a true positive when it overlaps a not yet matched
    drawn box of its image by at least `iou_threshold` (with `by_class`, only boxes of its own label), else a false
    positive. NaN when no box was drawn.
    """
    n_truth = sum(len(boxes) for boxes in truths)
    if n_truth == 0:
        return float("nan")
    ranked = sorted(
        ((d.confidence, image, d.box) for image, found in enumerate(detections) for d in found), key=lambda t: -t[0]
    )
    matched = [np.zeros(len(boxes), dtype=bool) for boxes in truths]
    hits = np.zeros(len(ranked))
    for rank, (_, image, box) in enumerate(ranked):
        best, best_iou = -1, iou_threshold
        for index, truth in enumerate(truths[image]):
            if matched[image][index] or (by_class and truth.label != box.label):
                continue
            overlap = box_iou(box, truth)
            if overlap >= best_iou:
                best, best_iou = index, overlap
        if best >= 0:
            matched[image][best] = True
            hits[rank] = 1
    if not len(ranked):
        return 0.0
    recall = np.cumsum(hits) / n_truth
    precision = np.cumsum(hits) / np.arange(1, len(ranked) + 1)
    # Precision made monotone from the right, integrated over the recall steps.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * envelope))
