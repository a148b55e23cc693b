"""Celery tasks: each fetches rows by id and calls one service. A row that is gone means nothing to do."""

from __future__ import annotations

import logging

from workers.decorators import TRANSIENT_ERRORS, kensa_task

log = logging.getLogger(__name__)


@kensa_task("images.thumbnails_make")
def thumbnails_make_task(image_ids: list[int]) -> None:
    from webapp.images.models import Image
    from webapp.images.services import image_thumbnail_make

    for image in Image.objects.filter(id__in=image_ids).select_related("project"):
        try:
            image_thumbnail_make(image=image)
        except TRANSIENT_ERRORS:
            raise
        except Exception:
            # One unreadable image must not stop the others; it is marked failed on its row.
            log.exception("thumbnail failed for image %s", image.id)
