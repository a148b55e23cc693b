"""The app's one-click figure on MVTec AD screw (issue 20): the dataset zipped as a person would upload it, taken in
through the upload service, one automatic training request with nothing set (the Train button), run to its end by
the worker's own code (in this process), and the active version's test metrics printed.

    .venv/bin/python scripts/bench_app_screw.py --data ../shared/datasets/mvtec_screw [--json out.json]

Everything lives in a throwaway Kensa (scripts/benchlib.sandbox_start: SQLite, local media, its own Redis).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from benchlib import automatic_run, machine_line, sandbox_start  # noqa: E402

REPORTED = ("image_auroc", "image_ap", "f1", "precision", "recall", "precision_at_recall1", "pixel_auroc", "aupro")


def zip_dataset(root: Path, target: Path) -> Path:
    """The MVTec folder as one zip (stored, not compressed: PNGs do not shrink), paths under screw/."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() == ".png":
                archive.write(path, f"screw/{path.relative_to(root).as_posix()}")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/mvtec_screw"))
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    sandbox = sandbox_start("t20a_bench_app_screw_")
    try:
        from django.contrib.auth.models import User

        from webapp.images.intake.ingest import archive_ingest
        from webapp.projects.services import project_create
        from webapp.training import services
        from webapp.training.models import ModelVersion

        report: dict = {"machine": machine_line()}
        owner = User.objects.create_user("bench", password="bench-password-1")
        project = project_create(name="Screw", owner=owner)
        archive = zip_dataset(args.data.resolve(), sandbox.scratch / "screw.zip")
        started = time.perf_counter()
        with archive.open("rb") as handle:
            intake = archive_ingest(project=project, user=owner, fileobj=handle, archive_name="screw.zip")
        report["upload_seconds"] = round(time.perf_counter() - started, 1)
        report["uploaded"] = sum(1 for r in intake.results if r.status == "added")
        plan = services.training_plan(project=project)
        report["splits"] = {row.split: {"good": row.good, "defect": row.defect} for row in plan.splits}
        # The click: an automatic request, nothing set.
        run, timings = automatic_run(project, owner)
        report["run_family"], report["run_reason"] = run.family, run.reason
        report["click_to_metrics_seconds"], report["train_cpu_seconds"] = timings["seconds"], timings["cpu_seconds"]
        report["load_at_click"], report["load_at_end"] = timings["load_at_click"], timings["load_at_end"]
        report["status"], report["error"] = run.status, run.error
        version = ModelVersion.objects.filter(project=project, is_active=True).first()
        if version is not None:
            metrics = version.metrics
            report["active_version"] = {"number": version.number, "family": version.family}
            report.update({key: metrics.get(key) for key in REPORTED})
            report["n_fit"], report["n_validation"], report["n_test"] = (
                metrics.get("n_fit"),
                metrics.get("n_validation"),
                metrics.get("n_test"),
            )
            report["note"] = metrics.get("note", "")
            report["leaderboard"] = metrics.get("comparison")
            report["threshold"] = version.threshold
            report["self_calibration"] = metrics.get("self_calibration")
            report["chosen_settings"] = metrics.get("chosen_settings")  # what PatchCore chose from the data
            # Where the test scores sit against the training images' own (leave-own-patches-out) score quantiles.
            rows = version.predictions.values_list("raw_score", "image__label")
            good = np.array([score for score, label in rows if label == "good"])
            bad = np.array([score for score, label in rows if label == "defect"])
            cuts = {"threshold": version.threshold, **(metrics.get("self_calibration") or {})}
            report["share_above"] = {
                name: {"good": float((good >= cut).mean()), "defect": float((bad >= cut).mean())}
                for name, cut in cuts.items()
                if name != "n"
            }
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return 0 if run.status == "succeeded" else 1
    finally:
        sandbox.close()


if __name__ == "__main__":
    raise SystemExit(main())
