#!/usr/bin/env python3
"""A week of API predictions at a steady rate under the retention settings, simulated: is disk use bounded?

A throwaway Kensa (benchlib sandbox: SQLite, local media in a temporary folder) with one project and one model
version holding a few test-split predictions. Simulated time advances in steps of the cleanup's beat interval
(KENSA_RETENTION_INTERVAL_S, 600 s); each step adds that step's API predictions (rows with their timestamps in the
step, and real files: an anomaly map and a mask PNG as the predict path encodes them, and a kept 256 px input PNG),
a share of them routed to review, then runs the real cleanup (predictions_cleanup) at the step's end. Disk use is
what the project's settings page shows (webapp/inference/disk_use.py), measured after every step.

A week at 25/s is 15 million predictions; `--scale` runs a fraction of the rate against the same fraction of the
count limits (age limits unchanged), so rows and bytes kept scale by exactly that fraction and are reported scaled
back up.

    .venv/bin/python scripts/bench_retention.py --rate 25 --days 7 --scale 0.001

Prints a table per simulated day and the bound the settings promise; exits 1 if disk use ever exceeded it.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import uuid
from datetime import timedelta

import benchlib
import numpy as np


def sample_files(seed: int = 0) -> dict[str, bytes]:
    """One prediction's files as the predict path writes them for a 256 px part (map, mask, kept input)."""
    from PIL import Image as PILImage

    from ml.synthetic import make_image
    from ml.thresholds import Calibration
    from webapp.images.services import annotation_mask_png
    from webapp.inference.predictions import anomaly_map_png

    part = make_image(seed, size=256, defect="scratch")
    rng = np.random.default_rng(seed)
    anomaly = rng.normal(0, 0.2, (256, 256)) + 2.0 * part.mask  # a noisy map with the defect standing out
    calibration = Calibration(threshold=1.0, scale=0.2)
    buffer = io.BytesIO()
    PILImage.fromarray(part.image).save(buffer, format="PNG")
    return {
        "map": anomaly_map_png(anomaly, calibration),
        "mask": annotation_mask_png(anomaly >= calibration.threshold),
        "input": buffer.getvalue(),
    }


def predictions_add(*, version, files: dict[str, bytes], count: int, start, step_s: float, review_every: int,
                    made: int):  # fmt: skip
    """`count` API predictions spread over the step from `start`; every `review_every`-th gets a review item."""
    from webapp.inference.models import Prediction, Purpose
    from webapp.review.models import Reason, ReviewItem
    from webapp.storage import stored_file_write

    base = f"{version.artifact_prefix}"
    rows = []
    for _ in range(count):
        key = uuid.uuid4().hex
        rows.append(
            Prediction(
                model_version=version,
                purpose=Purpose.API,
                raw_score=0.5,
                normalised_score=0.5,
                is_anomalous=False,
                anomaly_map=stored_file_write(f"{base}/predictions/api/{key}_map.png", files["map"]),
                predicted_mask=stored_file_write(f"{base}/predictions/api/{key}_mask.png", files["mask"]),
                input_file=stored_file_write(f"{base}/inputs/{key}.png", files["input"]),
                input_name=f"{key}.png",
            )
        )
    created = Prediction.objects.bulk_create(rows)
    for i, row in enumerate(created):  # auto_now_add stamps "now": the simulated time is set afterwards
        Prediction.objects.filter(id=row.id).update(created_at=start + timedelta(seconds=step_s * i / count))
        if review_every and (made + i + 1) % review_every == 0:
            ReviewItem.objects.create(project=version.project, prediction=row, reason=Reason.BAND)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=25, help="API predictions per second")
    parser.add_argument("--days", type=float, default=7, help="simulated days")
    parser.add_argument("--scale", type=float, default=0.001, help="fraction of the rate and count limits simulated")
    parser.add_argument("--review-share", type=float, default=0.001, help="share of predictions routed to review")
    args = parser.parse_args()

    with benchlib.sandbox_start("kensa-bench-retention-"):
        return simulate(args)


def simulate(args: argparse.Namespace) -> int:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.utils import timezone

    from webapp.dashboard.synthetic import scored_version_create
    from webapp.inference.disk_use import PREDICTIONS, project_disk_use
    from webapp.inference.models import Prediction, Purpose
    from webapp.inference.retention import predictions_cleanup
    from webapp.projects.services import project_create

    configured = settings.PREDICTION_RETENTION["api"]
    step_s = float(settings.CELERY_BEAT_SCHEDULE["expire-routine-predictions"]["schedule"])
    scaled_count = round(configured["count"] * args.scale)
    settings.PREDICTION_RETENTION = {**settings.PREDICTION_RETENTION, "api": {**configured, "count": scaled_count}}
    per_step = round(args.rate * step_s * args.scale)
    review_every = round(1 / args.review_share) if args.review_share else 0

    owner = User.objects.create_user("bench", password="bench-password-1")
    project = project_create(name="Retention", owner=owner)
    version = scored_version_create(project=project, scores=[0.2, 0.8] * 10, labels=[False, True] * 10, with_maps=True)
    files = sample_files()
    per_prediction = sum(len(data) for data in files.values())
    # The bound: the newest `count` kept, plus one step's arrivals before the next cleanup, plus the reviewed ones.
    bound_rows = scaled_count + per_step

    print(f"# {benchlib.machine_line()}")
    print(
        f"# {args.rate:g} API predictions/s for {args.days:g} days, simulated at {args.scale:g} of the rate "
        f"({per_step} per {step_s:g} s cleanup step) against {args.scale:g} of the count limit; retention "
        f"{configured['days']} days / newest {configured['count']:,} per project (KENSA_RETAIN_API_*), "
        f"{args.review_share:.1%} routed to review (kept). Files per prediction: map {len(files['map'])} B, "
        f"mask {len(files['mask'])} B, input {len(files['input'])} B = {per_prediction / 1024:.1f} KiB"
    )
    start = timezone.now()
    steps = round(args.days * 86400 / step_s)
    made = deleted = 0
    peak_routine_rows = peak_bytes = 0
    daily = []
    started = time.monotonic()
    for step in range(steps):
        step_start = start + timedelta(seconds=step * step_s)
        predictions_add(
            version=version, files=files, count=per_step, start=step_start, step_s=step_s,
            review_every=review_every, made=made,
        )  # fmt: skip
        made += per_step
        routine = Prediction.objects.filter(purpose=Purpose.API, review_item__isnull=True).count()
        use = {row.kind: row.bytes for row in project_disk_use(project=project)}
        peak_routine_rows = max(peak_routine_rows, routine)
        peak_bytes = max(peak_bytes, use.get(PREDICTIONS, 0))
        deleted += predictions_cleanup(now=step_start + timedelta(seconds=step_s)).rows
        if (step + 1) % round(86400 / step_s) == 0 or step == steps - 1:
            reviewed = Prediction.objects.filter(purpose=Purpose.API, review_item__isnull=False).count()
            daily.append([step, made, deleted, routine, reviewed, use.get(PREDICTIONS, 0), peak_bytes])
    elapsed = time.monotonic() - started

    scale = 1 / args.scale
    gib = 1024**3
    headers = ["day", "made", "deleted", "routine kept (before cleanup)", "reviewed kept", "prediction files",
               "peak so far"]  # fmt: skip
    rows = [
        [
            f"{(step + 1) * step_s / 86400:.1f}",
            f"{made * scale:,.0f}",
            f"{gone * scale:,.0f}",
            f"{routine * scale:,.0f}",
            f"{reviewed * scale:,.0f}",
            f"{size * scale / gib:.2f} GiB",
            f"{peak * scale / gib:.2f} GiB",
        ]  # fmt: skip
        for step, made, gone, routine, reviewed, size, peak in daily
    ]
    print(f"# figures scaled back to the full rate (x{scale:g}); simulated in {elapsed:.0f} s")
    print(benchlib.markdown_table(headers, rows))
    reviewed_final = daily[-1][4]
    bound_bytes = (bound_rows + reviewed_final) * per_prediction
    print(
        f"# bound: (newest {configured['count']:,} + one step's {per_step * scale:,.0f}) routine + reviewed "
        f"{reviewed_final * scale:,.0f} = {(bound_rows + reviewed_final) * scale:,.0f} predictions x "
        f"{per_prediction / 1024:.1f} KiB = {bound_bytes * scale / gib:.2f} GiB; "
        f"peak routine rows {peak_routine_rows * scale:,.0f}, "
        f"peak prediction files {peak_bytes * scale / gib:.2f} GiB; "
        f"without retention: {made * per_prediction * scale / gib:,.0f} GiB"
    )
    return 0 if peak_routine_rows <= bound_rows and peak_bytes <= bound_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
