"""Batch jobs survive lost workers and a lost queue: the reaper resumes them, or fails them cleanly in the end."""

import io
import os
import signal
from datetime import timedelta

import pytest
import redis
from django.core.files.storage import default_storage
from django.utils import timezone

from ml.synthetic import make_image
from tests.conftest import CeleryWorker, purge_queues, wait_for
from tests.webapp.conftest import encode
from webapp.api.models import BatchJob, JobStatus
from webapp.api.services import BATCH_MAX_ATTEMPTS, BATCH_STALE_AFTER, Upload, batch_job_submit, batch_jobs_reap
from webapp.inference.models import Prediction, Purpose

pytestmark = pytest.mark.integration


def submit(project, count: int) -> BatchJob:
    images = [encode(make_image(7000 + i, size=96).image, "PNG") for i in range(count)]
    uploads = [Upload(name=f"part{i}.png", size=len(data), file=io.BytesIO(data)) for i, data in enumerate(images)]
    return batch_job_submit(project=project, token=None, uploads=uploads)


def job_state(job: BatchJob) -> BatchJob:
    return BatchJob.objects.get(id=job.id)


def later() -> timezone.datetime:
    return timezone.now() + BATCH_STALE_AFTER + timedelta(seconds=1)


def test_a_batch_whose_worker_was_killed_resumes_where_it_stopped(trained_version, broker, tmp_path):
    # given a worker in the middle of a batch
    purge_queues(broker.url)
    worker = CeleryWorker(broker.url, "default", tmp_path / "first.log")
    worker.start()
    job = submit(trained_version.project, count=40)
    wait_for(
        lambda: job_state(job).done >= 2, timeout=60, interval=0.02, message=f"progress:\n{worker.log_text()[-2000:]}"
    )
    # when the worker dies without any chance to finish
    for pid in worker.pids():
        os.kill(pid, signal.SIGKILL)
    worker.process.wait(10)
    stopped = job_state(job)
    assert stopped.status == JobStatus.RUNNING and 0 < stopped.done < stopped.total
    # then the reaper hands it to the queue again, and a new worker finishes only what was left
    assert batch_jobs_reap(now=later()) == {"resumed": 1, "failed": 0, "requeued": 0}
    replacement = CeleryWorker(broker.url, "default", tmp_path / "second.log")
    replacement.start()
    try:
        finished = wait_for(
            lambda: job_state(job).status == JobStatus.SUCCEEDED and job_state(job),
            timeout=120,
            message=f"the batch to finish; log:\n{replacement.log_text()[-2000:]}",
        )
    finally:
        replacement.stop()
    assert finished.done == 40 and finished.attempts == 2
    items = list(finished.items.all())
    assert all(item.prediction_id and not item.error and not item.staged_file for item in items)
    # every image predicted exactly once, across both workers
    assert Prediction.objects.filter(purpose=Purpose.BATCH, batch_item__job=job).count() == 40
    assert Prediction.objects.filter(purpose=Purpose.BATCH).count() == 40


def test_a_batch_that_keeps_losing_workers_fails_and_removes_its_staged_images(trained_version, broker):
    # given a job whose worker was lost on its last allowed attempt, one image predicted before that
    purge_queues(broker.url)
    job = submit(trained_version.project, count=3)
    BatchJob.objects.filter(id=job.id).update(
        status=JobStatus.RUNNING, attempts=BATCH_MAX_ATTEMPTS, heartbeat_at=timezone.now()
    )
    staged = [item.staged_file for item in job.items.all()]
    assert all(default_storage.exists(name) for name in staged)
    # when the reaper finds it silent
    result = batch_jobs_reap(now=later())
    # then it fails with a reason, every item says what happened, and no staged image is left behind
    assert result == {"resumed": 0, "failed": 1, "requeued": 0}
    failed = job_state(job)
    assert failed.status == JobStatus.FAILED and f"stopped {BATCH_MAX_ATTEMPTS} times" in failed.error
    assert failed.done == failed.total == 3 and failed.finished_at is not None
    assert all(item.error and not item.staged_file for item in failed.items.all())
    assert not any(default_storage.exists(name) for name in staged)


def test_a_queued_batch_whose_message_was_lost_is_sent_again(trained_version, broker):
    # given a queued job whose message died with a Redis restarted without persistence
    purge_queues(broker.url)
    job = submit(trained_version.project, count=2)
    queue = redis.Redis.from_url(broker.url)
    assert queue.llen("default") == 1
    broker.restart()
    assert queue.llen("default") == 0
    # and, beside it, a job just sent and one whose worker is alive
    submit(trained_version.project, count=1)
    alive = submit(trained_version.project, count=1)
    BatchJob.objects.filter(id=alive.id).update(status=JobStatus.RUNNING, attempts=1, heartbeat_at=timezone.now())
    purge_queues(broker.url)
    # when the reaper looks now, nothing is due; a few minutes later, only the forgotten job is
    assert batch_jobs_reap() == {"resumed": 0, "failed": 0, "requeued": 0}
    reap_at = later()
    BatchJob.objects.filter(id=alive.id).update(heartbeat_at=reap_at - timedelta(seconds=30))
    BatchJob.objects.exclude(id__in=[job.id, alive.id]).update(enqueued_at=reap_at - timedelta(seconds=30))
    result = batch_jobs_reap(now=reap_at)
    # then its message is back on the queue, and the job still waits for a worker; the live one keeps running
    assert result == {"resumed": 0, "failed": 0, "requeued": 1}
    assert queue.llen("default") == 1
    assert job_state(job).status == JobStatus.QUEUED
    assert job_state(alive).status == JobStatus.RUNNING
