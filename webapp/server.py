"""The web server: waitress serving webapp.wsgi, as `make run` (scripts/run_all.py) and the Docker image start it.

    python -m webapp.server [--bind HOST:PORT] [--threads N]

Why waitress: its event loop reads each request, headers and whole body, before a worker thread takes it, so a
client sending slowly (a flaky line PC or an attacker at 1 byte/s) holds a socket, never a thread. A threaded
gunicorn hands the connection to a thread once the headers are in, and eight slow uploads held all its threads.
Bodies over 512 KiB are spooled to a temporary file (TMPDIR), never kept in memory, so a multi-GB archive upload
costs disk, not RAM. Responses over 1 MiB are spooled the same way, so a slow reader does not hold a thread either.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from webapp.env import env_int, env_str

DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_THREADS = 8  # as many requests run at once as the former 2 gunicorn processes x 4 threads
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


def server_options(*, bind: str, threads: int) -> dict:
    """waitress's settings; the largest body it accepts follows the largest archive Kensa accepts."""
    from django.conf import settings

    return {
        "listen": bind,
        "threads": threads,
        "connection_limit": env_int("KENSA_WEB_CONNECTION_LIMIT", DEFAULT_CONNECTION_LIMIT),
        "max_request_body_size": settings.KENSA_MAX_ARCHIVE_BYTES + BODY_MARGIN_BYTES,
        "channel_timeout": 120,  # a connection that sends nothing for this long is closed
        "asyncore_use_poll": True,  # select() stops at 1024 descriptors
        "ident": "kensa",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bind", default=env_str("KENSA_BIND", DEFAULT_BIND), help="HOST:PORT (KENSA_BIND)")
    parser.add_argument(
        "--threads", type=int, default=env_int("KENSA_WEB_THREADS", DEFAULT_THREADS), help="KENSA_WEB_THREADS"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")

    import waitress

    from webapp.wsgi import application

    waitress.serve(access_logged(application), **server_options(bind=args.bind, threads=args.threads))


if __name__ == "__main__":
    main()
