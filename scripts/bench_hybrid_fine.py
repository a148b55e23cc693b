"""The hybrid's stride-4 outline (`fine_outline`) against its stride-8 one, from one fit: `python -m ml bench ARGS`
(any model the bench runs, `--model compare` among them) with every hybrid built with `fine_outline` on, and each
fitted hybrid also evaluated as the outline was drawn before (the patch grid upsampled, with and without the guided
filter), with the fine branch's map as the anomaly map too (the fitted model keeps the stride-8 map and cuts only
the outline from the fine branch's), and with --also EPOCHS:HIDDEN:JITTER,... with other fine branches trained from
the same head (JITTER 1: `fine_jitter`, the coarse map jittered in training). Every outline's cut is chosen on the
drawn training outlines, as fit does. The outline only redraws the map, so the head, the image scores and image
AUROC are the same fit's in every row. The head's logits are computed once per image and reused by every row (the
nearest-neighbour search is most of a prediction's cost). Each row is also scored on the comparison's validation
images (mean IoU, AU-PRO), which is where a default should be chosen. Prints every row and adds `fine_variants` to
the hybrid's report in `--json`. Usage:

  OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench_hybrid_fine.py \
      --data ../shared/datasets/magnetic_tile --model compare --train-limit 150 --draws 1 \
      --also 60:16:0,40:32:0,20:16:1 --json mt.json
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ml.bench  # noqa: E402
import ml.compare_bench  # noqa: E402
import ml.hybrid  # noqa: E402
from ml.__main__ import main  # noqa: E402

KEYS = ("image_auroc", "image_ap", "pixel_auroc", "aupro", "mean_iou", "precision_at_recall1")
evaluate_fitted = ml.bench.evaluate_fitted
validation_split = ml.compare_bench.validation_split
SEEN: dict = {}
ALSO: list[tuple[int, int, bool]] = []  # --also EPOCHS:HIDDEN:JITTER,...: more fine branches from the same head


def _print(name: str, values: dict) -> None:
    figures = "  ".join(f"{key} {None if values.get(key) is None else round(values[key], 4)}" for key in KEYS)
    print(f"hybrid {name}: {figures}", file=sys.stderr, flush=True)


def _cached_logits(model):
    """model._head_logits memoised per image (by its bytes): every outline row reuses the same head output."""
    cache, compute = {}, model._head_logits

    def logits(images):
        keys = [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]
        missing = [k for k, key in enumerate(keys) if key not in cache]
        if missing:
            fresh = compute([images[k] for k in missing])
            for k, row in zip(missing, fresh, strict=True):
                cache[keys[k]] = row
        return torch.stack([cache[key] for key in keys])

    model._head_logits = logits


def _validation_figures(model) -> dict:
    validation = SEEN.get("validation")
    if validation is None:
        return {}
    tested = ml.bench.predict_test_set(model, validation)
    return {
        "validation_mean_iou": float(np.mean(tested.defect_ious)) if tested.defect_ious else None,
        "validation_aupro": tested.pixels.aupro() if tested.pixels.n_regions else None,
    }


def evaluate_fine_variants(model, train, test, options, **kwargs) -> dict:
    config = getattr(model, "config", None)
    if getattr(model, "family", "") != "hybrid" or getattr(model, "fine", None) is None:
        return evaluate_fitted(model, train, test, options, **kwargs)
    report = evaluate_fitted(model, train, test, options, **kwargs)  # as fitted, timed without any cache
    _cached_logits(model)
    saved = (config.fine_outline, config.guided_outline, config.mask_threshold, model.fine)
    saved_fine = (config.fine_epochs, config.fine_hidden_channels, config.fine_jitter)
    rows = model._drawn_rows
    fitted = "stride-4 outline + guided, stride-8 map (as fitted)"
    variants = {fitted: {key: report.get(key) for key in KEYS} | {"cut": saved[2]} | _validation_figures(model)}

    def row(name: str, fine: bool, guided: bool, cut: float | None = None) -> None:
        config.fine_outline, config.guided_outline = fine, guided
        config.mask_threshold = cut if cut is not None else model._choose_mask_threshold(*rows)
        values = evaluate_fitted(model, train, test, options, **kwargs)
        variants[name] = {key: values.get(key) for key in KEYS} | {"cut": config.mask_threshold}
        variants[name] |= _validation_figures(model)

    def fine_map(logits, images, *, outline=False):  # the map drawn by the fine branch too
        return type(model)._defect_maps(model, logits, images, outline=True)

    try:
        row("stride-8 grid", False, False, model.coarse_mask_threshold)
        row("stride-8 + guided (before)", False, True)
        row("stride-4 outline, no guided filter", True, False)
        model._defect_maps = fine_map
        row("stride-4 outline + guided, stride-4 map", True, True)
        del model._defect_maps
        for epochs, hidden, jitter in ALSO:
            config.fine_epochs, config.fine_hidden_channels, config.fine_jitter = epochs, hidden, jitter
            started = time.process_time()
            model._train_fine(*model._fine_args, np.random.default_rng(config.seed), ml.hybrid.no_progress)
            cpu = time.process_time() - started
            name = f"stride-4 outline + guided, {epochs} epochs, {hidden} wide{', jittered' if jitter else ''}"
            row(name, True, True)
            variants[name]["fine_cpu_s"] = cpu
    finally:
        config.fine_epochs, config.fine_hidden_channels, config.fine_jitter = saved_fine
        config.fine_outline, config.guided_outline, config.mask_threshold, model.fine = saved
    variants[fitted]["fine_history"] = [
        h for h in model.summary.history if "fine_seconds" in h or "mask_threshold" in h
    ]
    for name, values in variants.items():
        _print(f"{name} (cut {values['cut']}, validation IoU {values.get('validation_mean_iou')})", values)
    report["fine_variants"] = variants
    return report


def _fine_by_default() -> None:
    """Every hybrid built from here on has fine_outline on, and keeps its drawn rows and fine-branch inputs."""
    original_init = ml.hybrid.HybridSegmenter.__init__
    original_choose = ml.hybrid.HybridSegmenter._choose_mask_threshold
    original_train_fine = ml.hybrid.HybridSegmenter._train_fine

    def init(self, *args, **config):
        config.setdefault("fine_outline", True)
        original_init(self, *args, **config)

    def choose(self, x, prior, images, drawn):
        self._drawn_rows = (x.clone(), prior.clone(), images, drawn)  # clones: a view would keep all of x alive
        return original_choose(self, x, prior, images, drawn)

    def train_fine(self, coarse, outlines, rng, progress):
        self._fine_args = (coarse, outlines)
        return original_train_fine(self, coarse, outlines, rng, progress)

    def split(pool, *, seed):
        fit, validation = validation_split(pool, seed=seed)
        SEEN["validation"] = validation
        return fit, validation

    ml.hybrid.HybridSegmenter.__init__ = init
    ml.hybrid.HybridSegmenter._choose_mask_threshold = choose
    ml.hybrid.HybridSegmenter._train_fine = train_fine
    ml.compare_bench.validation_split = split


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--also" in args:
        at = args.index("--also")
        ALSO = [(int(e), int(h), j == "1") for e, h, j in (item.split(":") for item in args[at + 1].split(","))]
        del args[at : at + 2]
    _fine_by_default()
    ml.bench.evaluate_fitted = evaluate_fine_variants
    ml.compare_bench.evaluate_fitted = evaluate_fine_variants
    sys.exit(main(["bench", *args]))
