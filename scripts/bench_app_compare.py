"""The app and `python -m ml bench --model compare` on the same data (issue 20): do they train the same candidates,
pick the same winner, and report the same figures?

Both sides get one split, made once by the bench's own functions (ml.data.supervised_split, then
ml.compare_bench.validation_split, seeded): the good training images plus half of each defect type's images with
their outlines for training, a third of those defects and a tenth of the good images for validation, every other
image for testing. The bench side runs `ml bench --model compare` in this process (or reads a report it wrote,
--bench-json). The app side zips exactly those images in the MVTec layout, takes the zip in through the upload
service, moves each image to its split as a person would on the Images page, makes one automatic training request
(the Train button) and runs it to its end with the worker's own code, in a throwaway Kensa
(scripts/benchlib.sandbox_start: SQLite, local media, its own Redis). Then one table, candidate by candidate.

    .venv/bin/python scripts/bench_app_compare.py --data ../shared/datasets/magnetic_tile [--train-limit 150] \
        [--seed 0] [--bench-json mt.json] [--budget-minutes 60] [--json out.json]

By default the bench reads the images in the app's order (`--order content`: training goods then outlined defects,
each by SHA-256; validation and test by SHA-256), so both sides should fit the same models; with `--order name`
(ml bench's default, file names) PatchCore's patch subsample and coreset, drawn per batch, differ, and the figures
agree only within a draw's spread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import automatic_run, machine_line, sandbox_start  # noqa: E402

from ml.bench import BenchOptions, cpu_seconds  # noqa: E402
from ml.compare_bench import run_compare_bench, validation_split  # noqa: E402
from ml.data import load_mvtec, supervised_split  # noqa: E402

COLUMNS = ("image_auroc", "image_ap", "aupro", "precision_at_recall1")


def bench_split(data: Path, *, train_limit: int | None, seed: int) -> dict[str, list]:
    """{split: [SampleRecord]}: the split `ml bench --model compare` makes for these arguments."""
    dataset = load_mvtec(data, train_limit=train_limit, seed=seed)
    pool, test = supervised_split(dataset, fraction=BenchOptions(data).supervised_fraction, seed=seed)
    fit, validation = validation_split(pool, seed=seed)
    return {"train": list(fit.records), "validation": list(validation.records), "test": list(test.records)}


def zip_records(root: Path, records: list, target: Path) -> Path:
    """The chosen images (and their masks) as one MVTec-layout zip under the dataset's folder name, stored, not
    compressed (PNG and JPEG do not shrink)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for record in records:
            for path in (record.image_path, record.mask_path):
                if path is not None:
                    archive.write(path, f"{root.name}/{path.relative_to(root).as_posix()}")
    return target


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_app(args, split: dict[str, list], report: dict) -> dict:
    """The app's side: upload, splits, one automatic request run to its end; returns its leaderboard rows with
    each candidate's test metrics."""
    sandbox = sandbox_start("t20c_bench_app_compare_")
    try:
        from django.contrib.auth.models import User
        from django.core.exceptions import ValidationError

        from webapp.images.bulk import images_split_change
        from webapp.images.intake.ingest import archive_ingest
        from webapp.images.models import Image
        from webapp.projects.services import project_create
        from webapp.training import services
        from webapp.training.models import ModelVersion

        owner = User.objects.create_user("bench", password="bench-password-1")
        project = project_create(name=args.data.name, owner=owner)
        records = [record for rows in split.values() for record in rows]
        archive = zip_records(args.data, records, sandbox.scratch / "data.zip")
        started = time.perf_counter()
        with archive.open("rb") as handle:
            intake = archive_ingest(project=project, user=owner, fileobj=handle, archive_name="data.zip")
        report["upload_seconds"] = round(time.perf_counter() - started, 1)
        report["uploaded"] = sum(1 for r in intake.results if r.status == "added")
        by_hash = dict(Image.objects.filter(project=project).values_list("sha256", "id"))
        hashes = {name: [sha256_of(record.image_path) for record in rows] for name, rows in split.items()}
        # The app keeps one image per content: a file also in another split would end in the last one named.
        seen: dict[str, set[str]] = {}
        for name, values in hashes.items():
            for value in values:
                seen.setdefault(value, set()).add(name)
        report["app_in_two_splits"] = sum(1 for names in seen.values() if len(names) > 1)
        moved, missing = {}, 0
        for name in split:
            ids = [by_hash.get(value) for value in hashes[name]]
            missing += sum(1 for i in ids if i is None)
            ids = [i for i in ids if i is not None]
            moved[name] = images_split_change(project=project, images=ids, split=name, user=owner).changed
        report["app_moved"], report["app_missing"] = moved, missing  # missing: files the upload refused
        plan = services.training_plan(project=project)
        report["app_splits"] = {row.split: {"good": row.good, "defect": row.defect} for row in plan.splits}
        try:
            run, timings = automatic_run(project, owner, budget_minutes=args.budget_minutes)
        except ValidationError as exc:  # what the Train page would say instead of training
            report["app_status"], report["app_error"] = "refused", " ".join(exc.messages)
            return {"rows": []}
        report["app_run_family"], report["app_run_reason"] = run.family, run.reason
        report["app_seconds"], report["app_cpu_seconds"] = timings["seconds"], timings["cpu_seconds"]
        report["load_at_click"], report["load_at_end"] = timings["load_at_click"], timings["load_at_end"]
        report["app_status"], report["app_error"] = run.status, run.error
        versions = {str(v.public_id): v for v in ModelVersion.objects.filter(project=project)}
        active = next((v for v in versions.values() if v.is_active), None)
        board = (active.metrics.get("comparison") if active else None) or {}
        rows = []
        for row in board.get("candidates", []):
            version = versions.get(row.get("version_id") or "")
            test = version.metrics if version else {}
            rows.append(
                {
                    "label": row["label"],
                    "winner": row["winner"],
                    "validation_ap": (row.get("validation") or {}).get("image_ap"),
                    "fit_seconds": row.get("fit_seconds"),
                    "error": row.get("error"),
                    **{key: test.get(key) for key in COLUMNS},
                    "mean_iou": weighted_class_iou(test.get("per_class") or {}),
                }
            )
        if not rows and active is not None:  # a plain run: one model, no leaderboard
            rows.append({"label": active.family, "winner": True, **{k: active.metrics.get(k) for k in COLUMNS}})
        report["app_rule"], report["app_why"] = board.get("rule"), board.get("why")
        return {"rows": rows}
    finally:
        sandbox.close()


def weighted_class_iou(per_class: dict) -> float | None:
    """The test defects' mean IoU over every class (each class's mean weighted by its images), None without it."""
    pairs = [(row["mean_iou"], row["n"]) for row in per_class.values() if row.get("mean_iou") is not None]
    total = sum(n for _, n in pairs)
    return sum(iou * n for iou, n in pairs) / total if total else None


def bench_rows(summary: dict) -> list[dict]:
    return [
        {
            "label": row["label"],
            "winner": row["label"] == summary["winner_label"],
            "validation_ap": (row.get("validation") or {}).get("image_ap"),
            "fit_seconds": row.get("fit_seconds"),
            "error": row.get("error"),
            "mean_iou": row.get("mean_iou"),
            **{key: row.get(key) for key in COLUMNS},
        }
        for row in summary["candidates"]
    ]


def side_by_side(bench: list[dict], app: list[dict]) -> str:
    """One line per candidate and side, the winner starred; the app's mean IoU is the per-class figures'
    weighted mean at its threshold, the bench's at the model's own cut."""
    keys = ("validation_ap", *COLUMNS, "mean_iou", "fit_seconds")
    lines = [f"  {'side':<6}{'candidate':<44}" + "".join(f"{k:>22}" for k in keys)]
    labels = list(dict.fromkeys([r["label"] for r in bench] + [r["label"] for r in app]))
    for label in labels:
        for side, rows in (("bench", bench), ("app", app)):
            row = next((r for r in rows if r["label"] == label), None)
            if row is None:
                lines.append(f"  {side:<6}{label:<44}  (not trained)")
                continue
            cells = "".join(f"{'n/a' if row.get(k) is None or row[k] != row[k] else f'{row[k]:.4f}':>22}" for k in keys)
            lines.append(f"{'*' if row['winner'] else ' '} {side:<6}{label:<44}{cells}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-minutes", type=int, default=60, help="the Train page's time budget")
    parser.add_argument(
        "--order",
        choices=("content", "name"),
        default="content",
        help="the bench's image order: the app's (content, the default) or file names (ml bench's default)",
    )
    parser.add_argument("--bench-json", type=Path, help="a report of `ml bench --model compare` with these arguments")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    args.data = args.data.resolve()
    report: dict = {"machine": machine_line(), "data": str(args.data), "seed": args.seed, "order": args.order}
    split = bench_split(args.data, train_limit=args.train_limit, seed=args.seed)
    report["split"] = {name: len(rows) for name, rows in split.items()}
    if args.bench_json:
        summary = json.loads(args.bench_json.read_text())
    else:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        options = BenchOptions(
            args.data, model="compare", train_limit=args.train_limit, seed=args.seed, order=args.order
        )
        summary = run_compare_bench(options)
        report["bench_seconds"] = round(time.perf_counter() - started, 1)
        report["bench_cpu_seconds"] = round(cpu_seconds() - cpu_started, 1)
    report["bench"] = bench_rows(summary)
    report["bench_winner"] = summary["winner_label"]
    if args.json:  # the bench's half survives an app side that fails
        args.json.write_text(json.dumps(report, indent=2))
    report["app"] = run_app(args, split, report)["rows"]
    report["app_winner"] = next((r["label"] for r in report["app"] if r["winner"]), None)
    report["same_winner"] = report["app_winner"] == report["bench_winner"]
    table = side_by_side(report["bench"], report["app"])
    print(json.dumps({k: v for k, v in report.items() if k not in ("bench", "app")}, indent=2))
    print(table)
    if args.json:
        args.json.write_text(json.dumps({**report, "table": table}, indent=2))
    return 0 if report.get("app_status") == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
