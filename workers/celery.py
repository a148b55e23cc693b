"""The Celery app, configured from Django settings (keys prefixed CELERY_), and what a worker says when it starts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Each app's tasks sit next to its services (webapp/<app>/tasks.py).
TASK_APPS = ("images", "training", "robustness", "inference", "api")
app = Celery("kensa", include=[f"webapp.{name}.tasks" for name in TASK_APPS])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = ("workers.decorators.route_task",)

log = logging.getLogger(__name__)

WORKER_TRAINS_ON = "Kensa worker {node}: queues {queues}; trains on {device} (KENSA_DEVICE={spec})"
WORKER_DOES_NOT_TRAIN = "Kensa worker {node}: queues {queues}; no training queue, so no training device"
WORKER_NO_DEVICE = "Kensa worker {node} cannot train on KENSA_DEVICE={spec}: {error}"
GPU_QUEUE_ON_CPU = (
    "Kensa worker {node} consumes {queue} but trains on the CPU: training sent to the GPU queue runs on the CPU "
    "here. Give it a GPU (KENSA_DEVICE=cuda makes a missing one an error), or drop {queue} from its queues."
)

# Run in a child process: asking CUDA anything (even the GPU's name) in the worker's main process, which then forks
# its pool, leaves CUDA unusable in the forked children that train.
_DEVICE_PROBE = """
import json, sys
from ml.devices import device_description, resolve_device
try:
    print(json.dumps({"device": device_description(resolve_device(sys.argv[1]))}))
except (RuntimeError, ValueError) as error:
    print(json.dumps({"error": str(error)}))
"""


def training_device_probe(spec: str) -> str:
    """What KENSA_DEVICE resolves to on this machine, described ("cpu", "cuda:0 (NVIDIA H200)"); RuntimeError
    with the reason when it cannot be had (an explicit cuda without a GPU)."""
    done = subprocess.run(
        [sys.executable, "-c", _DEVICE_PROBE, spec],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        raise RuntimeError(f"the device check failed: {done.stderr.strip()[-2000:]}")
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer["device"]


def consumed_queues(worker) -> list[str]:
    return sorted(worker.app.amqp.queues.consume_from)


@worker_init.connect
def worker_device_check(sender, **_) -> None:
    """A training worker says where it trains; one that cannot have the device it was told to use does not start
    (an explicit cuda without a GPU): it would otherwise fail every run it takes, or train them slowly on the CPU."""
    from django.conf import settings

    from workers.decorators import GPU_TRAIN_QUEUE, TRAINING_QUEUES

    queues = consumed_queues(sender)
    node, spec = sender.hostname, settings.KENSA_DEVICE
    if not TRAINING_QUEUES & set(queues):
        log.info(WORKER_DOES_NOT_TRAIN.format(node=node, queues=",".join(queues)))
        return
    try:
        device = training_device_probe(spec)
    except RuntimeError as error:
        log.critical(WORKER_NO_DEVICE.format(node=node, spec=spec, error=error))
        raise SystemExit(1) from None  # a signal handler's Exception is only logged; SystemExit stops the worker
    sender.kensa_device = device
    log.info(WORKER_TRAINS_ON.format(node=node, queues=",".join(queues), device=device, spec=spec))
    if GPU_TRAIN_QUEUE in queues and not device.startswith("cuda"):
        log.warning(GPU_QUEUE_ON_CPU.format(node=node, queue=GPU_TRAIN_QUEUE))


_announcers: dict[str, object] = {}


@worker_ready.connect
def gpu_worker_start_announcing(sender, **_) -> None:
    """A worker of the GPU queue tells the router it is alive (workers.gpu_workers), from now until it stops."""
    from workers.decorators import GPU_TRAIN_QUEUE
    from workers.gpu_workers import Announcer

    if GPU_TRAIN_QUEUE in sender.app.amqp.queues.consume_from:
        announcer = _announcers[sender.hostname] = Announcer(sender.hostname)
        announcer.start()


@worker_shutdown.connect
def gpu_worker_stop_announcing(sender, **_) -> None:
    announcer = _announcers.pop(sender.hostname, None)
    if announcer is not None:
        announcer.stop()
