"""Where Kensa computes (issue 15, the web app's side): KENSA_DEVICE and KENSA_PREDICT_DEVICE are checked at start,
a training worker says its device when it starts (and refuses one it cannot have), a run records the device it
trained on and its page shows it, and predictions load on the prediction device. CPU only: the GPU side of these is
in the `gpu` tests (make test-gpu)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from django.urls import reverse

from ml.devices import NO_CUDA, device_description, resolve_device
from tests.conftest import REPO, CeleryWorker, wait_for
from webapp.inference.services import model_for_version
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.eta import FIT_STAGES, fit_stages
from webapp.training.execution import NO_DEVICE, training_run_execute
from webapp.training.models import ModelVersion, RunStatus, TrainingRun
from workers.celery import WORKER_DOES_NOT_TRAIN, WORKER_NO_DEVICE, WORKER_TRAINS_ON

SMALL = {"n_good": 30, "n_defect": 9, "size": 96}
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens on a machine without CUDA")


def settings_value(name: str, **env: str) -> subprocess.CompletedProcess:
    """Loads webapp.settings in a fresh interpreter with `env`, and prints setting `name`."""
    return subprocess.run(
        [sys.executable, "-c", f"from django.conf import settings; print(settings.{name})"],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings", "KENSA_DEBUG": "true", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_device_settings_default_to_auto_for_training_and_cpu_for_predictions():
    assert settings_value("KENSA_DEVICE").stdout.strip() == "auto"
    assert settings_value("KENSA_PREDICT_DEVICE").stdout.strip() == "cpu"
    assert settings_value("KENSA_DEVICE", KENSA_DEVICE=" CUDA:1 ").stdout.strip() == "cuda:1"


@pytest.mark.parametrize("name", ["KENSA_DEVICE", "KENSA_PREDICT_DEVICE"])
def test_a_device_setting_kensa_cannot_understand_stops_start_up(name):
    done = settings_value(name, **{name: "gpu"})
    assert done.returncode != 0
    assert f"ImproperlyConfigured: {name}: device 'gpu': expected one of auto, cpu, cuda, cuda:N" in done.stderr


@pytest.mark.integration
def test_a_training_worker_says_where_it_trains_when_it_starts(start_worker):
    train = start_worker("train", "auto")
    device = device_description(resolve_device("auto"))  # "cpu" here; "cuda:0 (NVIDIA ...)" on a GPU box
    assert WORKER_TRAINS_ON.format(node=train.nodename, queues="train", device=device, spec="auto") in train.log_text()
    # a worker without a training queue says it has none, rather than a device it never uses
    default = start_worker("default", "auto")
    assert WORKER_DOES_NOT_TRAIN.format(node=default.nodename, queues="default") in default.log_text()


@pytest.mark.integration
@needs_no_cuda
def test_a_training_worker_told_to_use_a_gpu_it_does_not_have_does_not_start(
    transactional_db, broker, tmp_path, monkeypatch
):
    monkeypatch.setenv("KENSA_DEVICE", "cuda")
    worker = CeleryWorker(broker.url, "train", tmp_path / "worker.log", name=f"train-{time.time_ns()}")
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            worker.start()
    finally:
        worker.stop()
    # it says why, in the words ml.devices uses, rather than failing every run it would take
    error = NO_CUDA.format(spec="cuda")
    assert WORKER_NO_DEVICE.format(node=worker.nodename, spec="cuda", error=error) in worker.log_text()
    assert worker.process.returncode != 0


@pytest.mark.integration
def test_the_run_page_shows_the_device_a_real_worker_trained_on(client, owner, start_worker, settings):
    worker = start_worker("default,train", "cpu")
    project = sample_project_create(owner=owner, **SMALL)
    run = services.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=128)
    run = wait_for(
        lambda: (r := TrainingRun.objects.get(id=run.id)).status not in (RunStatus.QUEUED, RunStatus.RUNNING) and r,
        timeout=240,
        message=f"the run to end; worker log:\n{worker.log_text()[-3000:]}",
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.device == "cpu" and run.worker == worker.nodename
    client.force_login(owner)
    page = client.get(reverse("run_detail", args=[project.public_id, run.public_id])).text
    assert '<span class="device" id="run-device"' in page and ">on cpu</span>" in page

    # predictions load on KENSA_PREDICT_DEVICE: the CPU by default, whatever the worker trained on
    version = ModelVersion.objects.get(run=run)
    assert model_for_version(version).device == torch.device("cpu")
    if not torch.cuda.is_available():
        settings.KENSA_PREDICT_DEVICE = "cuda"
        version = ModelVersion.objects.get(run=run)  # a fresh row; the cache is keyed per version
        from webapp.inference import services as inference

        inference._models.clear()
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            model_for_version(version)


@needs_no_cuda
def test_a_run_on_a_worker_that_cannot_have_its_device_fails_with_a_reason(transactional_db, owner, settings):
    settings.KENSA_DEVICE = "cuda"  # what a GPU worker whose GPU vanished after it started would try
    project = sample_project_create(owner=owner, **SMALL)
    run = services.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=128)
    assert services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == NO_DEVICE.format(problem=NO_CUDA.format(spec="cuda"))


def test_a_gpu_run_does_not_share_its_bar_by_the_cpus_stage_shares():
    for family, cpu_plan in FIT_STAGES.items():
        assert fit_stages(family, device="cpu") == cpu_plan
        on_gpu = fit_stages(family, device="cuda:0 (NVIDIA H200)")
        assert list(on_gpu) == list(cpu_plan)  # the same stages, in order
        assert on_gpu != cpu_plan and len(set(on_gpu.values())) == 1, family


@pytest.mark.gpu
@pytest.mark.integration
def test_a_gpu_worker_trains_on_its_gpu_and_the_run_page_names_it(client, owner, start_worker):
    """make test-gpu: a real worker of the GPU queue with KENSA_DEVICE=cuda trains a run on the GPU; the worker's
    start log and the run page name the GPU."""
    worker = start_worker("train-gpu,train", "cuda")
    gpu = device_description(resolve_device("cuda"))  # "cuda:0 (NVIDIA H200)"
    assert WORKER_TRAINS_ON.format(node=worker.nodename, queues="train,train-gpu", device=gpu, spec="cuda") in (
        worker.log_text()
    )
    project = sample_project_create(owner=owner, **SMALL)
    run = services.training_run_request(project=project, requested_by=owner, family="patchcore", image_size=128)
    run = wait_for(
        lambda: (r := TrainingRun.objects.get(id=run.id)).status not in (RunStatus.QUEUED, RunStatus.RUNNING) and r,
        timeout=240,
        message=f"the run to end; worker log:\n{worker.log_text()[-3000:]}",
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.device == gpu and run.worker == worker.nodename
    client.force_login(owner)
    page = client.get(reverse("run_detail", args=[project.public_id, run.public_id])).text
    assert f">on {gpu}</span>" in page


def test_a_run_shares_its_bar_by_the_stage_plan_of_the_device_it_trains_on(transactional_db, owner, monkeypatch):
    from webapp.training import execution

    asked = []

    def plan(family, *, device):
        asked.append((family, device))
        return fit_stages(family, device=device)

    monkeypatch.setattr(execution, "fit_stages", plan)
    project = sample_project_create(owner=owner, **SMALL)
    run = services.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=128)
    assert services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert asked == [("gaussian", run.device)] and run.device == device_description(resolve_device("auto"))


def test_a_run_that_runs_out_of_gpu_memory_fails_with_what_to_do(transactional_db, owner, monkeypatch):
    """The family already retried at half the batch; the run must show its advice, not "internal error"."""
    from ml.gaussian import GaussianBaseline
    from ml.training import OUT_OF_GPU_MEMORY, GpuOutOfMemory

    message = OUT_OF_GPU_MEMORY.format(batch_size=16, retry_size=8)

    def fit(self, samples, *, progress):
        raise GpuOutOfMemory(message)

    monkeypatch.setattr(GaussianBaseline, "fit", fit)
    project = sample_project_create(owner=owner, **SMALL)
    # a config stored with a device (an older request) does not clash with the worker's own device
    run = services.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=128)
    TrainingRun.objects.filter(id=run.id).update(config={**run.config, "device": "cpu"})
    assert services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == message
