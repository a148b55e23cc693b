"""Writes about images: labels, splits, deletion, thumbnails, masks."""

from __future__ import annotations

import io
import logging
from datetime import timedelta

import numpy as np
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from PIL import Image as PILImage

from webapp.images.intake.decoding import display_rgb
from webapp.images.models import Annotation, Image, ThumbnailState
from webapp.projects.models import Project
from webapp.storage import stored_file_read, stored_file_write, stored_files_delete_on_commit

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256
# Ids per thumbnail task: uploads send one task per chunk as its rows commit, so a web worker that dies mid-upload
# strands at most one chunk, and the periodic check below sends that one.
THUMBNAIL_CHUNK = 25
# Pending work not sent or started for this long is sent again by beat (every THUMBNAIL_CHECK_SECONDS), so a
# thumbnail lost with a killed worker is made again within STALE + CHECK (90 s) plus the time to make it.
THUMBNAIL_STALE_AFTER = timedelta(seconds=60)
THUMBNAIL_CHECK_SECONDS = 30
# A worker that dies this many times on one image (out of memory on a hostile file) will not be sent it again.
THUMBNAIL_MAX_ATTEMPTS = 3
THUMBNAIL_GAVE_UP = "No preview: the worker making it stopped {attempts} times (out of memory, or killed)."
BAD_LABEL = "Unknown label {value!r}: use good, defect or unlabelled."
BAD_SPLIT = "Unknown split {value!r}: use train, validation or test."


def annotation_mask_png(mask: np.ndarray) -> bytes:
    """A boolean H x W mask as an 8-bit PNG of 0 and 255."""
    buffer = io.BytesIO()
    # One byte per pixel throughout: np.where(mask, 255, 0) made an int64 copy, 8 bytes per pixel.
    grey = np.ascontiguousarray(mask, dtype=bool).view(np.uint8) * np.uint8(255)
    PILImage.fromarray(grey, "L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


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


def thumbnails_queue(*, image_ids: list[int]) -> None:
    """Sends the images' thumbnail work to the default queue once the current transaction commits (at once
    outside one), one task per THUMBNAIL_CHUNK ids, and records when each was sent."""
    from webapp.images.tasks import thumbnails_make_task

    ids = list(image_ids)

    def send() -> None:
        for start in range(0, len(ids), THUMBNAIL_CHUNK):
            chunk = ids[start : start + THUMBNAIL_CHUNK]
            Image.objects.filter(id__in=chunk, thumbnail_state=ThumbnailState.PENDING).update(
                thumbnail_queued_at=timezone.now()
            )
            thumbnails_make_task.delay(chunk)

    if ids:
        transaction.on_commit(send)


def thumbnails_retry(*, images: list[Image]) -> int:
    """A person sent these images again: the ones without a thumbnail (pending or failed) get a fresh set of
    attempts and are queued again. Returns how many."""
    ids = [i.id for i in images if i.thumbnail_state != ThumbnailState.READY]
    if not ids:
        return 0
    Image.objects.filter(id__in=ids).exclude(thumbnail_state=ThumbnailState.READY).update(
        thumbnail_state=ThumbnailState.PENDING, thumbnail_attempts=0, thumbnail_error=""
    )
    thumbnails_queue(image_ids=ids)
    return len(ids)


def image_thumbnail_attempt(*, image_id: int) -> bool:
    """A worker starts on the image: counts the attempt and restarts the staleness clock. False when it has no
    thumbnail left to make (made by an earlier message, failed, or deleted)."""
    return bool(
        Image.objects.filter(id=image_id, thumbnail_state=ThumbnailState.PENDING).update(
            thumbnail_attempts=F("thumbnail_attempts") + 1, thumbnail_queued_at=timezone.now()
        )
    )


def image_thumbnail_fail(*, image_id: int, reason: str) -> None:
    Image.objects.filter(id=image_id).update(thumbnail_state=ThumbnailState.FAILED, thumbnail_error=reason[:400])


def thumbnails_requeue_stale(*, now=None) -> dict[str, int]:
    """Pending thumbnails whose work went quiet (a killed worker, a message lost with Redis, an upload whose web
    worker died before sending) are sent again; those a worker already started THUMBNAIL_MAX_ATTEMPTS times are
    marked failed with the reason. Called periodically by Celery beat."""
    now = now or timezone.now()
    cutoff = now - THUMBNAIL_STALE_AFTER
    stale = Image.objects.filter(thumbnail_state=ThumbnailState.PENDING).filter(
        Q(thumbnail_queued_at__lt=cutoff) | Q(thumbnail_queued_at__isnull=True, created_at__lt=cutoff)
    )
    failed = stale.filter(thumbnail_attempts__gte=THUMBNAIL_MAX_ATTEMPTS).update(
        thumbnail_state=ThumbnailState.FAILED, thumbnail_error=THUMBNAIL_GAVE_UP.format(attempts=THUMBNAIL_MAX_ATTEMPTS)
    )
    ids = list(stale.filter(thumbnail_attempts__lt=THUMBNAIL_MAX_ATTEMPTS).order_by("id").values_list("id", flat=True))
    thumbnails_queue(image_ids=ids)
    if ids or failed:
        log.warning("thumbnails: %d sent again, %d given up", len(ids), failed)
    return {"requeued": len(ids), "failed": failed}


def image_thumbnail_make(*, image: Image) -> None:
    """A JPEG thumbnail (EXIF orientation applied, 16-bit scaled) beside the original."""
    try:
        # Shrunk while decoding (twice the size, for thumbnail()'s antialiasing): never the full image in RGB.
        picture = display_rgb(stored_file_read(image.file.name), max_side=2 * THUMBNAIL_SIZE)
        picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
    except Exception:
        Image.objects.filter(id=image.id).update(thumbnail_state=ThumbnailState.FAILED)
        raise
    name = stored_file_write(f"projects/{image.project.public_id}/thumbs/{image.sha256}.jpg", buffer.getvalue())
    Image.objects.filter(id=image.id).update(thumbnail=name, thumbnail_state=ThumbnailState.READY)
