"""Celery tasks of training, next to the services they call: each fetches rows by id and calls one service
(a row that is gone means nothing to do)."""

from __future__ import annotations

import logging

from workers.decorators import TRAIN_QUEUE, kensa_task

log = logging.getLogger(__name__)


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
    from webapp.training.services import training_runs_reap

    result = training_runs_reap()
    if any(result.values()):
        log.info("reaper: %s", result)
