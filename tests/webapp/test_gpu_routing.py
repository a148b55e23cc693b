"""A box with both kinds of training workers sends training to the GPU one (docs/deploy.md, "GPU workers").

A worker consuming the `train-gpu` queue announces itself in Redis; while one is alive, training runs go to that
queue. The workers here are real Celery processes on a CPU: the one that *advertises* the GPU queue does so
because of its queue list (what compose's worker-train-gpu consumes), not because of CUDA, so the routing is
tested on any machine. With no GPU worker, everything goes to `train`, as on a CPU-only install.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import CeleryWorker, purge_queues, wait_for
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.models import RunStatus, TrainingRun
from workers.celery import GPU_QUEUE_ON_CPU
from workers.decorators import GPU_TRAIN_QUEUE, TRAIN_QUEUE, route_task
from workers.gpu_workers import PRESENCE_TTL, gpu_worker_announce, gpu_worker_withdraw, gpu_workers_alive

SMALL = {"n_good": 30, "n_defect": 9, "size": 96}


def test_training_is_routed_to_the_gpu_queue_only_while_a_gpu_worker_is_alive(broker):
    purge_queues(broker.url)
    assert route_task("training.run", (), {}, {}) == {"queue": TRAIN_QUEUE}
    now = time.time()
    gpu_worker_announce(node="train-gpu@box", now=now)
    assert gpu_workers_alive(now=now + 1) == ["train-gpu@box"]
    assert route_task("training.run", (), {}, {}) == {"queue": GPU_TRAIN_QUEUE}
    # other work stays where it was
    assert route_task("images.thumbnails_make", (), {}, {}) == {"queue": "default"}
    # a GPU worker that stopped announcing itself (killed) counts as gone once its announcement expires
    assert gpu_workers_alive(now=now + PRESENCE_TTL + 1) == []
    assert route_task("training.run", (), {}, {}) == {"queue": TRAIN_QUEUE}  # the expired one was dropped
    gpu_worker_announce(node="train-gpu@box")
    assert route_task("training.run", (), {}, {}) == {"queue": GPU_TRAIN_QUEUE}
    gpu_worker_withdraw(node="train-gpu@box")  # what a worker stopping normally does
    assert route_task("training.run", (), {}, {}) == {"queue": TRAIN_QUEUE}


def test_with_redis_unreachable_training_goes_to_the_train_queue(broker):
    from workers.celery import app

    reachable = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    try:
        assert gpu_workers_alive() == []
        assert route_task("training.run", (), {}, {}) == {"queue": TRAIN_QUEUE}
    finally:
        app.conf.broker_url = reachable


def run_ended(run: TrainingRun, *workers: CeleryWorker) -> TrainingRun:
    logs = "\n".join(f"{w.nodename}:\n{w.log_text()[-1500:]}" for w in workers)
    return wait_for(
        lambda: (r := TrainingRun.objects.get(id=run.id)).status not in (RunStatus.QUEUED, RunStatus.RUNNING) and r,
        timeout=240,
        message=f"run {run.id} to end; logs:\n{logs}",
    )


@pytest.mark.integration
def test_a_box_with_both_kinds_of_workers_trains_on_the_gpu_worker(owner, start_worker):
    # given a CPU training worker and a worker that consumes only the GPU queue, both idle
    cpu = start_worker(TRAIN_QUEUE)
    gpu = start_worker(GPU_TRAIN_QUEUE)
    wait_for(lambda: gpu.nodename in gpu_workers_alive(), timeout=30, message="the GPU worker's announcement")
    assert cpu.nodename not in gpu_workers_alive()
    # (it has no GPU here, and says so: runs sent to it train on its CPU)
    assert GPU_QUEUE_ON_CPU.format(node=gpu.nodename, queue=GPU_TRAIN_QUEUE) in gpu.log_text()

    # when a run is requested, then the GPU worker takes it: only it consumes the queue the run was sent to
    first = services.training_run_request(
        project=sample_project_create(owner=owner, **SMALL), requested_by=owner, family="gaussian", image_size=128
    )
    first = run_ended(first, cpu, gpu)
    assert first.status == RunStatus.SUCCEEDED, first.error
    assert first.worker == gpu.nodename and first.device == "cpu"
    assert "Task training.run[" not in cpu.log_text()  # it received none

    # when the GPU worker stops, it withdraws at once, and the next run goes to the CPU worker's `train` queue
    gpu.stop(signal.SIGTERM)
    assert gpu_workers_alive() == []
    second = services.training_run_request(
        project=sample_project_create(owner=owner, **SMALL), requested_by=owner, family="gaussian", image_size=128
    )
    second = run_ended(second, cpu, gpu)
    assert second.status == RunStatus.SUCCEEDED, second.error
    assert second.worker == cpu.nodename


@pytest.mark.integration
def test_a_gpu_worker_also_takes_runs_sent_to_train_and_a_cpu_only_install_needs_no_gpu_worker(owner, start_worker):
    # given only the CPU training worker (a CPU-only install): runs go to `train` and it trains them
    cpu = start_worker(TRAIN_QUEUE)
    run = services.training_run_request(
        project=sample_project_create(owner=owner, **SMALL), requested_by=owner, family="gaussian", image_size=128
    )
    run = run_ended(run, cpu)
    assert run.status == RunStatus.SUCCEEDED and run.worker == cpu.nodename
    cpu.stop(signal.SIGTERM)
    # given a run sent to `train` while no GPU worker was alive, when a GPU worker (train-gpu,train, as compose
    # starts it) comes up, then it takes that run too
    waiting = services.training_run_request(
        project=sample_project_create(owner=owner, **SMALL), requested_by=owner, family="gaussian", image_size=128
    )
    assert gpu_workers_alive() == []
    gpu = start_worker(f"{GPU_TRAIN_QUEUE},{TRAIN_QUEUE}")
    waiting = run_ended(waiting, gpu)
    assert waiting.status == RunStatus.SUCCEEDED and waiting.worker == gpu.nodename


@pytest.mark.integration
def test_a_run_sent_to_a_killed_gpu_worker_is_sent_again_to_train_once_its_announcement_expires(owner, start_worker):
    from datetime import timedelta

    from django.utils import timezone

    # given a GPU worker that announced itself and was then killed (no withdrawal), and a CPU worker
    gpu = start_worker(GPU_TRAIN_QUEUE)
    wait_for(lambda: gpu.nodename in gpu_workers_alive(), timeout=30, message="the GPU worker's announcement")
    gpu.stop(signal.SIGKILL)
    cpu = start_worker(TRAIN_QUEUE)
    # when a run is requested while the announcement is still fresh, it goes to train-gpu, where nobody takes it
    run = services.training_run_request(
        project=sample_project_create(owner=owner, **SMALL), requested_by=owner, family="gaussian", image_size=128
    )
    time.sleep(3)
    assert TrainingRun.objects.get(id=run.id).status == RunStatus.QUEUED
    # then once the announcement expired, the periodic check's re-send (here called as beat would, 90 s on) goes
    # to `train`, and the CPU worker trains it
    wait_for(lambda: not gpu_workers_alive(), timeout=PRESENCE_TTL + 5, message="the announcement to expire")
    assert services.training_runs_reap(now=timezone.now() + services.REQUEUE_AFTER + timedelta(seconds=1)) == {
        "failed": 0,
        "requeued": 1,
    }
    run = run_ended(run, cpu)
    assert run.status == RunStatus.SUCCEEDED and run.worker == cpu.nodename
