"""Overlap of predicted and true defect masks, for segmentation families (the U-Net).

Kept apart from `ml.metrics` (threshold-free ranking metrics) because these score a model's own binary masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mask_iou(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Intersection over union of two H x W bool masks, in [0, 1]; 1.0 when both are empty."""
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    if truth.shape != predicted.shape:
        raise ValueError(f"mask shapes differ: {truth.shape} vs {predicted.shape}")
    union = np.logical_or(truth, predicted).sum()
    return 1.0 if union == 0 else float(np.logical_and(truth, predicted).sum() / union)


def mean_defect_iou(truths: Sequence[np.ndarray | None], predicted: Sequence[np.ndarray | None]) -> float:
    """Mean over images whose true mask has at least one defect pixel of `mask_iou(truth, predicted)`.

    Good images and defect images with empty or missing masks are left out (an IoU there says nothing about
    outlining defects); a missing prediction counts as an empty mask. NaN when no image qualifies.
    """
    values = []
    for truth, mask in zip(truths, predicted, strict=True):
        if truth is None or not np.any(truth):
            continue
        values.append(mask_iou(truth, np.zeros_like(truth, dtype=bool) if mask is None else mask))
    return float(np.mean(values)) if values else float("nan")


def per_class_scores(
    truths: Sequence[np.ndarray | None], predicted: Sequence[np.ndarray | None], classes: Sequence[str]
) -> dict[str, dict]:
    """Per defect class k (1-based in the H x W int class masks, 0 = good): image-level F1, precision and recall
    (an image has class k when any pixel of it does; a missing mask counts as all good) and the mean IoU of the
    class's pixels over the images whose truth has it (NaN when none does). Keys: class names; values: f1,
    precision, recall, mean_iou, n_images (images whose truth has the class)."""
    result = {}
    for k, name in enumerate(classes, start=1):
        tp = fp = fn = 0
        ious = []
        for truth, mask in zip(truths, predicted, strict=True):
            has = truth is not None and bool(np.any(truth == k))
            found = mask is not None and bool(np.any(mask == k))
            tp, fp, fn = tp + (has and found), fp + (found and not has), fn + (has and not found)
            if has:
                ious.append(mask_iou(truth == k, np.zeros(truth.shape, bool) if mask is None else mask == k))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        result[name] = {
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "precision": precision,
            "recall": recall,
            "mean_iou": float(np.mean(ious)) if ious else float("nan"),
            "n_images": len(ious),
        }
    return result
