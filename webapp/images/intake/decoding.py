"""Checks one uploaded file is an image Kensa can use, without trusting its name or its header."""

from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
ACCEPTED_MODES = {"1", "L", "I;16", "I;16B", "I;16L", "I", "RGB", "RGBA", "LA", "P", "CMYK"}

EMPTY_FILE = "The file is empty."
NOT_AN_IMAGE = "This is not an image Kensa can read (PNG, JPEG, BMP or TIFF)."
UNSUPPORTED_FORMAT = "{format} images are not supported; use PNG, JPEG, BMP or TIFF."
TRUNCATED = "The image is truncated or corrupt: it cannot be decoded completely."
TOO_MANY_PIXELS = (
    "The image is {width}x{height} pixels, more than the limit of {limit:,} pixels (a decompression bomb?)."
)
TOO_LARGE = "The file is {size:,} bytes, more than the limit of {limit:,} bytes."
UNSUPPORTED_MODE = "Images with pixel mode {mode} are not supported."
MULTI_FRAME = "Animated or multi-page images are not supported; upload single frames."


class RejectedFile(Exception):
    """A file that cannot be taken in. `str(exc)` is a message a person can act on."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # PNG, JPEG, BMP, TIFF
    extension: str
    mode: str  # of the original, e.g. L, I;16, RGB, RGBA
    width: int  # after EXIF orientation
    height: int


def inspect_image(data: bytes, *, max_pixels: int, max_bytes: int) -> ImageInfo:
    """Validates `data` fully (header, size limits, a complete decode) and describes it. Raises RejectedFile."""
    return _checked_decode(data, max_pixels=max_pixels, max_bytes=max_bytes)[0]


def open_checked(data: bytes, *, max_pixels: int, max_bytes: int) -> tuple[ImageInfo, PILImage.Image]:
    """`inspect_image` and `open_oriented` in one, decoding the pixels once: the description and the image as a
    person sees it (EXIF orientation applied). Raises RejectedFile."""
    info, image = _checked_decode(data, max_pixels=max_pixels, max_bytes=max_bytes)
    if image.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):
        image = ImageOps.exif_transpose(image)
    return info, image


def _checked_decode(data: bytes, *, max_pixels: int, max_bytes: int) -> tuple[ImageInfo, PILImage.Image]:
    """The checks of `inspect_image`, and the decoded image (orientation not applied)."""
    if not data:
        raise RejectedFile(EMPTY_FILE)
    if len(data) > max_bytes:
        raise RejectedFile(TOO_LARGE.format(size=len(data), limit=max_bytes))
    try:
        with PILImage.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
            width, height = probe.size
            mode = probe.mode
            frames = getattr(probe, "n_frames", 1)
    except PILImage.DecompressionBombError:
        raise RejectedFile(TOO_MANY_PIXELS.format(width="?", height="?", limit=max_pixels)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RejectedFile(NOT_AN_IMAGE) from None
    if fmt not in ACCEPTED_FORMATS:
        raise RejectedFile(UNSUPPORTED_FORMAT.format(format=fmt or "These"))
    # Checked from the header before decoding, so a decompression bomb never allocates its pixels.
    if width * height > max_pixels or width <= 0 or height <= 0:
        raise RejectedFile(TOO_MANY_PIXELS.format(width=width, height=height, limit=max_pixels))
    if mode not in ACCEPTED_MODES:
        raise RejectedFile(UNSUPPORTED_MODE.format(mode=mode))
    if frames > 1:
        raise RejectedFile(MULTI_FRAME)
    # Pillow stops reading once it has its pixels and checks no PNG checksum from the first IDAT on: a PNG cut in its
    # last chunks or with a damaged IDAT, or a JPEG cut before its end marker, would pass as decoded completely.
    if (fmt == "PNG" and not _png_chunks_intact(data)) or (fmt == "JPEG" and not _jpeg_has_end(data)):
        raise RejectedFile(TRUNCATED)
    image = _decode_completely(data)
    # Read after the decode: a PNG keeps EXIF wherever it likes, so Pillow decodes the whole image to find it.
    try:
        orientation = image.getexif().get(0x0112, 1) if fmt in {"JPEG", "TIFF", "PNG"} else 1
    except (OSError, ValueError, SyntaxError):
        raise RejectedFile(NOT_AN_IMAGE) from None
    if orientation in (5, 6, 7, 8):  # EXIF rotations by 90 or 270 degrees swap the sides
        width, height = height, width
    info = ImageInfo(format=fmt, extension=ACCEPTED_FORMATS[fmt], mode=mode, width=width, height=height)
    return info, image


def _decode_completely(data: bytes) -> PILImage.Image:
    """The image with its pixel data loaded; any damage, warnings included, is RejectedFile(TRUNCATED)."""
    with warnings.catch_warnings():
        # Pillow warns (rather than fails) on some damaged files; treat that as damage.
        warnings.simplefilter("error")
        try:
            image = PILImage.open(io.BytesIO(data))
            image.load()
        except Exception:
            raise RejectedFile(TRUNCATED) from None
    return image


def _png_chunks_intact(data: bytes) -> bool:
    """Every chunk of the PNG is whole and matches its CRC-32, up to and including IEND (anything after is ignored)."""
    view = memoryview(data)
    pos = 8  # past the signature
    while pos + 12 <= len(view):
        length = int.from_bytes(view[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > len(view) or zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            return False
        if view[pos + 4 : pos + 8] == b"IEND":
            return True
        pos = end
    return False


def _jpeg_has_end(data: bytes) -> bool:
    """An end-of-image marker after the start of the scan (scan data never holds FF D9, so a cut file has none)."""
    return data.rfind(b"\xff\xd9") > data.find(b"\xff\xda")


def open_oriented(data: bytes) -> PILImage.Image:
    """The image as a person sees it: EXIF orientation applied. Pixel data is loaded."""
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return ImageOps.exif_transpose(image) or image


def to_display_rgb(image: PILImage.Image) -> PILImage.Image:
    """8-bit RGB for thumbnails and models: 16-bit grey is scaled by its own range, alpha dropped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) * 255 if high > low else np.zeros_like(pixels)
        return PILImage.fromarray(scaled.round().astype("uint8"), "L").convert("RGB")
    return image.convert("RGB")
