"""Time the robustness run of a 150-image test split with PatchCore (issue 19's target: at most 5 minutes on 2 CPU
cores): fit on an MVTec-layout folder's training images, then `ml.robustness.robustness_run` over N test images
(a seeded, label-stratified pick) under every perturbation at every strength, as the web app's worker runs it.

    nice -n 10 .venv/bin/python scripts/bench_robustness.py --data /work/shared/datasets/mvtec_screw --images 150

Prints one JSON object: wall and CPU seconds of the run alone (reading, perturbing and scoring every image), per
scored image, the load average before and after, peak RSS. The threshold is the F1-best cut on the picked images'
unperturbed scores: this script measures time, not accuracy (`python -m ml bench --robustness` does that honestly).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere: the repo's ml/

from ml.data import load_mvtec  # noqa: E402
from ml.registry import create_model  # noqa: E402
from ml.robustness import format_robustness_table, robustness_run  # noqa: E402
from ml.threads import bench_threads, torch_threads  # noqa: E402
from ml.thresholds import default_threshold  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--model", default="patchcore")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with torch_threads(bench_threads()):
        torch.manual_seed(args.seed)
        dataset = load_mvtec(args.data, seed=args.seed)
        pick = np.sort(np.random.default_rng(args.seed).permutation(len(dataset.test))[: args.images])
        test = dataset.test.subset(pick.tolist())
        model = create_model(args.model, seed=args.seed)
        fit_started = cpu_seconds()
        model.fit(dataset.train)
        fit_cpu = cpu_seconds() - fit_started
        batches = [[test[k].image for k in range(i, min(i + 8, len(test)))] for i in range(0, len(test), 8)]
        scores = np.array([p.score for batch in batches for p in model.predict(batch)])
        threshold = default_threshold(scores, test.labels)
        load_before = os.getloadavg()
        started, cpu_started = time.perf_counter(), cpu_seconds()

        def progress(stage: str, fraction: float, message: str) -> None:
            # A partial figure survives a run cut short: images done, wall and CPU seconds so far.
            elapsed, used = time.perf_counter() - started, cpu_seconds() - cpu_started
            print(f"{message}: {elapsed:.0f} s wall, {used:.0f} s CPU, load {os.getloadavg()[0]:.1f}", file=sys.stderr)

        report = robustness_run(model, test, threshold=threshold, seed=args.seed, progress=progress)
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        load_after = os.getloadavg()
    print(format_robustness_table(report), file=sys.stderr)  # AUROC columns are threshold-free; calls are not
    n_scored = sum(c.n_good + c.n_defect for c in [report.baseline, *report.conditions])
    print(json.dumps({
        "model": args.model, "data": str(args.data), "images": len(test), "conditions": 1 + len(report.conditions),
        "images_scored": n_scored, "run_wall_seconds": round(wall, 1), "run_cpu_seconds": round(cpu, 1),
        "cpu_ms_per_scored_image": round(1000 * cpu / n_scored, 1), "fit_cpu_seconds": round(fit_cpu, 1),
        "load_before": load_before, "load_after": load_after, "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "baseline_auroc": report.baseline.image_auroc,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
