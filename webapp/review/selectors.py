"""Reads for review: the next item for a reviewer, one item with its audit trail, and the project's review card."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.utils import timezone

from webapp.projects.models import Project
from webapp.review.models import ItemStatus, ReviewDecision, ReviewItem, ReviewPolicy

CLAIM_SECONDS = 300  # a reviewer who walks away frees the item after this long
RETRAIN_AFTER = 10  # reviewed items since the active version was trained before retraining is suggested
AGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
CALLS = ("good", "defect")


def policy_of(*, project: Project) -> ReviewPolicy:
    """The saved policy, or the default (off) one, unsaved."""
    return ReviewPolicy.objects.filter(project=project).first() or ReviewPolicy(project=project)


def pending_items(*, project: Project, age: str = "", call: str = "") -> QuerySet[ReviewItem]:
    items = ReviewItem.objects.filter(project=project, status=ItemStatus.PENDING)
    if age in AGES:
        items = items.filter(created_at__gte=timezone.now() - AGES[age])
    if call in CALLS:
        items = items.filter(prediction__is_anomalous=(call == "defect"))
    return items


def free_for(user: AbstractBaseUser) -> Q:
    """Items nobody else holds a live claim on."""
    expiry = timezone.now() - timedelta(seconds=CLAIM_SECONDS)
    return Q(claimed_by__isnull=True) | Q(claimed_by=user) | Q(claimed_at__lt=expiry)


def next_item_for(
    *, project: Project, user: AbstractBaseUser, age: str = "", call: str = "", after: int | None = None
) -> ReviewItem | None:
    """The oldest pending item matching the filters that nobody else is looking at; `after` skips past an item."""
    items = pending_items(project=project, age=age, call=call).filter(free_for(user))
    items = items.select_related("prediction__model_version", "prediction__image").order_by("id")
    if after is not None:
        # Past the last item the queue wraps around to the skipped ones.
        return items.filter(id__gt=after).first() or items.first()
    return items.first()


def queue_place(*, project: Project, item: ReviewItem, age: str = "", call: str = "") -> tuple[int, int]:
    """(n, N): the item is the n-th of the N pending items under these filters, oldest first."""
    pending = pending_items(project=project, age=age, call=call)
    return pending.filter(id__lte=item.id).count(), pending.count()


def item_in_project(*, project: Project, item_id: int) -> ReviewItem | None:
    return (
        ReviewItem.objects.select_related("prediction__model_version", "prediction__image", "image", "decided_by")
        .filter(project=project, id=item_id)
        .first()
    )


def decisions_of(*, item: ReviewItem) -> QuerySet[ReviewDecision]:
    return item.decisions.select_related("reviewer")


@dataclass(frozen=True)
class ReviewSummary:
    enabled: bool
    queue_size: int
    decided_last_hour: int
    decided_last_day: int
    agreement: float | None  # share of all decisions that agreed with the model's call
    reviewed_since_training: int  # decisions newer than the active version that changed the dataset
    suggest_retraining: bool


def review_summary(*, project: Project) -> ReviewSummary:
    now = timezone.now()
    decisions = ReviewDecision.objects.filter(item__project=project)
    total = decisions.count()
    agreed = decisions.filter(agrees_with_model=True).count()
    active = project.model_versions.filter(is_active=True).first()
    # Only decisions that added an image, changed its label or gave it a mask: confirming what the dataset
    # already says gives the next training run nothing new.
    changed = decisions.exclude(after__dataset_change="").filter(after__has_key="dataset_change")
    since = changed.filter(created_at__gt=active.created_at).count() if active else changed.count()
    return ReviewSummary(
        enabled=policy_of(project=project).enabled,
        queue_size=ReviewItem.objects.filter(project=project, status=ItemStatus.PENDING).count(),
        decided_last_hour=decisions.filter(created_at__gte=now - timedelta(hours=1)).count(),
        decided_last_day=decisions.filter(created_at__gte=now - timedelta(days=1)).count(),
        agreement=agreed / total if total else None,
        reviewed_since_training=since,
        suggest_retraining=since >= RETRAIN_AFTER,
    )
