"""The interface every station source implements (folder here, cameras in camera.py).

A runner thread iterates ``frames`` until its stop event is set, predicts each frame, stores the verdict
(together with the frame's ``key`` when it has one, so a file is processed once across restarts) and then
calls ``done``. ``health`` is polled for the Station page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Frame:
    image: np.ndarray  # H x W x 3 uint8 RGB
    name: str  # file name or "frame-<n>"
    captured_at: float  # time.time() when it arrived
    key: str = ""  # unique id for exactly-once (e.g. the file path + size + mtime); "" for live frames
    # Optional: the encoded original (a file's bytes) and its extension (".png"); kept as the stored input as is,
    # so the runner need not encode the image again. Empty for live frames (the runner encodes those).
    data: bytes = b""
    extension: str = ""


class FrameSource(Protocol):
    def frames(self, stop: threading.Event) -> Iterator[Frame]: ...  # blocks; yields until stop is set

    def done(self, frame: Frame, *, ok: bool, reason: str = "") -> None: ...  # after the verdict is stored

    def health(self) -> dict: ...  # {"state": "ok"|"reconnecting"|"error", "detail": str}


class SourceError(ValueError):
    """Settings a source cannot work with (shown to the user when the station is saved or started)."""


SourceFactory = Callable[..., FrameSource]


def source_for(kind: str, settings: dict, *, station_id: int) -> FrameSource:
    """The source for a station, by kind (registry in webapp/stations/sources/__init__.py)."""
    from webapp.stations.sources import SOURCE_KINDS

    factory = SOURCE_KINDS.get(kind)
    if factory is None:
        raise SourceError(f"unknown source kind {kind!r} (known: {', '.join(sorted(SOURCE_KINDS))})")
    return factory(settings, station_id=station_id)
