"""Celery tasks: each fetches rows by id and calls one service. A row that is gone means nothing to do."""

from __future__ import annotations

import logging

from workers.decorators import TRAIN_QUEUE, TRANSIENT_ERRORS, kensa_task

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


# Acknowledged when it ends (acks_late), not on receipt: with prefetch 1 the running run's unacknowledged message
# fills the worker's one slot, so a busy worker reserves no second run that an idle one could start now (an early
# ack frees the slot and the next run waits hours behind this one). Running once is still the database claim's job
# (queued -> running): a worker that dies leaves its run to the heartbeat reaper, and a message delivered again
# finds it claimed. Redis's visibility_timeout (settings) is longer than the hard limit, so nothing is redelivered
# mid-run.
@kensa_task("training.run", queue=TRAIN_QUEUE, soft_time_limit=4 * 3600, time_limit=4 * 3600 + 300, acks_late=True)
def training_run_task(run_id: int) -> None:
    from celery import current_task

    from webapp.training.execution import training_run_execute
    from webapp.training.services import training_run_claim

    # The node name (train@host), not only the host: one machine may run several workers.
    if not training_run_claim(run_id=run_id, worker=current_task.request.hostname or ""):
        log.info("training run %s already claimed, cancelled or gone", run_id)
        return
    training_run_execute(run_id=run_id)


@kensa_task("training.reap", soft_time_limit=60, time_limit=90)
def training_runs_reap_task() -> None:
    from webapp.robustness.services import robustness_runs_reap
    from webapp.training.services import training_runs_reap

    result = training_runs_reap()
    if any(result.values()):
        log.info("reaper: %s", result)
    if failed := robustness_runs_reap():  # a robustness run whose worker died shows as failed, not running forever
        log.info("reaper: %d robustness runs failed", failed)


# On the training queue: minutes of scoring under every perturbation (issue 19), like training, not the quick jobs
# of the default queue. A run that outlives its worker is failed by the next request (webapp.robustness.services).
@kensa_task("robustness.run", queue=TRAIN_QUEUE, soft_time_limit=3600, time_limit=3900, acks_late=True)
def robustness_run_task(run_id: int) -> None:
    from webapp.robustness.execution import robustness_run_execute
    from webapp.robustness.services import robustness_run_claim

    if not robustness_run_claim(run_id=run_id):
        log.info("robustness run %s already claimed or gone", run_id)
        return
    robustness_run_execute(run_id=run_id)


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
