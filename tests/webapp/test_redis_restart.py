"""Redis restarted (its queue lost) while a run waits: the reaper sends it again and it still completes."""

from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from tests.conftest import CeleryWorker, purge_queues, wait_for
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.models import RunStatus, TrainingRun

pytestmark = pytest.mark.integration


def test_run_queued_across_a_redis_restart_completes(transactional_db, broker, owner, tmp_path):
    # given a queued run whose message sits in Redis, and no worker yet
    purge_queues(broker.url)
    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=96)
    run = services.training_run_request(project=project, requested_by=owner, image_size=128)
    queue = redis.Redis.from_url(broker.url)
    assert queue.llen("train") == 1
    # when Redis restarts without persistence: the message is gone
    broker.restart()
    assert queue.llen("train") == 0
    worker = CeleryWorker(broker.url, "default,train", tmp_path / "worker.log")
    worker.start()
    try:
        # and the reaper notices a run no worker picked up
        result = services.training_runs_reap(now=timezone.now() + services.REQUEUE_AFTER + timedelta(seconds=1))
        assert result["requeued"] == 1
        # then the run completes
        done = wait_for(
            lambda: (
                TrainingRun.objects.get(id=run.id).status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
                and TrainingRun.objects.get(id=run.id)
            ),
            timeout=180,
            message=f"the run; worker log:\n{worker.log_text()[-3000:]}",
        )
        assert done.status == RunStatus.SUCCEEDED, done.error
    finally:
        worker.stop()
