"""Threshold calibration without holding good images back (issue 20), measured three ways on an MVTec folder.

  held out   PatchCore fitted on all good training images but `--hold-out`; threshold from those held-out images
             (what the app did before: validation without defects)
  own left out  fitted on every good training image; threshold from each training image scored with its own
             patches left out of the bank (PatchCore.calibration_scores)
  refit      the held-out threshold, then PatchCore refitted on every good image and the threshold kept

Each row: test image AUROC, and at its threshold the share of defects caught (recall) and of good test images
called defective (false alarms). Usage:
  nice -n 10 .venv/bin/python scripts/bench_calibration.py --data ../shared/datasets/mvtec_screw --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml import metrics  # noqa: E402
from ml.bench import cpu_seconds  # noqa: E402
from ml.compare import predict_samples  # noqa: E402
from ml.data import load_mvtec  # noqa: E402
from ml.registry import create_model  # noqa: E402
from ml.thresholds import calibrate  # noqa: E402


def _row(name: str, labels: np.ndarray, scores: np.ndarray, threshold: float, n_train: int) -> dict:
    called = scores >= threshold
    return {
        "method": name,
        "n_train": n_train,
        "threshold": threshold,
        "image_auroc": metrics.image_auroc(labels, scores),
        "recall": float(called[labels == 1].mean()),
        "false_alarm_rate": float(called[labels == 0].mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--hold-out", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dataset = load_mvtec(args.data)
    order = np.random.default_rng(args.seed).permutation(len(dataset.train))
    held, kept = sorted(order[: args.hold_out].tolist()), sorted(order[args.hold_out :].tolist())
    test, labels = dataset.test, dataset.test.labels
    started, cpu_started = time.perf_counter(), cpu_seconds()

    partial = create_model("patchcore", seed=args.seed)
    partial.fit(dataset.train.subset(kept))
    held_scores = np.array([p.score for p in predict_samples(partial, dataset.train.subset(held))])
    held_threshold = calibrate(held_scores, np.zeros(len(held_scores))).threshold
    partial_scores = np.array([p.score for p in predict_samples(partial, test)])

    full = create_model("patchcore", seed=args.seed)
    full.fit(dataset.train)
    own_scores = full.calibration_scores(dataset.train)
    own_threshold = calibrate(own_scores, np.zeros(len(own_scores))).threshold
    full_scores = np.array([p.score for p in predict_samples(full, test)])

    rows = [
        _row("held out", labels, partial_scores, held_threshold, len(kept)),
        _row("own left out", labels, full_scores, own_threshold, len(dataset.train)),
        _row("refit", labels, full_scores, held_threshold, len(dataset.train)),
    ]
    report = {
        "data": str(args.data),
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds() - cpu_started,
        "load_average_1min": os.getloadavg()[0],
        "held_out_good_scores_mean": float(held_scores.mean()),
        "own_left_out_good_scores_mean": float(own_scores.mean()),
    }
    print(f"{'method':<14}{'n_train':>8}{'auroc':>8}{'recall':>8}{'false alarms':>14}{'threshold':>11}")
    for row in rows:
        print(
            f"{row['method']:<14}{row['n_train']:>8}{row['image_auroc']:>8.4f}{row['recall']:>8.3f}"
            f"{row['false_alarm_rate']:>14.3f}{row['threshold']:>11.4f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
