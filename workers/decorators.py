"""One decorator for every Kensa task: a stable name, a queue, time limits, and retries of transient errors only."""

from __future__ import annotations

from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.celery import app

DEFAULT_QUEUE = "default"
TRAIN_QUEUE = "train"
# Consumed by GPU training workers (with `train`): training is sent here while one is alive (workers.gpu_workers).
GPU_TRAIN_QUEUE = "train-gpu"
TRAINING_QUEUES = frozenset({TRAIN_QUEUE, GPU_TRAIN_QUEUE})

# Worth another try: the database or the broker blinked. Anything else is a bug or bad data; retrying hides it.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
)


# task name -> queue, filled by @kensa_task and read by the router Celery calls for every message sent.
TASK_QUEUES: dict[str, str] = {}


def route_task(name: str, args, kwargs, options, task=None, **extra) -> dict | None:
    """The task's queue; training goes to `train-gpu` instead while a GPU worker is alive (docs/deploy.md)."""
    from workers.gpu_workers import gpu_workers_alive

    queue = TASK_QUEUES.get(name)
    if queue == TRAIN_QUEUE and gpu_workers_alive():
        queue = GPU_TRAIN_QUEUE
    return {"queue": queue} if queue else None


def kensa_task(
    name: str,
    *,
    queue: str = DEFAULT_QUEUE,
    soft_time_limit: int = 300,
    time_limit: int = 360,
    max_retries: int = 3,
    **options,
) -> Callable:
    """Registers a task under `name` (never the module path, so moving code does not strand queued messages)."""

    def register(func: Callable) -> Callable:
        TASK_QUEUES[name] = queue
        return app.task(
            name=name,
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
            autoretry_for=TRANSIENT_ERRORS,
            max_retries=max_retries,
            retry_backoff=True,
            retry_backoff_max=60,
            ignore_result=True,
            **options,
        )(func)

    return register
