"""A watched folder, polled so that network shares (SMB/NFS, FTP targets) work where inotify does not.

A file is taken when it is complete: either it was renamed into place (its ctime is newer than its mtime: a rename
changes only the inode's ctime, while writes move both together), which is taken at the next poll, or its size and
mtime were the same on two polls and it has not been written to for ``settle_seconds`` (a copy that stalls for less
than that is not mistaken for a finished file).
Temporary upload names (dot files, .part, .tmp, .filepart, ~) are never taken. After the runner has stored the
verdict, the file moves to done/ (or is deleted); a file that cannot be decoded moves to failed/ with a .txt beside
it giving the reason. The key (name, size, mtime) is what the runner records with the verdict, so a file that was
judged but not yet moved when a runner died is moved, not judged again.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from webapp.stations.sources.base import Frame, SourceError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
TEMPORARY_SUFFIXES = (".part", ".tmp", ".filepart", ".crdownload", "~")
DONE_DIR = "done"
FAILED_DIR = "failed"


def _is_candidate(name: str) -> bool:
    return not (name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES) or name.endswith(".txt"))


def _unique_target(directory: Path, name: str) -> Path:
    target = directory / name
    stem, suffix = os.path.splitext(name)
    counter = 1
    while target.exists():
        target = directory / f"{stem}-{counter}{suffix}"
        counter += 1
    return target


def decode_image(source: Path | bytes) -> np.ndarray:
    """Decode an image file (a path or its bytes) to H x W x 3 uint8 RGB; raises ValueError with a reason a person
    can read."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError("not an image Kensa can read (unknown format)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"unreadable image: {error}") from None


class FolderSource:
    """Settings: ``path`` (required), ``poll_seconds`` (0.1), ``settle_seconds`` (1.0), ``after`` ("move" to done/
    or "delete")."""

    prefetch = True  # files wait in the folder anyway: the runner may read and decode the next one ahead

    def __init__(self, settings: dict, *, station_id: int):
        path = str(settings.get("path") or "").strip()
        if not path:
            raise SourceError("a folder source needs a path")
        self.station_id = station_id
        self.root = Path(path)
        try:
            self.poll_seconds = float(settings.get("poll_seconds", 0.1))
        except (TypeError, ValueError):
            raise SourceError("poll_seconds must be a number") from None
        if not 0.01 <= self.poll_seconds <= 60:
            raise SourceError("poll_seconds must be between 0.01 and 60")
        try:
            self.settle_ns = int(float(settings.get("settle_seconds", 1.0)) * 1e9)
        except (TypeError, ValueError):
            raise SourceError("settle_seconds must be a number") from None
        if not 0 <= self.settle_ns <= 3600e9:
            raise SourceError("settle_seconds must be between 0 and 3600")
        self.after = settings.get("after", "move")
        if self.after not in ("move", "delete"):
            raise SourceError('after must be "move" or "delete"')
        self.done_dir = self.root / DONE_DIR
        self.failed_dir = self.root / FAILED_DIR
        self._state = {"state": "ok", "detail": f"watching {self.root}"}
        # name -> (size, mtime_ns) seen on the previous poll, for the stable-size rule
        self._previous: dict[str, tuple[int, int]] = {}
        # keys yielded and not yet done, so a slow verdict does not make the next poll yield the file again
        self._in_flight: set[str] = set()

    def health(self) -> dict:
        return dict(self._state)

    def _ready_files(self) -> list[tuple[float, str, os.stat_result]]:
        ready = []
        seen: dict[str, tuple[int, int]] = {}
        now_ns = time.time_ns()
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not _is_candidate(entry.name):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                signature = (stat.st_size, stat.st_mtime_ns)
                seen[entry.name] = signature
                renamed_into_place = stat.st_ctime_ns > stat.st_mtime_ns
                stable = self._previous.get(entry.name) == signature and now_ns - stat.st_mtime_ns >= self.settle_ns
                if renamed_into_place or stable:
                    ready.append((stat.st_mtime, entry.name, stat))
        self._previous = seen
        ready.sort()
        return ready

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        while not stop.is_set():
            try:
                self.done_dir.mkdir(parents=True, exist_ok=True)
                self.failed_dir.mkdir(parents=True, exist_ok=True)
                ready = self._ready_files()
            except OSError as error:
                self._state = {"state": "error", "detail": f"cannot read {self.root}: {error.strerror or error}"}
                stop.wait(max(self.poll_seconds, 1.0))
                continue
            self._state = {"state": "ok", "detail": f"watching {self.root}"}
            for _mtime, name, stat in ready:
                if stop.is_set():
                    return
                key = f"{name}:{stat.st_size}:{stat.st_mtime_ns}"
                if key in self._in_flight:
                    continue
                path = self.root / name
                arrived_at = time.time()
                try:
                    data = path.read_bytes()
                    image = decode_image(data)
                except FileNotFoundError:
                    continue
                except ValueError as error:
                    self._fail(path, str(error))
                    continue
                self._in_flight.add(key)
                self._previous.pop(name, None)
                yield Frame(
                    image=image,
                    name=name,
                    captured_at=arrived_at,
                    key=key,
                    data=data,
                    extension=Path(name).suffix.lower(),
                )
            stop.wait(self.poll_seconds)

    def done(self, frame: Frame, *, ok: bool, reason: str = "") -> None:
        self._in_flight.discard(frame.key)
        path = self.root / frame.name
        if not path.exists():
            return
        if not ok:
            self._fail(path, reason or "not judged")
        elif self.after == "delete":
            path.unlink(missing_ok=True)
        else:
            os.replace(path, _unique_target(self.done_dir, frame.name))

    def _fail(self, path: Path, reason: str) -> None:
        target = _unique_target(self.failed_dir, path.name)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return
        target.with_name(target.name + ".txt").write_text(reason + "\n", encoding="utf-8")
