"""scripts/run_all.py (what `make run` runs) started as a child on free loopback ports with its own data folder, for
the supervision test and the benchmarks that kill its processes. Its output is kept and parsed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchlib import free_port

SCRIPTS = Path(__file__).resolve().parent
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "a-long-test-password-1"


def run_all_env(scratch: Path, *, port: int, redis_port: int) -> dict[str, str]:
    """The environment for a run_all of its own: nothing inherited that points at another Kensa."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KENSA_", "DJANGO_", "DATABASE_", "REDIS_"))}
    env.update(
        KENSA_DATA_DIR=str(scratch / "data"),
        KENSA_MEDIA_ROOT=str(scratch / "media"),
        KENSA_BIND=f"127.0.0.1:{port}",
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        KENSA_ADMIN_USERNAME=ADMIN_USERNAME,
        KENSA_ADMIN_PASSWORD=ADMIN_PASSWORD,
        HF_HUB_OFFLINE="1",
    )
    return env


class RunAll:
    """run_all.py in a session of its own; `lines` fills as it prints."""

    def __init__(self, scratch: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = run_all_env(scratch, port=self.port, redis_port=free_port())
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "run_all.py")],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def pids(self) -> dict[str, int]:
        """The latest pid of each service, from the supervisor's `NAME started (pid N)` lines."""
        return {m[1]: int(m[2]) for m in re.finditer(r"\[run_all\] (\w+) started \(pid (\d+)\)", self.text())}

    def count(self, service: str, needle: str) -> int:
        """How many lines service NAME printed that contain `needle` (its output is prefixed `NAME | `)."""
        prefix = re.compile(rf"^{re.escape(service)}\s+\| ")
        return sum(1 for line in list(self.lines) if prefix.match(line) and needle in line)

    def wait_running(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not (
            "Kensa is running at" in self.text() and self.count("train", "ready.") and self.count("default", "ready.")
        ):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"make run did not come up:\n{self.text()[-3000:]}")
            time.sleep(0.2)

    def answers(self, path: str = "/accounts/login/", timeout: float = 1) -> bool:
        try:
            urllib.request.urlopen(self.base_url + path, timeout=timeout).close()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (a Celery worker's pool processes)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
