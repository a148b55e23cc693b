#!/usr/bin/env python3
"""Single-image HTTP API latency, and a load test with bounded concurrency, on loopback against a freshly trained
sample-project model.

Everything lives in a temporary folder (SQLite database, media, model cache, its own redis-server), so no real data
is touched: it migrates, creates the sample project (webapp.samples), trains one version in-process, makes a
predict token, starts the web server on 127.0.0.1 as `make run` does (waitress, 2 processes x 4 threads;
`--server gunicorn`: the former 2 workers x 4 threads) and sends
the project's PNGs as raw bodies, as the docs page's client does (webapp/api/client_example.py).

    .venv/bin/python scripts/bench_api.py --family gaussian --clients 50 --requests 2000

Two phases. Sequential (`--sequential`, bounded by `--seconds`): one request at a time, each paired with the same
image through the same service in this process and a read-only request, so the web layer's share shows. Load:
exactly `--clients` threads share `--requests` predict requests; every request's latency and outcome is recorded.
Prints a Markdown table (p50, p95, p99, max, mean, req/s) and the errors by kind; exits 1 if any request failed
(a status other than 200, a connection error or a timeout).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import benchlib


@dataclass(frozen=True)
class Outcome:
    seconds: float
    error: str = ""  # empty when the answer was a 200 with a prediction in it


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return type(exc.reason).__name__  # ConnectionRefusedError, TimeoutError, ...
    return type(exc).__name__


def timed(request: urllib.request.Request, *, timeout: float, expect: str) -> Outcome:
    """Sends the request; the outcome is an error unless it answers 200 with JSON holding `expect`."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
        error = "" if expect in answer else "unexpected answer"
    except Exception as exc:  # every failure is counted by kind, none stops the run
        error = _error_kind(exc)
    return Outcome(time.perf_counter() - started, error)


def predict_request(url: str, secret: str, image: bytes) -> urllib.request.Request:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "image/png"}
    return urllib.request.Request(url, data=image, method="POST", headers=headers)


def load_run(send: Callable[[int], Outcome], *, clients: int, total: int) -> tuple[list[Outcome], float]:
    """Exactly `clients` threads take request numbers 0..total-1 in turn; returns every outcome and the wall time."""
    outcomes: list[Outcome] = []
    next_index = [0]
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= total:
                return
            outcome = send(index)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client, name=f"client-{n}") for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, time.perf_counter() - started


def sequential_run(*, count: int, seconds: float, http: Callable, direct: Callable, read: Callable) -> dict:
    """One request at a time, alternating HTTP predict, the same image in-process, and a read-only request, so all
    three see the same load from whatever else shares the cores."""
    phases: dict[str, list[Outcome]] = {"http": [], "direct": [], "read": []}
    deadline = time.monotonic() + seconds
    index = 0
    while index < count and time.monotonic() < deadline:
        phases["http"].append(http(index))
        started = time.perf_counter()
        direct(index)
        phases["direct"].append(Outcome(time.perf_counter() - started))
        phases["read"].append(read())
        index += 1
    return phases


def table_row(phase: str, outcomes: list[Outcome], elapsed: float | None = None) -> list[str]:
    """Percentiles over the successful requests; throughput over all (wall time when given, else summed)."""
    ok = [o.seconds for o in outcomes if not o.error]
    errors = len(outcomes) - len(ok)
    spent = elapsed if elapsed is not None else sum(o.seconds for o in outcomes)
    rate = f"{len(outcomes) / spent:.1f}" if spent else "–"
    return [phase, str(len(outcomes)), str(errors), *benchlib.latency_cells(ok), rate]


def error_counts(outcomes: list[Outcome]) -> collections.Counter:
    return collections.Counter(o.error for o in outcomes if o.error)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gaussian", choices=["gaussian", "patchcore"])
    parser.add_argument("--image-size", type=int, default=256, help="model input side (training config)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent client threads in the load phase")
    parser.add_argument("--requests", type=int, default=2000, help="predict requests in the load phase")
    parser.add_argument("--sequential", type=int, default=30, help="requests in the sequential phase (0: skip)")
    parser.add_argument("--seconds", type=float, default=60, help="at most this long for the sequential phase")
    parser.add_argument("--timeout", type=float, default=300, help="client timeout per request, seconds")
    parser.add_argument("--server", default="waitress", choices=["waitress", "gunicorn"], help="waitress: as make run")
    parser.add_argument("--workers", type=int, default=benchlib.GUNICORN_WORKERS, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=benchlib.GUNICORN_THREADS, help="threads per gunicorn worker")
    parser.add_argument("--web-processes", type=int, default=2, help="waitress processes (KENSA_WEB_PROCESSES)")
    parser.add_argument("--web-threads", type=int, default=4, help="threads per waitress process (KENSA_WEB_THREADS)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with benchlib.sandbox_start("kensa-bench-api-") as sandbox:
        return bench(args, sandbox)


def bench(args: argparse.Namespace, sandbox: benchlib.Sandbox) -> int:
    print(f"# {benchlib.machine_line()} (start)")
    started = time.monotonic()
    owner, project, version = benchlib.sample_model(family=args.family, image_size=args.image_size)
    print(f"# trained {version} in {time.monotonic() - started:.1f} s (sample project, {args.image_size} px)")

    from webapp.api.services import api_token_create
    from webapp.inference.services import predict_bytes
    from webapp.wsgi import torch_threads_limit

    torch_threads_limit()  # the in-process calls run with the web server's torch threads

    _, secret = api_token_create(project=project, name="bench", scopes=["predict", "read"], created_by=owner)
    # A mix of good and defective parts: every fifth image of the project.
    images = [image.file.open("rb").read() for image in list(project.images.order_by("id"))[::5]]
    if args.sequential:
        predict_bytes(version=version, data=images[0], purpose="api")  # loads the model in this process

    if args.server == "gunicorn":
        server, base_url = benchlib.gunicorn_start(sandbox.env, workers=args.workers, threads=args.threads)
        server_line, warm = f"gunicorn {args.workers} workers x {args.threads} threads", args.workers * args.threads
    else:
        processes, threads = args.web_processes, args.web_threads
        server, base_url = benchlib.web_server_start(sandbox.env, processes=processes, threads=threads)
        server_line = f"waitress (make run's server) {args.web_processes} processes x {args.web_threads} threads"
        warm = args.web_processes * args.web_threads
    project_url = f"{base_url}/api/v1/projects/{project.public_id}"
    read_request = urllib.request.Request(f"{project_url}/versions/", headers={"Authorization": f"Bearer {secret}"})

    def http(index: int) -> Outcome:
        image = images[index % len(images)]
        return timed(predict_request(f"{project_url}/predict/", secret, image), timeout=args.timeout, expect="score")

    try:
        benchlib.http_wait(f"{project_url}/versions/")
        # Every worker loads the model on its first predict: enough concurrent requests to reach them all.
        warmup, _ = load_run(http, clients=warm, total=2 * warm)
        sequential = sequential_run(
            count=args.sequential,
            seconds=args.seconds,
            http=http,
            direct=lambda i: predict_bytes(version=version, data=images[i % len(images)], purpose="api"),
            read=lambda: timed(read_request, timeout=args.timeout, expect="versions"),
        )
        print(f"# load phase: {args.clients} clients, {args.requests} requests, load {benchlib.load_average()}")
        load, elapsed = load_run(http, clients=args.clients, total=args.requests)
    finally:
        benchlib.process_stop(server)

    size = statistics.mean(len(image) for image in images)
    print(f"# {benchlib.machine_line()} (end)")
    print(
        f"# {version.family}, {server_line}, "
        f"{len(images)} different 256x256 PNGs of {size / 1024:.0f} KiB on average; times in ms"
    )
    rows = [
        table_row("HTTP predict, 1 client, sequential", sequential["http"]),
        table_row("same images in-process (predict_bytes, no HTTP)", sequential["direct"]),
        table_row("HTTP GET versions (web layer alone)", sequential["read"]),
        table_row(f"HTTP predict, {args.clients} concurrent clients", load, elapsed),
    ]
    headers = ["phase", "requests", "errors", "p50", "p95", "p99", "max", "mean", "req/s"]
    print(benchlib.markdown_table(headers, rows))
    failures = error_counts(warmup + sequential["http"] + sequential["read"] + load)
    for kind, count in failures.most_common():
        print(f"# errors: {count} x {kind}")
    if failures:
        return 1
    print("# no errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
