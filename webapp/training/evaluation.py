"""Evaluation of a fitted model on the test split: per-image predictions stored, metrics computed from them."""

from __future__ import annotations

import numpy as np

from ml import metrics
from ml.thresholds import Calibration
from webapp.inference.models import Purpose
from webapp.inference.predictions import predicted_mask, prediction_store
from webapp.training.class_metrics import ClassMetrics
from webapp.training.datasets import ProjectSamples
from webapp.training.models import ModelVersion

BATCH = 8


def evaluate_and_store(
    *, model, version: ModelVersion, samples: ProjectSamples, calibration: Calibration, progress
) -> dict:
    """Predicts every test image (in batches), stores the predictions, and returns the version's metrics."""
    scores: list[float] = []
    # Pixel metrics stream every map at the image's own resolution into fixed-size histograms (issue 16): memory
    # does not grow with the test set, and a defect of a few pixels in a 12 MP image still counts.
    pixels = metrics.PixelMetricStream()
    per_class = ClassMetrics(calibration.threshold)
    for start in range(0, len(samples), BATCH):
        batch = samples[start : start + BATCH]
        predictions = model.predict([s.image for s in batch], batch_size=BATCH)
        for offset, (sample, prediction) in enumerate(zip(batch, predictions, strict=True)):
            prediction_store(
                version=version,
                image=samples.images[start + offset],
                prediction=prediction,
                calibration=calibration,
                purpose=Purpose.TEST,
            )
            scores.append(float(prediction.score))
            per_class.add(sample, prediction, predicted_mask(prediction, calibration.threshold))
            truth = sample.mask if sample.mask is not None else np.zeros(sample.image.shape[:2], dtype=bool)
            if sample.label == 0 or sample.mask is not None:  # defects without masks say nothing about pixels
                pixels.add(truth, prediction.anomaly_map)
        progress("evaluation", min(1.0, (start + len(batch)) / len(samples)), f"Tested {start + len(batch)} images")
    result = metrics_from_scores(
        labels=samples.labels,
        scores=np.array(scores),
        threshold=calibration.threshold,
        pixels=pixels,
    )
    if len(samples.classes) > 1:  # per defect class figures where several classes were drawn (issue 20)
        result["per_class"] = per_class.result()
    return result


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def metrics_from_scores(
    *, labels: np.ndarray, scores: np.ndarray, threshold: float, pixels: metrics.PixelMetricStream
) -> dict:
    """Image metrics at the threshold, threshold-free ones, and pixel ones when masks exist. NaN becomes None."""
    confusion = metrics.confusion(labels, scores, threshold)
    both = bool(labels.any() and (~labels.astype(bool)).any())
    best_threshold, best_f1 = metrics.f1_best_threshold(labels, scores) if both else (None, None)
    precision_all, threshold_all = metrics.precision_at_full_recall(labels, scores) if labels.any() else (None, None)
    has_defect_pixels = pixels.n_regions > 0
    return {
        "image_auroc": _finite(metrics.image_auroc(labels, scores)) if both else None,
        "image_ap": _finite(metrics.image_average_precision(labels, scores)) if both else None,
        "precision": confusion.precision,
        "recall": confusion.recall,
        "f1": confusion.f1,
        "accuracy": (confusion.tp + confusion.tn) / max(1, len(labels)),
        "confusion": {"tp": confusion.tp, "fp": confusion.fp, "fn": confusion.fn, "tn": confusion.tn},
        "threshold": float(threshold),
        "f1_best_threshold": _finite(best_threshold),
        "f1_best": _finite(best_f1),
        "precision_at_recall1": _finite(precision_all),
        "threshold_at_recall1": _finite(threshold_all),
        "pixel_auroc": _finite(pixels.pixel_auroc()) if has_defect_pixels else None,
        "aupro": _finite(pixels.aupro()) if has_defect_pixels else None,
    }
