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
TOO_MANY_DECODED_BYTES = (
    "The image is {width}x{height} pixels of mode {mode}: {size:,} bytes once decoded, more than the limit of "
    "{limit:,} bytes (KENSA_MAX_DECODED_BYTES)."
)
TOO_LARGE = "The file is {size:,} bytes, more than the limit of {limit:,} bytes."
UNSUPPORTED_MODE = "Images with pixel mode {mode} are not supported."
MULTI_FRAME = "Animated or multi-page images are not supported; upload single frames."


# Bytes per pixel as Pillow holds the decoded image (RGB and two-band modes take four bytes, not three or two).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
_FOUR_BYTES = 4
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
# Modes that become RGB before they are shrunk (alpha dropped, palette looked up), a stripe at a time.
_CONVERTED_BEFORE_SHRINKING = ("RGBA", "LA", "PA", "P", "1")
# Rows scaled at a time from 16 to 8 bits: the float64 arithmetic stays a few MB, whatever the image's size.
_SCALE_CHUNK_PIXELS = 1 << 20
# EXIF orientation -> the transpose that shows the image as a person sees it (as ImageOps.exif_transpose does).
_ORIENTATION_TRANSPOSE = {
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_270,
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_90,
}


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """The memory Pillow takes for the decoded pixels of a width x height image of `mode`."""
    return width * height * _BYTES_PER_PIXEL.get(mode, _FOUR_BYTES)


class RejectedFile(Exception):
    """A file that cannot be taken in. `str(exc)` is a message a person can act on."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # PNG, JPEG, BMP, TIFF
    extension: str
    mode: str  # of the original, e.g. L, I;16, RGB, RGBA
    width: int  # after EXIF orientation
    height: int


def inspect_image(data: bytes, *, max_pixels: int, max_bytes: int, max_decoded_bytes: int | None = None) -> ImageInfo:
    """Validates `data` fully (header, size limits, a complete decode) and describes it. Raises RejectedFile.
    `max_decoded_bytes` bounds pixels x bytes per pixel (see `decoded_bytes`); None leaves only `max_pixels`."""
    return _checked_decode(data, max_pixels=max_pixels, max_bytes=max_bytes, max_decoded_bytes=max_decoded_bytes)[0]


def open_checked_display(
    data: bytes, *, max_side: int, max_pixels: int, max_bytes: int, max_decoded_bytes: int | None = None
) -> tuple[ImageInfo, PILImage.Image]:
    """`inspect_image`, and the image as `display_rgb` makes it (8-bit RGB, oriented, its longer side at most
    `max_side`), decoding the pixels once. Raises RejectedFile."""
    info, image = _checked_decode(
        data, max_pixels=max_pixels, max_bytes=max_bytes, max_decoded_bytes=max_decoded_bytes, draft_side=max_side
    )
    return info, _display_rgb(image, max_side)


def _checked_decode(
    data: bytes, *, max_pixels: int, max_bytes: int, max_decoded_bytes: int | None, draft_side: int | None = None
) -> tuple[ImageInfo, PILImage.Image]:
    """The checks of `inspect_image`, and the decoded image (orientation not applied). With `draft_side`, a JPEG
    is decoded at the smallest scale (1/2, 1/4, 1/8) whose longer side still reaches it."""
    if not data:
        raise RejectedFile(EMPTY_FILE)
    if len(data) > max_bytes:
        raise RejectedFile(TOO_LARGE.format(size=len(data), limit=max_bytes))
    fmt, (width, height), mode, frames = image_header(data)
    if fmt not in ACCEPTED_FORMATS:
        raise RejectedFile(UNSUPPORTED_FORMAT.format(format=fmt or "These"))
    # Checked from the header before decoding, so a decompression bomb never allocates its pixels.
    if width * height > max_pixels or width <= 0 or height <= 0:
        raise RejectedFile(TOO_MANY_PIXELS.format(width=width, height=height, limit=max_pixels))
    size = decoded_bytes(width, height, mode)
    if max_decoded_bytes is not None and size > max_decoded_bytes:
        raise RejectedFile(
            TOO_MANY_DECODED_BYTES.format(width=width, height=height, mode=mode, size=size, limit=max_decoded_bytes)
        )
    if mode not in ACCEPTED_MODES:
        raise RejectedFile(UNSUPPORTED_MODE.format(mode=mode))
    if frames > 1:
        raise RejectedFile(MULTI_FRAME)
    # Pillow stops reading once it has its pixels and checks no PNG checksum from the first IDAT on: a PNG cut in its
    # last chunks or with a damaged IDAT, or a JPEG cut before its end marker, would pass as decoded completely.
    if (fmt == "PNG" and not _png_chunks_intact(data)) or (fmt == "JPEG" and not _jpeg_has_end(data)):
        raise RejectedFile(TRUNCATED)
    image = _decode_completely(data, draft_side=draft_side if fmt == "JPEG" else None)
    # Read after the decode: a PNG keeps EXIF wherever it likes, so Pillow decodes the whole image to find it.
    try:
        orientation = image.getexif().get(0x0112, 1) if fmt in {"JPEG", "TIFF", "PNG"} else 1
    except (OSError, ValueError, SyntaxError):
        raise RejectedFile(NOT_AN_IMAGE) from None
    if orientation in (5, 6, 7, 8):  # EXIF rotations by 90 or 270 degrees swap the sides
        width, height = height, width
    info = ImageInfo(format=fmt, extension=ACCEPTED_FORMATS[fmt], mode=mode, width=width, height=height)
    return info, image


def image_header(data: bytes) -> tuple[str, tuple[int, int], str, int]:
    """Format, size (width, height) as stored, mode and frame count, from the header alone. Raises RejectedFile."""
    try:
        with PILImage.open(io.BytesIO(data)) as probe:
            return probe.format or "", probe.size, probe.mode, getattr(probe, "n_frames", 1)
    except PILImage.DecompressionBombError:
        # Pillow's own limit (far above ours) refused it before saying its size: ask the format's reader directly.
        return _header_past_pillow_limit(data)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RejectedFile(NOT_AN_IMAGE) from None


def _header_past_pillow_limit(data: bytes) -> tuple[str, tuple[int, int], str, int]:
    PILImage.init()
    for fmt in ACCEPTED_FORMATS:
        factory, accept = PILImage.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            with factory(io.BytesIO(data), "") as probe:
                return probe.format or fmt, probe.size, probe.mode, getattr(probe, "n_frames", 1)
        except (OSError, ValueError, SyntaxError, TypeError):
            continue
    raise RejectedFile(NOT_AN_IMAGE)


def _decode_completely(data: bytes, *, draft_side: int | None = None) -> PILImage.Image:
    """The image with its pixel data loaded; any damage, warnings included, is RejectedFile(TRUNCATED)."""
    with warnings.catch_warnings():
        # Pillow warns (rather than fails) on some damaged files; treat that as damage.
        warnings.simplefilter("error")
        try:
            image = PILImage.open(io.BytesIO(data))
            if draft_side is not None:
                image.draft(None, (draft_side, draft_side))  # a JPEG decoded at 1/2, 1/4 or 1/8 scale
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


def display_rgb(data: bytes, *, max_side: int) -> PILImage.Image:
    """The stored image as 8-bit RGB as a person sees it, its longer side at most `max_side`: a JPEG decoded at a
    reduced scale, anything else shrunk before any conversion, so the full-size image is never copied or turned
    into floats (an 8000 x 8000 16-bit PNG: 128 MB decoded, not 1.6 GB). Not checked: for files already taken in."""
    image = PILImage.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft(None, (max_side, max_side))
    image.load()
    return _display_rgb(image, max_side)


def _display_rgb(image: PILImage.Image, max_side: int) -> PILImage.Image:
    try:
        orientation = image.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):
        orientation = 1
    value_range = image.getextrema() if image.mode in SIXTEEN_BIT_MODES else None  # of the whole image
    if image.mode in _CONVERTED_BEFORE_SHRINKING:
        image = _rgb_shrunk_by_stripes(image, max_side)
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, PILImage.Resampling.BICUBIC)
    image = to_display_rgb(image, value_range=value_range)
    transpose = _ORIENTATION_TRANSPOSE.get(orientation)
    return image.transpose(transpose) if transpose is not None else image


def _rgb_shrunk_by_stripes(image: PILImage.Image, max_side: int) -> PILImage.Image:
    """RGB of an image with alpha or a palette, shrunk by the whole factor that keeps it at least `max_side` on its
    longer side, a stripe of rows at a time: converting it whole would copy it (4 bytes a pixel), and resizing it
    with alpha would copy it again to premultiply. Stripes are whole multiples of the factor, so the box averages
    are the ones `reduce` makes of the whole image."""
    factor = max(1, max(image.size) // max_side)
    if factor == 1:
        return image.convert("RGB")
    rows = factor * max(1, _SCALE_CHUNK_PIXELS // (image.width * factor))
    shrunk = PILImage.new("RGB", (-(-image.width // factor), -(-image.height // factor)))
    for top in range(0, image.height, rows):
        stripe = image.crop((0, top, image.width, min(image.height, top + rows))).convert("RGB")
        shrunk.paste(stripe.reduce(factor), (0, top // factor))
    return shrunk


def to_display_rgb(image: PILImage.Image, *, value_range: tuple[float, float] | None = None) -> PILImage.Image:
    """8-bit RGB for thumbnails and models: 16-bit grey is scaled by its own range (or `value_range`, the range
    of the full image this one was shrunk from), alpha dropped."""
    if image.mode not in SIXTEEN_BIT_MODES:
        return image.convert("RGB")
    import numpy as np

    low, high = (float(v) for v in (value_range or image.getextrema()))
    grey = np.zeros((image.height, image.width), np.uint8)
    if high > low:
        # A few rows at a time: float64 of a whole 8000 x 8000 image would be 512 MB per temporary.
        rows = max(1, _SCALE_CHUNK_PIXELS // max(1, image.width))
        for top in range(0, image.height, rows):
            bottom = min(image.height, top + rows)
            pixels = np.asarray(image.crop((0, top, image.width, bottom)), dtype=np.float64)
            # Clipped: a shrunk image's filter may overshoot the full image's range by a little.
            grey[top:bottom] = np.clip(((pixels - low) / (high - low) * 255).round(), 0, 255)
    return PILImage.fromarray(grey, "L").convert("RGB")
