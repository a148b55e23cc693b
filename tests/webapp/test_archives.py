import io
import stat
import zipfile

import pytest

from tests.webapp.conftest import png_bytes
from webapp.images.intake import archives
from webapp.images.intake.archives import SafeZip, safe_member_path
from webapp.images.intake.decoding import RejectedFile

LIMITS = {"max_member_bytes": 50_000_000, "max_total_bytes": 200_000_000, "max_members": 100}


def zip_of(entries: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a/b.png", "a/b.png"),
        ("./a//b.png", "a/b.png"),
        ("a\\b.png", "a/b.png"),
        ("../evil.png", None),
        ("a/../../evil.png", None),
        ("/etc/passwd", None),
        ("C:/windows/evil.png", None),
        ("..\\evil.png", None),
    ],
)
def test_member_paths_cannot_escape(raw, expected):
    assert safe_member_path(raw) == expected


def test_escaping_and_linked_members_are_skipped_and_the_rest_kept():
    # given an archive with a good image, a '../' path, an absolute path and a symlink
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.png", png_bytes(1))
        archive.writestr("../escape.png", png_bytes(2))
        archive.writestr("/abs.png", png_bytes(3))
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("inner.zip", b"PK...")
    buffer.seek(0)
    # when
    safe = SafeZip(buffer, **LIMITS)
    problems = {m.path: m.problem for m in safe.members}
    # then
    assert safe.readable_paths == ["ok.png"]
    assert problems["../escape.png"] == archives.UNSAFE_PATH
    assert problems["/abs.png"] == archives.UNSAFE_PATH
    assert problems["link.png"] == archives.LINK
    assert problems["inner.zip"] == archives.NESTED_ARCHIVE
    assert safe.read("ok.png") == png_bytes(1)


def test_a_zip_bomb_member_is_skipped():
    # given 20 MB of zeros, which deflate to a few kilobytes
    safe = SafeZip(zip_of({"bomb.png": b"\0" * 20_000_000, "fine.png": png_bytes(1)}), **LIMITS)
    problems = {m.path: m.problem for m in safe.members}
    assert problems["bomb.png"].startswith("Skipped: the file expands")
    assert safe.readable_paths == ["fine.png"]


def test_archive_declaring_too_much_is_rejected_whole():
    with pytest.raises(RejectedFile, match="would expand to"):
        SafeZip(zip_of({"a.png": b"\0" * 5000}), max_member_bytes=10_000, max_total_bytes=1000, max_members=10)


def test_archive_with_too_many_members_is_rejected_whole():
    with pytest.raises(RejectedFile, match="more than the limit of 3"):
        SafeZip(zip_of({f"{i}.png": b"x" for i in range(5)}), max_member_bytes=100, max_total_bytes=1000, max_members=3)


def test_not_a_zip_is_rejected():
    with pytest.raises(RejectedFile, match=archives.NOT_A_ZIP):
        SafeZip(io.BytesIO(b"this is not a zip"), **LIMITS)


def test_mac_junk_is_ignored():
    safe = SafeZip(zip_of({"__MACOSX/._a.png": b"x", "a.png": png_bytes(1), "x/.DS_Store": b"x"}), **LIMITS)
    assert [m.path for m in safe.members] == ["a.png"]
