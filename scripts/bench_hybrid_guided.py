"""The hybrid's guided-filter outline, with and without, from one fit: `python -m ml bench ARGS` (any model the bench
runs, `--model compare` among them) with every hybrid built with `guided_outline` on, and each fitted hybrid also
evaluated without it (the patch grid's map upsampled, cut where it best matched the drawn outlines: the hybrid as it
was) and, with --also R:EPS,..., at other filter settings (each cut again on the drawn outlines). The filter only
redraws the map, so the head, the image scores and image AUROC are the same fit's in every row. Prints every row
and adds `guided_variants` to the hybrid's report in `--json`. Usage:

  OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench_hybrid_guided.py \
      --data ../shared/datasets/magnetic_tile --model compare --train-limit 150 --draws 1 --json mt.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ml.bench  # noqa: E402
import ml.compare_bench  # noqa: E402
import ml.hybrid  # noqa: E402
from ml.__main__ import main  # noqa: E402

KEYS = ("image_auroc", "image_ap", "pixel_auroc", "aupro", "mean_iou", "precision_at_recall1")
evaluate_fitted = ml.bench.evaluate_fitted
ALSO: list[tuple[int, float]] = []


def _print(name: str, values: dict) -> None:
    figures = "  ".join(f"{key} {None if values.get(key) is None else round(values[key], 4)}" for key in KEYS)
    print(f"hybrid {name}: {figures}", file=sys.stderr, flush=True)


def evaluate_guided_variants(model, train, test, options, **kwargs) -> dict:
    report = evaluate_fitted(model, train, test, options, **kwargs)
    config = getattr(model, "config", None)
    if not getattr(config, "guided_outline", False):
        return report
    saved = (config.guide_radius, config.guide_eps, config.mask_threshold)
    variants = {f"guided r{saved[0]} eps{saved[1]}": {key: report.get(key) for key in KEYS} | {"cut": saved[2]}}
    try:
        config.guided_outline, config.mask_threshold = False, model.coarse_mask_threshold
        without = evaluate_fitted(model, train, test, options, **kwargs)
        variants["without"] = {key: without.get(key) for key in KEYS} | {"cut": config.mask_threshold}
        config.guided_outline = True
        for radius, eps in ALSO:
            config.guide_radius, config.guide_eps = radius, eps
            config.mask_threshold = model._choose_mask_threshold(*model._drawn_rows)
            other = evaluate_fitted(model, train, test, options, **kwargs)
            variants[f"guided r{radius} eps{eps}"] = {key: other.get(key) for key in KEYS} | {
                "cut": config.mask_threshold
            }
    finally:
        config.guided_outline = True
        config.guide_radius, config.guide_eps, config.mask_threshold = saved
    for name, values in variants.items():
        _print(f"{name} (cut {values['cut']})", values)
    report["guided_variants"] = variants
    return report


def _guided_by_default() -> None:
    """Every hybrid built from here on has guided_outline on, and keeps its drawn rows for re-cutting."""
    original_init = ml.hybrid.HybridSegmenter.__init__
    original_choose = ml.hybrid.HybridSegmenter._choose_mask_threshold

    def init(self, *args, **config):
        config.setdefault("guided_outline", True)
        original_init(self, *args, **config)

    def choose(self, x, prior, images, drawn):
        self._drawn_rows = (x, prior, images, drawn)
        return original_choose(self, x, prior, images, drawn)

    ml.hybrid.HybridSegmenter.__init__ = init
    ml.hybrid.HybridSegmenter._choose_mask_threshold = choose


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--also" in args:
        at = args.index("--also")
        ALSO = [(int(r), float(e)) for r, e in (item.split(":") for item in args[at + 1].split(","))]
        del args[at : at + 2]
    _guided_by_default()
    ml.bench.evaluate_fitted = evaluate_guided_variants
    ml.compare_bench.evaluate_fitted = evaluate_guided_variants
    sys.exit(main(["bench", *args]))
