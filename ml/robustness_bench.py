"""`python -m ml bench --robustness`: fit a family on an MVTec-layout folder, fix the operating threshold on
validation images, and print how the model holds up under every perturbation (`ml.robustness`).

Threshold honesty: MVTec has no validation split. The test set is cut into two halves stratified by defect type
(`ml.data.stratified_halves`, the benchmark's own cut): the threshold is chosen on the first half's unperturbed
images (`ml.thresholds.default_threshold`, as the web app calibrates a version) and the robustness run scores the
second half only, so no scored image helped set the threshold.
"""

from __future__ import annotations

import os
import platform
import sys

import numpy as np
import torch

from ml.bench import BenchOptions, bench_progress, fit_for_bench, peak_rss_mb
from ml.data import stratified_halves
from ml.robustness import RobustnessReport, resolve_perturbations, robustness_run
from ml.threads import bench_threads, torch_threads
from ml.thresholds import default_threshold

THRESHOLD_RULE = (
    "default_threshold (F1-best, midway to the next lower score) on the unperturbed images of one stratified "
    "half of test; the robustness run scores the other half"
)


def _log(options: BenchOptions, message: str) -> None:
    if options.verbose:
        print(message, file=sys.stderr, flush=True)


def run_robustness_bench(
    options: BenchOptions, *, perturbations: list[str] | None = None
) -> tuple[dict, RobustnessReport]:
    """(JSON-ready report dict, the RobustnessReport) for `options` (the bench's), on the perturbations named."""
    chosen = resolve_perturbations(perturbations)
    with torch_threads(bench_threads()):
        torch.manual_seed(options.seed)
        fitted = fit_for_bench(options)
        model, train, test = fitted.model, fitted.train, fitted.test
        progress = bench_progress(options)

        validation, scored = stratified_halves(test, seed=options.seed)
        _log(options, f"threshold from {len(validation)} validation images")
        validation_scores = np.array(
            [p.score for start in range(0, len(validation), 8)
             for p in model.predict([validation[i].image for i in range(start, min(start + 8, len(validation)))])]
        )  # fmt: skip
        threshold = default_threshold(validation_scores, validation.labels)
        _log(options, f"robustness run on {len(scored)} images, {len(chosen)} perturbations")
        report = robustness_run(model, scored, threshold=threshold, perturbations=chosen, seed=options.seed,
                                progress=progress)  # fmt: skip
    summary = report.to_dict()
    summary.update(
        {
            "threshold_rule": THRESHOLD_RULE,
            "n_validation": len(validation),
            "n_scored": len(scored),
            "n_train": len(train),
            "fit_seconds": fitted.fit_seconds,
            "fit_cpu_seconds": fitted.fit_cpu_seconds,
            "load_average_1min": os.getloadavg()[0],
            "peak_rss_mb": peak_rss_mb(),
            "model": options.model,
            "data": str(options.data),
            "torch_threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
        }
    )
    return summary, report
