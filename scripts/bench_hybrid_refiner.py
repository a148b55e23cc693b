"""The hybrid's MaskRefiner, before and after from one fit: `python -m ml bench ARGS` (any model the bench runs,
`--model compare` among them), and for every hybrid fitted with a refiner, the same fit also evaluated without it
(the patch grid's map alone, cut where it best matched the drawn outlines: what the hybrid gave before the refiner).
The head is trained before the refiner, so "without" is exactly the model the refiner starts from. Prints both
and adds `without_refiner` to the hybrid's report in `--json`. Usage:

  OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench_hybrid_refiner.py \
      --data ../shared/datasets/magnetic_tile --model compare --set refine_masks=true --json mt.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ml.bench  # noqa: E402
import ml.compare_bench  # noqa: E402
from ml.__main__ import main  # noqa: E402

KEYS = ("image_auroc", "image_ap", "pixel_auroc", "aupro", "mean_iou", "precision_at_recall1")
evaluate_fitted = ml.bench.evaluate_fitted


def evaluate_with_and_without_refiner(model, train, test, options, **kwargs) -> dict:
    report = evaluate_fitted(model, train, test, options, **kwargs)
    refiner = getattr(model, "refiner", None)
    if refiner is None:
        return report
    threshold = model.config.mask_threshold
    model.refiner, model.config.mask_threshold = None, model.coarse_mask_threshold
    try:
        without = evaluate_fitted(model, train, test, options, **kwargs)
    finally:
        model.refiner, model.config.mask_threshold = refiner, threshold
    report["without_refiner"] = {key: without.get(key) for key in KEYS} | {
        "mask_threshold": model.coarse_mask_threshold
    }
    for name, values, cut in (
        ("without", report["without_refiner"], model.coarse_mask_threshold),
        ("with", report, threshold),
    ):
        figures = "  ".join(
            f"{key} {values.get(key) if values.get(key) is None else round(values[key], 4)}" for key in KEYS
        )
        print(f"hybrid {name} refiner (cut {cut}): {figures}", file=sys.stderr, flush=True)
    return report


if __name__ == "__main__":
    ml.bench.evaluate_fitted = evaluate_with_and_without_refiner
    ml.compare_bench.evaluate_fitted = evaluate_with_and_without_refiner
    sys.exit(main(["bench", *sys.argv[1:]]))
