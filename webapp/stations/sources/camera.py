"""Camera sources: a live stream (RTSP, or MJPEG over HTTP) read through OpenCV, and a recorded video or image
sequence replayed as if a camera sent it (a shift recorded on the line, judged again by another model version).

A stream is read by a thread of its own that keeps grabbing: a camera does not wait, and a frame left in a buffer
is a frame of a part that has already passed. Only the frames the station asks for are converted to RGB and handed
over: with a frame-rate limit (``max_fps``) one at most every 1/max_fps s, in trigger mode one per ``trigger()``
(an HTTP POST to the station or an MQTT message, wired by the station), always a frame grabbed after the request, so
the image shows the part that is there now. When the stream drops the thread reopens it with exponential backoff
(0.5 s doubling up to BACKOFF_MAX_S), so a camera back after any outage is found within BACKOFF_MAX_S plus one
open; health says "reconnecting" meanwhile.

OpenCV's wheel (opencv-python-headless) brings its own FFmpeg: no system package is needed at run time.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from webapp.stations.sources.base import Frame, SourceError
from webapp.stations.sources.folder import IMAGE_SUFFIXES, decode_image

log = logging.getLogger(__name__)

# FFmpeg's own defaults are 30 s to open and no limit on a read: a camera unplugged mid-frame would hold the
# station that long before it even starts reconnecting. A stream silent for the read timeout counts as dropped;
# FFmpeg's RTSP reader gives up only after about three of them (measured: 2 s -> 6 s, 5 s -> 15 s), so RTSP gets a
# shorter one (a live RTSP camera sends frames many times a second). `read_timeout_s` changes it for slow cameras.
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_S = {"rtsp": 2.0, "mjpeg": 5.0}
READ_TIMEOUT_ROUNDS = 3
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 2.0
# A trigger that no frame answered within this time (the stream was down) is dropped, not answered late with an
# image of a later part.
TRIGGER_TIMEOUT_S = 2.0
MAX_PENDING_TRIGGERS = 100

STREAM_SCHEMES = {"rtsp": ("rtsp", "rtsps"), "mjpeg": ("http", "https")}
# RTSP over TCP: on a busy plant network UDP loses packets, and a lost packet is a smeared part in the image.
# Set by the operator (OPENCV_FFMPEG_CAPTURE_OPTIONS, OpenCV's own variable) it is left as it is.
FFMPEG_CAPTURE_OPTIONS = "rtsp_transport;tcp"

NO_URL = "a {kind} source needs a url ({example})"
BAD_SCHEME = "a {kind} source's url starts with {schemes}, not {url!r}"
BAD_MODE = 'mode must be "rate" (a frame-rate limit) or "trigger" (one frame per trigger)'
BAD_FPS = "max_fps must be a number from 0 (every frame) to 120"
NOT_FOUND = "no video or image folder at {path}"
NOT_A_VIDEO = "{path} could not be opened as a video"
NO_IMAGES = "{path} holds no images ({suffixes})"


def redacted(url: str) -> str:
    """The url without its password, for health and logs (camera urls carry credentials: rtsp://user:pw@host)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def frame_name(index: int, captured_at: float) -> str:
    """ "frame-<UTC time>-<n>": unique across restarts, so sinks that file images by name never overwrite one."""
    stamp = datetime.fromtimestamp(captured_at, UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return f"frame-{stamp}-{index:06d}"


def _number(settings: dict, name: str, default: float, low: float, high: float, message: str) -> float:
    try:
        value = float(settings.get(name, default))
    except (TypeError, ValueError):
        raise SourceError(message) from None
    if not low <= value <= high:
        raise SourceError(message)
    return value


class StreamSource:
    """A live camera stream. Settings: ``url``; ``mode`` "rate" (default) with ``max_fps`` (2; 0 = as fast as the
    station judges, each frame grabbed after the previous one was taken) or "trigger"; ``trigger_timeout_s`` (2);
    ``read_timeout_s`` (RTSP 2, MJPEG 5: how long a silent stream counts as still there)."""

    def __init__(self, settings: dict, *, station_id: int, kind: str):
        self.kind = kind
        self.station_id = station_id
        self.url = str(settings.get("url") or "").strip()
        example = "rtsp://user:password@camera:554/stream" if kind == "rtsp" else "http://camera/video.mjpg"
        if not self.url:
            raise SourceError(NO_URL.format(kind=kind, example=example))
        schemes = STREAM_SCHEMES[kind]
        if urlsplit(self.url).scheme.lower() not in schemes:
            raise SourceError(
                BAD_SCHEME.format(kind=kind, schemes=" or ".join(f"{s}://" for s in schemes), url=self.url)
            )
        self.mode = settings.get("mode", "rate")
        if self.mode not in ("rate", "trigger"):
            raise SourceError(BAD_MODE)
        self.max_fps = _number(settings, "max_fps", 2.0, 0, 120, BAD_FPS)
        self.trigger_timeout_s = _number(
            settings, "trigger_timeout_s", TRIGGER_TIMEOUT_S, 0.1, 60, "trigger_timeout_s must be from 0.1 to 60"
        )
        self.open_timeout_ms = OPEN_TIMEOUT_MS
        read_timeout_s = _number(
            settings, "read_timeout_s", READ_TIMEOUT_S[kind], 0.5, 60, "read_timeout_s must be from 0.5 to 60"
        )
        self.read_timeout_ms = round(read_timeout_s * 1000)
        self._lock = threading.Condition()
        self._wanted = False  # the consumer waits for the next grabbed frame
        self._handoff: tuple[np.ndarray, float] | None = None
        self._triggers: deque[float] = deque()
        self._missed_triggers = 0
        self._count = 0
        self._health = {"state": "reconnecting", "detail": f"connecting to {redacted(self.url)}"}
        self.reconnects = 0  # opens after the first: how often the stream came back

    # -- what the station calls -------------------------------------------------------------------------------

    def health(self) -> dict:
        with self._lock:
            health = dict(self._health)
            if self._missed_triggers:
                health["detail"] += (
                    f"; {self._missed_triggers} trigger(s) got no frame within {self.trigger_timeout_s:g} s"
                )
            return health

    def trigger(self) -> None:
        """Releases one frame in trigger mode (a part is in front of the camera now); ignored in rate mode."""
        with self._lock:
            if self.mode != "trigger":
                return
            if len(self._triggers) >= MAX_PENDING_TRIGGERS:
                self._triggers.popleft()
                self._missed_triggers += 1
            self._triggers.append(time.time())
            self._lock.notify_all()

    def done(self, frame: Frame, *, ok: bool, reason: str = "") -> None:
        """Nothing to move or delete for a live frame; a failed one is only logged."""
        if not ok:
            log.warning("station %s: frame %s not judged: %s", self.station_id, frame.name, reason)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        grabbing = threading.Event()  # cleared when the generator ends, even if the runner never sets `stop`
        grabbing.set()
        grabber = threading.Thread(
            target=self._grab_loop, args=(stop, grabbing), name=f"station-{self.station_id}-grab", daemon=True
        )
        grabber.start()
        try:
            next_due = 0.0
            while not stop.is_set():
                deadline = None
                if self.mode == "trigger":
                    deadline = self._wait_for_trigger(stop)
                    if deadline is None:
                        continue
                elif self.max_fps:
                    if stop.wait(max(0.0, next_due - time.monotonic())):
                        break
                    next_due = time.monotonic() + 1 / self.max_fps
                frame = self._next_frame(stop, deadline)
                if frame is not None:
                    yield frame
        finally:
            grabbing.clear()
            with self._lock:
                self._lock.notify_all()
            # A grab blocked on a silent stream returns within its timeouts; not waiting for it would end the
            # process (at exit) with the thread still inside OpenCV.
            grabber.join(timeout=READ_TIMEOUT_ROUNDS * self.read_timeout_ms / 1000 + self.open_timeout_ms / 1000)

    # -- the consumer's side ----------------------------------------------------------------------------------

    def _wait_for_trigger(self, stop: threading.Event) -> float | None:
        """Once a trigger is pending, the time.time() by which a frame must answer it; None when the station
        stopped. Triggers that waited longer than that while the station was busy are dropped as missed."""
        with self._lock:
            while not stop.is_set():
                while self._triggers:
                    deadline = self._triggers.popleft() + self.trigger_timeout_s
                    if time.time() < deadline:
                        return deadline
                    self._missed_triggers += 1
                self._lock.wait(0.2)
            return None

    def _next_frame(self, stop: threading.Event, deadline: float | None) -> Frame | None:
        """The first frame grabbed after this call; None when none came by `deadline` (time.time(), a trigger's)
        or the station stopped."""
        with self._lock:
            self._handoff = None
            self._wanted = True
            while self._handoff is None and not stop.is_set():
                if deadline is not None and time.time() >= deadline:
                    self._wanted = False
                    self._missed_triggers += 1
                    return None
                self._lock.wait(0.2)
            handoff, self._handoff, self._wanted = self._handoff, None, False
        if handoff is None:
            return None
        bgr, captured_at = handoff
        self._count += 1
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return Frame(image=image, name=frame_name(self._count, captured_at), captured_at=captured_at)

    # -- the grabbing thread ----------------------------------------------------------------------------------

    def _set_health(self, state: str, detail: str) -> None:
        with self._lock:
            self._health = {"state": state, "detail": detail}

    def _open(self) -> cv2.VideoCapture:
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_CAPTURE_OPTIONS)
        # FFmpeg's decoder notes (a stream joined between key frames logs "non-existing PPS" per frame) and
        # OpenCV's warning on each failed open would flood the runner's log while a camera is away; the reason is
        # in the station's health and in one line of ours per try.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            self.open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self.read_timeout_ms,
        ]
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)

    def _grab_loop(self, stop: threading.Event, grabbing: threading.Event) -> None:
        backoff = BACKOFF_FIRST_S
        opened_before = False
        where = redacted(self.url)
        while grabbing.is_set() and not stop.is_set():
            capture = None
            try:
                capture = self._open()
                if capture.isOpened():
                    if opened_before:
                        self.reconnects += 1
                    opened_before = True
                    grabbed = self._grab_frames(capture, stop, grabbing, where)
                    if grabbed:
                        backoff = BACKOFF_FIRST_S
                    reason = "the stream stopped"
                else:
                    reason = "cannot open the stream"
            except Exception as error:  # noqa: BLE001 - nothing a stream does may end the thread: reconnect
                log.exception("station %s: reading %s failed", self.station_id, where)
                reason = f"{type(error).__name__}: {error}"
            finally:
                if capture is not None:
                    capture.release()
            if not grabbing.is_set() or stop.is_set():
                break
            self._set_health("reconnecting", f"{where}: {reason}; next try in {backoff:g} s")
            log.info("station %s: %s: %s; reconnecting in %g s", self.station_id, where, reason, backoff)
            if stop.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _grab_frames(
        self, capture: cv2.VideoCapture, stop: threading.Event, grabbing: threading.Event, where: str
    ) -> int:
        """Grabs until the stream ends or the station stops; returns how many frames came."""
        grabbed = 0
        while grabbing.is_set() and not stop.is_set():
            if not capture.grab():
                return grabbed
            captured_at = time.time()
            if grabbed == 0:
                self._set_health("ok", f"receiving {where}")
            grabbed += 1
            with self._lock:
                wanted = self._wanted and self._handoff is None
            if not wanted:
                continue
            ok, bgr = capture.retrieve()
            if ok and bgr is not None:
                bgr = _three_channels(bgr)
                with self._lock:
                    self._handoff = (bgr, captured_at)
                    self._lock.notify_all()
        return grabbed


def _three_channels(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR with 3 channels (grey cameras and PNGs with alpha come as 1 or 4)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def rtsp_source(settings: dict, *, station_id: int) -> StreamSource:
    return StreamSource(settings, station_id=station_id, kind="rtsp")


def mjpeg_source(settings: dict, *, station_id: int) -> StreamSource:
    return StreamSource(settings, station_id=station_id, kind="mjpeg")


def _natural_key(name: str) -> list:
    """frame-2 before frame-10, as a camera numbers its files."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class ReplaySource:
    """A recorded shift replayed: a video file (anything OpenCV's FFmpeg reads: mp4, mkv, avi, ...) or a folder of
    images (an image sequence, in natural name order). Settings: ``path``; ``fps`` (0 = as fast as the station
    judges; a video's default is its own frame rate, an image folder's 0); ``every`` (take every n-th frame, 1);
    ``loop`` (false). Without loop each frame has a key (file, size, mtime, index), so a runner restarted mid-replay
    skips what it judged; once replayed the source idles and says so."""

    def __init__(self, settings: dict, *, station_id: int):
        self.station_id = station_id
        path = str(settings.get("path") or "").strip()
        if not path:
            raise SourceError("a video source needs a path (a video file or a folder of images)")
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(NOT_FOUND.format(path=self.path))
        self.loop = bool(settings.get("loop", False))
        self.every = int(_number(settings, "every", 1, 1, 10_000, "every must be a whole number from 1 to 10000"))
        self.fps = settings.get("fps")
        if self.fps is not None:
            self.fps = _number(settings, "fps", 0, 0, 120, "fps must be a number from 0 (no pacing) to 120")
        self._health = {"state": "ok", "detail": f"replaying {self.path}"}
        self.replayed = 0

    def health(self) -> dict:
        return dict(self._health)

    def done(self, frame: Frame, *, ok: bool, reason: str = "") -> None:
        if not ok:
            log.warning("station %s: frame %s not judged: %s", self.station_id, frame.name, reason)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        while not stop.is_set():
            try:
                pictures = self._images() if self.path.is_dir() else self._video()
                yield from self._paced(pictures, stop)
            except (OSError, ValueError) as error:
                self._health = {"state": "error", "detail": str(error)}
                stop.wait(5)
                continue
            if not self.loop:
                break
        if not stop.is_set():
            self._health = {"state": "ok", "detail": f"replay of {self.path} finished: {self.replayed} frames"}
            stop.wait()

    def _key(self, path: Path, index: int | None = None) -> str:
        """The exactly-once key of a frame: the file as it is (size, mtime) and the frame's index in a video.
        None when looping (the same frames come again on purpose). Long paths keep their end, which names them."""
        if self.loop:
            return ""
        stat = path.stat()
        key = f"replay:{stat.st_size}:{stat.st_mtime_ns}:{'' if index is None else index}:{path}"
        return key[:200] + key[-200:] if len(key) > 400 else key

    def _paced(self, pictures: Iterator[Frame], stop: threading.Event) -> Iterator[Frame]:
        next_due = time.monotonic()
        for frame in pictures:
            if stop.is_set():
                return
            if self._fps:
                if stop.wait(max(0.0, next_due - time.monotonic())):
                    return
                next_due = max(next_due + 1 / self._fps, time.monotonic() - 1 / self._fps)
            self.replayed += 1
            frame.captured_at = time.time()
            yield frame

    def _video(self) -> Iterator[Frame]:
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        try:
            if not capture.isOpened():
                raise ValueError(NOT_A_VIDEO.format(path=self.path))
            native = capture.get(cv2.CAP_PROP_FPS) or 0
            self._fps = self.fps if self.fps is not None else native / self.every
            index = 0
            while True:
                if index % self.every:
                    if not capture.grab():
                        return
                else:
                    ok, bgr = capture.read()
                    if not ok or bgr is None:
                        return
                    rgb = cv2.cvtColor(_three_channels(bgr), cv2.COLOR_BGR2RGB)
                    name = f"{self.path.stem}-{index:06d}"
                    yield Frame(image=rgb, name=name, captured_at=0.0, key=self._key(self.path, index))
                index += 1
        finally:
            capture.release()

    def _images(self) -> Iterator[Frame]:
        self._fps = self.fps or 0
        names = sorted(
            (p.name for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
            key=_natural_key,
        )
        if not names:
            raise ValueError(NO_IMAGES.format(path=self.path, suffixes=", ".join(sorted(IMAGE_SUFFIXES))))
        for index, name in enumerate(names):
            if index % self.every:
                continue
            try:
                data = (self.path / name).read_bytes()
                image = decode_image(data)
            except ValueError as error:  # one bad file in a recording is skipped, not the rest of the shift
                log.warning("station %s: %s skipped: %s", self.station_id, name, error)
                continue
            # The file's own bytes go with the frame: the stored input is the recorded image, not a re-encoding.
            extension = Path(name).suffix.lower()
            key = self._key(self.path / name)
            yield Frame(image=image, name=name, captured_at=0.0, key=key, data=data, extension=extension)
