"""Reads for the training pages: where a waiting run stands in the training queue, and what runs ahead of it.

Runs of projects the viewer is not a member of are shown without their project's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q

from webapp.audit.models import AuditAction, AuditEntry
from webapp.projects.models import Membership, Project
from webapp.training.candidates import COMPARE_FAMILY
from webapp.training.models import ACTIVE_STATUSES, ModelVersion, RunStatus, TrainingRun

OTHER_PROJECT = "a run of another project"
WAITS_FOR_WORKER = "Waiting for a free training worker: {ahead}."
NEXT_FOR_WORKER = "Next in the training queue: it starts as soon as a training worker is free."
WAITS_FOR_PROJECT = (
    "Waiting for this project's earlier run{s} to end: a project trains one run at a time, so this one joins the "
    "training queue then."
)


@dataclass(frozen=True)
class QueueEntry:
    """One run ahead of the viewer's run, as the viewer may see it."""

    title: str  # "this project's run", the project's name, or OTHER_PROJECT
    family: str
    status: str
    worker: str  # for a running run: the Celery node that runs it
    percent: float
    eta_text: str
    run: TrainingRun | None  # only when the viewer is a member of its project (to link to it)


@dataclass(frozen=True)
class QueuePlace:
    """Where a waiting run stands: `position` 1 is the next to start (None while it waits for its own project)."""

    position: int | None
    reason: str
    ahead: list[QueueEntry]


def _entry(run: TrainingRun, *, of: TrainingRun, member_of: set[int]) -> QueueEntry:
    if run.project_id == of.project_id:
        title = "this project's run"
    elif run.project_id in member_of:
        title = run.project.name
    else:
        title = OTHER_PROJECT
    return QueueEntry(
        title=title,
        family=run.family,
        status=run.status,
        worker=run.worker if run.status == RunStatus.RUNNING else "",
        percent=run.percent,
        eta_text=run.eta_text if run.status == RunStatus.RUNNING else "",
        run=run if run.project_id in member_of else None,
    )


def _earlier(run: TrainingRun, field: str) -> Q:
    value = getattr(run, field)
    return Q(**{f"{field}__lt": value}) | Q(**{field: value, "id__lt": run.id})


def queue_place(*, run: TrainingRun, user: AbstractBaseUser) -> QueuePlace | None:
    """None unless the run is waiting. A run sent to the workers waits behind every running run (each holds a
    worker) and the runs sent before it; a run not sent yet waits for its own project's earlier runs."""
    if run.status != RunStatus.QUEUED:
        return None
    member_of = set(Membership.objects.filter(user_id=user.pk).values_list("project_id", flat=True))
    active = TrainingRun.objects.filter(status__in=ACTIVE_STATUSES).select_related("project").exclude(id=run.id)
    running = list(active.filter(status=RunStatus.RUNNING).order_by("started_at", "id"))
    if run.enqueued_at is None:
        ahead = [r for r in running if r.project_id == run.project_id]
        ahead += list(active.filter(_earlier(run, "created_at"), project_id=run.project_id, status=RunStatus.QUEUED))
        entries = [_entry(r, of=run, member_of=member_of) for r in ahead]
        return QueuePlace(
            position=None, reason=WAITS_FOR_PROJECT.format(s="" if len(ahead) == 1 else "s"), ahead=entries
        )
    sent_before = list(
        active.filter(_earlier(run, "enqueued_at"), status=RunStatus.QUEUED, enqueued_at__isnull=False).order_by(
            "enqueued_at", "id"
        )
    )
    entries = [_entry(r, of=run, member_of=member_of) for r in running + sent_before]
    if not entries:
        reason = NEXT_FOR_WORKER
    else:
        parts = []
        if running:
            parts.append(f"{len(running)} running")
        if sent_before:
            parts.append(f"{len(sent_before)} waiting ahead")
        reason = WAITS_FOR_WORKER.format(ahead=" and ".join(parts))
    return QueuePlace(position=len(sent_before) + 1, reason=reason, ahead=entries)


def project_queue(*, project: Project, user: AbstractBaseUser) -> list[tuple[TrainingRun, QueuePlace | None]]:
    """The project's running run and its waiting ones, in the order they will run, each with its place."""
    runs = TrainingRun.objects.filter(project=project, status__in=ACTIVE_STATUSES).order_by("created_at", "id")
    runs = sorted(runs, key=lambda r: r.status != RunStatus.RUNNING)
    return [(run, queue_place(run=run, user=user)) for run in runs]


def last_split_change(*, project: Project, user: AbstractBaseUser) -> AuditEntry | None:
    """The viewer's latest split change in the project not undone yet (only its author may undo it)."""
    entries = AuditEntry.objects.filter(project=project, user_id=user.pk, action=AuditAction.SPLIT)
    return entries.filter(undone_at__isnull=True).order_by("-created_at", "-id").first()


def latest_comparison(*, project: Project) -> dict | None:
    """The leaderboard of the project's latest run that compared candidates (stored on its winner's version)."""
    version = (
        ModelVersion.objects.filter(project=project, run__family=COMPARE_FAMILY, run__status=RunStatus.SUCCEEDED)
        .order_by("-number")
        .first()
    )
    return version.metrics.get("comparison") if version else None
