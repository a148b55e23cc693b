#!/usr/bin/env python3
"""1,000 uploads under `make run` with processes killed at random: does every image still get its thumbnail, and
how soon?

Starts scripts/run_all.py (the real stack: Redis, both Celery workers, beat, the web server, supervised) on free
loopback ports with a temporary data folder, logs in through the form and uploads N distinct 1024x1024 JPEGs (20
synthetic parts, each copy with its own noise) through the upload page in the page's batches, as kensa/upload.js
does. Meanwhile, at two random points of the upload, it
kills (SIGKILL, what the OOM killer does) one process chosen at random: the `default` worker's pool process that
makes thumbnails, the whole `default` worker, or the web server in the middle of a request (the client then sends
that batch again once the server is back, as a person would). Then it waits until no image is pending.

    .venv/bin/python scripts/bench_thumbnail_recovery.py --count 1000 --seed 1

Prints a Markdown table; exits 1 unless every image has its thumbnail within --limit seconds (300) of the end of
the upload, none failed, and the project holds exactly N images.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.error
from pathlib import Path

import benchlib
import numpy as np
from bench_upload import Browser, File, batch_size, csrf_token, encoded, part_image, reported_counts
from run_all_harness import ADMIN_PASSWORD, ADMIN_USERNAME, RunAll, children

VICTIMS = ["default pool process", "default worker", "web server"]


def upload_files(count: int, *, size: int, bases: int = 20) -> list[File]:
    """`count` distinct JPEGs: a few synthetic parts (slow to draw), each copy with its own sensor noise (cheap)."""
    parts = [part_image(seed, size, noise=0).astype(np.int16) for seed in range(1, bases + 1)]
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        pixels = np.clip(parts[i % bases] + rng.integers(-3, 4, parts[0].shape, dtype=np.int16), 0, 255)
        files.append(File(f"part_{i:05d}.jpg", encoded(pixels.astype(np.uint8), "JPEG", quality=90), "image/jpeg"))
    return files


def django_setup(app: RunAll) -> None:
    """This process reads the app's database (SQLite in its data folder) to follow the thumbnails."""
    data_dir = Path(app.env["KENSA_DATA_DIR"])
    os.environ.update(
        DJANGO_SETTINGS_MODULE="webapp.settings",
        KENSA_DATA_DIR=str(data_dir),
        KENSA_MEDIA_ROOT=app.env["KENSA_MEDIA_ROOT"],
        REDIS_URL=app.env["REDIS_URL"],
        KENSA_SECRET_KEY_FILE=str(data_dir / "secret_key"),
        KENSA_LOG_LEVEL="WARNING",
    )
    import django

    django.setup()


class Uploader(threading.Thread):
    """Sends the files in batches; a batch whose request failed (web server killed) is sent again when it is back."""

    def __init__(self, app: RunAll, project, files, timeout: float):
        super().__init__(daemon=True)
        self.app, self.files, self.timeout = app, files, timeout
        self.path = f"/projects/{project.public_id}/images/upload/"
        self.sent_batches = 0
        self.total_batches = 0
        self.resent = 0
        self.counts = {"added": 0, "duplicates": 0, "rejected": 0}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            browser = Browser(self.app.base_url)
            browser.login(ADMIN_USERNAME, ADMIN_PASSWORD)
            page = browser.get(self.path)
            token, size = csrf_token(page), batch_size(page)
            batches = [self.files[i : i + size] for i in range(0, len(self.files), size)]
            self.total_batches = len(batches)
            for batch in batches:
                for _attempt in range(10):
                    try:
                        counts = reported_counts(browser.upload(self.path, token, batch, timeout=self.timeout))
                        break
                    except (urllib.error.URLError, OSError):
                        self.resent += 1
                        while not self.app.answers():
                            time.sleep(0.2)
                else:
                    raise RuntimeError("a batch failed ten times")
                for key in counts:
                    self.counts[key] += counts[key]
                self.sent_batches += 1
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def kill(app: RunAll, victim: str) -> str:
    pids = app.pids()
    if victim == "default pool process":
        pool = children(pids["default"])
        if not pool:
            return f"{victim}: none found"
        pid = random.choice(pool)
    elif victim == "default worker":
        pid = pids["default"]
    else:
        pid = pids["web"]
    os.kill(pid, signal.SIGKILL)
    return f"{victim} (pid {pid})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="images to upload")
    parser.add_argument("--size", type=int, default=1024, help="width and height of each JPEG")
    parser.add_argument("--kills", type=int, default=2, help="processes killed at random during the upload")
    parser.add_argument("--seed", type=int, default=1, help="chooses the kill points and victims")
    parser.add_argument("--limit", type=float, default=300.0, help="seconds after the upload for every thumbnail")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one upload request may take")
    args = parser.parse_args()
    random.seed(args.seed)
    sys.path.insert(0, str(benchlib.ROOT))  # the sample parts come from ml.synthetic
    files = upload_files(args.count, size=args.size)
    scratch = Path(tempfile.mkdtemp(prefix="kensa-bench-thumbnails-"))
    app = RunAll(scratch)
    try:
        app.wait_running()
        django_setup(app)
        from django.contrib.auth import get_user_model

        from webapp.images.models import Image, ThumbnailState
        from webapp.projects.services import project_create

        project = project_create(name="Recovery bench", owner=get_user_model().objects.get(username=ADMIN_USERNAME))
        images = Image.objects.filter(project=project)
        uploader = Uploader(app, project, files, args.timeout)
        # Kill points: fractions of the batches sent, drawn at random in the middle 80 % of the upload.
        points = sorted(random.uniform(0.1, 0.9) for _ in range(args.kills))
        victims = [random.choice(VICTIMS) for _ in points]
        killed: list[str] = []
        started = time.monotonic()
        uploader.start()
        last_kill = started
        while uploader.is_alive():
            progress = uploader.sent_batches / uploader.total_batches if uploader.total_batches else 0.0
            if len(killed) < len(points) and progress >= points[len(killed)]:
                killed.append(kill(app, victims[len(killed)]))
                last_kill = time.monotonic()
                print(f"{last_kill - started:6.1f} s  killed {killed[-1]} at {progress:.0%} of the upload", flush=True)
            time.sleep(0.05)
        if uploader.error:
            raise uploader.error
        uploaded = time.monotonic()
        print(f"{uploaded - started:6.1f} s  upload done: {uploader.counts}, {uploader.resent} batches sent again")
        while images.filter(thumbnail_state=ThumbnailState.PENDING).exists():
            if time.monotonic() - uploaded > args.limit + 300:
                break
            time.sleep(0.5)
        done = time.monotonic()
        pending = images.filter(thumbnail_state=ThumbnailState.PENDING).count()
        failed = images.filter(thumbnail_state=ThumbnailState.FAILED).count()
        total = images.count()
        restarts = [line for line in app.lines if "starting it again" in line]
        # What the periodic check sent again (the default worker logs each time it did), and images tried twice.
        resent_by_check = sum(int(n) for n in re.findall(r"thumbnails: (\d+) sent again", app.text()))
        retried = images.filter(thumbnail_attempts__gt=1).count()
    finally:
        status = app.stop()
    met = pending == 0 and failed == 0 and total == args.count and done - uploaded <= args.limit
    print()
    print(f"# {benchlib.machine_line()}; seed {args.seed}; make run stopped with status {status}")
    print(f"# supervisor: {len(restarts)} restart(s); the periodic check sent {resent_by_check} thumbnail(s) again")
    headers = [
        "images",
        "killed",
        "upload (s)",
        "batches resent",
        "last thumbnail after upload end (s)",
        "after last kill (s)",
        "sent again by the check",
        "made twice",
        "pending / failed",
        "target met",
    ]
    row = [
        str(total),
        "; ".join(killed) or "none",
        f"{uploaded - started:.0f}",
        str(uploader.resent),
        f"{done - uploaded:.0f}",
        f"{done - last_kill:.0f}",
        str(resent_by_check),
        str(retried),
        f"{pending} / {failed}",
        "yes" if met else "NO",
    ]
    print(benchlib.markdown_table(headers, [row]))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
