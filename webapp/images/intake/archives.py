"""Reads zip archives defensively: a hostile archive cannot write outside its folder, follow a link, or expand
into more bytes than the limits allow. One bad member is reported and skipped; the rest still come through."""

from __future__ import annotations

import lzma
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from webapp.images.intake.decoding import RejectedFile

NOT_A_ZIP = "This archive cannot be read as a zip file."
EMPTY_ARCHIVE = "The archive holds no files to take in."
TOO_MANY_MEMBERS = "The archive holds {count:,} files, more than the limit of {limit:,}."
TOO_LARGE_EXPANDED = "The archive would expand to {size:,} bytes, more than the limit of {limit:,}."
UNSAFE_PATH = "Skipped: the path leaves the archive's folder (absolute or with '..')."
LINK = "Skipped: links inside archives are not followed."
ENCRYPTED = "Skipped: the file is encrypted."
NESTED_ARCHIVE = "Skipped: archives inside archives are not opened; upload it on its own."
MEMBER_TOO_LARGE = "Skipped: the file expands to {size:,} bytes, more than the limit of {limit:,}."
DAMAGED_MEMBER = "The file is damaged inside the archive."
ABSURD_RATIO = "Skipped: the file expands {ratio:,.0f} times its compressed size (a zip bomb?)."

# Real images compress at most a few times (PNG/JPEG are compressed already); 100x is a bomb, not a photo.
MAX_EXPANSION_RATIO = 100
RATIO_CHECK_ABOVE_BYTES = 1024 * 1024
NESTED_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"}
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
# Hostile bytes make zipfile fail in more ways than BadZipFile: zlib.error and lzma.LZMAError from damaged data,
# ValueError from a negative seek (a lying end record), NotImplementedError from an unknown version or method.
# Each means "damaged" and must come back as a rejection, never as a server error that loses the rest of the batch.
DAMAGE_ERRORS = (
    zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError, struct.error, zlib.error,
    lzma.LZMAError,
)  # fmt: skip


@dataclass
class ArchiveMember:
    path: str  # normalised, relative, "/"-separated
    problem: str = ""  # why it is skipped; empty when it can be read


def safe_member_path(raw_name: str) -> str | None:
    """The member's relative path, or None when it is absolute or climbs out with '..'."""
    name = raw_name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _is_junk(path: str) -> bool:
    parts = path.split("/")
    return parts[0] == "__MACOSX" or parts[-1] in JUNK_NAMES or parts[-1].startswith("._")


class SafeZip:
    """A zip archive opened for reading, its members vetted up front and read one at a time.

    Raises RejectedFile when the archive as a whole cannot be used (not a zip, too many members, too large).
    """

    def __init__(self, fileobj: BinaryIO, *, max_member_bytes: int, max_total_bytes: int, max_members: int):
        try:
            self._zip = zipfile.ZipFile(fileobj)
        except DAMAGE_ERRORS:
            raise RejectedFile(NOT_A_ZIP) from None
        infos = [info for info in self._zip.infolist() if not info.is_dir()]
        if len(infos) > max_members:
            raise RejectedFile(TOO_MANY_MEMBERS.format(count=len(infos), limit=max_members))
        declared = sum(info.file_size for info in infos)
        if declared > max_total_bytes:
            raise RejectedFile(TOO_LARGE_EXPANDED.format(size=declared, limit=max_total_bytes))
        self.members: list[ArchiveMember] = []
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            path = safe_member_path(info.filename)
            if path is None:
                self.members.append(ArchiveMember(path=info.filename, problem=UNSAFE_PATH))
                continue
            if _is_junk(path):
                continue
            problem = _member_problem(info, path, max_member_bytes)
            self.members.append(ArchiveMember(path=path, problem=problem))
            if not problem:
                self._infos[path] = info

    @property
    def readable_paths(self) -> list[str]:
        return sorted(self._infos)

    def read(self, path: str) -> bytes:
        """The member's bytes (at most its declared size: zipfile stops there and checks the CRC)."""
        try:
            return self._zip.read(self._infos[path])
        except DAMAGE_ERRORS:
            raise RejectedFile(DAMAGED_MEMBER) from None

    def close(self) -> None:
        self._zip.close()


def _member_problem(info: zipfile.ZipInfo, path: str, max_member_bytes: int) -> str:
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        return LINK
    if info.flag_bits & 0x1:
        return ENCRYPTED
    if PurePosixPath(path).suffix.lower() in NESTED_SUFFIXES:
        return NESTED_ARCHIVE
    if info.file_size > max_member_bytes:
        return MEMBER_TOO_LARGE.format(size=info.file_size, limit=max_member_bytes)
    if info.file_size > RATIO_CHECK_ABOVE_BYTES:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > MAX_EXPANSION_RATIO:
            return ABSURD_RATIO.format(ratio=ratio)
    return ""
