"""Training runs: what to train, requesting, claiming, progress, cancelling, reaping, and version activation.

Every state change is a conditional UPDATE checked by its row count, so two workers (or a worker and the reaper)
never both win the same transition.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from ml.choice import FamilyChoice, choose_family
from ml.registry import FAMILIES
from webapp.images.models import Annotation, Image, Label, Split
from webapp.projects.models import Project
from webapp.training.models import ACTIVE_STATUSES, ModelVersion, RunStatus, TrainingRun

log = logging.getLogger(__name__)

ALREADY_ACTIVE = "A training run is already queued or running for this project; wait for it or cancel it."
NOT_READY = "Not enough labelled images to train yet: {missing}."
UNKNOWN_FAMILY = "Unknown model family {family!r}."
IMAGE_SIZES = (128, 192, 224, 256, 320, 384, 448, 512)
STALE_HEARTBEAT_MESSAGE = (
    "The worker stopped reporting progress (it was stopped, restarted or ran out of memory). Start the run again."
)
# A worker beats every HEARTBEAT_SECONDS; missing several in a row means it is gone.
HEARTBEAT_SECONDS = 10
# What docs/deploy.md promises: a run whose worker died is failed (a lost queued message sent again) within this.
# The reaper runs every REAP_SECONDS (CELERY_BEAT_SCHEDULE), so each threshold is the promise less one period.
REAP_PROMISE = timedelta(minutes=2)
REAP_SECONDS = 30
STALE_AFTER = REAP_PROMISE - timedelta(seconds=REAP_SECONDS)
# A queued run no worker took for this long is sent again (its message may have died with a restarted Redis);
# claiming is conditional, so a duplicate message is harmless.
REQUEUE_AFTER = REAP_PROMISE - timedelta(seconds=REAP_SECONDS)


@dataclass(frozen=True)
class TrainingPlan:
    n_good_train: int
    n_defect: int
    n_annotated_defects: int
    n_validation: int
    n_test: int
    choice: FamilyChoice


def training_plan(*, project: Project) -> TrainingPlan:
    """What training would use now, and which family the labels call for (with what is missing)."""
    images = Image.objects.filter(project=project)
    annotated = Annotation.objects.filter(image=OuterRef("pk")).filter(~Q(mask="") | ~Q(boxes=[]))
    counts = images.aggregate(
        good_train=Count("id", filter=Q(label=Label.GOOD, split=Split.TRAIN)),
        defect=Count("id", filter=Q(label=Label.DEFECT)),
        validation=Count("id", filter=Q(split=Split.VALIDATION) & ~Q(label=Label.UNLABELLED)),
        test=Count("id", filter=Q(split=Split.TEST) & ~Q(label=Label.UNLABELLED)),
    )
    n_annotated = images.filter(label=Label.DEFECT, split=Split.TRAIN).filter(Exists(annotated)).count()
    choice = choose_family(
        n_good=counts["good_train"], n_defect=counts["defect"], n_annotated_defects=min(n_annotated, counts["defect"])
    )
    if counts["test"] == 0:
        choice = FamilyChoice(
            family=choice.family,
            reason=choice.reason,
            missing=[*choice.missing, "label at least one image in the test split, to measure the model"],
        )
    return TrainingPlan(
        n_good_train=counts["good_train"],
        n_defect=counts["defect"],
        n_annotated_defects=n_annotated,
        n_validation=counts["validation"],
        n_test=counts["test"],
        choice=choice,
    )


def training_run_request(
    *,
    project: Project,
    requested_by: AbstractBaseUser | None,
    family: str = "",
    image_size: int | None = None,
    backbone: str = "",
) -> TrainingRun:
    """Queues a run of the family the labels call for (or the one asked for). Raises ValidationError when the
    project is not ready or a run is already active."""
    plan = training_plan(project=project)
    if not plan.choice.ready:
        raise ValidationError(NOT_READY.format(missing="; ".join(plan.choice.missing)))
    family = family or plan.choice.family
    if family not in FAMILIES:
        raise ValidationError(UNKNOWN_FAMILY.format(family=family))
    config: dict = {}
    if image_size:
        if image_size not in IMAGE_SIZES:
            raise ValidationError(f"Image size must be one of {', '.join(map(str, IMAGE_SIZES))}.")
        config["image_size"] = image_size
    if backbone:
        config["backbone"] = backbone
    reason = plan.choice.reason if family == plan.choice.family else f"You chose {family} in the advanced settings."
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                project=project, family=family, config=config, reason=reason, requested_by=requested_by
            )
    except IntegrityError:
        raise ValidationError(ALREADY_ACTIVE) from None
    _enqueue_on_commit(run)
    return run


def _enqueue_on_commit(run: TrainingRun) -> None:
    from workers.tasks import training_run_task

    def send() -> None:
        TrainingRun.objects.filter(id=run.id).update(enqueued_at=timezone.now())
        training_run_task.delay(run.id)

    transaction.on_commit(send)


def training_run_claim(*, run_id: int, worker: str = "") -> bool:
    """The worker's first step: queued -> running. False when someone else claimed it or it was cancelled.
    `worker` names who runs it (a Celery node name such as train@gpu-box-1; the host name when not given)."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(id=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker=(worker or socket.gethostname())[:200],
        stage="starting",
        message="Starting",
    )
    return claimed == 1


def training_run_progress(*, run_id: int, stage: str, percent: float, message: str, eta_seconds: float | None) -> bool:
    """Records progress and a heartbeat. Returns False when a cancel was requested (or the run is no longer
    running), so the worker stops."""
    updated = TrainingRun.objects.filter(id=run_id, status=RunStatus.RUNNING, cancel_requested=False).update(
        stage=stage[:32],
        percent=max(0.0, min(100.0, percent)),
        message=message[:400],
        eta_seconds=eta_seconds,
        heartbeat_at=timezone.now(),
    )
    return updated == 1


def training_run_heartbeat(*, run_id: int) -> None:
    TrainingRun.objects.filter(id=run_id, status=RunStatus.RUNNING).update(heartbeat_at=timezone.now())


def training_run_finish(*, run_id: int, status: str, message: str = "", error: str = "") -> bool:
    """running -> succeeded / failed / cancelled. False if the run had already ended (for example reaped)."""
    fields = {"status": status, "finished_at": timezone.now(), "eta_seconds": None}
    if message:
        fields["message"] = message[:400]
    if error:
        fields["error"] = error
    if status == RunStatus.SUCCEEDED:
        fields["percent"] = 100.0
    return TrainingRun.objects.filter(id=run_id, status=RunStatus.RUNNING).update(**fields) == 1


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """A queued run ends at once; a running one is asked to stop and its worker ends it within a step."""
    ended_at_once = TrainingRun.objects.filter(id=run.id, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, finished_at=timezone.now(), message="Cancelled before it started"
    )
    if not ended_at_once:
        TrainingRun.objects.filter(id=run.id, status=RunStatus.RUNNING).update(
            cancel_requested=True, message="Cancelling…"
        )
    run.refresh_from_db()
    return run


def training_runs_reap(*, now=None) -> dict[str, int]:
    """Fails running runs whose worker went silent (and removes their partial files); sends queued runs that no
    worker picked up again. Called periodically by Celery beat."""
    from webapp.training.execution import run_files_discard

    now = now or timezone.now()
    stale = TrainingRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    failed = 0
    for run in stale:
        if training_run_finish(run_id=run.id, status=RunStatus.FAILED, error=STALE_HEARTBEAT_MESSAGE):
            failed += 1
            log.warning("reaped training run %s: no heartbeat since %s", run.public_id, run.heartbeat_at)
            run_files_discard(run)
    requeued = 0
    for run in TrainingRun.objects.filter(status=RunStatus.QUEUED, created_at__lt=now - REQUEUE_AFTER).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - REQUEUE_AFTER)
    ):
        _enqueue_on_commit(run)
        requeued += 1
    return {"failed": failed, "requeued": requeued}


@transaction.atomic
def model_version_activate(*, version: ModelVersion, user: AbstractBaseUser | None = None) -> ModelVersion:
    """Makes the version the one that serves predictions; the audit log records it (user None: the worker
    activating a project's first model)."""
    from webapp.audit.models import AuditAction
    from webapp.audit.services import audit_record

    previous = ModelVersion.objects.filter(project_id=version.project_id, is_active=True).exclude(id=version.id)
    numbers = list(previous.values_list("number", flat=True))
    previous.update(is_active=False)
    changed = ModelVersion.objects.filter(id=version.id, is_active=False).update(is_active=True)
    version.is_active = True
    if changed:
        audit_record(
            project=version.project_id,
            user=user,
            action=AuditAction.VERSION_ACTIVATE,
            target=f"version {version.number}",
            before={"active_version": numbers[0] if numbers else None},
            after={"active_version": version.number},
        )
    return version


def active_run(*, project: Project) -> TrainingRun | None:
    return TrainingRun.objects.filter(project=project, status__in=ACTIVE_STATUSES).first()
