"""Cameras for the station tests, run as processes of their own (killed to drop a stream, started again on the same
port to restore it). Every frame carries its number in a row of black and white cells (read_counter), which survive
JPEG and H.264, so a test can tell which frame it got.

    python tests/webapp/camera_servers.py mjpeg --port P --fps 10 --pidfile F
        MJPEG over HTTP (multipart/x-mixed-replace, as IP cameras serve it) at /video.mjpg.
    python tests/webapp/camera_servers.py rtsp --port P --fps 10 --pidfile F
        RTSP: Debian's ffmpeg encodes the frames to H.264 and sends RTP to this process, which answers the RTSP
        requests (DESCRIBE with ffmpeg's SDP, SETUP over TCP, PLAY) and relays the packets interleaved on the
        connection. ffmpeg 5.1 has no RTSP server of its own (its -rtsp_flags listen receives a published stream,
        it does not serve players), so this front is the smallest server an RTSP client can PLAY from.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 320, 240
CELLS = 12  # bits of the frame number
CELL = WIDTH // CELLS
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def counter_frame(number: int) -> np.ndarray:
    """A WIDTH x HEIGHT RGB frame: a grey gradient, and the number's bits as white cells along the top."""
    frame = np.tile(np.linspace(60, 180, WIDTH, dtype=np.uint8), (HEIGHT, 1))[..., None].repeat(3, axis=2)
    for bit in range(CELLS):
        frame[:40, bit * CELL : (bit + 1) * CELL] = 255 if number >> bit & 1 else 0
    return frame


def read_counter(image: np.ndarray) -> int:
    """The number counter_frame drew, from a decoded RGB frame of the same size."""
    row = image[20, :, :].mean(axis=1)
    return sum(1 << bit for bit in range(CELLS) if row[bit * CELL + CELL // 2] > 128)


def _jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


# -- MJPEG over HTTP ---------------------------------------------------------------------------------------------


def serve_mjpeg(port: int, fps: float) -> None:
    started = time.monotonic()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            if self.path != "/video.mjpg":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=kensaframe")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            try:
                while True:
                    number = int((time.monotonic() - started) * fps)
                    body = _jpeg(counter_frame(number))
                    self.wfile.write(b"--kensaframe\r\nContent-Type: image/jpeg\r\n")
                    self.wfile.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body + b"\r\n")
                    self.wfile.flush()
                    time.sleep(max(0.0, started + (number + 1) / fps - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


# -- RTSP --------------------------------------------------------------------------------------------------------


class RtspFront:
    """Answers RTSP requests and relays ffmpeg's RTP packets (received on a loopback UDP port) to every client
    that sent PLAY, interleaved on its RTSP connection (RTP/AVP/TCP; UDP transport is refused with 461, so the
    client asks again for TCP)."""

    def __init__(self, port: int, rtp_port: int, sdp_path: Path):
        self.port, self.rtp_port, self.sdp_path = port, rtp_port, sdp_path
        self.players: list[tuple[socket.socket, threading.Lock]] = []
        self.players_lock = threading.Lock()
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", rtp_port))
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp.bind(("127.0.0.1", rtp_port + 1))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)

    def serve(self) -> None:
        threading.Thread(target=self._relay, args=(self.rtp, 0), daemon=True).start()
        threading.Thread(target=self._relay, args=(self.rtcp, 1), daemon=True).start()
        while True:
            connection, _ = self.listener.accept()
            threading.Thread(target=self._session, args=(connection,), daemon=True).start()

    def _relay(self, udp: socket.socket, channel: int) -> None:
        while True:
            packet = udp.recv(65536)
            frame = b"$" + bytes([channel]) + len(packet).to_bytes(2, "big") + packet
            with self.players_lock:
                players = list(self.players)
            for connection, lock in players:
                try:
                    with lock:
                        connection.sendall(frame)
                except OSError:
                    self._forget(connection)

    def _forget(self, connection: socket.socket) -> None:
        with self.players_lock:
            self.players = [p for p in self.players if p[0] is not connection]

    def _sdp(self) -> str:
        deadline = time.monotonic() + 10
        while not self.sdp_path.exists() or not self.sdp_path.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError("ffmpeg wrote no SDP")
            time.sleep(0.05)
        lines = []
        for line in self.sdp_path.read_text().splitlines():
            if line.startswith("SDP:"):
                continue
            if line.startswith("m=video"):
                parts = line.split()
                parts[1] = "0"  # the port is the client's business in RTSP
                line = " ".join(parts)
            lines.append(line)
        lines.append("a=control:track0")
        return "\r\n".join(lines) + "\r\n"

    def _session(self, connection: socket.socket) -> None:
        lock = threading.Lock()
        stream = connection.makefile("rb")
        try:
            while True:
                first = stream.read(1)
                if not first:
                    return
                if first == b"$":  # the client's RTCP receiver reports, interleaved: read past them
                    header = stream.read(3)
                    stream.read(int.from_bytes(header[1:3], "big"))
                    continue
                request = (first + stream.readline()).decode("latin-1").strip()
                headers = {}
                while (line := stream.readline().decode("latin-1").strip()) != "":
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if int(headers.get("content-length", 0)):
                    stream.read(int(headers["content-length"]))
                method, url = request.split()[:2]
                reply = self._answer(method, url, headers)
                with lock:
                    connection.sendall(reply)
                if method == "PLAY":
                    with self.players_lock:
                        self.players.append((connection, lock))
                if method == "TEARDOWN":
                    return
        except (OSError, ValueError):
            return
        finally:
            self._forget(connection)
            connection.close()

    def _answer(self, method: str, url: str, headers: dict) -> bytes:
        lines = ["RTSP/1.0 200 OK", f"CSeq: {headers.get('cseq', '0')}"]
        body = b""
        if method == "OPTIONS":
            lines.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            body = self._sdp().encode()
            lines += [f"Content-Base: {url.rstrip('/')}/", "Content-Type: application/sdp"]
        elif method == "SETUP":
            if "TCP" not in headers.get("transport", "").upper():
                return f"RTSP/1.0 461 Unsupported Transport\r\nCSeq: {headers.get('cseq', '0')}\r\n\r\n".encode()
            lines += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: 4711;timeout=60"]
        elif method in ("PLAY", "GET_PARAMETER", "SET_PARAMETER", "TEARDOWN"):
            lines.append("Session: 4711")
        else:
            lines[0] = "RTSP/1.0 405 Method Not Allowed"
        if body:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def serve_rtsp(port: int, fps: float, pidfile: Path) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="kensa-rtsp-"))
    sdp = workdir / "stream.sdp"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a free even port and the one after it
        probe.bind(("127.0.0.1", 0))
        rtp_port = probe.getsockname()[1] & ~1
    front = RtspFront(port, rtp_port, sdp)
    encoder = subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-video_size", f"{WIDTH}x{HEIGHT}", "-framerate", str(fps), "-i", "pipe:0",
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(max(1, round(fps))),
         "-pix_fmt", "yuv420p", "-f", "rtp", "-sdp_file", str(sdp),
         f"rtp://127.0.0.1:{rtp_port}?rtcpport={rtp_port + 1}&pkt_size=1200"],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    Path(f"{pidfile}.ffmpeg").write_text(str(encoder.pid))

    def stop(*_):
        encoder.kill()
        encoder.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)

    def feed():
        started = time.monotonic()
        number = 0
        while True:
            encoder.stdin.write(counter_frame(number).tobytes())
            encoder.stdin.flush()
            number += 1
            time.sleep(max(0.0, started + number / fps - time.monotonic()))

    threading.Thread(target=feed, daemon=True).start()
    front.serve()


class CameraServer:
    """One of the cameras above as a process on a free loopback port, with a pid file; stopped (gently, or killed
    as a camera losing power) and started again on the same port."""

    def __init__(self, kind: str, workdir: Path, *, fps: float = 10):
        from tests.conftest import free_port

        self.kind, self.workdir, self.fps = kind, workdir, fps
        self.port = free_port()
        self.pidfile = workdir / f"{kind}-{self.port}.pid"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.kind == "mjpeg":
            return f"http://127.0.0.1:{self.port}/video.mjpg"
        return f"rtsp://viewer:secret-pw@127.0.0.1:{self.port}/live"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, self.kind, "--port", str(self.port), "--fps", str(self.fps)]
        self.process = subprocess.Popen([*command, "--pidfile", str(self.pidfile)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.kind} camera exited with {self.process.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the {self.kind} camera did not listen on {self.port}")

    def freeze(self, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT) the camera and its ffmpeg: the connection stays open but goes silent, as when a
        cable is pulled (no goodbye, no reset)."""
        for pidfile in (self.pidfile, Path(f"{self.pidfile}.ffmpeg")):
            if pidfile.exists():
                os.kill(int(pidfile.read_text()), signal.SIGSTOP if frozen else signal.SIGCONT)

    def stop(self, *, kill: bool = False) -> None:
        """Ends the process (SIGKILL with kill=True: no goodbye on the connection) and its ffmpeg, by pid file."""
        for pidfile in (self.pidfile, Path(f"{self.pidfile}.ffmpeg")):
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text()), signal.SIGKILL if kill else signal.SIGTERM)
                pidfile.unlink()
        if self.process is not None:
            self.process.wait(10)
            self.process = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["mjpeg", "rtsp"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fps", type=float, default=10)
    parser.add_argument("--pidfile", type=Path, required=True)
    args = parser.parse_args()
    args.pidfile.write_text(str(os.getpid()))
    if args.kind == "mjpeg":
        serve_mjpeg(args.port, args.fps)
    else:
        serve_rtsp(args.port, args.fps, args.pidfile)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
