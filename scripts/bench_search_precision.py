"""PatchCore's float32 and int8 nearest-neighbour search on one fit: image AUROC and ms/image for each.

Fits once on an MVTec-layout folder's training images, then scores its test images with twins of the same model
that differ only in `search_precision` (predict of decoded images, batch 8, after a warm-up), alternating so drift
of the machine shows. Usage: scripts/bench_search_precision.py --data /work/shared/datasets/mvtec_screw
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data import load_mvtec  # noqa: E402
from ml.metrics import image_auroc  # noqa: E402
from ml.patchcore import PatchCore  # noqa: E402


def twin_with(model: PatchCore, precision: str) -> PatchCore:
    """The fitted model again, searching in `precision` (its buffers copied, its graph built anew)."""
    twin = PatchCore(**{**asdict(model.config), "search_precision": precision})
    for name, value in model.named_buffers(recurse=False):
        twin._buffers[name] = value.clone()  # the bank's size is only known after fit, so load_state_dict refuses
    twin.reset_graphs()
    return twin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--order", default="float32,int8,float32,int8", help="search precisions, in turn")
    args = parser.parse_args()
    data = load_mvtec(args.data)
    model = PatchCore(search_precision="float32")
    started = time.process_time()
    model.fit(list(data.train))
    print(f"fit {time.process_time() - started:.1f} CPU s, bank {len(model.memory_bank)}", flush=True)
    test = list(data.test)
    images = [sample.image for sample in test]
    labels = np.array([sample.label for sample in test])
    for precision in args.order.split(","):
        twin = twin_with(model, precision)
        twin.predict(images[:8])
        wall, cpu = time.perf_counter(), time.process_time()
        predictions = twin.predict(images)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        auroc = image_auroc(labels, np.array([p.score for p in predictions]))
        per_image = 1000 / len(images)
        timing = f"{wall * per_image:.1f} ms/image wall, {cpu * per_image:.1f} CPU ms"
        print(f"{precision}: image AUROC {auroc:.4f}, {timing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
