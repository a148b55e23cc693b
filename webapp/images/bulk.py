"""Changes to many images at once (label, split, the defect class of their drawings, deletion) and their undo.

Each change touches only the images whose value actually changes, writes one audit entry, and keeps in that
entry the previous values of every image it changed (`changes`), so an undo can put exactly those values back.
An undo restores only the images still holding the value the change gave them: a later edit by someone else wins.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from webapp.audit.models import AuditAction, AuditEntry
from webapp.audit.services import audit_record
from webapp.images.models import Annotation, Image, Label, Split
from webapp.images.services import BAD_LABEL, BAD_SPLIT, images_delete
from webapp.projects.models import DefectClass, Project

CHUNK = 500  # ids per UPDATE: stays far below SQLite's limit on query parameters
UNKNOWN_CLASS = "Defect class {value} is not one of this project's classes."
NOTHING_TO_UNDO = "There is no such change to undo."
NOT_YOURS = "Only the person who made a change can undo it."
UNDONE_ALREADY = "This change was undone already."
UNDOABLE = (AuditAction.LABEL, AuditAction.SPLIT, AuditAction.DEFECT_CLASS)


@dataclass(frozen=True)
class BulkResult:
    changed: int  # images whose value changed
    skipped: dict[str, int]  # reason -> images left alone
    entry: AuditEntry | None  # the audit entry (None when nothing changed)


# Reasons an image is left alone, shown to people after a bulk change.
SKIP_HAS_DRAWINGS = "have drawn masks or boxes, so they stay defects (clear the drawings first)"
SKIP_SEVERAL_CLASSES = "have drawings in several classes (change those in the editor)"
SKIP_NO_DRAWINGS = "have no drawings to move"


def _chunks(ids: list[int]):
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _in_project(project: Project, images: QuerySet[Image] | list[int]) -> QuerySet[Image]:
    """The given images (a queryset, e.g. a filter's, or ids) limited to the project, without annotations."""
    ids = images.values("id") if isinstance(images, QuerySet) else list(images)
    return Image.objects.filter(project=project, id__in=ids)


def _target(image_ids: list[int]) -> str:
    if len(image_ids) == 1:
        return Image.objects.filter(id=image_ids[0]).values_list("original_name", flat=True).first() or "1 image"
    return f"{len(image_ids)} images"


def _fields_change(
    *, project: Project, images: QuerySet[Image], values: dict, shown: str, action: str, user, bump: bool
) -> BulkResult:
    """Sets `values` on the images that do not hold them all yet; `shown` is the field the audit log names."""
    fields = list(values)
    with transaction.atomic():
        rows = list(images.exclude(**values).select_for_update().order_by("id").values_list("id", *fields))
        if not rows:
            return BulkResult(changed=0, skipped={}, entry=None)
        previous: dict[tuple, list[int]] = defaultdict(list)
        for image_id, *old in rows:
            previous[tuple(old)].append(image_id)
        ids = [row[0] for row in rows]
        update = dict(values, annotation_version=F("annotation_version") + 1) if bump else values
        for chunk in _chunks(ids):
            Image.objects.filter(id__in=chunk).update(**update)
        shown_at = fields.index(shown)
        entry = audit_record(
            project=project,
            user=user,
            action=action,
            target=_target(ids),
            before={shown: dict(Counter(row[1 + shown_at] for row in rows))},
            after={shown: values[shown]},
            changes={
                "fields": fields,
                "after": values,
                "bump": bump,
                "previous": [[list(old), group] for old, group in previous.items()],
            },
        )
    return BulkResult(changed=len(ids), skipped={}, entry=entry)


def images_label_change(
    *, project: Project, images: QuerySet[Image] | list[int], label: str, user: AbstractBaseUser | None
) -> BulkResult:
    """A person's label for many images. Images with drawings cannot become good (the editor's rule)."""
    if label not in Label.values:
        raise ValidationError(BAD_LABEL.format(value=label))
    scope = _in_project(project, images)
    skipped = {}
    if label == Label.GOOD:
        drawn = Exists(Annotation.objects.filter(image=OuterRef("pk")))
        with_drawings = scope.filter(drawn).exclude(label=label).count()
        scope = scope.exclude(drawn)
        if with_drawings:
            skipped[SKIP_HAS_DRAWINGS] = with_drawings
    # A new label is an annotation edit too: an editor open on one of these images must not overwrite it.
    result = _fields_change(
        project=project,
        images=scope,
        values={"label": label},
        shown="label",
        action=AuditAction.LABEL,
        user=user,
        bump=True,
    )
    return BulkResult(changed=result.changed, skipped=skipped, entry=result.entry)


def images_split_change(
    *, project: Project, images: QuerySet[Image] | list[int], split: str, user: AbstractBaseUser | None
) -> BulkResult:
    """A person's choice of split: fixed from now on (rebalancing leaves these images alone)."""
    if split not in Split.values:
        raise ValidationError(BAD_SPLIT.format(value=split))
    return _fields_change(
        project=project,
        images=_in_project(project, images),
        values={"split": split, "split_is_automatic": False},
        shown="split",
        action=AuditAction.SPLIT,
        user=user,
        bump=False,
    )


def images_defect_class_change(
    *, project: Project, images: QuerySet[Image] | list[int], defect_class_id: int, user: AbstractBaseUser | None
) -> BulkResult:
    """Files the drawings (masks and boxes) of each image under another class. An image with drawings in
    several classes is left alone: which of its masks goes where is a decision for the editor."""
    target = DefectClass.objects.filter(project=project, id=defect_class_id).first()
    if target is None:
        raise ValidationError(UNKNOWN_CLASS.format(value=defect_class_id))
    scope = _in_project(project, images)
    with transaction.atomic():
        by_image: dict[int, list[tuple[int, int]]] = defaultdict(list)
        rows = Annotation.objects.filter(image__in=scope).select_for_update().order_by("id")
        for annotation_id, image_id, class_id in rows.values_list("id", "image_id", "defect_class_id"):
            by_image[image_id].append((annotation_id, class_id))
        several = sum(1 for layers in by_image.values() if len(layers) > 1)
        moving = {i: layers[0] for i, layers in by_image.items() if len(layers) == 1 and layers[0][1] != target.id}
        skipped = {SKIP_SEVERAL_CLASSES: several, SKIP_NO_DRAWINGS: scope.count() - len(by_image)}
        skipped = {reason: n for reason, n in skipped.items() if n}
        if not moving:
            return BulkResult(changed=0, skipped=skipped, entry=None)
        previous: dict[int, list[int]] = defaultdict(list)
        for annotation_id, class_id in moving.values():
            previous[class_id].append(annotation_id)
        image_ids = sorted(moving)
        for chunk in _chunks([annotation_id for annotation_id, _ in moving.values()]):
            Annotation.objects.filter(id__in=chunk).update(defect_class=target)
        for chunk in _chunks(image_ids):
            Image.objects.filter(id__in=chunk).update(annotation_version=F("annotation_version") + 1)
        names = dict(DefectClass.objects.filter(id__in=previous).values_list("id", "name"))
        entry = audit_record(
            project=project,
            user=user,
            action=AuditAction.DEFECT_CLASS,
            target=_target(image_ids),
            before={"defect_class": {names[c]: len(ids) for c, ids in previous.items()}},
            after={"defect_class": target.name},
            changes={"annotations": [[c, ids] for c, ids in previous.items()], "after_class": target.id},
        )
    return BulkResult(changed=len(image_ids), skipped=skipped, entry=entry)


def images_bulk_delete(*, project: Project, images: QuerySet[Image] | list[int], user: AbstractBaseUser | None) -> int:
    """Deletes the images with their files (no undo: the files are gone) and records how many."""
    ids = list(_in_project(project, images).values_list("id", flat=True))
    if not ids:
        return 0
    target = _target(ids)
    with transaction.atomic():
        count = images_delete(project=project, image_ids=ids)
        audit_record(
            project=project, user=user, action=AuditAction.IMAGES_DELETE, target=target, after={"deleted": count}
        )
    return count


def bulk_change_undo(*, project: Project, entry_id: int, user: AbstractBaseUser) -> BulkResult:
    """Puts back the previous values of a bulk change's images (those nobody changed again since), once."""
    with transaction.atomic():
        entry = AuditEntry.objects.filter(project=project, id=entry_id, action__in=UNDOABLE).first()
        if entry is None or not entry.changes:
            raise ValidationError(NOTHING_TO_UNDO)
        if entry.user_id != user.pk:
            raise ValidationError(NOT_YOURS)
        # The conditional UPDATE is the lock: of two undo clicks, one marks the entry.
        if AuditEntry.objects.filter(id=entry.id, undone_at__isnull=True).update(undone_at=timezone.now()) != 1:
            raise ValidationError(UNDONE_ALREADY)
        changes = entry.changes
        if "fields" in changes:
            restored, total = _fields_restore(project=project, changes=changes)
        else:
            restored, total = _classes_restore(project=project, changes=changes)
        skipped = {"were changed again since, or deleted, and were left alone": total - restored}
        undo = audit_record(
            project=project,
            user=user,
            action=AuditAction.UNDO,
            target=f"{entry.get_action_display().lower()}: {entry.target}",
            before=entry.after,
            after={**entry.before, "restored": restored},
        )
    return BulkResult(changed=restored, skipped={k: n for k, n in skipped.items() if n}, entry=undo)


def _fields_restore(*, project: Project, changes: dict) -> tuple[int, int]:
    restored = total = 0
    for old, ids in changes["previous"]:
        values = dict(zip(changes["fields"], old, strict=True))
        if changes.get("bump"):
            values["annotation_version"] = F("annotation_version") + 1
        total += len(ids)
        for chunk in _chunks(ids):
            still = Image.objects.filter(project=project, id__in=chunk, **changes["after"])
            restored += still.update(**values)
    return restored, total


def _classes_restore(*, project: Project, changes: dict) -> tuple[int, int]:
    restored = total = 0
    for old_class, ids in changes["annotations"]:
        total += len(ids)
        # Not where the image has meanwhile got a drawing of the old class (one annotation per image and class).
        taken = Exists(Annotation.objects.filter(image=OuterRef("image"), defect_class_id=old_class))
        for chunk in _chunks(ids):
            movable = Annotation.objects.filter(
                id__in=chunk, image__project=project, defect_class_id=changes["after_class"]
            ).exclude(taken)
            rows = list(movable.values_list("id", "image_id"))
            restored += Annotation.objects.filter(id__in=[r[0] for r in rows]).update(defect_class_id=old_class)
            Image.objects.filter(id__in=[r[1] for r in rows]).update(annotation_version=F("annotation_version") + 1)
    return restored, total
