#!/usr/bin/env python3
"""Runs all of Kensa on one machine, in the foreground, until Ctrl-C (SIGINT) or SIGTERM.

    .venv/bin/python scripts/run_all.py            what `make run` does
    .venv/bin/python scripts/run_all.py manage ARGS  manage.py ARGS with the same environment (scripts/manage.sh)

Before starting anything it prepares the environment (values from `.env` unless already set, a secret key made
once in var/secret_key, HF_HUB_OFFLINE=1), migrates the database, collects static files and makes sure an
admin exists. Then it runs, each in its own process group:

    redis     redis-server on 127.0.0.1 with append-only persistence in var/ (skipped when REDIS_URL answers)
    train     Celery worker for the `train` queue, one task at a time
    default   Celery worker for the `default` queue
    beat      Celery beat, only when a beat schedule is configured
    web       waitress serving webapp.wsgi on KENSA_BIND (127.0.0.1:8000), see webapp/server.py

If any of them exits, the others are stopped too. Stopping sends SIGTERM to each process group, then (for the
Celery workers, which wait for their running task) SIGQUIT, then SIGKILL; Redis stops last, so workers can
hand unfinished messages back to the queue. A second Ctrl-C skips the waiting. Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BIND = "127.0.0.1:8000"
# Seconds to wait after each stop signal before sending the next, stronger one.
GRACE_S = {"web": 15, "beat": 10, "default": 30, "train": 30, "redis": 15}


def log(message: str) -> None:
    print(f"[run_all] {message}", flush=True)


# --- environment -------------------------------------------------------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments ignored; one pair of surrounding quotes removed."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SystemExit(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def secret_key_file(data_dir: Path) -> Path:
    """var/secret_key: made once with mode 600, kept so sessions survive restarts."""
    path = data_dir / "secret_key"
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50) + "\n")
        log(f"made a new secret key in {path}")
    return path


def prepare_env() -> dict[str, str]:
    env = dict(os.environ)
    for key, value in read_dotenv(ROOT / ".env").items():
        env.setdefault(key, value)  # the real environment wins over .env
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    env["PYTHONUNBUFFERED"] = "1"  # children's logs appear as they happen, not in 8 KiB blocks
    data_dir = Path(env.get("KENSA_DATA_DIR") or ROOT / "var")
    if not data_dir.is_absolute():
        data_dir = ROOT / data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    env["KENSA_DATA_DIR"] = str(data_dir)
    if not env.get("KENSA_SECRET_KEY") and not env.get("KENSA_SECRET_KEY_FILE"):
        env["KENSA_SECRET_KEY_FILE"] = str(secret_key_file(data_dir))
    return env


def manage(env: dict[str, str], *args: str) -> None:
    """Runs manage.py in the foreground (stdin attached, so ensure_admin can prompt); stops on failure."""
    command = [sys.executable, str(ROOT / "manage.py"), *args]
    result = subprocess.run(command, cwd=ROOT, env=env)
    if result.returncode != 0:
        raise SystemExit(f"[run_all] manage.py {' '.join(args)} failed with exit status {result.returncode}")


# --- redis -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    password: str | None


def parse_redis_url(url: str) -> RedisAddress:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in {"redis", "rediss"}:
        raise SystemExit(f"[run_all] REDIS_URL={url!r}: expected redis://host:port/db")
    password = urllib.parse.unquote(parsed.password) if parsed.password else None
    return RedisAddress(host=parsed.hostname or "127.0.0.1", port=parsed.port or 6379, password=password)


def redis_reply(address: RedisAddress, timeout: float = 1.0) -> bytes | None:
    """The first bytes a server at the address sends back to PING, or None when nothing answers."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64)
    except OSError:
        return None


def redis_is_there(address: RedisAddress) -> bool:
    reply = redis_reply(address)
    # +PONG, or an error such as -NOAUTH (a password is set) or -LOADING: all mean a Redis is listening.
    return bool(reply) and reply[:1] in (b"+", b"-")


def wait_for_redis(address: RedisAddress, service: Service, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = redis_reply(address)
        if reply and (reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")):
            return
        if service.process.poll() is not None:
            raise SystemExit(f"[run_all] redis-server exited with status {service.process.returncode}")
        time.sleep(0.2)
    raise SystemExit(f"[run_all] redis-server did not answer on {address.host}:{address.port} in {timeout_s}s")


# --- child processes ---------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _in_child() -> None:
    # Runs between fork and exec. If this supervisor dies without cleaning up (SIGKILL), the kernel sends the
    # child SIGTERM, so no service outlives it. No threads exist yet when services start (see start_all).
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Service:
    name: str
    command: list[str]
    stop_signals: list[signal.Signals] = field(default_factory=lambda: [signal.SIGTERM])
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group: the terminal's Ctrl-C reaches only us, and we stop the group
            preexec_fn=_in_child,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)  # pid == pgid: process_group=0 made it the group leader

    def group_alive(self) -> bool:
        """True while any process of the group is left (a Celery pool child can outlive its master)."""
        if self.process is None:
            return False
        self.process.poll()  # reap the leader if it has exited
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def pump_output(service: Service, width: int) -> None:
    assert service.process is not None and service.process.stdout is not None
    prefix = f"{service.name:<{width}} | "
    for raw in iter(service.process.stdout.readline, b""):
        sys.stdout.write(prefix + raw.decode("utf-8", "replace").rstrip("\n") + "\n")
        sys.stdout.flush()


def beat_schedule_configured() -> bool:
    """True when the Celery app or the settings define a beat schedule (periodic tasks)."""
    candidates = list((ROOT / "workers").rglob("*.py")) + [ROOT / "webapp" / "settings.py"]
    pattern = re.compile(r"beat_schedule|CELERY_BEAT_SCHEDULE")
    return any(path.is_file() and pattern.search(path.read_text(errors="replace")) for path in candidates)


def port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def web_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except (urllib.error.URLError, OSError):
        return False


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.services: list[Service] = []
        self.stop_requests = 0
        self.wake = threading.Event()

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stop_requests += 1
        self.wake.set()

    def stop(self) -> None:
        """Web, beat and workers first (in parallel, escalating signals), Redis last."""
        first = [s for s in self.services if s.name != "redis"]
        last = [s for s in self.services if s.name == "redis"]
        for group in (first, last):
            self._stop_group(group)

    def _stop_group(self, services: list[Service]) -> None:
        steps = max((len(s.stop_signals) for s in services), default=0)
        for step in range(steps):
            pending = [s for s in services if s.group_alive()]
            if not pending:
                return
            for service in pending:
                sig = service.stop_signals[min(step, len(service.stop_signals) - 1)]
                service.signal_group(sig)
            requests = self.stop_requests
            deadline = time.monotonic() + max(GRACE_S.get(s.name, 10) for s in pending)
            while time.monotonic() < deadline and any(s.group_alive() for s in pending):
                if self.stop_requests > requests:  # another Ctrl-C: do not wait any longer
                    break
                time.sleep(0.1)
        for service in services:
            if service.group_alive():
                log(f"{service.name} did not stop; killing its process group")
                service.signal_group(signal.SIGKILL)
        for service in services:
            if service.process is not None:
                try:
                    service.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log(f"{service.name} (pid {service.process.pid}) is still there after SIGKILL")

    def run(self, services: list[Service], redis: Service | None, redis_address: RedisAddress, url: str) -> int:
        width = max(len(s.name) for s in ([redis] if redis else []) + services)
        try:
            # All children start before any thread exists: preexec_fn is only safe without threads.
            if redis is not None:
                self.services.append(redis)
                redis.start(self.env)
                wait_for_redis(redis_address, redis)
            for service in services:
                if self.stop_requests:
                    break
                self.services.append(service)
                service.start(self.env)
            for service in self.services:
                threading.Thread(target=pump_output, args=(service, width), daemon=True).start()

            announced = False
            while not self.stop_requests:
                exited = [s for s in self.services if not s.alive()]
                if exited:
                    for s in exited:
                        log(f"{s.name} exited with status {s.process.returncode}; stopping everything")
                    return 1
                if not announced and web_answers(url):
                    announced = True
                    log(f"Kensa is running at {url}  (Ctrl-C to stop)")
                self.wake.wait(0.5 if not announced else 1.0)
            return 0
        finally:
            if self.services:
                log("stopping (Ctrl-C again to stop at once)")
                self.stop()
                log("stopped")


def web_command(bind: str) -> list[str]:
    """The web service's command line: waitress, which buffers whole requests before a thread takes one, so slow
    clients cannot hold its threads (webapp/server.py; tests/webapp/test_slow_clients.py starts this very server).
    Threads come from KENSA_WEB_THREADS."""
    return [sys.executable, "-m", "webapp.server", "--bind", bind]


def run() -> int:
    os.chdir(ROOT)
    env = prepare_env()
    bind = env.get("KENSA_BIND") or DEFAULT_BIND
    host, _, port_text = bind.rpartition(":")
    if not host or not port_text.isdigit():
        raise SystemExit(f"[run_all] KENSA_BIND={bind!r}: expected HOST:PORT")
    url_host = "127.0.0.1" if host in {"0.0.0.0", "::", "[::]"} else host
    url = f"http://{url_host}:{port_text}/"
    if port_in_use(url_host, int(port_text)):
        raise SystemExit(f"[run_all] something already listens on {url_host}:{port_text}; stop it or set KENSA_BIND")

    redis_url = env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    redis_address = parse_redis_url(redis_url)

    # Foreground steps, with the terminal: Ctrl-C here simply interrupts them.
    log("applying database migrations")
    manage(env, "migrate", "--noinput")
    log("collecting static files")
    manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    manage(env, "ensure_admin")

    redis: Service | None = None
    if redis_is_there(redis_address):
        log(f"using the Redis already answering at {redis_address.host}:{redis_address.port}")
    elif redis_address.host in LOCAL_HOSTS:
        data_dir = Path(env["KENSA_DATA_DIR"])
        command = [
            "redis-server",
            *shlex.split(f"--bind 127.0.0.1 --port {redis_address.port} --daemonize no"),
            *["--pidfile", str(data_dir / "redis.pid"), "--dir", str(data_dir)],
            *["--appendonly", "yes"],  # queued tasks survive a restart
            *["--logfile", ""],  # log to stdout, which we prefix and show
        ]
        if redis_address.password:
            command += ["--requirepass", redis_address.password]
        redis = Service("redis", command)
    else:
        raise SystemExit(f"[run_all] nothing answers at REDIS_URL={redis_url}; start that Redis or unset REDIS_URL")

    celery = [sys.executable, "-m", "celery", "-A", "workers"]
    worker_stop = [signal.SIGTERM, signal.SIGQUIT]  # warm shutdown, then cold (hands messages back), then kill
    services = [
        Service(
            "train",
            [*celery, *shlex.split("worker -Q train -c 1 --prefetch-multiplier 1 -n train@%h -l info")],
            worker_stop,
        ),
        Service(
            "default",
            [*celery, *shlex.split("worker -Q default -c 2 --prefetch-multiplier 1 -n default@%h -l info")],
            worker_stop,
        ),
    ]
    if beat_schedule_configured():
        data_dir = Path(env["KENSA_DATA_DIR"])
        schedule = ["-s", str(data_dir / "celerybeat-schedule"), "--pidfile", str(data_dir / "celerybeat.pid")]
        services.append(Service("beat", [*celery, "beat", "-l", "info", *schedule]))
    services.append(Service("web", web_command(bind)))

    supervisor = Supervisor(env)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, supervisor.on_signal)
    return supervisor.run(services, redis, redis_address, url)


def main(argv: list[str]) -> int:
    if argv[:1] == ["manage"]:
        env = prepare_env()
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, str(ROOT / "manage.py"), *argv[1:]], env)
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    return run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
