"""`python -m ml.segmentation_bench ...`: `python -m ml bench` plus `mean_iou` for families that predict masks.

Same arguments, same run and same report as the bench CLI (it wraps `ml.bench.run_bench`); the predicted masks of
the test images are kept on the side and compared with the true ones (`ml.segmentation_scores.mean_defect_iou`:
IoU per defect test image with a non-empty true mask, at the model's own mask threshold, averaged).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from ml import bench
from ml.data import load_mvtec, supervised_split
from ml.segmentation_scores import mean_defect_iou


def run_with_iou(options: bench.BenchOptions) -> dict:
    """`bench.run_bench(options)` with "mean_iou" and "n_iou_images" added (None when the model gives no masks)."""
    original_create = bench.create_model
    captured: list[np.ndarray | None] = []

    def create_recording_model(family: str, **config):
        model = original_create(family, **config)
        predict = model.predict

        def recording_predict(images: Sequence[np.ndarray], *, batch_size: int = 8):
            predictions = predict(images, batch_size=batch_size)
            captured.extend(p.mask for p in predictions)
            return predictions

        model.predict = recording_predict
        return model

    bench.create_model = create_recording_model
    try:
        report = bench.run_bench(options)
    finally:
        bench.create_model = original_create

    dataset = load_mvtec(options.data, train_limit=options.train_limit, seed=options.seed)
    test = dataset.test
    if options.model == "unet":
        _, test = supervised_split(dataset, fraction=options.supervised_fraction, seed=options.seed)
    predicted = captured[: len(test)]  # later predict calls are bench's timing repeats
    if all(mask is None for mask in predicted):
        report["mean_iou"], report["n_iou_images"] = None, 0
        return report
    truths = [test[i].mask for i in range(len(test))]
    report["mean_iou"] = mean_defect_iou(truths, predicted)
    report["n_iou_images"] = sum(1 for truth in truths if truth is not None and truth.any())
    report["iou_rule"] = "IoU of predicted vs true mask per defect test image with a non-empty mask, averaged"
    return report


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.__main__ import build_parser

    args = build_parser().parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    config = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    options = bench.BenchOptions(
        data=args.data,
        model=args.model,
        train_limit=args.train_limit,
        image_size=args.image_size,
        seed=args.seed,
        supervised_fraction=args.supervised_fraction,
        config=config,
        verbose=not args.quiet,
    )
    report = run_with_iou(options)
    print(bench.format_table(report))
    print(
        f"{'mean_iou':<28} {report['mean_iou'] if report['mean_iou'] is None else round(report['mean_iou'], 4)!s:>12}"
    )
    if args.json is not None:
        bench.write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
