#!/usr/bin/env python3
"""Single-image HTTP API latency and throughput on loopback, against a freshly trained sample-project model.

Everything lives in a temporary folder (SQLite database, media, model cache), so no real data is touched:
it migrates, creates the sample project (webapp.samples), trains one version in-process, makes a predict token,
starts gunicorn on 127.0.0.1 and sends PNGs with the docs page's urllib client (webapp/api/client_example.py).

    .venv/bin/python scripts/bench_api.py --family gaussian --requests 200 --seconds 60

Prints one Markdown table row per phase: sequential latency (p50, p95) and throughput with concurrent clients.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gaussian", choices=["gaussian", "patchcore"])
    parser.add_argument("--image-size", type=int, default=256, help="model input side (training config)")
    parser.add_argument("--requests", type=int, default=200, help="at most this many requests per phase")
    parser.add_argument("--seconds", type=float, default=60, help="at most this long per phase")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients in the throughput phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="kensa-bench-api-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "HF_HUB_OFFLINE": "1",
        "KENSA_SECRET_KEY": "bench-only-secret",
        "KENSA_DATA_DIR": str(scratch / "data"),
        "KENSA_MEDIA_ROOT": str(scratch / "media"),
        "DATABASE_URL": f"sqlite:///{scratch / 'bench.sqlite3'}",
        "KENSA_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from webapp.api.client_example import predict
    from webapp.api.services import api_token_create
    from webapp.samples import sample_project_create
    from webapp.training import services
    from webapp.training.execution import training_run_execute
    from webapp.training.models import ModelVersion

    call_command("migrate", verbosity=0)
    owner = User.objects.create_user("bench", password="bench-password-1")
    started = time.monotonic()
    project = sample_project_create(owner=owner)  # 80 good + 30 defective 256 px discs
    run = services.training_run_request(
        project=project, requested_by=owner, family=args.family, image_size=args.image_size
    )
    services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    version = ModelVersion.objects.get(run=run)
    print(f"# trained {version} in {time.monotonic() - started:.1f} s (sample project, {args.image_size} px)")
    _, secret = api_token_create(project=project, name="bench", scopes=["predict", "read"], created_by=owner)
    # A mix of good and defective parts: every fifth image of the project.
    images = [image.file.open("rb").read() for image in list(project.images.order_by("id"))[::5]]

    from webapp.inference.services import predict_bytes

    predict_bytes(version=version, data=images[0], purpose="api")  # loads the model in this process

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers),
         "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    api_url = f"http://127.0.0.1:{port}/api/v1"
    project_id = str(project.public_id)
    try:
        deadline = time.monotonic() + 60
        while True:  # up, and every worker has loaded the model once
            try:
                for image in images[: args.workers * 3]:
                    predict(api_url, project_id, secret, image)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

        # Sequential, one request at a time: the latency a camera PC sees. Each HTTP request is paired with the
        # same image through the same service in this process (no HTTP, no auth), alternating, so both see the
        # same load from whatever else shares the cores; the difference is the web layer. A read-only request
        # (GET versions) times the web layer alone.
        latencies: list[float] = []
        direct: list[float] = []
        reads: list[float] = []
        read_request = urllib.request.Request(
            f"{api_url}/projects/{project_id}/versions/", headers={"Authorization": f"Bearer {secret}"}
        )
        phase_end = time.monotonic() + args.seconds
        while len(latencies) < args.requests and time.monotonic() < phase_end:
            image = images[len(latencies) % len(images)]
            t0 = time.perf_counter()
            predict_bytes(version=version, data=image, purpose="api")
            t1 = time.perf_counter()
            predict(api_url, project_id, secret, image)
            t2 = time.perf_counter()
            urllib.request.urlopen(read_request, timeout=30).read()
            direct.append(t1 - t0)
            latencies.append(t2 - t1)
            reads.append(time.perf_counter() - t2)

        # Concurrent: `clients` threads sharing the request budget: throughput of the server.
        sent = [0]
        lock = threading.Lock()
        phase_end = time.monotonic() + args.seconds

        def client() -> None:
            while time.monotonic() < phase_end:
                with lock:
                    if sent[0] >= args.requests:
                        return
                    sent[0] += 1
                    index = sent[0]
                predict(api_url, project_id, secret, images[index % len(images)])

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(30)

    size = statistics.mean(len(image) for image in images)
    print(f"# {version.family}, {args.workers} gunicorn workers, 256x256 PNGs of {size / 1024:.0f} KiB on average")
    print("| phase | requests | p50 ms | p95 ms | mean ms | req/s |")
    print("|---|---|---|---|---|---|")
    phases = (
        ("HTTP predict, 1 client, sequential", latencies),
        ("same images in-process (predict_bytes, no HTTP)", direct),
        ("HTTP GET versions (web layer alone)", reads),
    )
    for phase, values in phases:
        print(
            f"| {phase} | {len(values)} | {1000 * statistics.median(values):.0f} "
            f"| {1000 * _percentile(values, 0.95):.0f} | {1000 * statistics.mean(values):.0f} "
            f"| {len(values) / sum(values):.1f} |"
        )
    print(f"| HTTP, {args.clients} clients, concurrent | {sent[0]} | – | – | – | {sent[0] / elapsed:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
