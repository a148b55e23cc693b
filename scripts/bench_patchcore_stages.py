#!/usr/bin/env python3
"""Where PatchCore's inference time goes: preprocessing, backbone, nearest-neighbour search, maps, and the whole
exported graph in onnxruntime, per image at batch 8 (best of 5, after a warm-up).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_patchcore_stages.py --data /work/shared/datasets/mvtec_screw

Fits on `--train-limit` good images with the bank floor raised to `--bank` entries, so the search costs what the
full fit's search costs without waiting for the full fit (the screw default fit gives 5,120 entries).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH = 8


def best_of(function: Callable[[], object], repeats: int = 5) -> tuple[float, float]:
    """(wall, CPU) milliseconds per image of `function` over a batch of BATCH images."""
    function()
    best, cpu_started = float("inf"), time.process_time()
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    cpu = (time.process_time() - cpu_started) / repeats
    return best * 1000 / BATCH, cpu * 1000 / BATCH


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an MVTec-layout folder")
    parser.add_argument("--train-limit", type=int, default=40)
    parser.add_argument("--bank", type=int, default=5120)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime
    import torch
    from PIL import Image

    from ml.patchcore import PatchCore
    from ml.types import Sample

    torch.set_num_threads(args.threads)
    train = sorted((args.data / "train" / "good").glob("*.png"))[: args.train_limit]
    test = sorted((args.data / "test").glob("*/*.png"))
    test = test[:: max(1, len(test) // BATCH)][:BATCH]
    model = PatchCore(min_bank_size=args.bank)
    model.fit([Sample(image=np.asarray(Image.open(path))) for path in train])
    images = [np.asarray(Image.open(path)) for path in test]
    batch = model._batch(images)
    float32_twin = PatchCore(pretrained=False, **{**asdict(model.config), "search_precision": "float32"})
    float32_twin.memory_bank = torch.empty_like(model.memory_bank)
    float32_twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        features = model.embed(batch)
        n, c, h, w = features.shape
        patches = features.permute(0, 2, 3, 1).reshape(n * h * w, c)
        stages = {
            "preprocessing (resize, normalise)": lambda: model._batch(images),
            "backbone + aggregation (PatchFeatures)": lambda: model.embed(batch),
            "nearest-neighbour search, eager PyTorch": lambda: model.nearest(patches),
            "forward in eager PyTorch (features in onnxruntime), maps included": lambda: model(batch),
            "predict: preprocessing, the graph in 64 MB pieces, maps resized": lambda: model.predict(
                images, batch_size=BATCH
            ),
            "same, float32 search (`search_precision=float32`)": lambda: float32_twin.predict(images, batch_size=BATCH),
        }
        timings = {name: best_of(function) for name, function in stages.items()}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "patchcore.onnx"
        model.to_onnx(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        array = batch.numpy()
        whole_graph = best_of(lambda: session.run(None, {"images": array}))
        timings["forward as one onnxruntime graph, whole batch at once"] = whole_graph

    print(f"# bank {len(model.memory_bank)} x {model.memory_bank.shape[1]}, {h * w} patches per image, batch {BATCH}")
    print("| stage | wall ms/image | CPU ms/image |")
    print("|---|---|---|")
    for name, (wall, cpu) in timings.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
