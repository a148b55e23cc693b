"""Writes about images: labels, splits, deletion, thumbnails, masks."""

from __future__ import annotations

import io

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from PIL import Image as PILImage

from webapp.images.intake.decoding import open_oriented, to_display_rgb
from webapp.images.models import Annotation, Image, Label, Split, ThumbnailState
from webapp.projects.models import Project
from webapp.storage import stored_file_read, stored_file_write, stored_files_delete_on_commit

THUMBNAIL_SIZE = 256
BAD_LABEL = "Unknown label {value!r}: use good, defect or unlabelled."
BAD_SPLIT = "Unknown split {value!r}: use train, validation or test."


def annotation_mask_png(mask: np.ndarray) -> bytes:
    """A boolean H x W mask as an 8-bit PNG of 0 and 255."""
    buffer = io.BytesIO()
    PILImage.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def images_set_label(*, project: Project, image_ids: list[int], label: str) -> int:
    if label not in Label.values:
        raise ValidationError(BAD_LABEL.format(value=label))
    # A new label is an annotation edit too: an editor open on one of these images must not overwrite it.
    images = Image.objects.filter(project=project, id__in=image_ids)
    return images.update(label=label, annotation_version=F("annotation_version") + 1)


def images_set_split(*, project: Project, image_ids: list[int], split: str) -> int:
    """A person's choice of split: fixed from now on (rebalancing leaves these images alone)."""
    if split not in Split.values:
        raise ValidationError(BAD_SPLIT.format(value=split))
    return Image.objects.filter(project=project, id__in=image_ids).update(split=split, split_is_automatic=False)


@transaction.atomic
def images_delete(*, project: Project, image_ids: list[int]) -> int:
    images = Image.objects.filter(project=project, id__in=image_ids)
    names = [n for pair in images.values_list("file", "thumbnail") for n in pair if n]
    annotations = Annotation.objects.filter(image__in=images)
    names += [n for n in annotations.values_list("mask", flat=True) if n]
    annotations.delete()
    count, _ = images.delete()
    stored_files_delete_on_commit(names)
    return len(image_ids) if count else 0


def image_thumbnail_make(*, image: Image) -> None:
    """A JPEG thumbnail (EXIF orientation applied, 16-bit scaled) beside the original."""
    try:
        picture = to_display_rgb(open_oriented(stored_file_read(image.file.name)))
        picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
    except Exception:
        Image.objects.filter(id=image.id).update(thumbnail_state=ThumbnailState.FAILED)
        raise
    name = stored_file_write(f"projects/{image.project.public_id}/thumbs/{image.sha256}.jpg", buffer.getvalue())
    Image.objects.filter(id=image.id).update(thumbnail=name, thumbnail_state=ThumbnailState.READY)
