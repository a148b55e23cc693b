"""Shared fixtures: a real redis-server per test session, a real Celery worker when a test asks for one, and
Chromium driven by Playwright for browser tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test thread; Django refuses ORM calls there unless told.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_report_header(config) -> str:
    """Which database this run uses: `make test` runs the suite on SQLite, then the app's tests on PostgreSQL."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    return f"database: {database['ENGINE'].rsplit('.', 1)[-1]} ({database.get('HOST') or database['NAME']})"


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `gpu` are skipped where torch sees no CUDA GPU, so `make test` passes on CPU machines (CI);
    `make test-gpu` runs them, and refuses to run without a GPU."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (make test-gpu on a machine with one)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real redis-server on a free loopback port, with a pidfile, stopped at the end of the session."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.exit("redis-server is not installed: run `make test`, which installs it", returncode=3)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--pidfile", str(self.workdir / "redis.pid"),
                "--dir", str(self.workdir),
                "--save", "",
                "--appendonly", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self, timeout: float = 10) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker(redis_server: RedisServer) -> Iterator[RedisServer]:
    """Points Celery (and the Django setting) at the session's Redis before any task is sent."""
    from django.conf import settings

    from workers.celery import app

    settings.CELERY_BROKER_URL = redis_server.url
    app.conf.broker_url = redis_server.url
    yield redis_server


def _database_url() -> str:
    """The URL of the test database as this process sees it, for a worker process to use the same one."""
    from urllib.parse import quote

    from django.db import connection

    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    user = quote(cfg.get("USER") or "", safe="")
    password = f":{quote(cfg['PASSWORD'], safe='')}" if cfg.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = quote(cfg.get("HOST") or "", safe="")  # a socket folder is a host written with %2F
    port = f":{cfg['PORT']}" if cfg.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{cfg['NAME']}"


class CeleryWorker:
    """A real `celery worker` process using the test database, media folder and Redis."""

    def __init__(self, broker_url: str, queues: str, logfile: Path, name: str = ""):
        self.broker_url = broker_url
        self.queues = queues
        self.logfile = logfile
        self.name = name or f"test-{os.getpid()}-{time.time_ns()}"
        self.process: subprocess.Popen | None = None

    @property
    def nodename(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def start(self) -> None:
        from django.conf import settings

        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "KENSA_TEST_DATABASE_URL": _database_url(),  # tests.settings reads this one, not DATABASE_URL
            "REDIS_URL": self.broker_url,
            "KENSA_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        command = [
            sys.executable, "-m", "celery", "-A", "workers", "worker",
            "-Q", self.queues, "--concurrency", "1", "--prefetch-multiplier", "1",
            "--without-gossip", "--without-mingle", "-l", "info", "-n", self.nodename,
        ]  # fmt: skip
        self.log = self.logfile.open("ab")
        # A process group of its own, so stopping it also stops its pool children.
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.logfile.read_text()[-4000:]}")
            if b"ready." in self.logfile.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"celery worker not ready in {timeout}s:\n{self.logfile.read_text()[-4000:]}")

    def pids(self) -> list[int]:
        """The worker's main process and its pool children."""
        out = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        finally:
            self.log.close()

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace")


def purge_queues(url: str) -> None:
    """Drops messages left by earlier tests. Kombu's exchange bindings stay: producers cache that they declared
    them, and without them a message sent later would be routed nowhere."""
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter():
        if not key.startswith(b"_kombu.binding."):
            client.delete(key)


@pytest.fixture
def celery_worker(transactional_db, broker: RedisServer, tmp_path) -> Iterator[CeleryWorker]:
    """A worker on both queues. Needs committed data, hence transactional_db."""
    purge_queues(broker.url)
    worker = CeleryWorker(broker.url, "default,train", tmp_path / "worker.log")
    worker.start()
    yield worker
    worker.stop()


def wait_for(condition, *, timeout: float = 30, interval: float = 0.2, message: str = "condition"):
    """Polls `condition()` until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.exit(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium", returncode=3)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.wait_for_function = partial(wait_for_expression, page)
    yield page
    context.close()


def wait_for_expression(page, expression: str, arg=None, *, timeout: float = 15_000, polling=None):
    """Page.wait_for_function without eval: Playwright polls with eval() inside the page, which the app's
    Content-Security-Policy refuses (no 'unsafe-eval'). page.evaluate goes through the DevTools protocol instead,
    so every browser test runs with the policy on."""
    deadline = time.monotonic() + timeout / 1000
    while not (value := page.evaluate(expression, arg)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout / 1000:.0f}s waiting for {expression}")
        page.wait_for_timeout(50)
    return value
