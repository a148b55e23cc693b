"""Writes for review: the policy, routing new predictions to people, claiming and deciding items, and putting
decided items into the dataset with the human label."""

from __future__ import annotations

import io
import random
from pathlib import PurePosixPath

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image as PILImage

from webapp.audit.models import AuditAction
from webapp.audit.services import audit_record
from webapp.images.intake.ingest import ADDED, DUPLICATE, IncomingFile, images_ingest
from webapp.images.intake.layout import PlannedImage
from webapp.images.models import Annotation, Image, Label, Source, Split
from webapp.images.services import annotation_mask_png
from webapp.inference.models import Prediction, Purpose
from webapp.projects.access import Action, project_for
from webapp.projects.models import Project
from webapp.projects.services import defect_class_get_or_create
from webapp.review.models import Decision, ItemStatus, ReviewDecision, ReviewItem, ReviewPolicy
from webapp.review.routing import review_reason
from webapp.review.selectors import free_for
from webapp.storage import stored_file_read, stored_file_write

BAD_BAND = "The band needs 0 ≤ low ≤ high ≤ 1 (0.5 is the threshold); got {low} to {high}."
BAD_AUDIT = "The audit share is a percentage from 0 to 100; got {value}."
BAD_SPLIT = "Unknown split {value!r}."
BAD_DECISION = "Unknown decision {value!r}: use accept, good, defect or mask."
ALREADY_DECIDED = "Someone else decided this item a moment ago; here is the next one."
CLAIMED_BY_OTHER = "Another reviewer is looking at this item; here is the next one."
NO_INPUT = "The image behind this prediction is no longer stored, so it cannot join the dataset."
# The class a model's accepted mask is filed under when the project has no defect classes yet.
DEFAULT_CLASS = "defect"
ROUTED_PURPOSES = (Purpose.TRIAL, Purpose.API, Purpose.BATCH)
# What a decision did to the dataset (the review card counts only decisions that changed it).
ADDED_TO_DATASET, RELABELLED, MASK_ADDED, UNCHANGED = "added", "relabelled", "mask", ""


class ReviewConflict(Exception):
    """Another reviewer holds or already decided the item. `str(exc)` is the message for people."""


def review_policy_save(
    *,
    project: Project,
    user: AbstractBaseUser,
    enabled: bool,
    band_low: float,
    band_high: float,
    audit_percent: float,
    split: str = Split.TRAIN,
) -> ReviewPolicy:
    """The policy decides how much work lands on reviewers, so only those who manage the project set it."""
    project_for(user, project.public_id, Action.MANAGE)
    if not (0 <= band_low <= band_high <= 1):
        raise ValidationError(BAD_BAND.format(low=band_low, high=band_high))
    if not (0 <= audit_percent <= 100):
        raise ValidationError(BAD_AUDIT.format(value=audit_percent))
    if split not in Split.values:
        raise ValidationError(BAD_SPLIT.format(value=split))
    policy, _ = ReviewPolicy.objects.update_or_create(
        project=project,
        defaults={
            "enabled": enabled,
            "band_low": band_low,
            "band_high": band_high,
            "audit_percent": audit_percent,
            "split": split,
        },
    )
    return policy


def prediction_route_for_review(*, prediction: Prediction, rng: random.Random | None = None) -> ReviewItem | None:
    """Called once for every new prediction: queues it for people when the project's policy says so."""
    if prediction.purpose not in ROUTED_PURPOSES:
        return None
    project_id = prediction.model_version.project_id
    policy = ReviewPolicy.objects.filter(project_id=project_id, enabled=True).first()
    if policy is None:
        return None
    reason = review_reason(
        normalised_score=prediction.normalised_score,
        band_low=policy.band_low,
        band_high=policy.band_high,
        audit_percent=policy.audit_percent,
        rng=rng or random.Random(),
    )
    if reason is None:
        return None
    return ReviewItem.objects.create(project_id=project_id, prediction=prediction, reason=reason)


def review_item_claim(*, item: ReviewItem, user: AbstractBaseUser) -> bool:
    """Marks the item as being looked at by `user`; False when another reviewer holds a live claim on it."""
    claimed = ReviewItem.objects.filter(free_for(user), id=item.id, status=ItemStatus.PENDING).update(
        claimed_by=user, claimed_at=timezone.now()
    )
    return claimed == 1


def _human_label(decision: str, prediction: Prediction) -> str:
    if decision == Decision.ACCEPT:
        return Label.DEFECT if prediction.is_anomalous else Label.GOOD
    return Label.GOOD if decision == Decision.GOOD else Label.DEFECT


def _dataset_image(*, item: ReviewItem, label: str, split: str, user) -> tuple[Image, str]:
    """The prediction's image with the human label: relabelled when already in the dataset, else ingested from
    the stored input (source review) into `split`. Also says what happened to the dataset: ADDED_TO_DATASET,
    RELABELLED or UNCHANGED (the image was there already with this label, e.g. a trial of a dataset image)."""
    prediction = item.prediction
    image = prediction.image
    change = UNCHANGED
    if image is None:
        if not prediction.input_file:
            raise ValidationError(NO_INPUT)
        # A zip member's name is "archive.zip:folder/part.png": the dataset keeps the file's own name.
        name = PurePosixPath(prediction.input_name.rsplit(":", 1)[-1] or prediction.input_file.name).name
        incoming = IncomingFile(
            name=name,
            read=lambda: stored_file_read(prediction.input_file.name),
            planned=PlannedImage(path=name, label=label, split=split),
        )
        outcome = images_ingest(project=item.project, user=user, files=[incoming], source=Source.REVIEW).results[0]
        if outcome.status not in (ADDED, DUPLICATE) or outcome.image is None:
            raise ValidationError(outcome.message or NO_INPUT)
        image = outcome.image
        change = ADDED_TO_DATASET if outcome.status == ADDED else UNCHANGED
        Prediction.objects.filter(id=prediction.id).update(image=image)
    if image.label != label:
        # A new label is an annotation edit: an editor open on this image must not overwrite it.
        Image.objects.filter(id=image.id).update(label=label, annotation_version=F("annotation_version") + 1)
        image.label = label
        change = change or RELABELLED
    return image, change


def _keep_predicted_mask(*, image: Image, prediction: Prediction, user) -> bool:
    """The model's mask becomes the image's annotation (source review) when nobody drew one yet."""
    if not prediction.predicted_mask or image.annotations.exists():
        return False
    with PILImage.open(io.BytesIO(stored_file_read(prediction.predicted_mask.name))) as stored:
        mask = stored.convert("L")
        if mask.size != (image.width, image.height):  # maps can be stored smaller than the original
            mask = mask.resize((image.width, image.height), PILImage.NEAREST)
        mask = np.asarray(mask) > 127
    if not mask.any():
        return False
    classes = list(image.project.defect_classes.all()[:1])
    defect_class = classes[0] if classes else defect_class_get_or_create(project=image.project, name=DEFAULT_CLASS)
    name = stored_file_write(
        f"projects/{image.project.public_id}/masks/{image.sha256}_{defect_class.id}.png", annotation_mask_png(mask)
    )
    Annotation.objects.create(image=image, defect_class=defect_class, mask=name, source=Source.REVIEW, author=user)
    Image.objects.filter(id=image.id).update(annotation_version=F("annotation_version") + 1)
    return True


@transaction.atomic
def review_item_decide(*, item: ReviewItem, decision: str, user: AbstractBaseUser) -> ReviewDecision:
    """Records a reviewer's decision once: a conditional UPDATE from pending to decided, so of two reviewers
    deciding the same item the second is refused (ReviewConflict). The image then joins the dataset with the
    human label; an accepted defect keeps the model's mask."""
    project, _ = project_for(user, item.project.public_id, Action.REVIEW)
    if decision not in Decision.values:
        raise ValidationError(BAD_DECISION.format(value=decision))
    now = timezone.now()
    updated = ReviewItem.objects.filter(id=item.id, status=ItemStatus.PENDING).update(
        status=ItemStatus.DECIDED, decision=decision, decided_by=user, decided_at=now
    )
    if updated != 1:
        raise ReviewConflict(ALREADY_DECIDED)
    prediction = Prediction.objects.select_related("model_version", "image").get(id=item.prediction_id)
    item.prediction = prediction
    before_label = prediction.image.label if prediction.image else None
    label = _human_label(decision, prediction)
    split = getattr(ReviewPolicy.objects.filter(project=project).first(), "split", Split.TRAIN)
    image, change = _dataset_image(item=item, label=label, split=split, user=user)
    mask_kept = False
    if decision == Decision.ACCEPT and label == Label.DEFECT:
        mask_kept = _keep_predicted_mask(image=image, prediction=prediction, user=user)
    # "mask" sends the reviewer on to the editor to draw the defect: the decision changes the masks.
    change = change or (MASK_ADDED if mask_kept or decision == Decision.MASK else UNCHANGED)
    ReviewItem.objects.filter(id=item.id).update(image=image)
    item.status, item.decision, item.decided_by, item.decided_at, item.image = (
        ItemStatus.DECIDED, decision, user, now, image
    )  # fmt: skip
    model_call = Label.DEFECT if prediction.is_anomalous else Label.GOOD
    before = {
        "model_call": model_call,
        "normalised_score": prediction.normalised_score,
        "model_version": prediction.model_version.number,
        "image_label": before_label,
    }
    after = {
        "label": label,
        "split": image.split,
        "image": str(image.public_id),
        "mask_from_model": mask_kept,
        "dataset_change": change,
    }
    audit_record(
        project=project,
        user=user,
        action=AuditAction.REVIEW,
        target=f"review item {item.id} ({image.original_name})",
        before={"model_call": model_call, "image_label": before_label},
        after={"decision": decision, "label": label, "dataset": change or "unchanged"},
    )
    return ReviewDecision.objects.create(
        item=item,
        reviewer=user,
        decision=decision,
        agrees_with_model=(label == model_call),
        before=before,
        after=after,
    )
