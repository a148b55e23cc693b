"""Two real workers on the two queues, as on a deployment with a training box: each takes only its own work."""

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import CeleryWorker, purge_queues, wait_for
from tests.webapp.conftest import png_bytes
from webapp.images.models import Image, ThumbnailState
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.models import RunStatus, TrainingRun

pytestmark = pytest.mark.integration


@pytest.fixture
def workers(transactional_db, broker, tmp_path):
    purge_queues(broker.url)
    started: dict[str, CeleryWorker] = {}

    def start(queue: str) -> CeleryWorker:
        worker = CeleryWorker(broker.url, queue, tmp_path / f"{queue}.log", name=f"{queue}-{time.time_ns()}")
        worker.start()
        started[queue] = worker
        return worker

    yield start
    for worker in started.values():
        worker.stop()


def test_the_default_worker_never_trains_and_the_train_worker_only_trains(client, owner, workers):
    # given only the default worker, a queued training run and an upload that needs thumbnails
    default_worker = workers("default")
    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=96)
    run = services.training_run_request(project=project, requested_by=owner, image_size=128)
    client.force_login(owner)
    files = [SimpleUploadedFile(f"new_{i}.png", png_bytes(1000 + i, size=64)) for i in range(3)]
    client.post(reverse("image_upload", args=[project.public_id]), {"files": files})
    # when the default worker has made every thumbnail
    wait_for(
        lambda: not Image.objects.filter(project=project, thumbnail_state=ThumbnailState.PENDING).exists(),
        timeout=60,
        message=f"thumbnails; default worker log:\n{default_worker.log_text()[-2000:]}",
    )
    # then the run is still waiting: its message sat in Redis all along, but not on this worker's queue
    assert TrainingRun.objects.get(id=run.id).status == RunStatus.QUEUED
    assert Image.objects.filter(project=project, thumbnail_state=ThumbnailState.READY).count() == 42

    # when a training worker joins
    train_worker = workers("train")
    finished = wait_for(
        lambda: (r := TrainingRun.objects.get(id=run.id)).status not in (RunStatus.QUEUED, RunStatus.RUNNING) and r,
        timeout=180,
        message=f"the run to end; train worker log:\n{train_worker.log_text()[-3000:]}",
    )
    # then it ran the training, and each log shows only its own queue's tasks
    assert finished.status == RunStatus.SUCCEEDED, finished.error
    assert finished.worker == train_worker.nodename
    default_log, train_log = default_worker.log_text(), train_worker.log_text()  # "Task NAME[id] received"
    assert "Task images.thumbnails_make[" in default_log and "Task training.run[" not in default_log
    assert "Task training.run[" in train_log and "Task images.thumbnails_make[" not in train_log
