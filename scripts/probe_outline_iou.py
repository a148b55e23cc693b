"""Where the hybrid's outline IoU is lost, per image: `python -m ml bench ARGS` (`--model compare` among them) as
scripts/bench_hybrid_fine.py runs it (every hybrid with `fine_outline` on, the head's logits computed once per
image), and for the fitted hybrid, per defective test (and validation) image: its mask IoU, the defect's size, the
head's highest defect probability on the image and inside the defect, the highest probability inside the defect of
the map the outline is cut from, and the IoU with only the outline's regions that touch the defect (every false
alarm elsewhere on the image dropped). Summarised over all images and per defect type: how many images get IoU 0 or
< 0.1 (the "missed"), the mean IoU over the rest, and the mean IoU if every missed image were drawn perfectly (IoU 1).
A missed image whose map stays below the cut inside the defect is a miss of the head (detection); one where it
reaches the cut is lost to the drawing (an outline too wide, or false alarms elsewhere).

With --dice, the fine branch is also retrained twice from the same head with the same crops (a fresh
np.random.default_rng(seed) each, as bench_hybrid_fine's --also does): as configured, and with `fine_dice`
flipped, each with its cut rechosen on the drawn training outlines and scored on test and validation the same way.
With --dice-seeds 1,2,3, per offset a pair of retrainings with Dice off and on from the same crops and the same
starting weights (np.random.default_rng and torch.manual_seed at seed + offset), mean IoU only (the outline does not
move the anomaly map or the image score).

  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python scripts/probe_outline_iou.py \
      --data ../shared/datasets/magnetic_tile --model compare --seed 0 --train-limit 150 --draws 1 \
      --probe-json /tmp/h20d/probe.json [--dice]
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ml.bench  # noqa: E402
import ml.compare_bench  # noqa: E402
import ml.hybrid  # noqa: E402
from ml.__main__ import main  # noqa: E402
from ml.hybrid import _resize_nearest, defect_log_probability  # noqa: E402
from ml.images import resize_image  # noqa: E402
from ml.segmentation_scores import mask_iou  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_hybrid_fine", ROOT / "scripts" / "bench_hybrid_fine.py")
fine_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fine_bench)

MISSED = 0.1  # IoU below this counts as a missed image
KEYS = ("image_auroc", "aupro", "mean_iou")
OPTIONS = {"json": None, "dice": False}
RESULTS: dict = {}


@torch.no_grad()
def per_image(model, samples) -> list[dict]:
    """One record per defective image of `samples` (model._head_logits cached by fine_bench)."""
    size = model.config.image_size
    kinds = samples.kinds
    records = []
    for start in range(0, len(samples), 8):
        indices = [i for i in range(start, min(start + 8, len(samples))) if kinds[i] != "good"]
        batch = [samples[i] for i in indices]
        batch = [(i, s) for i, s in zip(indices, batch, strict=True) if s.mask is not None and s.mask.any()]
        if not batch:
            continue
        images = [s.image for _, s in batch]
        predictions = model.predict(images)
        logits = model._head_logits(images)
        head = defect_log_probability(logits).exp()  # N x h x w, the patch grid
        working = [resize_image(image, (size, size)) for image in images]
        outline = model._defect_maps(logits, working, outline=True)  # N x S x S, the map the outline is cut from
        head_up = F.interpolate(head[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        for k, ((index, sample), prediction) in enumerate(zip(batch, predictions, strict=True)):
            truth = sample.mask.astype(bool)
            small = _resize_nearest(truth, (size, size)).astype(bool)
            if not small.any():  # a defect smaller than a working-size pixel: take the nearest one
                ys, xs = np.nonzero(truth)
                small[int(ys.mean() * size / truth.shape[0]), int(xs.mean() * size / truth.shape[1])] = True
            inside = torch.from_numpy(small)
            # The outline's regions that touch the defect, and the rest (false alarms elsewhere on the image).
            regions, _ = ndimage.label(prediction.mask)
            touching = np.isin(regions, np.unique(regions[truth & prediction.mask])) & prediction.mask
            records.append(
                {
                    "index": index,
                    "kind": kinds[index],
                    "iou": float(mask_iou(truth, prediction.mask)),
                    "area_share": float(truth.mean()),
                    "area_px_320": float(truth.mean() * 320 * 320),  # the defect's area at the 320 px working size
                    "predicted_share": float(prediction.mask.mean()),
                    "touching_share": float(touching.mean()),  # of the image: outline regions touching the defect
                    "iou_touching_only": float(mask_iou(truth, touching)),  # with every false alarm elsewhere dropped
                    "score": float(prediction.score),
                    "head_max": float(head[k].max()),
                    "head_max_in_defect": float(head_up[k][inside].max()),
                    "outline_max_in_defect": float(outline[k][inside].max()),
                    "outline_max": float(outline[k].max()),
                }
            )
    return records


def summarise(records: list[dict], cut: float) -> dict:
    def one(rows: list[dict]) -> dict:
        if not rows:
            return {"n": 0}
        iou = np.array([r["iou"] for r in rows])
        missed = iou < MISSED
        head_missed = [r for r, m in zip(rows, missed, strict=True) if m and r["outline_max_in_defect"] < cut]
        return {
            "n": len(rows),
            "mean_iou": float(iou.mean()),
            "n_iou0": int((iou == 0).sum()),
            "n_missed": int(missed.sum()),
            "n_missed_below_cut_inside": len(head_missed),  # the outline map never reaches the cut in the defect
            "n_missed_head_below_half": sum(
                1 for r, m in zip(rows, missed, strict=True) if m and r["head_max_in_defect"] < 0.5
            ),
            "mean_iou_rest": float(iou[~missed].mean()) if (~missed).any() else None,
            "ceiling_missed_perfect": float(np.where(missed, 1.0, iou).mean()),
            "mean_iou_false_alarms_dropped": float(np.mean([r["iou_touching_only"] for r in rows])),
            "median_area_px_missed": float(np.median([r["area_px_320"] for r in rows if r["iou"] < MISSED]))
            if missed.any()
            else None,
            "median_area_px_rest": float(np.median([r["area_px_320"] for r in rows if r["iou"] >= MISSED]))
            if (~missed).any()
            else None,
            "median_head_max_missed": float(np.median([r["head_max"] for r in rows if r["iou"] < MISSED]))
            if missed.any()
            else None,
            "median_head_max_in_defect_missed": float(
                np.median([r["head_max_in_defect"] for r in rows if r["iou"] < MISSED])
            )
            if missed.any()
            else None,
            "median_head_max_in_defect_rest": float(
                np.median([r["head_max_in_defect"] for r in rows if r["iou"] >= MISSED])
            )
            if (~missed).any()
            else None,
        }

    kinds = sorted({r["kind"] for r in records})
    return {"all": one(records), **{kind: one([r for r in records if r["kind"] == kind]) for kind in kinds}}


def _print_summary(name: str, summary: dict) -> None:
    print(f"--- {name}", file=sys.stderr)
    for kind, s in summary.items():
        if not s.get("n"):
            continue
        figures = "  ".join(
            f"{key} {round(value, 4) if isinstance(value, float) else value}" for key, value in s.items()
        )
        print(f"  {kind}: {figures}", file=sys.stderr, flush=True)


def _probe(model, test, name: str) -> dict:
    validation = fine_bench.SEEN.get("validation")
    cut = model.config.mask_threshold
    out = {"cut": cut}
    for part, samples in (("test", test), ("validation", validation)):
        if samples is None:
            continue
        records = per_image(model, samples)
        out[part] = {"summary": summarise(records, cut), "images": records}
        _print_summary(f"{name}, {part} (cut {cut})", out[part]["summary"])
    return out


def evaluate_with_probe(model, train, test, options, **kwargs) -> dict:
    if getattr(model, "family", "") != "hybrid" or getattr(model, "fine", None) is None:
        return fine_bench.evaluate_fitted(model, train, test, options, **kwargs)
    report = fine_bench.evaluate_fitted(model, train, test, options, **kwargs)  # as fitted, timed without any cache
    fine_bench._cached_logits(model)
    config = model.config
    RESULTS["as fitted"] = {key: report.get(key) for key in KEYS} | fine_bench._validation_figures(model)
    RESULTS["as fitted"] |= _probe(model, test, "as fitted")
    if OPTIONS["dice"]:
        saved = (getattr(config, "fine_dice", False), config.mask_threshold, model.fine)
        try:
            for dice in (saved[0], not saved[0]):
                config.fine_dice = dice
                started = time.process_time()
                model._train_fine(*model._fine_args, np.random.default_rng(config.seed), ml.hybrid.no_progress)
                cpu = time.process_time() - started
                config.mask_threshold = model._choose_mask_threshold(*model._drawn_rows)
                training_overlap = model.summary.history[-1].get("training_overlap")
                values = fine_bench.evaluate_fitted(model, train, test, options, **kwargs)
                name = f"retrained, fine_dice {dice}"
                RESULTS[name] = {key: values.get(key) for key in KEYS} | fine_bench._validation_figures(model)
                RESULTS[name] |= {"fine_cpu_s": cpu, "training_overlap": training_overlap}
                RESULTS[name] |= _probe(model, test, name)
        finally:
            config.fine_dice, config.mask_threshold, model.fine = saved
    for offset in OPTIONS["dice_seeds"]:  # paired retrainings: the same crops and starting weights, Dice off and on
        saved = (config.fine_dice, config.mask_threshold, model.fine)
        try:
            for dice in (False, True):
                config.fine_dice = dice
                torch.manual_seed(config.seed + offset)
                rng = np.random.default_rng(config.seed + offset)
                model._train_fine(*model._fine_args, rng, ml.hybrid.no_progress)
                config.mask_threshold = model._choose_mask_threshold(*model._drawn_rows)
                name = f"retrained (seed offset {offset}), fine_dice {dice}"
                RESULTS[name] = {"training_overlap": model.summary.history[-1].get("training_overlap")}
                RESULTS[name] |= _probe(model, test, name)
                for part in ("test", "validation"):
                    if part in RESULTS[name]:
                        RESULTS[name][f"{part}_mean_iou"] = RESULTS[name][part]["summary"]["all"]["mean_iou"]
        finally:
            config.fine_dice, config.mask_threshold, model.fine = saved
    for name, values in RESULTS.items():
        figures = {k: v for k, v in values.items() if k not in ("test", "validation")}
        print(f"hybrid {name}: {figures}", file=sys.stderr, flush=True)
    if OPTIONS["json"]:
        Path(OPTIONS["json"]).write_text(json.dumps(RESULTS, indent=1))
    return report


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--probe-json" in args:
        at = args.index("--probe-json")
        OPTIONS["json"] = args[at + 1]
        del args[at : at + 2]
    OPTIONS["dice_seeds"] = []
    if "--dice-seeds" in args:
        at = args.index("--dice-seeds")
        OPTIONS["dice_seeds"] = [int(v) for v in args[at + 1].split(",")]
        del args[at : at + 2]
    if "--dice" in args:
        OPTIONS["dice"] = True
        args.remove("--dice")
    fine_bench._fine_by_default()
    ml.bench.evaluate_fitted = evaluate_with_probe
    ml.compare_bench.evaluate_fitted = evaluate_with_probe
    sys.exit(main(["bench", *args]))
