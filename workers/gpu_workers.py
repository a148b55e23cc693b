"""Which training workers have a GPU, so that training goes to them while one is alive.

A worker that consumes the `train-gpu` queue announces itself in Redis (the broker) every few seconds: a sorted set
of node names scored by when each announcement expires. The router (workers.decorators.route_task) sends a training
run to `train-gpu` while any announcement is fresh, else to `train`, which every training worker consumes, GPU
workers included. A GPU worker that stops withdraws at once; one that is killed expires after PRESENCE_TTL, and
a run sent to it meanwhile is sent again by the reaper (queued for 90 s), then to `train`.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from workers.celery import app

log = logging.getLogger(__name__)

PRESENCE_KEY = "kensa:gpu-train-workers"
PRESENCE_SECONDS = 10  # a GPU worker announces itself this often
PRESENCE_TTL = 30  # and counts as alive this long after its last announcement: below the reaper's 90 s re-send

_clients: dict[str, redis.Redis] = {}


def _broker() -> redis.Redis:
    # The broker URL is read at each call: tests point the app at their own redis-server after import.
    url = app.conf.broker_url
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    return _clients[url]


def gpu_worker_announce(*, node: str, now: float | None = None, ttl: float = PRESENCE_TTL) -> None:
    _broker().zadd(PRESENCE_KEY, {node: (now or time.time()) + ttl})


def gpu_worker_withdraw(*, node: str) -> None:
    _broker().zrem(PRESENCE_KEY, node)


def gpu_workers_alive(*, now: float | None = None) -> list[str]:
    """Node names of the GPU workers whose announcement has not expired; [] when Redis cannot be asked (the
    message then goes to `train`, which any training worker takes)."""
    try:
        client = _broker()
        client.zremrangebyscore(PRESENCE_KEY, "-inf", now or time.time())
        return [node.decode() for node in client.zrange(PRESENCE_KEY, 0, -1)]
    except redis.RedisError as exc:
        log.warning("cannot tell whether a GPU worker is alive (%s): training goes to the train queue", exc)
        return []


class Announcer:
    """Announces a GPU worker from a thread of its main process, which stays free while the pool trains."""

    def __init__(self, node: str):
        self.node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-presence", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                gpu_worker_announce(node=self.node)
            except redis.RedisError as exc:  # the broker blinked: the next beat tries again
                log.warning("could not announce GPU worker %s: %s", self.node, exc)
            if self._stop.wait(PRESENCE_SECONDS):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            gpu_worker_withdraw(node=self.node)
        except redis.RedisError as exc:
            log.warning("could not withdraw GPU worker %s (it expires in %s s): %s", self.node, PRESENCE_TTL, exc)
