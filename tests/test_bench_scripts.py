"""The benchmark scripts (scripts/bench_*.py): their helpers, and each script run end to end with tiny numbers (the
ones that train a model first are marked slow)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_api  # noqa: E402
import bench_upload  # noqa: E402
import benchlib  # noqa: E402


def test_percentiles_and_latency_cells():
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert benchlib.percentile(values, 0.5) == pytest.approx(0.050, abs=0.0011)
    assert benchlib.percentile(values, 0.95) == pytest.approx(0.095, abs=0.0011)
    assert benchlib.percentile(values, 1.0) == 0.100
    assert benchlib.latency_cells(values)[3] == "100"  # max
    assert benchlib.latency_cells([]) == ["–"] * 5


class _Answers(http.server.BaseHTTPRequestHandler):
    """200 with a prediction on /ok, 503 on anything else."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ok = self.path == "/ok"
        body = b'{"score": 1.0}' if ok else b'{"error": {}}'
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def answering_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_load_run_uses_exactly_the_clients_and_counts_every_outcome_by_kind(answering_server):
    closed = f"http://127.0.0.1:{benchlib.free_port()}/ok"
    urls = [f"{answering_server}/ok", f"{answering_server}/busy", closed]
    seen_threads: set[str] = set()

    def send(index: int) -> bench_api.Outcome:
        seen_threads.add(threading.current_thread().name)
        request = bench_api.predict_request(urls[index % 3], "secret", b"png")
        return bench_api.timed(request, timeout=10, expect="score")

    outcomes, elapsed = bench_api.load_run(send, clients=4, total=30)
    assert len(outcomes) == 30 and elapsed > 0
    assert len(seen_threads) <= 4
    assert bench_api.error_counts(outcomes) == {"HTTP 503": 10, "ConnectionRefusedError": 10}
    row = bench_api.table_row("load", outcomes, elapsed)
    assert row[1:3] == ["30", "20"]  # requests, errors


def test_upload_batches_and_multipart_follow_upload_js():
    files = [bench_upload.File(f"{i}.png", b"x" * i, "image/png") for i in range(5)]
    archive = bench_upload.File("all.zip", b"PK", "application/zip")
    groups = bench_upload.batches([*files[:3], archive, *files[3:]], size=2)
    names = [[f.name for f in group] for group in groups]
    assert names == [["all.zip"], ["0.png", "1.png"], ["2.png", "3.png"], ["4.png"]]
    body, content_type = bench_upload.multipart(files[:2])
    boundary = content_type.split("boundary=")[1]
    assert body.count(f"--{boundary}\r\n".encode()) == 2 and body.endswith(f"--{boundary}--\r\n".encode())
    assert b'name="files"; filename="1.png"' in body
    report = '<div class="upload-report" data-added="3" data-duplicates="1" data-rejected="0">'
    assert bench_upload.reported_counts(report * 2) == {"added": 6, "duplicates": 2, "rejected": 0}


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the script sets up its own throwaway Kensa
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_bench_api_runs_a_tiny_load_test():
    out = _run("bench_api.py", "--clients", "3", "--requests", "12", "--sequential", "2")
    assert "| phase | requests | errors | p50 | p95 | p99 | max | mean | req/s |" in out
    assert "| HTTP predict, 3 concurrent clients | 12 | 0 |" in out
    assert "# no errors" in out


def test_bench_upload_runs_each_case():  # ~15 s: no model to train
    out = _run("bench_upload.py", "--count", "3")
    assert "| case | images | requests | MB | seconds | images/s | MB/s |" in out
    for case in ("| 3 JPEG files, 1024x1024 | 3 | 1 |", "| 3 PNG files, 256x256 | 3 | 1 |", "| 1 zip of 3 JPEGs"):
        assert case in out
    assert "# no errors" in out


@pytest.mark.slow
def test_bench_torch_threads_compares_both_settings():
    out = _run("bench_torch_threads.py", "--rounds", "1", "--sequential", "2", "--burst", "6", "--clients", "3")
    assert "| A: threads=1, 3 clients | 6 | 0 |" in out and "| B: threads=0, 3 clients | 6 | 0 |" in out


def test_bench_slow_clients_measures_answers_with_slow_connections():  # ~20 s: no model to train
    out = _run("bench_slow_clients.py", "--slow", "8", "--seconds", "1")
    assert "| phase | requests | timed out | p50 | p95 | max | answered < 1 s |" in out
    assert "| 8 clients sending 1 byte/s |" in out


def test_bench_retention_simulates_a_few_steps_within_the_bound():  # ~10 s
    out = _run("bench_retention.py", "--days", "0.1", "--scale", "0.001", "--review-share", "0.05")
    assert "| day | made | deleted | routine kept (before cleanup) |" in out
    assert "# bound: (newest 100,000 + one step's 15,000) routine" in out


def test_bench_app_compare_gets_the_same_candidates_winner_and_figures_from_the_app_and_the_bench(tmp_path):
    # given: a small MVTec-layout folder of synthetic parts with three defect types and exact masks (~30 s)
    import json

    import numpy as np
    from PIL import Image

    from ml.synthetic import make_dataset

    def save(path: Path, array) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)

    root = tmp_path / "parts"
    for i, part in enumerate(make_dataset(n_good=20, n_defect=0, size=64, seed=11)):
        save(root / "train" / "good" / f"{i:03d}.png", part.image)
    for i, part in enumerate(make_dataset(n_good=6, n_defect=24, size=64, seed=12)):
        save(root / "test" / (part.defect or "good") / f"{i:03d}.png", part.image)
        if part.defect:
            save(root / "ground_truth" / part.defect / f"{i:03d}_mask.png", (part.mask * 255).astype(np.uint8))

    # when
    _run("bench_app_compare.py", "--data", str(root), "--json", str(tmp_path / "out.json"))

    # then: both sides trained the same candidates on the same split, picked the same winner, and (reading the
    # images in the same order) scored each candidate alike on validation and test
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["app_status"] == "succeeded" and report["app_in_two_splits"] == report["app_missing"] == 0
    assert report["same_winner"] and len(report["bench"]) >= 2
    assert [r["label"] for r in report["bench"]] == [r["label"] for r in report["app"]]
    for bench, app in zip(report["bench"], report["app"], strict=True):
        for key in ("validation_ap", "image_auroc", "image_ap", "precision_at_recall1"):
            assert bench[key] == pytest.approx(app[key], abs=1e-6), (bench["label"], key)
        assert bench["aupro"] == pytest.approx(app["aupro"], abs=0.01)
