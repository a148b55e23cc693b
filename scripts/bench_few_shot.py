"""Few-shot PatchCore image AUROC over seeded draws, cheaply (issue 21): no pixel metrics, and several image-score
rules from one fit, so a sweep of settings costs one fit and one pass over the test images per draw.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_few_shot.py --data /work/shared/datasets/mvtec_screw \\
        --train-limit 20 --draws 5 [--set image_size=512 --set rotations=8]

Prints one JSON line per draw (the settings PatchCore chose, fit CPU seconds, image AUROC under each score rule:
"model" is the model's own score, as `python -m ml bench` reports it) and a summary line (mean ± sd). Rules:
max (the highest patch distance), top10 (mean of the 10 highest), blurmax (highest of the blurred map). The full
figures (pixel AUROC, AU-PRO, F1) come from `python -m ml bench`, which costs about three times as much.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml import metrics  # noqa: E402
from ml.data import load_mvtec  # noqa: E402
from ml.patchcore import PatchCore  # noqa: E402
from ml.threads import bench_threads, torch_threads  # noqa: E402

RULES = ("model", "max", "top10", "blurmax")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@torch.no_grad()
def one_draw(data: Path, train_limit: int | None, seed: int, config: dict) -> dict:
    dataset = load_mvtec(data, train_limit=train_limit, seed=seed)
    model = PatchCore(seed=seed, **config)
    started, wall = cpu_seconds(), time.perf_counter()
    model.fit(dataset.train)
    fit_cpu, fit_wall = cpu_seconds() - started, time.perf_counter() - wall
    scores: dict[str, list[float]] = {rule: [] for rule in RULES}
    test = dataset.test
    for start in range(0, len(test), 8):
        batch = model._batch([test[i].image for i in range(start, min(start + 8, len(test)))])
        features = model.embed(batch)
        n, c, h, w = features.shape
        patches = model.project(features.permute(0, 2, 3, 1).reshape(n * h * w, c))
        distances = model.nearest(patches)[0].view(n, h * w)
        scores["model"] += model.pooled_scores(distances).tolist()
        scores["max"] += distances.max(1).values.tolist()
        scores["top10"] += distances.topk(10, dim=1).values.mean(1).tolist()
        scores["blurmax"] += model.anomaly_maps(distances.view(n, h, w)).flatten(1).max(1).values.tolist()
    chosen = model.config.chosen
    row = {
        "seed": seed,
        "n_train": len(dataset.train),
        "image_size": model.config.image_size,
        "rotations": model.config.rotations,
        "score": model.config.score,
        "rotation_ratio": chosen.get("facts", {}).get("rotation_ratio"),
        "bank": model.config.bank_size,
        "fit_cpu_seconds": round(fit_cpu, 1),
        "fit_seconds": round(fit_wall, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "sentence": chosen.get("sentence", ""),
    }
    for rule, values in scores.items():
        row[rule] = round(metrics.image_auroc(test.labels, np.array(values)), 4)
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    config = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    rows = []
    with torch_threads(bench_threads()):
        for seed in range(args.seed, args.seed + args.draws):
            rows.append(one_draw(args.data, args.train_limit, seed, config))
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for key in (*RULES, "fit_cpu_seconds", "fit_seconds"):
        values = [row[key] for row in rows]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[key] = f"{statistics.fmean(values):.3f} ± {sd:.3f}"
    print("summary", json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
