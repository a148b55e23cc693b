"""Celery tasks of robustness, next to the services they call: each fetches rows by id and calls one service
(a row that is gone means nothing to do)."""

from __future__ import annotations

import logging

from workers.decorators import TRAIN_QUEUE, kensa_task

log = logging.getLogger(__name__)


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


# A robustness run whose worker died shows as failed, not running forever.
@kensa_task("robustness.reap", soft_time_limit=60, time_limit=90)
def robustness_runs_reap_task() -> None:
    from webapp.robustness.services import robustness_runs_reap

    if failed := robustness_runs_reap():
        log.info("reaper: %d robustness runs failed", failed)
