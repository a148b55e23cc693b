"""scripts/run_all.py supervises like a process manager: a child that dies is started again with backoff while the
others keep serving; only a stop signal stops everything. Once with cheap stand-in services, once with the real
app (`make run` on free ports, its training worker killed with SIGKILL as the OOM killer would)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import run_all  # noqa: E402
from run_all_harness import RunAll  # noqa: E402

STEADY = "import time\nprint('up', flush=True)\nwhile True:\n    time.sleep(1)"
CRASHING = "import sys\nprint('going down', flush=True)\nsys.exit(3)"


def stand_in(name: str, code: str) -> run_all.Service:
    return run_all.Service(name, [sys.executable, "-c", code])


def group_gone(service: run_all.Service) -> bool:
    return not service.group_alive()


def test_a_dead_child_is_started_again_with_backoff_and_the_others_keep_running(capsys):
    # given a supervisor with short backoff times, a steady service, another one, and one that crashes at once
    supervisor = run_all.Supervisor({**os.environ}, restart_min_s=0.2, restart_max_s=0.8, stable_s=3.0)
    steady, other, crashing = stand_in("steady", STEADY), stand_in("other", STEADY), stand_in("crashing", CRASHING)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run([steady, other, crashing], None, None, None)))
    thread.start()
    try:
        wait_for(lambda: steady.alive() and other.alive(), timeout=10, message="the services to start")
        first_pid, other_pid = steady.process.pid, other.process.pid
        # then the crashing one is retried, ever later up to the cap, and never takes the others down
        wait_for(lambda: crashing.restarts >= 4, timeout=15, message="four restarts of the crashing service")
        assert crashing.delay_s == 0.8
        assert steady.process.pid == first_pid and other.process.pid == other_pid and steady.alive()
        time.sleep(max(0.0, 3.2 - (time.monotonic() - steady.started_at)))  # steady has run stably

        # when the steady one is killed (SIGKILL, as the OOM killer does)
        os.kill(first_pid, signal.SIGKILL)
        # then it is back after the shortest wait (it had run stably), with a new pid; the other one was untouched
        wait_for(lambda: steady.restarts == 1 and steady.alive(), timeout=5, message="steady to start again")
        assert steady.delay_s == 0.2 and steady.process.pid != first_pid
        assert other.process.pid == other_pid and other.alive() and other.restarts == 0
        # when it dies again at once, the wait doubles
        second_pid = steady.process.pid
        os.kill(second_pid, signal.SIGKILL)
        wait_for(lambda: steady.restarts == 2 and steady.alive(), timeout=5, message="steady to start again")
        assert steady.delay_s == 0.4
    finally:
        # when asked to stop (what Ctrl-C does)
        supervisor.on_signal(signal.SIGINT, None)
        thread.join(60)
    # then everything stops, and the log says what happened
    assert result == [0]
    assert all(group_gone(s) for s in (steady, other, crashing))
    log = capsys.readouterr().out
    assert re.search(r"steady was killed by SIGKILL after \d+ s; starting it again in 0.2 s", log)
    assert "crashing exited with status 3" in log and "steady started (pid" in log
    assert "crashing | going down" in log and "[run_all] stopped" in log


def test_a_child_is_stopped_when_the_supervisor_is_killed(tmp_path):
    # given run_all's launcher starting a long-lived child from a short-lived parent
    code = (
        "import subprocess, sys\n"
        f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
        "import run_all\n"
        f"s = run_all.Service('x', [sys.executable, '-c', {STEADY!r}])\n"
        "s.start({})\n"
        "print(s.process.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    # when the parent dies without cleaning up
    parent.kill()
    parent.wait()

    # then the kernel ends the child too (parent-death signal set by the launcher before exec)
    def child_gone() -> bool:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{child_pid}/stat").read_text().split()[2] == "Z"

    wait_for(child_gone, timeout=10, message="the orphaned child to end")


@pytest.mark.integration
def test_make_run_keeps_serving_when_the_training_worker_is_killed(tmp_path):
    app = RunAll(tmp_path)
    try:
        # given the whole app up
        app.wait_running()
        before = app.pids()
        assert {"redis", "train", "default", "beat", "web"} <= before.keys()
        # when the training worker's master is killed as the OOM killer would
        os.kill(before["train"], signal.SIGKILL)
        killed_at = time.monotonic()
        # then the web keeps answering all along, and the worker is back (a new pid, ready again) within 30 s
        misses = 0
        while not (app.pids()["train"] != before["train"] and app.count("train", "ready.") == 2):
            assert time.monotonic() - killed_at < 30, f"train worker not back in 30 s:\n{app.text()[-3000:]}"
            misses += not app.answers()
            time.sleep(0.2)
        assert misses == 0
        assert app.answers()
        after = app.pids()
        assert {k: v for k, v in after.items() if k != "train"} == {k: v for k, v in before.items() if k != "train"}
        assert "train was killed by SIGKILL" in app.text()
    finally:
        status = app.stop()
    # and a stop signal still stops everything, cleanly
    assert status == 0, app.text()[-3000:]
    assert "[run_all] stopped" in app.text()
