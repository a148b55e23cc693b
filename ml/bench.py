"""`python -m ml bench`: fit a family on an MVTec-layout folder and report accuracy and cost.

Threshold honesty: MVTec has no validation split. The test set is cut into two halves stratified by defect type;
a threshold is chosen on each half (`ml.thresholds.default_threshold`, F1-best) and applied to the other half, so
every reported call (f1, precision, recall) comes from a threshold that did not see that image. `threshold` is the
mean of the two. The F1-best threshold on the whole test set is also reported, labelled optimistic.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ml import metrics
from ml.data import LazySamples, load_mvtec, stratified_halves, supervised_split
from ml.devices import device_description
from ml.registry import create_model
from ml.segmentation_scores import mean_defect_iou
from ml.threads import bench_threads, torch_threads
from ml.thresholds import default_threshold
from ml.types import DEFECT, AnomalyModel, ProgressCallback, Sample

TIMING_BATCH = 8
TIMING_REPEATS = 10


@dataclass
class BenchOptions:
    data: Path
    model: str = "patchcore"
    train_limit: int | None = None
    image_size: int | None = None
    seed: int = 0
    supervised_fraction: float = 0.5
    config: dict | None = None  # extra constructor arguments for the family (e.g. from --set key=value)
    verbose: bool = True
    draws: int = 1  # seeded draws of the training subset, summarised by ml.bench_draws when above 1
    boxed_defects: int | None = None  # --model compare: train from this many boxed defects instead of outlines
    variant: str = "original"  # --model compare: every image changed as ml.compare_bench.VARIANTS says
    order: str = "name"  # --model compare: "content" feeds the images in the app's order (ml.compare_bench.app_order)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far: unlike wall time, barely inflated by other processes."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports kilobytes


def _log(options: BenchOptions, message: str) -> None:
    if options.verbose:
        print(message, file=sys.stderr, flush=True)


def cross_fitted_calls(test: LazySamples, scores: np.ndarray, *, seed: int) -> tuple[np.ndarray, float]:
    """Per-image calls where each half's threshold comes from the other half; returns (called, mean threshold)."""
    first, second = stratified_halves(test, seed=seed)
    position = {record.image_path: i for i, record in enumerate(test.records)}
    halves = [np.array([position[r.image_path] for r in half.records]) for half in (first, second)]
    called = np.zeros(len(scores), dtype=bool)
    thresholds = []
    for chosen_on, applied_to in ((halves[0], halves[1]), (halves[1], halves[0])):
        threshold = default_threshold(scores[chosen_on], test.labels[chosen_on])
        thresholds.append(threshold)
        called[applied_to] = scores[applied_to] >= threshold
    return called, float(np.mean(thresholds))


def time_inference(model: AnomalyModel, images: list[np.ndarray]) -> tuple[float, float]:
    """(wall, CPU) milliseconds per image of `predict` at batch 8 (preprocessing included), after a warm-up batch.

    Wall time is the best of the repeats (the least disturbed by other processes on shared cores).
    """
    batch = (images * TIMING_BATCH)[:TIMING_BATCH]
    model.predict(batch, batch_size=TIMING_BATCH)
    best = float("inf")
    cpu_started = cpu_seconds()
    for _ in range(TIMING_REPEATS):
        started = time.perf_counter()
        model.predict(batch, batch_size=TIMING_BATCH)
        best = min(best, time.perf_counter() - started)
    cpu = (cpu_seconds() - cpu_started) / TIMING_REPEATS
    return best / TIMING_BATCH * 1000, cpu / TIMING_BATCH * 1000


@dataclass
class PredictedTestSet:
    """What predicting a test set leaves behind, in memory independent of the number and size of images:
    scores: N image scores. pixels: pixel AUROC / AU-PRO histograms of every map against its mask (at the image's
    own resolution). segments: whether the family returned masks; defect_ious: IoU of its mask per image with
    defect pixels (see ml.segmentation_scores.mean_defect_iou)."""

    scores: np.ndarray
    pixels: metrics.PixelMetricStream
    segments: bool
    defect_ious: list[float]


def predict_test_set(
    model: AnomalyModel, test: Sequence[Sample], *, batch_size: int = TIMING_BATCH, pixel_bins: int = 1 << 16
) -> PredictedTestSet:
    """Predicts `test` batch by batch and streams maps into the pixel metrics: peak memory grows with the batch
    (its images and full-size maps), not with the test set (2448 x 2048 images: killed at 18.6 GB before)."""
    scores = np.zeros(len(test))
    pixels = metrics.PixelMetricStream(bins=pixel_bins)
    segments, defect_ious = False, []
    for start in range(0, len(test), batch_size):
        samples = [test[i] for i in range(start, min(start + batch_size, len(test)))]
        predictions = model.predict([s.image for s in samples], batch_size=batch_size)
        for offset, (sample, prediction) in enumerate(zip(samples, predictions, strict=True)):
            scores[start + offset] = prediction.score
            mask = sample.mask if sample.mask is not None else np.zeros(sample.image.shape[:2], dtype=bool)
            # A defect image with no drawn pixel says nothing about where its defect is: counting its pixels as
            # defect-free would blame a map that finds it (magnetic tile has 4 empty masks). The app skips them too.
            if sample.label != DEFECT or mask.any():
                pixels.add(mask, prediction.anomaly_map)
            if prediction.mask is not None:
                segments = True
                if mask.any():
                    defect_ious.append(mean_defect_iou([mask], [prediction.mask]))
        del samples, predictions
    return PredictedTestSet(scores=scores, pixels=pixels, segments=segments, defect_ious=defect_ious)


def run_bench(options: BenchOptions) -> dict:
    """Fits, predicts the test set and returns the report dict (keys listed in docs/benchmarks.md)."""
    with torch_threads(bench_threads()):
        if options.draws > 1:  # issue 21: few-shot figures as mean and spread over seeded draws
            from ml.bench_draws import run_draws

            return run_draws(options, _run_bench, options.draws)
        return _run_bench(options)


def _run_bench(options: BenchOptions) -> dict:
    torch.manual_seed(options.seed)
    if options.model == "compare":  # every candidate the labels allow, the winner picked on validation
        from ml.compare_bench import run_compare_bench

        return run_compare_bench(options)
    fitted = fit_for_bench(options)
    return evaluate_fitted(
        fitted.model,
        fitted.train,
        fitted.test,
        options,
        fit_seconds=fitted.fit_seconds,
        fit_cpu_seconds=fitted.fit_cpu_seconds,
    )


@dataclass
class FittedBench:
    """A family fitted on a folder's training images as the bench does it, with the test images left for it."""

    model: AnomalyModel
    train: LazySamples
    test: LazySamples
    fit_seconds: float
    fit_cpu_seconds: float


def fit_for_bench(options: BenchOptions) -> FittedBench:
    """Loads the folder, splits it (families that learn from drawn defects train on a share of them), creates the
    family from the options and fits it, timed in wall and CPU seconds. Shared by every bench mode."""
    dataset = load_mvtec(options.data, train_limit=options.train_limit, seed=options.seed)
    train, test = dataset.train, dataset.test
    if options.model in ("unet", "hybrid"):
        train, test = supervised_split(dataset, fraction=options.supervised_fraction, seed=options.seed)

    config = dict(options.config or {})
    config["seed"] = options.seed
    if options.image_size is not None:
        config["image_size"] = options.image_size
    model = create_model(options.model, **config)

    _log(options, f"fitting {options.model} on {len(train)} images")
    started, cpu_started = time.perf_counter(), cpu_seconds()
    model.fit(train, progress=bench_progress(options))
    return FittedBench(model, train, test, time.perf_counter() - started, cpu_seconds() - cpu_started)


def bench_progress(options: BenchOptions) -> ProgressCallback:
    """A progress callback that logs each step to stderr (when verbose)."""

    def progress(stage: str, fraction: float, message: str) -> None:
        _log(options, f"  [{stage} {fraction:5.1%}] {message}")

    return progress


def evaluate_fitted(
    model: AnomalyModel,
    train: LazySamples,
    test: LazySamples,
    options: BenchOptions,
    *,
    fit_seconds: float,
    fit_cpu_seconds: float,
) -> dict:
    """The report of a fitted model on `test` (also used by `--model compare` for every candidate)."""
    _log(options, f"predicting {len(test)} test images")
    tested = predict_test_set(model, test)
    scores = tested.scores
    labels = test.labels
    infer_ms, infer_cpu_ms = time_inference(model, [test[i].image for i in range(min(TIMING_BATCH, len(test)))])
    model_peak_rss_mb = peak_rss_mb()

    called, threshold = cross_fitted_calls(test, scores, seed=options.seed)
    counts = metrics.Confusion(
        tp=int(np.sum(called & (labels == 1))),
        fp=int(np.sum(called & (labels == 0))),
        tn=int(np.sum(~called & (labels == 0))),
        fn=int(np.sum(~called & (labels == 1))),
    )
    optimistic_threshold, optimistic_f1 = metrics.f1_best_threshold(labels, scores)
    precision_at_recall1, threshold_at_recall1 = metrics.precision_at_full_recall(labels, scores)
    has_masks = tested.pixels.n_regions > 0
    # Families that outline defects (the U-Net) are also judged on their masks: IoU per defect image, averaged.
    segments = tested.segments

    report = {
        "image_auroc": metrics.image_auroc(labels, scores),
        "image_ap": metrics.image_average_precision(labels, scores),
        "pixel_auroc": tested.pixels.pixel_auroc() if has_masks else None,
        "aupro": tested.pixels.aupro() if has_masks else None,
        "mean_iou": float(np.mean(tested.defect_ious)) if segments and tested.defect_ious else None,
        "n_iou_images": len(tested.defect_ious) if segments else 0,
        "f1": counts.f1,
        "precision": counts.precision,
        "recall": counts.recall,
        "threshold": threshold,
        "threshold_rule": "F1-best on one stratified half of test, applied to the other (cross-fitted)",
        "f1_best_on_test_optimistic": optimistic_f1,
        "threshold_f1_best_on_test_optimistic": optimistic_threshold,
        "precision_at_recall1": precision_at_recall1,
        "threshold_at_recall1": threshold_at_recall1,
        "confusion": {"tp": counts.tp, "fp": counts.fp, "tn": counts.tn, "fn": counts.fn},
        "fit_seconds": fit_seconds,
        "fit_cpu_seconds": fit_cpu_seconds,
        "infer_ms_per_image": infer_ms,
        "infer_cpu_ms_per_image": infer_cpu_ms,
        "load_average_1min": os.getloadavg()[0],
        "peak_rss_mb": model_peak_rss_mb,
        "peak_rss_mb_with_metrics": peak_rss_mb(),
        "n_train": len(train),
        "n_test": len(test),
        "model": options.model,
        "data": str(options.data),
        "seed": options.seed,
        "model_config": _model_config(model),
        "torch_threads": torch.get_num_threads(),
        "device": device_description(getattr(model, "device", "cpu")),
        "machine": platform.processor() or platform.machine(),
    }
    return report


def _model_config(model: AnomalyModel) -> dict | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    to_dict = getattr(config, "to_dict", None)
    return to_dict() if to_dict else dict(vars(config))


def format_table(report: dict) -> str:
    """The report's headline figures as an aligned two-column table."""
    keys = [
        "image_auroc",
        "image_ap",
        "pixel_auroc",
        "aupro",
        "mean_iou",
        "f1",
        "precision",
        "recall",
        "threshold",
        "f1_best_on_test_optimistic",
        "precision_at_recall1",
        "fit_seconds",
        "fit_cpu_seconds",
        "infer_ms_per_image",
        "infer_cpu_ms_per_image",
        "load_average_1min",
        "peak_rss_mb",
        "n_train",
        "n_test",
    ]
    rows = []
    for key in keys:
        value = report.get(key)
        text = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        rows.append(f"{key:<28} {text:>12}")
    return "\n".join(rows)


def write_json(report: dict, path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))
