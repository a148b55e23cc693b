"""Helpers for the station tests: synthetic part images written the way cameras write them, a local webhook
receiver, and a Mosquitto broker on a free port."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from PIL import Image as PILImage

from ml.synthetic import make_image
from tests.conftest import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def drop_image(folder: Path, name: str, *, seed: int, defect: str | None = None, size: int = 96) -> Path:
    """Writes a PNG under a temporary name and renames it into place, as an FTP/SMB upload finishes."""
    image = make_image(seed, size=size, defect=defect).image
    partial = folder / f".{name}.part"
    PILImage.fromarray(image).save(partial, format="PNG")
    target = folder / name
    os.replace(partial, target)
    return target


class WebhookReceiver:
    """A small HTTP server that records POSTed JSON bodies (and their signature check) and can be taken down."""

    def __init__(self, secret: str = ""):
        self.secret = secret
        self.port = free_port()
        self.received: list[dict] = []
        self.signatures_ok: list[bool] = []
        self.server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                receiver.signatures_ok.append(hmac.compare_digest(expected, self.headers.get("X-Kensa-Signature", "")))
                receiver.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.allow_reuse_address = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Mosquitto:
    """Debian's mosquitto on a free loopback port, with a pid file; restartable on the same port."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        # Persistence keeps the subscriber's session (and its queued QoS 1 messages) across a restart. `user`: run
        # as whoever runs the tests (as root it would switch to `mosquitto`, which cannot write into our folder).
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npid_file {self.workdir / 'mosquitto.pid'}\n"
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
            f"user {getpass.getuser()}\n"
        )
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


class MqttCollector:
    """Subscribes (QoS 1, persistent session) and records every verdict payload and status message."""

    def __init__(self, port: int, topic: str = "kensa/stations/#"):
        import paho.mqtt.client as mqtt

        self.verdicts: list[dict] = []
        self.statuses: list[str] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{port}", clean_session=False)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._message
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _message(self, client, userdata, message) -> None:
        if message.topic.endswith("/status"):
            self.statuses.append(message.payload.decode())
        else:
            self.verdicts.append(json.loads(message.payload))

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
