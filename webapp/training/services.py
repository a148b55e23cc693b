"""Training runs: what to train, requesting, claiming, progress, cancelling, reaping, and version activation.

Every state change is a conditional UPDATE checked by its row count, so two workers (or a worker and the reaper)
never both win the same transition.
"""

from __future__ import annotations

import json
import logging
import random
import socket
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.utils import timezone

from ml.choice import MIN_ANNOTATED_FOR_SEGMENTER, FamilyChoice, choose_family
from ml.compare import Candidate
from ml.registry import FAMILIES
from ml.tiling import working_size_for_defect
from webapp.audit.models import AuditEntry
from webapp.images.bulk import bulk_change_undo, images_split_change
from webapp.images.models import Annotation, Image, Label, Split
from webapp.images.splits import stratified_pick
from webapp.projects.models import Project
from webapp.training.candidates import (
    BUDGET_MINUTES,
    COMPARE_FAMILY,
    COMPARES,
    DEFAULT_BUDGET_MINUTES,
    CandidatePlan,
    candidate_plan,
    candidates_to_config,
)
from webapp.training.datasets import holdout_size
from webapp.training.models import ACTIVE_STATUSES, ModelVersion, RunStatus, TrainingRun
from webapp.training.settings_plan import good_image_facts

log = logging.getLogger(__name__)

# A project runs one run at a time; these many more may wait behind it.
MAX_QUEUED_PER_PROJECT = 3
QUEUE_FULL = (
    "This project already has {limit} runs waiting to start; wait for one to start, or cancel one on the Train page."
)
DUPLICATE_QUEUED = "The same run ({family}, same settings) is already waiting in this project's queue."
NOT_READY = "Not enough labelled images to train yet: {missing}."
UNKNOWN_FAMILY = "Unknown model family {family!r}."
BAD_BUDGET = "The time budget must be one of {choices} minutes."
IMAGE_SIZES = (128, 192, 224, 256, 320, 384, 448, 512)
ROTATION_CHOICES = (1, 4, 8, 16)  # PatchCore's rotations a person may set (None: chosen from the data, issue 21)
# PatchCore's tiling (issue 16): 0 resizes whole images; N brings the longer side to N px and covers it with tiles.
TILING_CHOICES = (0, 1024, 1536, 2048, 4096)
# Automatic tiling starts where a resize would shrink an image more than this many times (a 2448 px image to 320).
TILING_FROM_SHRINK = 3
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


SPLIT_PURPOSES = {
    Split.TRAIN: "The model learns from these: the good images, and for the U-Net the outlined defects too.",
    Split.VALIDATION: (
        "Sets the threshold: scored after training, never learned from. It needs good and defect images."
    ),
    Split.TEST: "Measures the model (the figures on its dashboard): never learned from, never used for the threshold.",
}
EMPTY_VALIDATION = (
    "The validation split holds no labelled images. Training would take {n} good images out of the train split "
    "to set the threshold: fewer to learn from, and a threshold that never saw a defect."
)
EMPTY_VALIDATION_SELF_CALIBRATED = (
    "The validation split holds no labelled images. PatchCore will set its threshold from its own training images "
    "(each scored without its own patches), so every good image still trains it; but the threshold never sees a "
    "defect, and candidates cannot be compared."
)
NO_VALIDATION_DEFECTS = (
    "The validation split holds no defect images, so the threshold is set from good images only, without "
    "knowing how many defects it lets through."
)
FILL_VALIDATION_HINT = "Move a share of the test images into validation (below) to fix this before training."
OUTLINES_OUTSIDE_TRAIN = (
    "You have {total} outlined defect{s}, {where}. Only outlines in the train split teach a model (validation "
    "sets the threshold, test measures the model), so the U-Net needs {needed} outlined defects in train; "
    "now it has {in_train}."
)


@dataclass(frozen=True)
class SplitCounts:
    """One row of the Train page's split table."""

    split: str
    title: str
    purpose: str
    good: int
    defect: int
    unlabelled: int
    outlined: int  # defect images with a mask or a box


@dataclass(frozen=True)
class TrainingPlan:
    n_good_train: int
    n_defect: int
    n_annotated_defects: int
    n_validation: int
    n_test: int
    choice: FamilyChoice
    splits: tuple[SplitCounts, ...] = ()
    split_problems: tuple[str, ...] = ()  # what the splits will do to training, said before it starts
    can_fill_validation: bool = False  # moving a share of test into validation would fix a problem
    candidates: CandidatePlan | None = None  # what an automatic run trains and compares (issue 20)


def _split_counts(images) -> dict[str, SplitCounts]:
    annotated = Annotation.objects.filter(image=OuterRef("pk")).filter(~Q(mask="") | ~Q(boxes=[]))
    rows = {}
    for split in Split:
        counts = images.filter(split=split).aggregate(
            good=Count("id", filter=Q(label=Label.GOOD)),
            defect=Count("id", filter=Q(label=Label.DEFECT)),
            unlabelled=Count("id", filter=Q(label=Label.UNLABELLED)),
        )
        outlined = images.filter(split=split, label=Label.DEFECT).filter(Exists(annotated)).count()
        rows[split] = SplitCounts(split, split.label, SPLIT_PURPOSES[split], outlined=outlined, **counts)
    return rows


def _outline_note(rows: dict[str, SplitCounts]) -> str:
    """Explains "fewer than 10 outlined defects" when the outlines exist but sit outside the train split."""
    in_train = rows[Split.TRAIN].outlined
    elsewhere = {s: rows[s].outlined for s in (Split.VALIDATION, Split.TEST) if rows[s].outlined}
    if in_train >= MIN_ANNOTATED_FOR_SEGMENTER or not elsewhere:
        return ""
    total = in_train + sum(elsewhere.values())
    if not in_train and len(elsewhere) == 1:
        where = f"all in {next(iter(elsewhere))}"
    else:
        where = ", ".join(f"{n} in {s}" for s, n in {Split.TRAIN: in_train, **elsewhere}.items() if n)
    return OUTLINES_OUTSIDE_TRAIN.format(
        total=total, s="" if total == 1 else "s", where=where, needed=MIN_ANNOTATED_FOR_SEGMENTER, in_train=in_train
    )


def training_plan(*, project: Project) -> TrainingPlan:
    """What training would use now, which family the labels call for (with what is missing), and what the
    splits mean for it."""
    images = Image.objects.filter(project=project)
    rows = _split_counts(images)
    train, validation, test = rows[Split.TRAIN], rows[Split.VALIDATION], rows[Split.TEST]
    n_defect = train.defect + validation.defect + test.defect
    choice = choose_family(n_good=train.good, n_defect=n_defect, n_annotated_defects=min(train.outlined, n_defect))
    if test.good + test.defect == 0:
        choice = FamilyChoice(
            family=choice.family,
            reason=choice.reason,
            missing=[*choice.missing, "label at least one image in the test split, to measure the model"],
        )
    problems = []
    fixable = False
    if validation.good + validation.defect == 0:
        if choice.family == "patchcore":  # webapp.training.execution.SELF_CALIBRATING
            problems.append(EMPTY_VALIDATION_SELF_CALIBRATED)
        else:
            problems.append(EMPTY_VALIDATION.format(n=holdout_size(train.good)))
        fixable = test.good + test.defect >= 2
    elif validation.defect == 0 and test.defect >= 2:
        problems.append(NO_VALIDATION_DEFECTS)
        fixable = True
    if fixable:
        problems.append(FILL_VALIDATION_HINT)
    if note := _outline_note(rows):
        problems.append(note)
    candidates = _candidate_plan(project, rows, n_defect=n_defect, label_family=choice.family)
    return TrainingPlan(
        n_good_train=train.good,
        n_defect=n_defect,
        n_annotated_defects=train.outlined,
        n_validation=validation.good + validation.defect,
        n_test=test.good + test.defect,
        choice=choice,
        splits=tuple(rows.values()),
        split_problems=tuple(problems),
        can_fill_validation=fixable,
        candidates=candidates,
    )


def _candidate_plan(project: Project, rows: dict[str, SplitCounts], *, n_defect: int, **settings) -> CandidatePlan:
    train, validation = rows[Split.TRAIN], rows[Split.VALIDATION]
    return candidate_plan(
        n_good=train.good,
        short_side=good_image_facts(project).short_side,
        n_defect=n_defect,
        n_outlined=min(train.outlined, n_defect),
        n_validation=validation.good + validation.defect,
        n_validation_defects=validation.defect,
        **settings,
    )


def run_request_key(family: str, config: dict) -> str:
    """The request as one comparable string: family and settings, keys sorted."""
    return f"{family}:{json.dumps(config, sort_keys=True, separators=(',', ':'))}"[:300]


def training_run_request(
    *,
    project: Project,
    requested_by: AbstractBaseUser | None,
    family: str = "",
    image_size: int | None = None,
    backbone: str = "",
    rotations: int | None = None,
    tiling: int | None = None,
    compare_families: tuple[str, ...] | list[str] = (),
    budget_minutes: int = DEFAULT_BUDGET_MINUTES,
) -> TrainingRun:
    """Queues a run of the family the labels call for (or the one asked for), behind the project's running and
    waiting runs. Automatic (no family): the candidates the labels allow, plus `compare_families`, are trained and
    compared on validation within `budget_minutes` when there is more than one (webapp.training.candidates).
    Raises ValidationError when the project is not ready, its queue is full, or the same request is already
    waiting."""
    plan = training_plan(project=project)
    if not plan.choice.ready:
        raise ValidationError(NOT_READY.format(missing="; ".join(plan.choice.missing)))
    if image_size and image_size not in IMAGE_SIZES:
        raise ValidationError(f"Image size must be one of {', '.join(map(str, IMAGE_SIZES))}.")
    automatic = not family
    family = family or plan.choice.family
    if family not in FAMILIES:
        raise ValidationError(UNKNOWN_FAMILY.format(family=family))
    config: dict = {}
    if image_size:
        config["image_size"] = image_size
    if backbone:
        config["backbone"] = backbone
    if rotations is not None:
        if rotations not in ROTATION_CHOICES:
            raise ValidationError(f"Rotated copies must be one of {', '.join(map(str, ROTATION_CHOICES))}.")
        config["rotations"] = rotations
    if tiling is not None and tiling not in TILING_CHOICES:
        raise ValidationError(f"Tiling must be one of {', '.join(map(str, TILING_CHOICES))}.")
    reason = plan.choice.reason if family == plan.choice.family else f"You chose {family} in the advanced settings."
    if automatic:
        if budget_minutes not in BUDGET_MINUTES:
            raise ValidationError(BAD_BUDGET.format(choices=", ".join(map(str, BUDGET_MINUTES))))
        try:
            candidates = _candidate_plan(
                project,
                {row.split: row for row in plan.splits},
                n_defect=plan.n_defect,
                label_family=plan.choice.family,
                extra=tuple(compare_families),
                image_size=image_size,
                rotations=rotations,
                backbone=backbone,
                budget_minutes=budget_minutes,
            )
        except ValueError as exc:  # a ticked family this server does not know
            raise ValidationError(str(exc)) from None
        if candidates.compares:
            family = COMPARE_FAMILY
            tiled = _with_tiling(project, candidates.candidates, tiling)
            config = {"candidates": candidates_to_config(tiled), "budget_seconds": 60 * budget_minutes}
            reason = COMPARES.format(
                n=len(candidates.candidates), n_validation=plan.n_validation, budget=budget_minutes
            )
        else:  # one model: the family's own defaults (PatchCore chooses its size from the data) and yours
            family = candidates.candidates[0].family
        reason = f"{reason} {candidates.note}".strip()[:400] if candidates.note else reason
    if family == "patchcore":
        working_size = tiling if tiling is not None else automatic_tiling(project, config.get("image_size") or 320)
        if working_size:
            config["tile_working_size"] = working_size
    key = run_request_key(family, config)
    with transaction.atomic():
        # The project's row lock makes count-then-insert safe between two requests of one project.
        Project.objects.select_for_update().filter(id=project.id).first()
        waiting = TrainingRun.objects.filter(project=project, status=RunStatus.QUEUED)
        if waiting.filter(request_key=key).exists():
            raise ValidationError(DUPLICATE_QUEUED.format(family=family))
        if waiting.count() >= MAX_QUEUED_PER_PROJECT:
            raise ValidationError(QUEUE_FULL.format(limit=MAX_QUEUED_PER_PROJECT))
        try:
            with transaction.atomic():
                run = TrainingRun.objects.create(
                    project=project,
                    family=family,
                    config=config,
                    reason=reason,
                    requested_by=requested_by,
                    request_key=key,
                )
        except IntegrityError:
            raise ValidationError(DUPLICATE_QUEUED.format(family=family)) from None
    project_queue_advance(project_id=project.id)
    return run


def _with_tiling(project: Project, candidates: tuple[Candidate, ...], tiling: int | None) -> list[Candidate]:
    """A comparison's PatchCore candidates tile large images as a PatchCore run would: the person's setting applies
    to each; automatic tiling (automatic_tiling) to the first, the data-chosen one, only, since the coarser
    candidate is there to see the whole part at once."""
    tiled = []
    for position, candidate in enumerate(candidates):
        working_size = tiling
        if tiling is None and position == 0 and candidate.family == "patchcore":
            working_size = automatic_tiling(project, candidate.config.get("image_size") or 320)
        if candidate.family == "patchcore" and working_size:
            candidate = Candidate(
                candidate.family, {**candidate.config, "tile_working_size": working_size}, candidate.label
            )
        tiled.append(candidate)
    return tiled


def automatic_tiling(project: Project, tile: int) -> int:
    """PatchCore's working size for the project's images (0: no tiling): tiles once a resize to `tile` would shrink
    the largest image more than TILING_FROM_SHRINK times, at a scale that keeps the smallest outlined box at least
    ml.tiling.MIN_DEFECT_PX wide (1024 px without boxes)."""
    sizes = Image.objects.filter(project=project).aggregate(width=Max("width"), height=Max("height"))
    long_side = max(sizes["width"] or 0, sizes["height"] or 0)
    if long_side <= TILING_FROM_SHRINK * tile:
        return 0
    smallest = None
    for boxes in Annotation.objects.filter(image__project=project).exclude(boxes=[]).values_list("boxes", flat=True):
        for x0, y0, x1, y1 in boxes:
            side = min(abs(x1 - x0), abs(y1 - y0))
            smallest = side if smallest is None or 0 < side < smallest else smallest
    working = working_size_for_defect(long_side, smallest, tile=tile, default=1024)
    return min(TILING_CHOICES[1:], key=lambda choice: (choice < working, abs(choice - working)))


def _enqueue_on_commit(run: TrainingRun) -> None:
    from webapp.training.tasks import training_run_task

    def send() -> None:
        TrainingRun.objects.filter(id=run.id).update(enqueued_at=timezone.now())
        training_run_task.delay(run.id)

    transaction.on_commit(send)


def project_queue_advance(*, project_id: int) -> None:
    """Sends the project's next waiting run to the workers, once nothing of the project runs and it was not sent
    yet (after the current transaction commits). Only that one is sent: the workers' queue then holds one run
    per project, so a project's runs go in order and never occupy two workers."""
    from webapp.training.tasks import training_run_task

    def send() -> None:
        if TrainingRun.objects.filter(project_id=project_id, status=RunStatus.RUNNING).exists():
            return
        head = TrainingRun.objects.filter(project_id=project_id, status=RunStatus.QUEUED).order_by("created_at", "id")
        head = head.first()
        if head is None or head.enqueued_at is not None:
            return
        if TrainingRun.objects.filter(id=head.id, enqueued_at__isnull=True).update(enqueued_at=timezone.now()):
            training_run_task.delay(head.id)

    transaction.on_commit(send)


def training_run_claim(*, run_id: int, worker: str = "") -> bool:
    """The worker's first step: queued -> running. False when someone else claimed it or it was cancelled.
    `worker` names who runs it (a Celery node name such as train@gpu-box-1; the host name when not given)."""
    now = timezone.now()
    try:
        with transaction.atomic():
            claimed = TrainingRun.objects.filter(id=run_id, status=RunStatus.QUEUED).update(
                status=RunStatus.RUNNING,
                started_at=now,
                heartbeat_at=now,
                progress_at=now,
                worker=(worker or socket.gethostname())[:200],
                stage="starting",
                message="Starting",
            )
    except IntegrityError:
        # Another run of the project is running (a message sent twice): this one waits, and is sent again when
        # that one ends.
        TrainingRun.objects.filter(id=run_id, status=RunStatus.QUEUED).update(enqueued_at=None)
        return False
    return claimed == 1


def training_run_progress(*, run_id: int, stage: str, percent: float, message: str, eta_seconds: float | None) -> bool:
    """Records progress and a heartbeat. Returns False when a cancel was requested (or the run is no longer
    running), so the worker stops."""
    now = timezone.now()
    updated = TrainingRun.objects.filter(id=run_id, status=RunStatus.RUNNING, cancel_requested=False).update(
        stage=stage[:32],
        percent=max(0.0, min(100.0, percent)),
        message=message[:400],
        eta_seconds=eta_seconds,
        heartbeat_at=now,
        progress_at=now,
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
    ended = TrainingRun.objects.filter(id=run_id, status=RunStatus.RUNNING).update(**fields) == 1
    if ended:
        project_queue_advance(project_id=TrainingRun.objects.values_list("project_id", flat=True).get(id=run_id))
    return ended


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """A queued run ends at once; a running one is asked to stop and its worker ends it within a step."""
    ended_at_once = TrainingRun.objects.filter(id=run.id, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, finished_at=timezone.now(), message="Cancelled before it started"
    )
    if ended_at_once:
        project_queue_advance(project_id=run.project_id)
    else:
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
    # Only a project's next run is ever sent; the ones behind it wait for it, not for a worker.
    project_busy = TrainingRun.objects.filter(project_id=OuterRef("project_id"), status=RunStatus.RUNNING)
    earlier = TrainingRun.objects.filter(
        Q(created_at__lt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), id__lt=OuterRef("id")),
        project_id=OuterRef("project_id"),
        status=RunStatus.QUEUED,
    )
    forgotten = (
        TrainingRun.objects.filter(status=RunStatus.QUEUED, created_at__lt=now - REQUEUE_AFTER)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - REQUEUE_AFTER))
        .exclude(Exists(project_busy))
        .exclude(Exists(earlier))
    )
    for run in forgotten:
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
    """The project's running run, else its next waiting one."""
    runs = TrainingRun.objects.filter(project=project, status__in=ACTIVE_STATUSES)
    return runs.filter(status=RunStatus.RUNNING).first() or runs.order_by("created_at", "id").first()


VALIDATION_SHARE = 1 / 3  # of each kind of test image: enough to set a threshold, most of test still measures
SPLIT_SEED = 0
NOTHING_TO_MOVE = "The test split has too few labelled images to share with validation."
SPLITS_MOVED = (
    "Moved {n} test images into validation ({good} good, {defect} defect{classes}), picked at random per label "
    "and defect class (seed {seed}). Versions trained before keep the test figures measured then. "
    "You can undo this move on the Train page or in the audit log."
)
MOVE_UNDONE = "Moved {n} images back where they were."
MOVE_UNDONE_PARTLY = " {kept} stayed where they are: they were moved again since, or deleted."


@dataclass(frozen=True)
class ValidationFill:
    """What a move of test images into validation did; `entry` is its audit entry (what an undo restores)."""

    good: int
    defect: int
    classes: dict[str, int]
    seed: int
    entry: AuditEntry

    @property
    def message(self) -> str:
        classes = ", ".join(f"{n} {name}" for name, n in self.classes.items())
        return SPLITS_MOVED.format(
            n=self.good + self.defect,
            good=self.good,
            defect=self.defect,
            classes=f": {classes}" if classes else "",
            seed=self.seed,
        )


def validation_split_fill(
    *, project: Project, user: AbstractBaseUser | None, share: float = VALIDATION_SHARE, seed: int = SPLIT_SEED
) -> ValidationFill:
    """Moves a stratified share of the labelled test images (per label and per defect class, seeded) into the
    validation split as a person's split change: fixed from now on, in the audit log, and undoable."""
    test_images = list(
        Image.objects.filter(project=project, split=Split.TEST, label__in=(Label.GOOD, Label.DEFECT))
        .prefetch_related("annotations__defect_class")
        .order_by("sha256")
    )
    strata = {i.id: (i.label, tuple(sorted({a.defect_class.name for a in i.annotations.all()}))) for i in test_images}
    chosen = stratified_pick(test_images, strata=strata, share=share, rng=random.Random(seed))
    if not chosen:
        raise ValidationError(NOTHING_TO_MOVE)
    classes = Counter(name for image in chosen for name in strata[image.id][1])
    result = images_split_change(project=project, images=[i.id for i in chosen], split=Split.VALIDATION, user=user)
    return ValidationFill(
        good=sum(i.label == Label.GOOD for i in chosen),
        defect=sum(i.label == Label.DEFECT for i in chosen),
        classes=dict(sorted(classes.items())),
        seed=seed,
        entry=result.entry,
    )


def split_change_undo(*, project: Project, entry_id: int, user: AbstractBaseUser) -> str:
    """Undoes a split change (the bulk change's undo: only images nobody moved since); says what happened."""
    result = bulk_change_undo(project=project, entry_id=entry_id, user=user)
    kept = sum(result.skipped.values())
    return MOVE_UNDONE.format(n=result.changed) + (MOVE_UNDONE_PARTLY.format(kept=kept) if kept else "")
