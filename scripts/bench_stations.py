#!/usr/bin/env python3
"""Inspection-station throughput and latency (issue 18): a watched folder, PNGs renamed into it at a steady rate,
judged by `manage.py run_stations` (a real subprocess), verdicts published to a local Mosquitto over MQTT.

Everything lives in a temporary folder (SQLite, media, model cache, its own redis-server and mosquitto on free
loopback ports). It trains the sample project's model in-process, makes `--count` synthetic parts of `--size` px
(one in five with a defect), starts the runner, then renames the parts into the station's folder, `--rate` per
second (0: all at once), and subscribes to the verdict topic.

    nice -n 10 .venv/bin/python scripts/bench_stations.py --family patchcore --count 1000 --size 512 --rate 15

Latency is from the rename (the file's arrival) to the verdict received from the broker; throughput is images
over the time from the first arrival to the last verdict. Also reported: the runner's CPU seconds per image and
the verdicts delivered (every image must get exactly one). Prints a Markdown table; exits 1 if a verdict is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import benchlib

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def mosquitto_start(workdir: Path) -> tuple[subprocess.Popen, int]:
    import getpass
    import socket

    port = benchlib.free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"pid_file {workdir / 'mosquitto.pid'}\nuser {getpass.getuser()}\n"
    )
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


DISTINCT_PARTS = 50  # drawing a 512 px part takes ~0.1 s: 50 distinct ones, each copied under several names


def make_parts(folder: Path, *, count: int, size: int) -> list[Path]:
    from PIL import Image

    from ml.synthetic import DEFECT_KINDS, make_image

    folder.mkdir(parents=True)
    originals = []
    for n in range(min(count, DISTINCT_PARTS)):
        defect = DEFECT_KINDS[n % len(DEFECT_KINDS)] if n % 5 == 4 else None
        path = folder / f"original-{n:03d}.png"
        Image.fromarray(make_image(50_000 + n, size=size, defect=defect).image).save(path, format="PNG")
        originals.append(path)
    paths = []
    for n in range(count):
        path = folder / f"part-{n:05d}.png"
        shutil.copy(originals[n % len(originals)], path)
        paths.append(path)
    return paths


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its finished children (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="patchcore")
    parser.add_argument("--image-size", type=int, default=256, help="the model's working size (training option)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512, help="side of the PNGs dropped into the folder")
    parser.add_argument("--rate", type=float, default=15.0, help="arrivals per second (0: all at once)")
    parser.add_argument("--poll", type=float, default=0.02, help="the folder source's poll_seconds")
    args = parser.parse_args()

    sandbox = benchlib.sandbox_start("kensa-bench-stations-")
    broker = runner = None
    try:
        import paho.mqtt.client as mqtt

        from webapp.stations import services
        from webapp.stations.models import Inspection

        broker, port = mosquitto_start(sandbox.scratch)
        print(f"training {args.family} on the sample project…", flush=True)
        started = time.monotonic()
        owner, project, version = benchlib.sample_model(family=args.family, image_size=args.image_size)
        print(
            f"trained in {time.monotonic() - started:.0f} s; making {args.count} parts of {args.size} px…", flush=True
        )
        parts = make_parts(sandbox.scratch / "staging", count=args.count, size=args.size)
        inbox = sandbox.scratch / "inbox"
        inbox.mkdir()
        station = services.station_create(
            project=project,
            user=owner,
            name="bench",
            source_kind="folder",
            source_settings={"path": str(inbox), "poll_seconds": args.poll, "after": "delete"},
        )
        topic = f"kensa/stations/{station.id}/verdict"
        services.sink_add(station=station, user=owner, kind="mqtt", settings={"host": "127.0.0.1", "port": port})

        received: dict[str, float] = {}
        counts: dict[str, int] = {}
        subscribed = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-collector")

        def on_connect(c, *_):
            c.subscribe(topic, qos=1)

        def on_message(c, userdata, message):
            name = json.loads(message.payload)["image"]
            received.setdefault(name, time.time())
            counts[name] = counts.get(name, 0) + 1

        client.on_connect = on_connect
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        subscribed.wait(10)

        log = (sandbox.scratch / "runner.log").open("wb")
        runner = subprocess.Popen(
            [sys.executable, "manage.py", "run_stations", "--lease", "10"],
            cwd=benchlib.ROOT,
            env={**sandbox.env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        # Warm-up: the runner loads the model on claiming the station; one part first, not timed.
        warm = sandbox.scratch / "warmup.png"
        shutil.copy(parts[0], warm)
        os.replace(warm, inbox / "warmup.png")
        deadline = time.monotonic() + 300
        while "warmup.png" not in received:
            if runner.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"runner did not judge the warm-up part:\n{(sandbox.scratch / 'runner.log').read_text()[-3000:]}"
                )
            time.sleep(0.1)
        print("runner ready; streaming…", flush=True)

        cpu_before = cpu_seconds(runner.pid)
        arrived: dict[str, float] = {}
        first = time.time()
        for n, path in enumerate(parts):
            if args.rate > 0:
                delay = first + n / args.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            arrived[path.name] = time.time()
            os.replace(path, inbox / path.name)
        deadline = time.monotonic() + 120 + args.count / 2
        while len(arrived.keys() & received.keys()) < len(arrived) and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu_used = cpu_seconds(runner.pid) - cpu_before
        client.loop_stop()

        done = [name for name in arrived if name in received]
        latencies = [received[name] - arrived[name] for name in done]
        last = max(received[name] for name in done) if done else first
        throughput = len(done) / max(1e-9, last - first)
        duplicates = sum(1 for name in done if counts[name] > 1)
        judged = Inspection.objects.filter(station=station).exclude(name="warmup.png").count()
        cells = benchlib.latency_cells(latencies)
        print()
        print(
            f"{args.family} (working size {args.image_size}), {args.count} PNGs of {args.size} px, "
            f"rate {args.rate or 'burst'}/s"
        )
        print(f"{benchlib.machine_line()}")
        print()
        print(
            benchlib.markdown_table(
                [
                    "images",
                    "verdicts",
                    "judged",
                    "duplicates",
                    "img/s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "CPU s/img",
                ],
                [
                    [
                        args.count,
                        len(done),
                        judged,
                        duplicates,
                        f"{throughput:.1f}",
                        *cells[:4],
                        f"{cpu_used / max(1, len(done)):.3f}",
                    ]
                ],
            )
        )
        return 0 if len(done) == args.count and judged == args.count else 1
    finally:
        benchlib.process_stop(runner)
        benchlib.process_stop(broker)
        sandbox.close()


if __name__ == "__main__":
    sys.exit(main())
