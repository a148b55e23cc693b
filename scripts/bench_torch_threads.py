#!/usr/bin/env python3
"""A/B of KENSA_WEB_TORCH_THREADS: two gunicorns side by side on one sample model, one per setting, with requests
alternating between them in short rounds so both see the same background load on shared cores.

    .venv/bin/python scripts/bench_torch_threads.py --a 1 --b 0 --rounds 6

Per round and server: `--sequential` requests one at a time, then `--burst` requests from `--clients` threads.
Prints a Markdown table per setting; exits 1 if any request failed. Setup as scripts/bench_api.py.
"""

from __future__ import annotations

import argparse
import sys

import bench_api
import benchlib


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gaussian", choices=["gaussian", "patchcore"])
    parser.add_argument("--a", default="1", help="KENSA_WEB_TORCH_THREADS of server A (0: PyTorch's default)")
    parser.add_argument("--b", default="0", help="KENSA_WEB_TORCH_THREADS of server B")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sequential", type=int, default=20, help="one-at-a-time requests per round and server")
    parser.add_argument("--burst", type=int, default=100, help="concurrent requests per round and server")
    parser.add_argument("--clients", type=int, default=50)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with benchlib.sandbox_start("kensa-bench-threads-") as sandbox:
        return bench(args, sandbox)


def bench(args: argparse.Namespace, sandbox: benchlib.Sandbox) -> int:
    print(f"# {benchlib.machine_line()} (start)")
    owner, project, version = benchlib.sample_model(family=args.family, image_size=256)
    from webapp.api.services import api_token_create

    _, secret = api_token_create(project=project, name="bench", scopes=["predict"], created_by=owner)
    images = [image.file.open("rb").read() for image in list(project.images.order_by("id"))[::5]]
    settings = {"A": args.a, "B": args.b}
    servers = {name: benchlib.gunicorn_start({**sandbox.env, "KENSA_WEB_TORCH_THREADS": value})
               for name, value in settings.items()}  # fmt: skip
    outcomes = {(name, phase): [] for name in settings for phase in ("sequential", "burst")}
    burst_seconds = dict.fromkeys(settings, 0.0)
    warmup: list[bench_api.Outcome] = []  # not timed, but a failure counts
    try:
        senders = {}
        for name, (_, base_url) in servers.items():
            url = f"{base_url}/api/v1/projects/{project.public_id}/predict/"
            senders[name] = lambda i, url=url: bench_api.timed(
                bench_api.predict_request(url, secret, images[i % len(images)]), timeout=300, expect="score"
            )
            benchlib.http_wait(url)
            warmup += bench_api.load_run(senders[name], clients=8, total=16)[0]  # every worker loads the model
        for _ in range(args.rounds):
            for name, send in senders.items():
                outcomes[name, "sequential"] += [send(i) for i in range(args.sequential)]
                burst, seconds = bench_api.load_run(send, clients=args.clients, total=args.burst)
                outcomes[name, "burst"] += burst
                burst_seconds[name] += seconds
    finally:
        for process, _ in servers.values():
            benchlib.process_stop(process)

    print(f"# {benchlib.machine_line()} (end)")
    print(f"# {version.family}, gunicorn 2 workers x 4 threads each, {args.rounds} alternating rounds; times in ms")
    rows = []
    for name, value in settings.items():
        rows.append(bench_api.table_row(f"{name}: threads={value}, 1 client", outcomes[name, "sequential"]))
        rows.append(
            bench_api.table_row(
                f"{name}: threads={value}, {args.clients} clients", outcomes[name, "burst"], burst_seconds[name]
            )
        )
    headers = ["server", "requests", "errors", "p50", "p95", "p99", "max", "mean", "req/s"]
    print(benchlib.markdown_table(headers, rows))
    failures = bench_api.error_counts(warmup + [o for values in outcomes.values() for o in values])
    for kind, count in failures.most_common():
        print(f"# errors: {count} x {kind}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
