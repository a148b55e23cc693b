"""What the benchmark scripts share: a throwaway Kensa in a temporary folder (SQLite, media, its own redis-server),
gunicorn on loopback with the production settings, a trained sample model, and latency statistics.

Nothing here touches real data or a shared broker: every path and port is the bench's own.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# As in docker/entrypoint.sh: 2 processes x 4 threads = 8 requests in progress at once. Connections beyond that
# wait: gthread workers accept up to --worker-connections (1000) each and queue them for a free thread, and the
# kernel keeps up to --backlog more not yet accepted, so 50 clients queue rather than being refused.
GUNICORN_WORKERS = 2
GUNICORN_THREADS = 4
GUNICORN_TIMEOUT = 120
GUNICORN_BACKLOG = 2048


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_line() -> str:
    """Commit (marked when tracked files differ from it), CPU and load, for the benchmark notes."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    if dirty.stdout.strip():
        commit += " + uncommitted changes"
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"commit {commit or '?'}, {cpu}, {os.cpu_count()} cores, load (1/5/15 min) {load_average()}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 1]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_cells(values: list[float]) -> list[str]:
    """p50, p95, p99, max and mean in milliseconds, as table cells ('–' when there are none)."""
    if not values:
        return ["–"] * 5
    figures = [percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99), max(values)]
    return [f"{1000 * v:.0f}" for v in [*figures, statistics.mean(values)]]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Sandbox:
    """A temporary folder holding the database, media and data dir; `env` is what child processes need."""

    scratch: Path
    env: dict[str, str]
    redis: subprocess.Popen | None = None

    def close(self) -> None:
        process_stop(self.redis)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def sandbox_start(prefix: str) -> Sandbox:
    """Makes the temporary Kensa, starts its redis-server (so queued tasks never reach a shared broker), points
    this process at both, sets Django up and migrates. Use it in a `with` block, which closes it."""
    # A plain `kill` ends the bench through its `finally` blocks, so gunicorn, workers and redis go with it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", str(scratch),
         "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "HF_HUB_OFFLINE": "1",
        "KENSA_SECRET_KEY": "bench-only-secret",
        "KENSA_DATA_DIR": str(scratch / "data"),
        "KENSA_MEDIA_ROOT": str(scratch / "media"),
        "DATABASE_URL": f"sqlite:///{scratch / 'bench.sqlite3'}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "KENSA_STORAGE": "local",
        "KENSA_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    sandbox = Sandbox(scratch=scratch, env=env, redis=redis)
    try:
        _wait_for_redis(redis_port)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    except BaseException:
        sandbox.close()
        raise
    return sandbox


def _wait_for_redis(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def sample_model(*, family: str, image_size: int):
    """A user, the sample project (80 good + 30 defective 256 px discs) and one version trained in-process."""
    from django.contrib.auth.models import User

    from webapp.samples import sample_project_create
    from webapp.training import services
    from webapp.training.execution import training_run_execute
    from webapp.training.models import ModelVersion

    owner = User.objects.create_user("bench", password="bench-password-1")
    project = sample_project_create(owner=owner)
    run = services.training_run_request(project=project, requested_by=owner, family=family, image_size=image_size)
    services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    return owner, project, ModelVersion.objects.get(run=run)


def gunicorn_start(env: dict[str, str], *, workers: int = GUNICORN_WORKERS, threads: int = GUNICORN_THREADS):
    """gunicorn on a free loopback port, configured like docker/entrypoint.sh. Returns (process, base URL)."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "webapp.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads), "--backlog", str(GUNICORN_BACKLOG),
        "--timeout", str(GUNICORN_TIMEOUT), "--graceful-timeout", "30", "--log-level", "warning",
        # Its control socket in this run's data folder: the default path is one per machine, shared by every run.
        "--control-socket", str(Path(env["KENSA_DATA_DIR"]) / "gunicorn.ctl"),
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env), f"http://127.0.0.1:{port}"


def web_server_start(env: dict[str, str], *, processes: int = 2, threads: int = 4):
    """The web server `make run` and the Docker image start (waitress, webapp/server.py) on a free loopback port.
    Returns (process, base URL)."""
    port = free_port()
    command = [sys.executable, "-m", "webapp.server", "--bind", f"127.0.0.1:{port}",
               "--processes", str(processes), "--threads", str(threads)]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL), f"http://127.0.0.1:{port}"


def http_wait(url: str, timeout: float = 60, *, process: subprocess.Popen | None = None) -> None:
    """Until the server answers anything at all (an HTTP error status counts as up); fails at once if `process`,
    the server being waited for, has exited."""
    deadline = time.monotonic() + timeout
    while True:
        assert process is None or process.poll() is None, f"server exited with {process.returncode}"
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def process_stop(process: subprocess.Popen | None, timeout: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def automatic_run(project, owner, **request):
    """One automatic training request (what the Train button sends, plus `request`'s settings) run to its end by
    the worker's own code in this process, inside a sandbox_start Kensa: (the finished TrainingRun, timings: wall
    and CPU seconds from claim to metrics, load average at the click and at the end). Raises ValidationError where
    the Train page would refuse the request."""
    from webapp.training import services
    from webapp.training.execution import training_run_execute
    from webapp.training.models import TrainingRun

    timings = {"load_at_click": load_average()}
    run = services.training_run_request(project=project, requested_by=owner, **request)
    assert services.training_run_claim(run_id=run.id)
    started, cpu_started = time.perf_counter(), process_cpu_seconds()
    training_run_execute(run_id=run.id)
    timings["seconds"] = round(time.perf_counter() - started, 1)
    timings["cpu_seconds"] = round(process_cpu_seconds() - cpu_started, 1)
    timings["load_at_end"] = load_average()
    return TrainingRun.objects.get(id=run.id), timings
