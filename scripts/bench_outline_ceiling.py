"""How well can an outline drawn from a coarse patch grid fit the true masks, with and without the hybrid's guided
filter? No model: each test defect's true mask (at the working size) is averaged onto a stride-S grid (optionally
also over 3 x 3 neighbours, as PatchCore's patch features are), upsampled bilinearly and cut at the best of a few
levels; prints mean IoU over the defect images. Usage:

  .venv/bin/python scripts/bench_outline_ceiling.py --data ../shared/datasets/magnetic_tile --size 320
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.hybrid import guided_filter  # noqa: E402

CUTS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def load(data: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = [], []
    for path in sorted((data / "test").glob("*/*")):
        if path.parent.name == "good":
            continue
        truths = sorted((data / "ground_truth" / path.parent.name).glob(f"{path.stem}*"))
        if not truths:
            continue
        mask = np.asarray(Image.open(truths[0]).convert("L").resize((size, size), Image.NEAREST)) > 127
        if mask.any():
            grey = Image.open(path).convert("L").resize((size, size), Image.BILINEAR)
            images.append(np.asarray(grey, np.float32) / 255)
            masks.append(mask)
    grey = torch.tensor(np.stack(images))[:, None]
    grey = (grey - grey.mean((2, 3), keepdim=True)) / grey.std((2, 3), keepdim=True).clamp_min(0.02)
    return grey, torch.tensor(np.stack(masks))[:, None]


def best_iou(probability: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    results = []
    for cut in CUTS:
        found = probability >= cut
        union = (found | truth).sum((1, 2, 3)).clamp_min(1)
        results.append((float(((found & truth).sum((1, 2, 3)) / union).mean()), cut))
    return max(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args()
    guide, truth = load(args.data, args.size)
    print(f"{len(truth)} defect images at {args.size} px")
    for stride, pooled in ((8, True), (8, False), (4, False)):
        grid = F.avg_pool2d(truth.float(), stride)
        if pooled:
            grid = F.avg_pool2d(grid, 3, stride=1, padding=1, count_include_pad=False)
        up = F.interpolate(grid, size=(args.size, args.size), mode="bilinear", align_corners=False)
        row = [f"grid {best_iou(up, truth)[0]:.3f}"]
        for radius in (4, 8):
            row.append(f"guided r{radius} {best_iou(guided_filter(guide, up, radius, 0.01), truth)[0]:.3f}")
        print(f"stride {stride}{' + 3x3 pooling' if pooled else ''}: mean IoU " + ", ".join(row))


if __name__ == "__main__":
    main()
