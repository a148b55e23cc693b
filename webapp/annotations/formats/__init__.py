"""Dataset formats for import and export: MVTec AD folders, COCO JSON and Lookout for Vision manifests.

Every format reads and writes the same neutral description of a dataset (below), with pure functions: no Django,
no storage. The services in webapp.annotations turn images and annotations into these and back.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
from PIL import Image as PILImage

GOOD = "good"
DEFECT = "defect"
UNLABELLED = "unlabelled"


@dataclass
class ClassDrawing:
    """One defect class on one image. mask: bool H x W or None; boxes: [x0, y0, x1, y1] pixels, x1/y1 exclusive."""

    class_name: str
    mask: np.ndarray | None = None
    boxes: list[list[int]] = field(default_factory=list)

    def mask_for(self, *, width: int, height: int) -> np.ndarray | None:
        """The mask on its image, whose real size is width x height. Formats that keep masks encoded until then
        (COCO, Lookout: a declared size is never trusted with memory) decode it here, or raise FormatError."""
        return self.mask


@dataclass
class DatasetItem:
    """One image of a dataset: where its file is in the archive and what is known about it."""

    path: str
    width: int
    height: int
    label: str = UNLABELLED  # GOOD, DEFECT or UNLABELLED
    split: str | None = None  # train, validation, test, or None when the format does not say
    drawings: list[ClassDrawing] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetClass:
    name: str
    colour: str = ""  # "#rrggbb", or "" when the format does not carry one


class FormatError(ValueError):
    """The annotation file cannot be used. `str(exc)` is a message a person can act on."""


def mask_png(mask: np.ndarray) -> bytes:
    """A boolean H x W mask as an 8-bit grey PNG of 0 and 255."""
    buffer = io.BytesIO()
    PILImage.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


MASK_WRONG_SIZE = "The mask is {got_w}x{got_h} pixels but the image is {w}x{h}; masks are at full resolution."


def mask_from_png(data: bytes, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """A boolean mask from a PNG: alpha above half where there is alpha, else grey above half. With `size`
    (width, height), a mask of another size is refused from its header, before its pixels are decoded."""
    with PILImage.open(io.BytesIO(data)) as picture:
        if size is not None and picture.size != tuple(size):
            w, h = size
            raise FormatError(MASK_WRONG_SIZE.format(got_w=picture.size[0], got_h=picture.size[1], w=w, h=h))
        if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
            return np.asarray(picture.convert("RGBA"))[..., 3] > 127
        return np.asarray(picture.convert("L")) > 127


def unique_names(names: list[str]) -> list[str]:
    """The names with a -2, -3... suffix on repeats (compared by stem, case-insensitive, since MVTec masks are
    matched to images by stem)."""
    seen: set[str] = set()
    out = []
    for name in names:
        path = PurePosixPath(name)
        stem, suffix, n = path.stem, path.suffix, 1
        candidate = stem
        while candidate.lower() in seen:
            n += 1
            candidate = f"{stem}-{n}"
        seen.add(candidate.lower())
        out.append(candidate + suffix)
    return out


def safe_file_name(name: str) -> str:
    """A plain file name for an archive: no folders, no characters that trouble other tools."""
    base = PurePosixPath(name.replace("\\", "/")).name or "image"
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in base).lstrip(".")
    return cleaned or "image"


def member_for_reference(reference: str, paths: list[str]) -> str | None:
    """The archive member a manifest or annotation file means by `reference` (a relative path, an s3:// URI or a
    bare file name): the member sharing the longest run of trailing path parts, if the file name matches."""
    ref = reference.split("://", 1)[-1].replace("\\", "/")
    ref_parts = [p for p in ref.split("/") if p]
    if not ref_parts:
        return None
    best, best_len = None, 0
    for path in paths:
        parts = path.split("/")
        n = 0
        while n < min(len(parts), len(ref_parts)) and parts[-1 - n] == ref_parts[-1 - n]:
            n += 1
        if n > best_len:
            best, best_len = path, n
    return best
