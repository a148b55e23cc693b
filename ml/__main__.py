"""Command line: `python -m ml bench --data DIR --model patchcore` (see ml/bench.py), or `--mnist DIR`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ml.registry import FAMILIES


def _parse_value(text: str):
    """`--set` values are JSON when they parse (numbers, lists, null), else plain strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="fit a family on an MVTec-layout folder and report metrics and cost")
    source = bench.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="MVTec-layout folder (train/good, test/*, ground_truth/*)")
    source.add_argument("--mnist", type=Path, help="MNIST IDX folder: autoencoder ones-versus-nines bench")
    bench.add_argument("--model", choices=[*sorted(FAMILIES), "compare"], default="patchcore")
    bench.add_argument("--train-limit", type=int, default=None, help="use a seeded subset of N training images")
    bench.add_argument("--image-size", type=int, default=None, help="side in pixels the model works at")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument(
        "--draws", type=int, default=None, help="seeded draws (seed, seed+1, ...); default 5 with --train-limit, else 1"
    )
    bench.add_argument("--json", type=Path, default=None, help="write the full report here")
    bench.add_argument("--supervised-fraction", type=float, default=0.5, help="unet: share of defects to train on")
    bench.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra model config, e.g. layers=[1,2,3]"
    )
    bench.add_argument("--device", default=None, help="where the model computes: auto, cpu, cuda or cuda:N")
    bench.add_argument(
        "--boxed-defects", type=int, default=None, help="compare: train from N defects given boxes (seeded, all types)"
    )
    bench.add_argument("--variant", default="original", help="compare: original, shift, lighting or clutter images")
    bench.add_argument(
        "--order",
        choices=("name", "content"),
        default="name",
        help="compare: images in file-name order, or in the app's (training goods then defects, each by SHA-256)",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bench.add_argument(
        "--robustness", action="store_true", help="how the model holds up under perturbations (ml/robustness.py)"
    )
    bench.add_argument(
        "--perturbations", default=None, metavar="NAMES", help="with --robustness: comma-separated, e.g. shift,clutter"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights are bundled; never reach for the network
    args = build_parser().parse_args(argv)
    if args.mnist is not None:
        from ml.mnist import run_bench as run_mnist_bench

        report = run_mnist_bench(args.mnist, seed=args.seed, json_out=args.json)
        print(json.dumps(report, indent=2, default=float))
        return 0

    from ml.bench import BenchOptions, format_table, run_bench, write_json
    from ml.bench_draws import draws_for, format_spread

    config = {}
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = _parse_value(value)
    if args.device is not None:
        config["device"] = args.device
    options = BenchOptions(
        data=args.data,
        model=args.model,
        train_limit=args.train_limit,
        image_size=args.image_size,
        seed=args.seed,
        supervised_fraction=args.supervised_fraction,
        config=config,
        verbose=not args.quiet,
        draws=draws_for(args.train_limit, args.draws),
        boxed_defects=args.boxed_defects,
        variant=args.variant,
        order=args.order,
    )
    if args.robustness:  # issue 19: the robustness table instead of the accuracy one
        from ml.robustness import format_robustness_table
        from ml.robustness_bench import run_robustness_bench

        if args.model == "compare":
            build_parser().error("--robustness measures one family: choose it with --model")
        names = args.perturbations.split(",") if args.perturbations else None
        summary, robustness = run_robustness_bench(options, perturbations=names)
        print(format_robustness_table(robustness))
        if args.json is not None:
            write_json(summary, args.json)
        return 0
    report = run_bench(options)
    print(format_table(report))
    if "spread" in report:  # several draws: the table holds their means
        print(format_spread(report))
    if "leaderboard" in report:  # --model compare: the candidates on validation, then on test
        print(report["leaderboard"], report["test_leaderboard"], sep="\n")
    if args.json is not None:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
