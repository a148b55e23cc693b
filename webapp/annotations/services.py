"""Writes about annotations: the editor's save (label, masks and boxes of one image, guarded by the image's
annotation version) and the same for imports."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from webapp.audit.models import AuditAction
from webapp.audit.services import audit_record_edit
from webapp.images.models import Annotation, Image, Label, Source
from webapp.images.services import annotation_mask_png
from webapp.projects.models import DefectClass
from webapp.storage import stored_file_write, stored_files_delete, stored_files_delete_on_commit

STALE_EDIT = (
    "This image was saved elsewhere after you opened it (it is now at version {current}; you started from "
    "{expected}). Reload the page to see the newer annotations, then redo your change."
)
BAD_LABEL = "Unknown label {value!r}: use good, defect or unlabelled."
GOOD_WITH_DRAWINGS = "An image with drawn masks or boxes is a defect; clear the drawings before calling it good."
UNKNOWN_CLASS = "Defect class {value} is not one of this project's classes."
MASK_SIZE = "The mask for {name} is {got_w}x{got_h} but the image is {w}x{h}; masks are saved at full resolution."
BAD_BOX = "A box must be four whole pixel numbers x0 < x1 <= {w}, y0 < y1 <= {h}; got {value!r}."
TOO_MANY_BOXES = "{count:,} boxes for one class; at most {limit:,} are accepted per class and image."
CLASS_TWICE = "Defect class {value} is sent twice in one save."
# Far more than a person draws; a bound so that one request cannot make a save (or an import) run for minutes.
MAX_BOXES_PER_CLASS = 1000
SAVEABLE_SOURCES = (Source.MANUAL, Source.IMPORT, Source.MODEL, Source.REVIEW)


class AnnotationConflict(Exception):
    """A save from a stale editor: someone saved the image since. `str(exc)` says what to do."""


@dataclass
class LayerEdit:
    """The new state of one defect class on one image. mask: bool H x W, or None for no mask."""

    defect_class_id: int
    mask: np.ndarray | None = None
    boxes: list[list[int]] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.boxes and (self.mask is None or not self.mask.any())


def boxes_clean(*, boxes, width: int, height: int) -> list[list[int]]:
    """Boxes as [x0, y0, x1, y1] integer pixels inside the image, x1 and y1 exclusive. Raises ValidationError."""
    if not isinstance(boxes, list):
        raise ValidationError(BAD_BOX.format(w=width, h=height, value=boxes))
    if len(boxes) > MAX_BOXES_PER_CLASS:
        raise ValidationError(TOO_MANY_BOXES.format(count=len(boxes), limit=MAX_BOXES_PER_CLASS))
    out = []
    for box in boxes:
        ok = isinstance(box, list | tuple) and len(box) == 4 and all(isinstance(v, int) for v in box)
        if not ok or not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
            raise ValidationError(BAD_BOX.format(w=width, h=height, value=box))
        out.append([int(v) for v in box])
    return out


def layer_classes_check(*, image: Image, class_ids: list[int]) -> dict[int, DefectClass]:
    """The image's project's classes by id, once the ids sent are known to be distinct classes of that project
    (checked before any mask is decoded). Raises ValidationError."""
    classes = {c.id: c for c in DefectClass.objects.filter(project_id=image.project_id)}
    seen: set[int] = set()
    for class_id in class_ids:
        if class_id not in classes:
            raise ValidationError(UNKNOWN_CLASS.format(value=class_id))
        if class_id in seen:
            raise ValidationError(CLASS_TWICE.format(value=class_id))
        seen.add(class_id)
    return classes


def annotation_save(
    *,
    image: Image,
    user: AbstractBaseUser | None,
    expected_version: int,
    label: str,
    layers: list[LayerEdit],
    source: str = Source.MANUAL,
) -> int:
    """Saves the image's label and the given classes' masks and boxes (classes not named stay as they are) and
    returns the image's new annotation version. Raises AnnotationConflict when the image is no longer at
    `expected_version`, ValidationError when the edit does not fit the image."""
    if label not in Label.values:
        raise ValidationError(BAD_LABEL.format(value=label))
    if source not in SAVEABLE_SOURCES:
        raise ValidationError(f"Unknown annotation source {source!r}.")
    classes = layer_classes_check(image=image, class_ids=[layer.defect_class_id for layer in layers])
    for layer in layers:
        if layer.mask is not None and layer.mask.shape != (image.height, image.width):
            raise ValidationError(
                MASK_SIZE.format(
                    name=classes[layer.defect_class_id].name,
                    got_w=layer.mask.shape[1],
                    got_h=layer.mask.shape[0],
                    w=image.width,
                    h=image.height,
                )
            )
        layer.boxes = boxes_clean(boxes=layer.boxes, width=image.width, height=image.height)
    edited = {layer.defect_class_id for layer in layers}
    kept = Annotation.objects.filter(image=image).exclude(defect_class_id__in=edited).exists()
    if kept or any(not layer.is_empty for layer in layers):
        if label == Label.GOOD:
            raise ValidationError(GOOD_WITH_DRAWINGS)
        label = Label.DEFECT  # drawing a defect makes the image a defect

    written: list[str] = []
    try:
        with transaction.atomic():
            before = _drawn_state(image=image, version=expected_version)
            # The conditional UPDATE is the lock: of two saves from the same version, one changes the row.
            claimed = Image.objects.filter(id=image.id, annotation_version=expected_version).update(
                annotation_version=F("annotation_version") + 1, label=label
            )
            if claimed != 1:
                current = Image.objects.filter(id=image.id).values_list("annotation_version", flat=True).first()
                raise AnnotationConflict(STALE_EDIT.format(current=current, expected=expected_version))
            version = expected_version + 1
            for layer in layers:
                written += _layer_store(image=image, layer=layer, version=version, user=user, source=source)
            if source != Source.IMPORT:  # a dataset import would write thousands of rows: not image by image
                audit_record_edit(
                    project=image.project_id,
                    user=user,
                    action=AuditAction.ANNOTATION,
                    target=image.original_name,
                    before=before,
                    after=_drawn_state(image=image, version=version),
                )
    except BaseException:
        stored_files_delete(written)
        raise
    image.annotation_version, image.label = version, label
    return version


def _drawn_state(*, image: Image, version: int) -> dict:
    """The image's label and what is drawn in each class, as the audit log shows it."""
    label = Image.objects.filter(id=image.id).values_list("label", flat=True).first()
    drawn = {}
    for annotation in Annotation.objects.filter(image=image).select_related("defect_class"):
        parts = ["mask"] if annotation.mask else []
        parts += [f"{len(annotation.boxes)} box(es)"] if annotation.boxes else []
        drawn[annotation.defect_class.name] = " + ".join(parts)
    return {"label": label, "drawings": dict(sorted(drawn.items())), "version": version}


def _layer_store(*, image: Image, layer: LayerEdit, version: int, user, source: str) -> list[str]:
    """Writes one class's annotation; returns the names of files written (for cleanup on failure)."""
    existing = Annotation.objects.filter(image=image, defect_class_id=layer.defect_class_id).first()
    old_mask = existing.mask.name if existing and existing.mask else ""
    if layer.is_empty:
        if existing:
            existing.delete()
        stored_files_delete_on_commit([old_mask])
        return []
    name = ""
    if layer.mask is not None and layer.mask.any():
        # A new name per version: a stale reader never sees a half-written file, and caches never go stale.
        base = f"projects/{image.project.public_id}/masks/{image.sha256}_{layer.defect_class_id}_v{version}.png"
        name = stored_file_write(base, annotation_mask_png(layer.mask))
    Annotation.objects.update_or_create(
        image=image,
        defect_class_id=layer.defect_class_id,
        defaults={"mask": name, "boxes": layer.boxes, "source": source, "author": user, "version": version},
    )
    stored_files_delete_on_commit([old_mask] if old_mask != name else [])
    return [name] if name else []
