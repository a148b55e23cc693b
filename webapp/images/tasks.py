"""Celery tasks of images, next to the services they call: each fetches rows by id and calls one service
(a row that is gone means nothing to do)."""

from __future__ import annotations

import logging

from workers.decorators import TRANSIENT_ERRORS, kensa_task

log = logging.getLogger(__name__)

THUMBNAIL_UNREADABLE = "No preview: the image could not be read ({error})."


@kensa_task("images.thumbnails_make")
def thumbnails_make_task(image_ids: list[int]) -> None:
    from webapp.images.models import Image, ThumbnailState
    from webapp.images.services import image_thumbnail_attempt, image_thumbnail_fail, image_thumbnail_make

    # Only pending ones: the periodic check may have sent an image again that an earlier message has made since.
    pending = Image.objects.filter(id__in=image_ids, thumbnail_state=ThumbnailState.PENDING).select_related("project")
    for image in pending:
        if not image_thumbnail_attempt(image_id=image.id):
            continue
        try:
            image_thumbnail_make(image=image)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            # One unreadable image must not stop the others; it is marked failed on its row, with the reason.
            log.exception("thumbnail failed for image %s", image.id)
            image_thumbnail_fail(image_id=image.id, reason=THUMBNAIL_UNREADABLE.format(error=exc))


@kensa_task("images.thumbnails_requeue", soft_time_limit=60, time_limit=90)
def thumbnails_requeue_task() -> None:
    from webapp.images.services import thumbnails_requeue_stale

    thumbnails_requeue_stale()
