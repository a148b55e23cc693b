"""Where the context family's image score comes from (issue 17): fit it once on an MVTec-layout folder (or load the
fit saved by an earlier call), then score the test images by the family's own rule (the maximum of the smoothed
standardised e_rec + e_pos map), by each term alone, and report how often a good image peaks at the border.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/probe_context_maps.py ../shared/datasets/mvtec_screw /tmp/ctx \
        --set steps=1500 --set teacher_layers=[2] --set teacher_padding=32

The fit is saved under OUT/model, and the per-cell maps (standardised, on the student's grid) in OUT/maps.npz.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml import metrics  # noqa: E402
from ml.__main__ import _parse_value  # noqa: E402
from ml.context import ContextModel  # noqa: E402
from ml.data import load_mvtec  # noqa: E402
from ml.types import GOOD  # noqa: E402

BORDER_CELLS = 2  # a peak this close to the grid's edge counts as a border peak


def standardised_maps(model: ContextModel, test) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(e_rec, e_pos) standardised with the training statistics, N x h x w each, and the labels (1 = defect)."""
    statistics = model.statistics
    recs, poss, labels = [], [], []
    with torch.no_grad():
        for start in range(0, len(test), 8):
            samples = [test[i] for i in range(start, min(start + 8, len(test)))]
            e_rec, e_pos = model.error_maps(model._batch([s.image for s in samples]))
            recs.append(((e_rec - statistics[0]) / statistics[1]).numpy())
            poss.append(((e_pos - statistics[2]) / statistics[3]).numpy() if e_pos is not None else 0 * recs[-1])
            labels += [int(s.label != GOOD) for s in samples]
    return np.concatenate(recs), np.concatenate(poss), np.array(labels)


def smoothed_max(model: ContextModel, maps: np.ndarray) -> np.ndarray:
    """The family's image score of each map on the student's grid (ContextModel.scored_maps)."""
    with torch.no_grad():
        return model.scored_maps(torch.from_numpy(maps))[0].numpy()


def border_share(maps: np.ndarray) -> float:
    """Share of maps whose highest cell lies within BORDER_CELLS of the grid's edge."""
    h, w = maps.shape[-2:]
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps]
    return float(np.mean([min(y, x, h - 1 - y, w - 1 - x) < BORDER_CELLS for y, x in peaks]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dataset = load_mvtec(args.data)
    report: dict = {}
    if (args.out / "model").exists():
        model = ContextModel.load(args.out / "model", device="cpu")
    else:
        model = ContextModel(**{key: _parse_value(value) for key, _, value in (s.partition("=") for s in args.set)})
        started = time.process_time()
        model.fit(dataset.train, progress=lambda stage, _, message: print(f"[{stage}] {message}", file=sys.stderr))
        report["fit_cpu_seconds"] = time.process_time() - started
        model.save(args.out / "model")
    report["config"] = model.config.to_dict()
    report["last_training_entry"] = model.summary.history[-1:]
    e_rec, e_pos, labels = standardised_maps(model, dataset.test)
    for name, maps in (("family_score", e_rec + e_pos), ("e_rec_only", e_rec), ("e_pos_only", e_pos)):
        report[f"image_auroc_{name}"] = metrics.image_auroc(labels, smoothed_max(model, maps))
    report["good_images_peaking_at_the_border"] = border_share((e_rec + e_pos)[labels == 0])
    np.savez_compressed(args.out / "maps.npz", e_rec=e_rec, e_pos=e_pos, labels=labels)
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
