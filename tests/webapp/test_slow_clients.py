"""Slow clients cannot starve the web server: the server `make run` starts (scripts/run_all.py's web command) keeps
answering while many connections trickle their request bodies at 1 byte/s.

A thread-per-connection server hands a connection to a thread as soon as its headers arrive, and the thread then
waits on the body: eight such clients held all eight threads of the old gunicorn setup (2 workers x 4 threads), and
every other request waited until they left. The server must buffer a whole request before a thread takes it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
SLOW_CLIENTS = 16  # twice the old server's eight threads
BODY_BYTES = 200  # each slow client would need 200 s to finish


def script_module(name: str):
    """A script of scripts/ as a module (run_all is standard library only; its web command is what is tested)."""
    sys.path.insert(0, str(ROOT / "scripts"))  # bench_slow_clients imports benchlib beside it
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def web_server(tmp_path):
    """The web service exactly as `make run` starts it, on a free loopback port, with its own empty database."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "KENSA_SECRET_KEY": "slow-clients-test",
        "KENSA_DATA_DIR": str(tmp_path / "data"),
        "KENSA_MEDIA_ROOT": str(tmp_path / "media"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "KENSA_STORAGE": "local",
        "HF_HUB_OFFLINE": "1",
    }
    (tmp_path / "data").mkdir()
    command = script_module("run_all").web_command(f"127.0.0.1:{port}")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}/accounts/login/"
        script_module("benchlib").http_wait(url, process=process)
        yield "127.0.0.1", port, url, process.pid
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def test_requests_are_answered_within_a_second_while_clients_trickle_bodies_at_one_byte_per_second(web_server):
    host, port, url, _ = web_server
    bench = script_module("bench_slow_clients")
    for _ in range(3):  # warm: the first requests import and set up what later ones reuse
        bench.answer_seconds(url, timeout=10)
    slow = bench.SlowClients(host, port, SLOW_CLIENTS, body_bytes=BODY_BYTES)
    try:
        time.sleep(bench.GRACE_S)  # past any "wait for the first bytes" grace a server gives a new connection
        timings = bench.timings(url, seconds=3, timeout=5)  # infinity: not answered within 5 s
    finally:
        slow.close()
    assert timings and max(timings) < 1.0, f"answer times with {SLOW_CLIENTS} slow clients: {timings}"


def test_the_docker_image_starts_the_same_server():
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert "exec python -m webapp.server --bind 0.0.0.0:8000" in entrypoint
    assert "gunicorn" not in entrypoint


def test_the_server_accepts_a_body_as_large_as_the_largest_archive_upload(settings):
    """waitress refuses bodies over 1 GiB unless told otherwise; archives may be several GB (spooled to disk)."""
    from webapp.server import server_options

    settings.KENSA_MAX_ARCHIVE_BYTES = 6 * 1024**3
    options = server_options(threads=4)
    assert options["max_request_body_size"] > settings.KENSA_MAX_ARCHIVE_BYTES


def test_a_web_process_that_dies_is_replaced_and_the_other_keeps_serving(web_server):
    _, _, url, parent = web_server
    bench = script_module("bench_slow_clients")
    children = wait_for(lambda: child_pids(parent) if len(child_pids(parent)) == 2 else None, message="2 processes")
    os.kill(children[0], 9)  # what the kernel's out-of-memory killer does
    answers = [bench.answer_seconds(url, timeout=5) for _ in range(5)]
    assert max(answers) < 1.0, answers
    replaced = wait_for(lambda: (pids := child_pids(parent)) and children[0] not in pids and len(pids) == 2 and pids)
    assert children[1] in replaced


def child_pids(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout
    return sorted(int(pid) for pid in out.split())
