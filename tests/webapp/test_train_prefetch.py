"""A busy training worker holds no second run: with two training workers, the run sent while one trains starts at
once on the idle one (a reserved message would wait behind a training that can take hours)."""

import os
import signal
import time

import pytest

from tests.conftest import CeleryWorker, purge_queues, wait_for
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.models import RunStatus, TrainingRun

pytestmark = pytest.mark.integration


def run_state(run: TrainingRun) -> TrainingRun:
    return TrainingRun.objects.get(id=run.id)


def test_a_run_sent_while_a_worker_trains_goes_to_the_idle_worker(transactional_db, owner, broker, tmp_path):
    purge_queues(broker.url)
    first_project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=96)
    second_project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=96)
    busy = CeleryWorker(broker.url, "train", tmp_path / "busy.log", name=f"busy-{time.time_ns()}")
    idle = None
    busy.start()
    try:
        # given one worker training run 1, frozen mid-run so that it stays busy for as long as the test needs
        first = services.training_run_request(project=first_project, requested_by=owner, image_size=128)
        wait_for(lambda: run_state(first).status == RunStatus.RUNNING, timeout=60, message=busy.log_text()[-2000:])
        main, *children = busy.pids()
        for pid in children:
            os.kill(pid, signal.SIGSTOP)
        # when run 2 is sent while it is busy, and a second worker joins after that
        second = services.training_run_request(project=second_project, requested_by=owner, image_size=128)
        time.sleep(2)  # time for the busy worker to reserve it, if it would
        idle = CeleryWorker(broker.url, "train", tmp_path / "idle.log", name=f"idle-{time.time_ns()}")
        idle.start()
        # then the idle worker takes run 2 at once: the busy one did not hold it
        taken = wait_for(
            lambda: (r := run_state(second)).status != RunStatus.QUEUED and r,
            timeout=60,
            message=f"run 2 to start; busy log:\n{busy.log_text()[-1500:]}\nidle log:\n{idle.log_text()[-1500:]}",
        )
        assert taken.worker == idle.nodename
        assert run_state(first).status == RunStatus.RUNNING and run_state(first).worker == busy.nodename
        assert "Task training.run[" not in busy.log_text().split("Task training.run[", 1)[1]  # received one run only
    finally:
        busy.stop(signal.SIGKILL)
        if idle:
            idle.stop(signal.SIGKILL)
