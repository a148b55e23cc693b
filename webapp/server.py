"""The web server: waitress serving webapp.wsgi, as `make run` (scripts/run_all.py) and the Docker image start it.

    python -m webapp.server [--bind HOST:PORT] [--processes N] [--threads N]

Why waitress: its event loop reads each request, headers and whole body, before a worker thread takes it, so a
client sending slowly (a flaky line PC or an attacker at 1 byte/s) holds a socket, never a thread. A threaded
gunicorn hands the connection to a thread once the headers are in, and eight slow uploads held all its threads.
Bodies over 512 KiB are spooled to a temporary file (TMPDIR), never kept in memory, so a multi-GB archive upload
costs disk, not RAM. Responses over 1 MiB are spooled the same way, so a slow reader does not hold a thread either.

Several processes (KENSA_WEB_PROCESSES, 2) share one listening socket, as gunicorn's workers did: Python code runs
one thread at a time per process, and a second process keeps the throughput of the former 2 x 4 setup on two cores.
This parent only binds the socket, forks the processes before anything heavy is imported, and starts a new one
when one dies (an out-of-memory kill of one process leaves the other serving).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time

from webapp.env import env_int, env_str

DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_PROCESSES = 2
DEFAULT_THREADS = 4  # per process: as many requests run at once as the former 2 gunicorn processes x 4 threads
RESPAWN_DELAY_S = 1.0
# Open connections beyond this wait in the listen backlog; each idle or slow one costs a socket and a few KB only.
DEFAULT_CONNECTION_LIMIT = 1000
# Multipart framing and form fields around the largest archive an upload may carry.
BODY_MARGIN_BYTES = 64 * 1024 * 1024

access_log = logging.getLogger("kensa.access")


def access_logged(application):
    """One line per request (method, path, status, milliseconds), like gunicorn's access log."""

    def logged(environ, start_response):
        started = time.monotonic()
        status = []

        def recording_start_response(code, headers, exc_info=None):
            status.append(code.split(" ", 1)[0])
            return start_response(code, headers, exc_info)

        try:
            return application(environ, recording_start_response)
        finally:
            access_log.info(
                "%s %s %s %s %.0fms",
                environ.get("REMOTE_ADDR", "-"),
                environ.get("REQUEST_METHOD", "-"),
                environ.get("PATH_INFO", "-"),
                status[0] if status else "-",
                (time.monotonic() - started) * 1000,
            )

    return logged


def server_options(*, threads: int) -> dict:
    """waitress's settings; the largest body it accepts follows the largest archive Kensa accepts."""
    from django.conf import settings

    return {
        "threads": threads,
        "connection_limit": env_int("KENSA_WEB_CONNECTION_LIMIT", DEFAULT_CONNECTION_LIMIT),
        "max_request_body_size": settings.KENSA_MAX_ARCHIVE_BYTES + BODY_MARGIN_BYTES,
        "channel_timeout": 120,  # a connection that sends nothing for this long is closed
        "asyncore_use_poll": True,  # select() stops at 1024 descriptors
        "ident": "kensa",
    }


def listening_socket(bind: str) -> socket.socket:
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--bind {bind!r}: expected HOST:PORT")
    family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def serve(sock: socket.socket, *, threads: int) -> None:
    """One process's event loop and threads on the shared socket (imports Django and the models' code)."""
    import waitress
    from django.urls import get_resolver

    from webapp.wsgi import application

    # Load every view module (and torch behind them) before the first accept, not inside the first request: a
    # process that replaces a dead one would otherwise answer its first requests seconds late.
    patterns = get_resolver().url_patterns
    logging.getLogger(__name__).debug("process %d ready: %d URL patterns loaded", os.getpid(), len(patterns))
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # requests waiting for a thread are normal load
    waitress.serve(access_logged(application), sockets=[sock], **server_options(threads=threads))


def _child_start(sock: socket.socket, threads: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if sys.platform.startswith("linux"):  # the kernel ends this process if the parent is killed
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        serve(sock, threads=threads)
        code = 0
    except BaseException:
        logging.getLogger(__name__).exception("web process failed")
    finally:
        os._exit(code)


def serve_processes(*, bind: str, processes: int, threads: int) -> None:
    sock = listening_socket(bind)
    log = logging.getLogger(__name__)
    children: set[int] = set()
    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(processes):
        children.add(_child_start(sock, threads))
    log.info("serving on %s: %d processes x %d threads", bind, processes, threads)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if not stopping:
            log.warning("web process %d exited (%s); starting another", pid, os.waitstatus_to_exitcode(status))
            time.sleep(RESPAWN_DELAY_S)
            if not stopping:
                children.add(_child_start(sock, threads))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bind", default=env_str("KENSA_BIND", DEFAULT_BIND), help="HOST:PORT (KENSA_BIND)")
    parser.add_argument(
        "--processes", type=int, default=env_int("KENSA_WEB_PROCESSES", DEFAULT_PROCESSES), help="KENSA_WEB_PROCESSES"
    )
    parser.add_argument(
        "--threads", type=int, default=env_int("KENSA_WEB_THREADS", DEFAULT_THREADS), help="per process"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    serve_processes(bind=args.bind, processes=max(1, args.processes), threads=args.threads)


if __name__ == "__main__":
    main()
