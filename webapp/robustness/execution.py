"""What a worker does with a claimed robustness run: load the version, perturb and score its test split
(ml.robustness, streaming: one image at a time), store the worst cases' pictures and the report."""

from __future__ import annotations

import io
import logging
import time

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections
from PIL import Image as PILImage

from ml.registry import load_model
from ml.robustness import RobustnessReport, robustness_run
from ml.thresholds import Calibration
from webapp.dashboard.overlays import heatmap_rgba_png, mask_rgba_png
from webapp.images.services import annotation_mask_png
from webapp.inference.model_files import artifact_local_dir
from webapp.inference.predictions import anomaly_map_png
from webapp.robustness import services
from webapp.robustness.models import RobustnessRun, RobustnessStatus
from webapp.storage import stored_file_write, stored_folder_delete
from webapp.training.datasets import ProjectSamples
from webapp.training.eta import PaceEstimate

log = logging.getLogger(__name__)

LOAD_SHARE = 2.0  # percent of the bar for loading the model; scoring takes the rest
TOO_LONG = "The robustness run took longer than the time limit and was stopped."


class RunGone(Exception):
    """The run was reaped (or ended) while the worker still scored: stop quietly."""


class Progress:
    """ml progress callbacks -> throttled row updates with an ETA (the training run's pace estimate). Each image
    reports, so the progress writes are also the heartbeat."""

    def __init__(self, run_id: int, *, clock=time.monotonic):
        self.run_id = run_id
        self.clock = clock
        self.pace = PaceEstimate()
        self.last_write = float("-inf")

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        percent = LOAD_SHARE + (100 - LOAD_SHARE) * max(0.0, min(1.0, fraction))
        now = self.clock()
        eta = self.pace.observe(now, percent, stage)
        if now - self.last_write < 1.0 and fraction < 1.0:
            return
        self.last_write = now
        if not services.robustness_run_progress(run_id=self.run_id, percent=percent, message=message, eta_seconds=eta):
            raise RunGone()


def run_files_prefix(run: RobustnessRun) -> str:
    return f"{run.model_version.artifact_prefix}/robustness/{run.public_id}"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def worst_cases_store(report: RobustnessReport, *, prefix: str, calibration: Calibration) -> list[dict]:
    """Writes each worst case's pictures (before, after, heatmap overlay, defect outline) and returns the report's
    worst-case entries with their file names added."""
    entries = report.to_dict()["worst_cases"]
    for index, (entry, case) in enumerate(zip(entries, report.worst_cases, strict=True)):
        base = f"{prefix}/worst-{index}"
        files = {
            "before": stored_file_write(f"{base}-before.png", _png(case.original)),
            "after": stored_file_write(f"{base}-after.png", _png(case.image)),
            "heatmap": stored_file_write(
                f"{base}-heatmap.png", heatmap_rgba_png(anomaly_map_png(case.anomaly_map, calibration))
            ),
        }
        if case.mask is not None and case.mask.any():
            files["mask"] = stored_file_write(f"{base}-mask.png", mask_rgba_png(annotation_mask_png(case.mask)))
        entry["files"] = files
    return entries


def robustness_run_execute(*, run_id: int) -> None:
    """Runs a claimed run to its end. Never raises for expected failures: they end the run with a reason."""
    run = RobustnessRun.objects.select_related("model_version__project").get(id=run_id)
    version = run.model_version
    prefix = run_files_prefix(run)
    calibration = Calibration(threshold=run.threshold, scale=float(version.calibration["scale"]))
    progress = Progress(run.id)
    try:
        samples = ProjectSamples(list(services.test_images_of(version)))
        progress("load", 0.0, f"Loading version {version.number}")
        # Loaded for this run only, not into the prediction cache: the training worker that runs it must not keep
        # hundreds of MB of a model it will not use again. On the training device (the task is on a training
        # queue, so a GPU worker's GPU scores the perturbed images).
        model = load_model(artifact_local_dir(version), device=settings.KENSA_DEVICE)
        report = robustness_run(model, samples, threshold=run.threshold, seed=0, progress=progress)
        summary = report.to_dict()
        summary["worst_cases"] = worst_cases_store(report, prefix=prefix, calibration=calibration)
    except RunGone:
        stored_folder_delete(prefix)
        return
    except SoftTimeLimitExceeded:
        stored_folder_delete(prefix)
        services.robustness_run_finish(run_id=run_id, status=RobustnessStatus.FAILED, error=TOO_LONG)
        return
    except Exception:
        log.exception("robustness run %s failed", run.public_id)
        stored_folder_delete(prefix)
        close_old_connections()
        services.robustness_run_finish(run_id=run_id, status=RobustnessStatus.FAILED, error=services.INTERNAL_ERROR)
        return
    if not services.robustness_run_finish(
        run_id=run_id, status=RobustnessStatus.SUCCEEDED, report=summary, files_prefix=prefix
    ):
        stored_folder_delete(prefix)  # reaped at the last moment: its files must not outlive it
