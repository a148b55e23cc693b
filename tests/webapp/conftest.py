from __future__ import annotations

import io
import signal
import time

import numpy as np
import pytest
from django.contrib.auth.models import User
from PIL import Image as PILImage

from ml.synthetic import make_image
from tests.conftest import CeleryWorker, purge_queues
from webapp.projects.models import Membership, Project, Role
from webapp.projects.services import project_create


@pytest.fixture(autouse=True)
def _use_test_broker(broker, settings, tmp_path):
    """Every web test sends tasks to the session's own redis-server and stores media in its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"  # FileSystemStorage follows the change (setting_changed signal)


def make_user(username: str, **extra) -> User:
    return User.objects.create_user(username=username, password="pw-for-tests-1", **extra)


@pytest.fixture
def owner(db) -> User:
    return make_user("olivia")


@pytest.fixture
def project(owner) -> Project:
    return project_create(name="Brackets", owner=owner)


@pytest.fixture
def member_with(project):
    """member_with(role) -> a new user holding `role` in `project`."""

    def create(role: str) -> User:
        user = make_user(f"{role}-user")
        Membership.objects.create(project=project, user=user, role=role)
        return user

    return create


@pytest.fixture
def outsider(db) -> User:
    return make_user("oscar")


def png_bytes(seed: int = 0, *, size: int = 64, mode: str = "RGB", defect: str | None = None) -> bytes:
    """A distinct small synthetic part as PNG bytes (mode L, RGB, RGBA or I;16)."""
    rgb = make_image(seed, size=size, defect=defect).image
    if mode == "RGB":
        picture = PILImage.fromarray(rgb)
    elif mode == "RGBA":
        picture = PILImage.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA")
    elif mode == "L":
        picture = PILImage.fromarray(rgb[..., 0])
    elif mode == "I;16":
        picture = PILImage.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    else:
        raise ValueError(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def encode(array: np.ndarray, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format=fmt, **params)
    return buffer.getvalue()


ROLES = [Role.OWNER, Role.ANNOTATOR, Role.REVIEWER, Role.VIEWER]


@pytest.fixture
def trained_version(transactional_db, owner):
    """A small sample project with a trained, active model version (Gaussian baseline: seconds on a CPU).

    Uses committed data (transactional_db) because training beats its heartbeat from a second thread."""
    from webapp.samples import sample_project_create
    from webapp.training import services
    from webapp.training.execution import training_run_execute
    from webapp.training.models import ModelVersion, RunStatus

    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=96)
    run = services.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=128)
    assert services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    return ModelVersion.objects.get(run=run)


@pytest.fixture
def start_worker(transactional_db, broker, tmp_path, monkeypatch):
    """start_worker(queues, device="cpu") -> a started real Celery worker with KENSA_DEVICE=device.

    Workers are killed (SIGKILL) after the test and the queues purged, so no GPU-worker announcement or queued task
    outlives it.
    """
    purge_queues(broker.url)
    started: list[CeleryWorker] = []

    def start(queues: str, device: str = "cpu") -> CeleryWorker:
        monkeypatch.setenv("KENSA_DEVICE", device)  # the worker's environment is this process's, read at start
        name = f"{queues.replace(',', '+')}-{time.time_ns()}"
        worker = CeleryWorker(broker.url, queues, tmp_path / f"{name}.log", name=name)
        started.append(worker)
        worker.start()
        return worker

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL)
    purge_queues(broker.url)
