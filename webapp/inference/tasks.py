"""Celery tasks of inference, next to the services they call: each is an interface that calls one service."""

from __future__ import annotations

import logging

from workers.decorators import kensa_task

log = logging.getLogger(__name__)


@kensa_task("inference.predictions_cleanup", soft_time_limit=540, time_limit=590)
def predictions_cleanup_task() -> None:
    from webapp.inference.retention import predictions_cleanup

    result = predictions_cleanup()
    if result.rows:
        log.info("retention: deleted %d predictions and %d files %s", result.rows, result.files, result.by_purpose)
