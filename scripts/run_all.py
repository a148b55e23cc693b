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
    stations  manage.py run_stations: the inspection stations (watched folders, cameras) and their sinks
    web       waitress serving webapp.wsgi on KENSA_BIND (127.0.0.1:8000), see webapp/server.py

A child that exits (a crash, the OOM killer, kill -9) is started again while the others keep serving: after 1 s,
doubling while it keeps crashing up to every 30 s, back to 1 s once it had run for a minute; each exit and start
is logged with its pid. Only Ctrl-C, SIGTERM or SIGHUP stops everything: SIGTERM to each process group, then (for
the Celery workers, which wait for their running task) SIGQUIT, then SIGKILL; Redis stops last, so workers can
hand unfinished messages back to the queue. A second Ctrl-C skips the waiting. Standard library only.
"""

from __future__ import annotations

import contextlib
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
GRACE_S = {"web": 15, "beat": 10, "default": 30, "train": 30, "stations": 30, "redis": 15}


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

# Each child starts through this launcher, which asks the kernel for SIGTERM when this supervisor dies without
# cleaning up (SIGKILL), so no service outlives it, then becomes the service (exec keeps the request). Done in the
# child itself rather than in preexec_fn, which is unsafe once output threads exist: children are restarted later.
_PDEATHSIG_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "    if os.getppid() != int(sys.argv[1]):\n"
    "        sys.exit(1)  # the supervisor died before the request was made\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)

# Restarts: the first after RESTART_MIN_S, doubling for each crash in a row up to RESTART_MAX_S; a child that ran
# STABLE_S before it exited starts again after RESTART_MIN_S (its crash is not part of a loop).
RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 60.0


def describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


@dataclass
class Service:
    name: str
    command: list[str]
    stop_signals: list[signal.Signals] = field(default_factory=lambda: [signal.SIGTERM])
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.monotonic() of the latest start
    restarts: int = 0
    delay_s: float = 0.0  # the wait before the latest restart (doubles while it keeps crashing)
    restart_at: float | None = None  # set while it waits to be started again

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PDEATHSIG_LAUNCHER, str(os.getpid()), *self.command],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group: the terminal's Ctrl-C reaches only us, and we stop the group
        )
        self.started_at = time.monotonic()
        self.restart_at = None

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
    """Starts the services, restarts any that exits (with backoff) while the others keep serving, and stops them
    all on a signal. Backoff times are attributes so a test can shorten them."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        restart_min_s: float = RESTART_MIN_S,
        restart_max_s: float = RESTART_MAX_S,
        stable_s: float = STABLE_S,
    ) -> None:
        self.env = env
        self.services: list[Service] = []
        self.stop_requests = 0
        self.wake = threading.Event()
        self.restart_min_s, self.restart_max_s, self.stable_s = restart_min_s, restart_max_s, stable_s
        self.width = 8

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

    def launch(self, service: Service) -> None:
        service.start(self.env)
        log(f"{service.name} started (pid {service.process.pid})")
        threading.Thread(target=pump_output, args=(service, self.width), daemon=True).start()

    def check(self, service: Service, now: float) -> None:
        """Schedules a restart of a service that exited, or starts one whose wait is over."""
        if service.restart_at is not None:
            if now >= service.restart_at:
                service.restarts += 1
                self.launch(service)
            return
        if service.alive():
            return
        # A Celery worker's pool children can outlive their killed master: the group goes before the new one comes.
        service.signal_group(signal.SIGKILL)
        ran_s = now - service.started_at
        if ran_s >= self.stable_s:
            service.delay_s = self.restart_min_s
        else:
            service.delay_s = min(self.restart_max_s, max(self.restart_min_s, service.delay_s * 2))
        service.restart_at = now + service.delay_s
        log(
            f"{service.name} {describe_exit(service.process.returncode)} after {ran_s:.0f} s; "
            f"starting it again in {service.delay_s:g} s (the others keep running)"
        )

    def run(
        self, services: list[Service], redis: Service | None, redis_address: RedisAddress | None, url: str | None
    ) -> int:
        """Runs until a stop signal (on_signal). Returns 0."""
        self.width = max(len(s.name) for s in ([redis] if redis else []) + services)
        try:
            if redis is not None:
                self.services.append(redis)
                self.launch(redis)
                wait_for_redis(redis_address, redis)
            for service in services:
                if self.stop_requests:
                    break
                self.services.append(service)
                self.launch(service)

            announced = url is None
            while not self.stop_requests:
                now = time.monotonic()
                for service in self.services:
                    self.check(service, now)
                if not announced and web_answers(url):
                    announced = True
                    log(f"Kensa is running at {url}  (Ctrl-C to stop)")
                self.wake.wait(0.5)
            return 0
        finally:
            if self.services:
                log("stopping (Ctrl-C again to stop at once)")
                self.stop()
                log("stopped")


def web_command(bind: str) -> list[str]:
    """The web service's command line: waitress, which buffers whole requests before a thread takes one, so slow
    clients cannot hold its threads (webapp/server.py; tests/webapp/test_slow_clients.py starts this very server).
    Processes and threads come from KENSA_WEB_PROCESSES and KENSA_WEB_THREADS."""
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
    # migrate ran Django's system checks above; a worker repeating them imports every URL module, torch with them:
    # a restarted train worker was ready after 30 s instead of 4 s on a loaded 2-core box (bench_supervision.py).
    env.setdefault("CELERY_SKIP_CHECKS", "1")
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
    # SIGTERM: the runner finishes the image in hand and hands its stations back at once.
    services.append(Service("stations", [sys.executable, str(ROOT / "manage.py"), "run_stations"]))
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
