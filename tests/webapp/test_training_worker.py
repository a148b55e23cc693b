"""Training through a real Redis and a real Celery worker: success, cancel, and a worker killed mid-run."""

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from tests.conftest import wait_for
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.models import ModelVersion, RunStatus, TrainingRun

pytestmark = pytest.mark.integration


def run_state(run_id: int) -> TrainingRun:
    return TrainingRun.objects.get(id=run_id)


def fitting(run_id: int) -> bool:
    run = run_state(run_id)
    return run.status == RunStatus.RUNNING and run.percent > 1


def test_train_end_to_end_on_the_worker(owner, celery_worker):
    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=96)
    run = services.training_run_request(project=project, requested_by=owner, image_size=128)
    done = wait_for(
        lambda: run_state(run.id).status not in (RunStatus.QUEUED, RunStatus.RUNNING) and run_state(run.id),
        timeout=180,
        message=f"the run to end; worker log:\n{celery_worker.log_text()[-3000:]}",
    )
    assert done.status == RunStatus.SUCCEEDED, done.error
    version = ModelVersion.objects.get(run=done)
    assert version.is_active and version.metrics["image_auroc"] is not None


@pytest.fixture
def slow_project(owner):
    """Large enough that fitting takes many seconds on a CPU, so there is time to interrupt it."""
    return sample_project_create(owner=owner, n_good=90, n_defect=6, size=320)


def test_cancel_stops_a_running_job_promptly(owner, slow_project, celery_worker):
    run = services.training_run_request(project=slow_project, requested_by=owner, image_size=320)
    wait_for(lambda: fitting(run.id), timeout=120, message="fitting to start")
    asked_at = timezone.now()
    services.training_run_cancel(run=run_state(run.id))
    ended = wait_for(
        lambda: run_state(run.id).status == RunStatus.CANCELLED and run_state(run.id), timeout=30, message="cancel"
    )
    assert ended.finished_at - asked_at < timedelta(seconds=15)
    assert not ModelVersion.objects.filter(run=run).exists()
    assert not default_storage.exists(f"projects/{slow_project.public_id}/runs/{run.public_id}")
    assert not (Path(settings.DATA_DIR) / "work" / f"run-{run.public_id}").exists()


def test_worker_killed_mid_run_fails_the_run_and_leaves_nothing(owner, slow_project, celery_worker):
    # given a run in the middle of fitting
    run = services.training_run_request(project=slow_project, requested_by=owner, image_size=320)
    wait_for(lambda: fitting(run.id), timeout=120, message="fitting to start")
    workdir = Path(settings.DATA_DIR) / "work" / f"run-{run.public_id}"
    assert workdir.exists()
    # when the worker dies without any chance to clean up
    for pid in celery_worker.pids():
        os.kill(pid, signal.SIGKILL)
    celery_worker.process.wait(10)
    # and the reaper runs once the heartbeat is stale
    result = services.training_runs_reap(now=timezone.now() + services.STALE_AFTER + timedelta(seconds=1))
    # then the run failed with a reason, nothing is orphaned, and the project trains again
    run.refresh_from_db()
    assert result["failed"] == 1
    assert run.status == RunStatus.FAILED and "stopped reporting progress" in run.error
    assert not workdir.exists()
    assert not default_storage.exists(f"projects/{slow_project.public_id}/runs/{run.public_id}")
    assert not ModelVersion.objects.filter(project=slow_project).exists()
    again = services.training_run_request(project=slow_project, requested_by=owner)
    assert again.status == RunStatus.QUEUED
