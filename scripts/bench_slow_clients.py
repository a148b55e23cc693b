#!/usr/bin/env python3
"""Slow clients against the web server: how long other requests wait while many connections send their request
bodies at 1 byte/s (a flaky client, or an attacker holding the server's threads).

Starts a throwaway Kensa (benchlib sandbox: SQLite, media and redis-server in a temporary folder) and the web server
`make run` starts (waitress, webapp/server.py), or with `--server gunicorn` the former 2 workers x 4 threads. Then
times GET /accounts/login/ (a full Django request) with no slow client, and again while `--slow` connections each
trickle a POST body one byte per second.

    .venv/bin/python scripts/bench_slow_clients.py --slow 8 --seconds 20
    .venv/bin/python scripts/bench_slow_clients.py --slow 8 --seconds 20 --server gunicorn

Prints a Markdown table (p50, p95, max, share answered within 1 s); exits 1 if any request with slow clients
connected took 1 s or more (timeouts count as never answered).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import benchlib

TARGET_S = 1.0
GRACE_S = 7  # past the few seconds a server may wait for a new connection's first bytes before taking a thread


class SlowClients:
    """Connections that send a POST's headers, then its body one byte per second, until closed."""

    def __init__(self, host: str, port: int, count: int, *, body_bytes: int = 10_000, path: str = "/accounts/login/"):
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            conn = socket.create_connection((host, port), timeout=5)
            conn.sendall(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {body_bytes}\r\n\r\n".encode()
            )
            self.sockets.append(conn)
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(1.0):
            for conn in self.sockets:
                with contextlib.suppress(OSError):  # the server may close a connection; the others go on
                    conn.sendall(b"a")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for conn in self.sockets:
            conn.close()


def answer_seconds(url: str, timeout: float) -> float:
    """Seconds until the server answers a GET (any HTTP status is an answer); infinity when it does not in time."""
    started = time.monotonic()
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        pass
    except OSError:
        return float("inf")
    return time.monotonic() - started


def timings(url: str, *, seconds: float, timeout: float) -> list[float]:
    """One request after another for `seconds`, 0.2 s apart."""
    values: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(answer_seconds(url, timeout))
        time.sleep(0.2)
    return values


def row(label: str, values: list[float]) -> list[str]:
    answered = [v for v in values if v != float("inf")]
    within = sum(v < TARGET_S for v in values)
    cells = benchlib.latency_cells(answered)  # p50, p95, p99, max, mean in ms
    return [label, str(len(values)), str(len(values) - len(answered)), cells[0], cells[1], cells[3],
            f"{within}/{len(values)}"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=8, help="slow connections, each sending 1 byte/s")
    parser.add_argument("--seconds", type=float, default=20, help="how long to time requests in each phase")
    parser.add_argument("--timeout", type=float, default=5, help="client timeout per timed request, seconds")
    parser.add_argument("--server", default="waitress", choices=["waitress", "gunicorn"], help="waitress: as make run")
    args = parser.parse_args()

    sandbox = benchlib.sandbox_start("kensa-bench-slow-")
    server = None
    try:
        if args.server == "gunicorn":
            server, base_url = benchlib.gunicorn_start(sandbox.env)
            label = f"gunicorn {benchlib.GUNICORN_WORKERS} workers x {benchlib.GUNICORN_THREADS} threads"
        else:
            server, base_url = benchlib.web_server_start(sandbox.env)
            label = "waitress 2 processes x 4 threads (make run)"
        url = f"{base_url}/accounts/login/"
        benchlib.http_wait(url)
        for _ in range(3):
            answer_seconds(url, args.timeout)  # imports and first-request set-up are not what is measured
        print(f"# {benchlib.machine_line()}")
        alone = timings(url, seconds=args.seconds, timeout=args.timeout)
        parsed = urllib.parse.urlsplit(base_url)
        slow = SlowClients(parsed.hostname, parsed.port, args.slow)
        try:
            time.sleep(GRACE_S)
            crowded = timings(url, seconds=args.seconds, timeout=args.timeout)
        finally:
            slow.close()
    finally:
        benchlib.process_stop(server)
        sandbox.close()

    print(f"# {label}; GET /accounts/login/ one after another; times in ms; timeout {args.timeout:g} s")
    headers = ["phase", "requests", "timed out", "p50", "p95", "max", f"answered < {TARGET_S:g} s"]
    print(benchlib.markdown_table(headers, [
        row("no slow client", alone),
        row(f"{args.slow} clients sending 1 byte/s", crowded),
    ]))  # fmt: skip
    return 0 if crowded and max(crowded) < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
