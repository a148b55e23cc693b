import io
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.webapp.conftest import encode, png_bytes
from webapp.images.intake import decoding
from webapp.images.intake.decoding import RejectedFile, inspect_image

LIMITS = {"max_pixels": 10_000_000, "max_bytes": 5_000_000}


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_png_modes_are_accepted(mode):
    info = inspect_image(png_bytes(1, mode=mode), **LIMITS)
    assert (info.format, info.extension, info.width, info.height) == ("PNG", ".png", 64, 64)
    assert info.mode.startswith(mode[0])


@pytest.mark.parametrize(("fmt", "extension"), [("JPEG", ".jpg"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_other_formats_are_accepted(fmt, extension):
    data = encode(np.zeros((20, 30, 3), np.uint8), fmt)
    info = inspect_image(data, **LIMITS)
    assert (info.format, info.extension, info.width, info.height) == (fmt, extension, 30, 20)


def test_exif_rotation_swaps_width_and_height():
    # given a 30x20 JPEG whose EXIF says "rotate 90 degrees"
    exif = PILImage.Exif()
    exif[0x0112] = 6
    data = encode(np.zeros((20, 30, 3), np.uint8), "JPEG", exif=exif.tobytes())
    # when / then
    info = inspect_image(data, **LIMITS)
    assert (info.width, info.height) == (20, 30)
    assert decoding.open_oriented(data).size == (20, 30)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", decoding.EMPTY_FILE),
        (b"hello, I am a text file", decoding.NOT_AN_IMAGE),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", decoding.NOT_AN_IMAGE),
    ],
)
def test_unusable_bytes_are_rejected_with_a_clear_message(data, message):
    with pytest.raises(RejectedFile, match=message.split(" (")[0].rstrip(".")):
        inspect_image(data, **LIMITS)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_rejected(fmt):
    data = encode(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8), fmt)
    with pytest.raises(RejectedFile) as caught:
        inspect_image(data[: len(data) // 2], **LIMITS)
    assert str(caught.value) in (decoding.TRUNCATED, decoding.NOT_AN_IMAGE)


def test_unsupported_format_is_named():
    data = encode(np.zeros((8, 8, 3), np.uint8), "GIF")
    with pytest.raises(RejectedFile, match="GIF images are not supported"):
        inspect_image(data, **LIMITS)


def test_decompression_bomb_is_rejected_from_its_header():
    # given a PNG that claims 50,000 x 50,000 pixels (a real one would need 7.5 GB to decode)
    header = io.BytesIO()
    PILImage.new("L", (1, 1)).save(header, format="PNG")
    data = bytearray(header.getvalue())
    data[16:24] = (50_000).to_bytes(4, "big") + (50_000).to_bytes(4, "big")  # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # keep the chunk's checksum valid
    # when / then
    with pytest.raises(RejectedFile, match="more than the limit"):
        inspect_image(bytes(data), **LIMITS)


def test_files_over_the_byte_limit_are_rejected():
    with pytest.raises(RejectedFile, match="more than the limit of 100 bytes"):
        inspect_image(png_bytes(2), max_pixels=10_000, max_bytes=100)


def test_sixteen_bit_images_are_scaled_for_display():
    data = png_bytes(3, mode="I;16")
    rgb = decoding.to_display_rgb(decoding.open_oriented(data))
    pixels = np.asarray(rgb)
    assert rgb.mode == "RGB" and pixels.min() == 0 and pixels.max() == 255
