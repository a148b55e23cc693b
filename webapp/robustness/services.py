"""Robustness runs: requesting one (a person's button, or training's end for small test splits), claiming it on
the worker, its progress, and its end. Every state change is a conditional UPDATE checked by its row count, as for
training runs (webapp.training.services)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from webapp.images.models import Image, Label, Split
from webapp.robustness.models import ACTIVE, RobustnessRun, RobustnessStatus
from webapp.training.models import ModelVersion
from webapp.training.services import STALE_AFTER

log = logging.getLogger(__name__)

ALREADY_RUNNING = "A robustness run of version {number} is already waiting or running."
NO_TEST_IMAGES = "Version {number} has no labelled test images to perturb."
STALE_MESSAGE = "The worker stopped reporting progress (it was stopped, restarted or ran out of memory). Start again."
INTERNAL_ERROR = "The robustness run failed because of an internal error. The details are in the worker's log."


def test_images_of(version: ModelVersion):
    """The labelled test images of the version's project, in a fixed order (the order training evaluated them)."""
    return (
        Image.objects.filter(project_id=version.project_id, split=Split.TEST)
        .exclude(label=Label.UNLABELLED)
        .order_by("sha256")
    )


def robustness_run_request(
    *, version: ModelVersion, requested_by: AbstractBaseUser | None, automatic: bool = False
) -> RobustnessRun:
    """Queues a robustness run of `version` at its operating threshold, sent to the workers after commit.
    ValidationError when one is already waiting or running, or there is nothing to measure."""
    if not test_images_of(version).exists():
        raise ValidationError(NO_TEST_IMAGES.format(number=version.number))
    robustness_runs_reap(version=version)
    try:
        with transaction.atomic():
            run = RobustnessRun.objects.create(
                model_version=version, requested_by=requested_by, automatic=automatic, threshold=version.threshold
            )
    except IntegrityError:  # the database's one-active-run constraint: no check-then-insert race
        raise ValidationError(ALREADY_RUNNING.format(number=version.number)) from None
    _enqueue_on_commit(run)
    return run


def _enqueue_on_commit(run: RobustnessRun) -> None:
    from webapp.robustness.tasks import robustness_run_task

    transaction.on_commit(lambda: robustness_run_task.delay(run.id))


def robustness_after_training(*, version: ModelVersion) -> RobustnessRun | None:
    """Called when training produced `version`: a split small enough is measured at once; None otherwise (or when
    it cannot be: a failure here must never fail the training that just succeeded)."""
    try:
        # KENSA_ROBUSTNESS_AUTO_MAX_TEST_IMAGES (150): on 2 CPU cores PatchCore scores 150 images under every
        # perturbation in minutes (docs/benchmarks.md, "Robustness (issue 19)"); a larger split waits for a
        # person to ask, so the training worker is not taken for long without anyone wanting it.
        if test_images_of(version).count() > settings.KENSA_ROBUSTNESS_AUTO_MAX_TEST_IMAGES:
            return None
        return robustness_run_request(version=version, requested_by=None, automatic=True)
    except ValidationError:
        return None
    except Exception:
        log.exception("could not start the robustness run of version %s", version.public_id)
        return None


def robustness_run_claim(*, run_id: int) -> bool:
    """queued -> running; False when it was claimed already or is gone."""
    now = timezone.now()
    claimed = RobustnessRun.objects.filter(id=run_id, status=RobustnessStatus.QUEUED).update(
        status=RobustnessStatus.RUNNING, started_at=now, heartbeat_at=now, progress_at=now, message="Starting"
    )
    return claimed == 1


def robustness_run_progress(*, run_id: int, percent: float, message: str, eta_seconds: float | None) -> bool:
    """Records progress and a heartbeat; False when the run is no longer running (reaped), so the worker stops."""
    now = timezone.now()
    return (
        RobustnessRun.objects.filter(id=run_id, status=RobustnessStatus.RUNNING).update(
            percent=max(0.0, min(100.0, percent)),
            message=message[:400],
            eta_seconds=eta_seconds,
            heartbeat_at=now,
            progress_at=now,
        )
        == 1
    )


def robustness_run_heartbeat(*, run_id: int) -> None:
    RobustnessRun.objects.filter(id=run_id, status=RobustnessStatus.RUNNING).update(heartbeat_at=timezone.now())


def robustness_run_finish(
    *, run_id: int, status: str, report: dict | None = None, files_prefix: str = "", error: str = ""
) -> bool:
    """running -> succeeded / failed. False when it had already ended."""
    fields: dict = {"status": status, "finished_at": timezone.now(), "eta_seconds": None}
    if status == RobustnessStatus.SUCCEEDED:
        fields.update(percent=100.0, report=report or {}, files_prefix=files_prefix, message="Done")
    if error:
        fields["error"] = error
    return RobustnessRun.objects.filter(id=run_id, status=RobustnessStatus.RUNNING).update(**fields) == 1


def robustness_runs_reap(*, version: ModelVersion | None = None, now=None) -> int:
    """Fails running runs whose worker went silent, and queued ones no worker took, so a new one can start.
    Runs when a new run is requested and every 30 s on the beat (robustness.reap), with the training reaper's
    thresholds."""
    now = now or timezone.now()
    runs = RobustnessRun.objects.filter(status__in=ACTIVE)
    if version is not None:
        runs = runs.filter(model_version=version)
    silent = runs.filter(status=RobustnessStatus.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    forgotten = runs.filter(status=RobustnessStatus.QUEUED, created_at__lt=now - STALE_AFTER - timedelta(minutes=5))
    failed = silent.update(status=RobustnessStatus.FAILED, finished_at=now, error=STALE_MESSAGE)
    failed += forgotten.update(status=RobustnessStatus.FAILED, finished_at=now, error=STALE_MESSAGE)
    return failed
