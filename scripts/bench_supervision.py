#!/usr/bin/env python3
"""kill -9 of each process under `make run`, one at a time: do the others keep serving, and how soon is it back?

Starts scripts/run_all.py (migrations, Redis, both Celery workers, beat, the web server) on free loopback ports
with a temporary data folder, then for each service kills its main process with SIGKILL (what the kernel's OOM
killer does), and measures, polling every 0.1 s until the service is back:
  - back: seconds until the supervisor started it again and it is ready (Redis accepts connections, a worker
    prints "ready.", beat starts, the web server answers); for `web process`, one of the web server's serving
    processes, until the server's own parent has started its replacement;
  - web misses: requests to the login page that got no answer meanwhile (for the web service itself: its downtime);
  - others restarted: whether any other service got a new pid (it must not).

    .venv/bin/python scripts/bench_supervision.py

Prints a Markdown table; exits 1 if a service is not back within --limit seconds (30) or another one restarted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from run_all_harness import RunAll, children

# What a service prints when it is ready again, per service (counted in its prefixed output lines).
READY = {"redis": "Ready to accept connections", "train": "ready.", "default": "ready.", "beat": "beat: Starting"}
WEB_PROCESS = "web process"


def kill_and_measure(app: RunAll, service: str, limit: float) -> list[str]:
    """`service` is a name of run_all's, or `web process`: one of the web server's serving processes, which the
    server's own parent replaces (run_all's `web` is that parent)."""
    before = app.pids()
    if service == WEB_PROCESS:
        serving = children(before["web"])
        victim = serving[0]
    else:
        victim = before[service]
    ready_before = app.count(service, READY[service]) if service in READY else 0
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    polls = misses = 0
    back = None
    while time.monotonic() - killed < limit + 30:
        polls += 1
        answered = app.answers(timeout=2)
        misses += not answered
        if service == WEB_PROCESS:
            replaced = set(children(before["web"])) - set(serving)
            restarted, ready = bool(replaced), answered
        else:
            restarted = app.pids()[service] != before[service]
            ready = answered if service == "web" else app.count(service, READY[service]) > ready_before
        if restarted and ready:
            back = time.monotonic() - killed
            break
        time.sleep(0.1)
    others = [name for name, pid in app.pids().items() if name != service and pid != before[name]]
    return [
        service,
        f"{back:.1f}" if back is not None else f"> {limit + 30:.0f}",
        f"{misses} of {polls}",
        ", ".join(others) or "none",
        "yes" if back is not None and back <= limit and not others and (service == "web" or misses == 0) else "NO",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=float, default=30.0, help="seconds a service may take to be back")
    parser.add_argument(
        "--services", default=f"train,default,beat,redis,{WEB_PROCESS},web", help="comma-separated, in order"
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="kensa-bench-supervision-"))
    app = RunAll(scratch)
    rows = []
    try:
        app.wait_running()
        time.sleep(5)  # beat and the web server settle
        for service in args.services.split(","):
            rows.append(kill_and_measure(app, service, args.limit))
            print(" | ".join(rows[-1]), flush=True)
            time.sleep(3)
    finally:
        status = app.stop()
    print()
    print(f"# {benchlib.machine_line()}; make run stopped with status {status}")
    headers = ["killed (SIGKILL)", "back after (s)", "web requests unanswered", "others restarted", "target met"]
    print(benchlib.markdown_table(headers, rows))
    return 0 if rows and all(row[-1] == "yes" for row in rows) and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
