#!/usr/bin/env python3
"""The upload path through the real web view (`image_upload`), over HTTP on loopback, as the browser sends it.

Everything lives in a temporary folder (SQLite database, media, its own redis-server), so no real data is touched.
It migrates, makes a user and one project per case, starts gunicorn on 127.0.0.1 configured like
docker/entrypoint.sh, logs in through the login form (session cookie, CSRF token) and posts the files the way
kensa/upload.js does: multipart `files`, batches of the page's data-batch-size, a zip alone, X-CSRFToken and
HX-Request headers. Cases: N 1024x1024 JPEGs (~190 KB, sample parts with sensor noise), N 256x256 PNGs (~78 KB)
and one zip of N such JPEGs.

    .venv/bin/python scripts/bench_upload.py --count 100 --worker

With --worker a Celery worker (default queue, as in production) makes thumbnails, and the time until every
image of a case has one is reported. Prints a Markdown table; exits 1 if a request failed or a file was not added.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import io
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import benchlib
import numpy as np
from PIL import Image as PILImage

PASSWORD = "bench-password-1"


@dataclass
class File:
    name: str
    data: bytes
    content_type: str


@dataclass
class CaseResult:
    case: str
    images: int
    payload_bytes: int
    seconds: float = 0.0
    request_seconds: list[float] = field(default_factory=list)
    added: int = 0
    errors: list[str] = field(default_factory=list)
    thumbnails_seconds: float | None = None  # from the first byte sent until every image has its thumbnail


# --- the files ---------------------------------------------------------------------------------------------------


def part_image(seed: int, size: int, noise: float) -> np.ndarray:
    """A synthetic part (ml.synthetic, the sample project's discs) with camera-like noise; distinct per seed."""
    from ml.synthetic import make_image

    pixels = make_image(seed, size=size).image.astype(np.float32)
    if noise:
        pixels += np.random.default_rng(seed).normal(0, noise, pixels.shape)
    return np.clip(pixels, 0, 255).round().astype(np.uint8)


def encoded(pixels: np.ndarray, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg_files(count: int, first_seed: int) -> list[File]:
    return [
        File(f"part_{seed:05d}.jpg", encoded(part_image(seed, 1024, noise=3), "JPEG", quality=90), "image/jpeg")
        for seed in range(first_seed, first_seed + count)
    ]


def png_files(count: int, first_seed: int) -> list[File]:
    return [
        File(f"part_{seed:05d}.png", encoded(part_image(seed, 256, noise=0), "PNG"), "image/png")
        for seed in range(first_seed, first_seed + count)
    ]


def zip_of(files: list[File], name: str) -> File:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # JPEGs do not deflate
        for file in files:
            archive.writestr(f"parts/{file.name}", file.data)
    return File(name, buffer.getvalue(), "application/zip")


# --- the browser -------------------------------------------------------------------------------------------------


class Browser:
    """A cookie-keeping HTTP client that logs in through the form and posts uploads like kensa/upload.js."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> str:
        with self.opener.open(self.base_url + path, timeout=60) as response:
            return response.read().decode()

    def login(self, username: str, password: str) -> None:
        token = csrf_token(self.get("/accounts/login/"))
        form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
        request = urllib.request.Request(self.base_url + "/accounts/login/", data=form.encode(), method="POST")
        with self.opener.open(request, timeout=60) as response:
            if "/accounts/login/" in response.url:
                raise RuntimeError("login failed")

    def upload(self, path: str, token: str, files: list[File], timeout: float) -> str:
        body, content_type = multipart(files)
        headers = {"Content-Type": content_type, "X-CSRFToken": token, "HX-Request": "true"}
        request = urllib.request.Request(self.base_url + path, data=body, method="POST", headers=headers)
        with self.opener.open(request, timeout=timeout) as response:
            return response.read().decode()


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if match is None:
        raise RuntimeError("no CSRF token on the page")
    return match.group(1)


def batch_size(page: str) -> int:
    match = re.search(r'data-batch-size="(\d+)"', page)
    return int(match.group(1)) if match else 25


def multipart(files: list[File]) -> tuple[bytes, str]:
    """A multipart/form-data body with every file under the field `files`."""
    boundary = uuid.uuid4().hex
    parts = []
    for file in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{file.name}"\r\n'
            f"Content-Type: {file.content_type}\r\n\r\n"
        )
        parts += [head.encode(), file.data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def batches(files: list[File], size: int) -> list[list[File]]:
    """As upload.js: an archive travels alone, other files in groups of `size`."""
    archives = [[f] for f in files if f.name.lower().endswith(".zip")]
    plain = [f for f in files if not f.name.lower().endswith(".zip")]
    return archives + [plain[i : i + size] for i in range(0, len(plain), size)]


def reported_counts(html: str) -> dict[str, int]:
    """The added / duplicates / rejected counts of every .upload-report in an answer, summed."""
    counts = {"added": 0, "duplicates": 0, "rejected": 0}
    for added, duplicates, rejected in re.findall(
        r'data-added="(\d+)" data-duplicates="(\d+)" data-rejected="(\d+)"', html
    ):
        counts["added"] += int(added)
        counts["duplicates"] += int(duplicates)
        counts["rejected"] += int(rejected)
    return counts


# --- a case ------------------------------------------------------------------------------------------------------


def case_run(browser: Browser, *, case: str, project, files: list[File], images: int, args) -> CaseResult:
    """Posts `files` to the project's upload page in the browser's batches; counts what the server reported."""
    path = f"/projects/{project.public_id}/images/upload/"
    page = browser.get(path)
    token, size = csrf_token(page), batch_size(page)
    result = CaseResult(case=case, images=images, payload_bytes=sum(len(f.data) for f in files))
    started = time.perf_counter()
    for batch in batches(files, size):
        sent = time.perf_counter()
        try:
            counts = reported_counts(browser.upload(path, token, batch, timeout=args.timeout))
        except urllib.error.HTTPError as exc:
            result.errors.append(f"HTTP {exc.code}")
            continue
        except OSError as exc:
            result.errors.append(type(exc).__name__)
            continue
        finally:
            result.request_seconds.append(time.perf_counter() - sent)
        result.added += counts["added"]
        if counts["duplicates"] or counts["rejected"]:
            result.errors.append(f"{counts['duplicates']} duplicates, {counts['rejected']} rejected")
    result.seconds = time.perf_counter() - started
    if result.added != images:
        result.errors.append(f"{result.added} of {images} images added")
    if args.worker and not result.errors:
        result.thumbnails_seconds = thumbnails_wait(project, timeout=args.timeout) + result.seconds
    return result


def warm_up(browser: Browser, project, *, count: int, timeout: float) -> None:
    """A gunicorn worker imports and connects lazily on its first upload: one small PNG per server thread, sent
    at once so every worker gets some, before anything is timed."""
    path = f"/projects/{project.public_id}/images/upload/"
    token = csrf_token(browser.get(path))
    threads = [
        threading.Thread(target=browser.upload, args=(path, token, [file], timeout))
        for file in png_files(count, first_seed=90_001)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def thumbnails_wait(project, *, timeout: float) -> float:
    """Seconds until no image of the project waits for its thumbnail."""
    from webapp.images.models import ThumbnailState

    started = time.perf_counter()
    while project.images.filter(thumbnail_state=ThumbnailState.PENDING).exists():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("thumbnails not ready")
        time.sleep(0.1)
    return time.perf_counter() - started


def worker_start(env: dict[str, str], logfile: Path) -> subprocess.Popen:
    """A Celery worker on the default queue (thumbnails), as docker/entrypoint.sh starts one."""
    command = [
        sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "default", "--prefetch-multiplier", "1",
        "--without-gossip", "--without-mingle", "-l", "info", "-n", f"bench-{uuid.uuid4().hex[:8]}@%h",
        "--logfile", str(logfile),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=benchlib.ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not logfile.exists() or b"ready." not in logfile.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the Celery worker did not start")
        time.sleep(0.2)
    return process


# --- report ------------------------------------------------------------------------------------------------------


def table_row(result: CaseResult) -> list[str]:
    megabytes = result.payload_bytes / 1e6
    cells = benchlib.latency_cells(result.request_seconds)
    thumbs = f"{result.thumbnails_seconds:.1f}" if result.thumbnails_seconds is not None else "–"
    return [
        result.case,
        str(result.images),
        str(len(result.request_seconds)),
        f"{megabytes:.1f}",
        f"{result.seconds:.2f}",
        f"{result.images / result.seconds:.1f}",
        f"{megabytes / result.seconds:.1f}",
        cells[0],
        cells[3],
        thumbs,
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="images per case")
    parser.add_argument("--worker", action="store_true", help="run a Celery worker and time the thumbnails")
    parser.add_argument("--timeout", type=float, default=600, help="client timeout per request, seconds")
    parser.add_argument("--workers", type=int, default=benchlib.GUNICORN_WORKERS, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=benchlib.GUNICORN_THREADS, help="threads per gunicorn worker")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with benchlib.sandbox_start("kensa-bench-upload-") as sandbox:
        return bench(args, sandbox)


def bench(args: argparse.Namespace, sandbox: benchlib.Sandbox) -> int:
    from django.contrib.auth.models import User

    from webapp.projects.services import project_create

    print(f"# {benchlib.machine_line()} (start)")
    owner = User.objects.create_user("bench", password=PASSWORD)
    n = args.count
    jpegs = jpeg_files(n, first_seed=1)
    cases = [
        (f"{n} JPEG files, 1024x1024", jpegs, n),
        (f"{n} PNG files, 256x256", png_files(n, first_seed=10_001), n),
        (f"1 zip of {n} JPEGs, 1024x1024", [zip_of(jpeg_files(n, first_seed=20_001), "parts.zip")], n),
    ]
    server, base_url = benchlib.gunicorn_start(sandbox.env, workers=args.workers, threads=args.threads)
    worker = None
    results = []
    try:
        if args.worker:
            worker = worker_start(sandbox.env, sandbox.scratch / "worker.log")
        benchlib.http_wait(base_url + "/accounts/login/")
        browser = Browser(base_url)
        browser.login("bench", PASSWORD)
        warm_up(browser, project_create(name="Warm-up", owner=owner), count=args.workers * args.threads, timeout=60)
        for index, (case, files, images) in enumerate(cases):
            project = project_create(name=f"Upload bench {index + 1}", owner=owner)
            results.append(case_run(browser, case=case, project=project, files=files, images=images, args=args))
    finally:
        benchlib.process_stop(server)
        benchlib.process_stop(worker)

    print(f"# {benchlib.machine_line()} (end)")
    print(
        f"# gunicorn {args.workers} workers x {args.threads} threads; JPEGs average "
        f"{sum(len(f.data) for f in jpegs) / n / 1000:.0f} KB; MB = 10^6 bytes of file data; "
        f"thumbnails: {'a Celery worker on the default queue' if args.worker else 'no worker (queued only)'}"
    )
    headers = ["case", "images", "requests", "MB", "seconds", "images/s", "MB/s", "request p50 ms",
               "request max ms", "thumbnails ready s"]  # fmt: skip
    print(benchlib.markdown_table(headers, [table_row(r) for r in results]))
    failures = [f"{r.case}: {error}" for r in results for error in r.errors]
    for failure in failures:
        print(f"# error: {failure}")
    if failures:
        return 1
    print("# no errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
