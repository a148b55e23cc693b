"""Celery tasks of the API, next to the services they call: each fetches rows by id and calls one service
(a row that is gone means nothing to do)."""

from __future__ import annotations

import logging

from workers.decorators import kensa_task

log = logging.getLogger(__name__)


@kensa_task("api.batch_run", soft_time_limit=3600, time_limit=3900)
def batch_job_run_task(job_id: int) -> None:
    from webapp.api.services import batch_job_run

    if not batch_job_run(job_id=job_id):
        log.info("batch job %s already claimed or gone", job_id)


@kensa_task("api.batch_reap", soft_time_limit=60, time_limit=90)
def batch_jobs_reap_task() -> None:
    from webapp.api.services import batch_jobs_reap

    result = batch_jobs_reap()
    if any(result.values()):
        log.info("batch reaper: %s", result)
