"""Bad input at volume (issue #8): malformed uploads, mixed with good ones, posted through the real upload view.

For every batch: no server error; one result line per file (per zip member) naming it, with the reason for each
rejection; Image rows and stored files for exactly the good images; thumbnails queued for exactly those.
The generator is tests/webapp/malformed.py.
"""

from __future__ import annotations

import hashlib
import html
import io
import random
import re
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from tests.webapp import malformed
from tests.webapp.malformed import ADDED, IGNORED, REJECTED, Upload
from webapp.images.intake.archives import SafeZip
from webapp.images.intake.decoding import RejectedFile, inspect_image
from webapp.images.models import Image

BATCH = 50  # files per request, well under DATA_UPLOAD_MAX_NUMBER_FILES
GOOD_PER_BATCH = 4
ROW = re.compile(r'<tr class="result (\w+)"><td>(.*?)</td><td>\w+</td><td>(.*?)</td></tr>', re.S)
SUMMARY = re.compile(r'data-added="(\d+)" data-duplicates="(\d+)" data-rejected="(\d+)"')


def media_files(root: Path) -> dict[str, str]:
    """Every file under MEDIA_ROOT (relative path -> SHA-256 of its bytes)."""
    if not root.exists():
        return {}
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file()
    }


def result_rows(content: str) -> dict[str, tuple[str, str]]:
    """name -> (status, message) from the upload report; every name appears once."""
    rows = [tuple(html.unescape(part) for part in row) for row in ROW.findall(content)]
    names = [name for _, name, _ in rows]
    assert len(names) == len(set(names)), "a name was reported twice"
    return {name: (status, message) for status, name, message in rows}


def batches(bad: list[Upload], good: list[Upload]) -> list[list[Upload]]:
    """Requests of BATCH files: bad ones with a few good plain images shuffled in (seeded)."""
    rng = random.Random(8)
    per_batch = BATCH - GOOD_PER_BATCH
    out = []
    for start in range(0, len(bad), per_batch):
        index = start // per_batch
        batch = bad[start : start + per_batch] + good[index * GOOD_PER_BATCH : (index + 1) * GOOD_PER_BATCH]
        rng.shuffle(batch)
        out.append(batch)
    return out


@pytest.fixture
def thumbnail_calls(monkeypatch) -> list[list[int]]:
    """The image ids each thumbnail task would get (no worker runs here)."""
    from webapp.images.tasks import thumbnails_make_task

    calls: list[list[int]] = []
    monkeypatch.setattr(thumbnails_make_task, "delay", lambda ids: calls.append(list(ids)))
    return calls


def run_bad_input(count, *, seed, client, owner, project, settings, thumbnail_calls, capture_on_commit):
    for name, expected in [
        ("KENSA_MAX_IMAGE_BYTES", malformed.MAX_IMAGE_BYTES),
        ("KENSA_MAX_IMAGE_PIXELS", malformed.MAX_IMAGE_PIXELS),
        ("KENSA_MAX_ARCHIVE_BYTES", malformed.MAX_ARCHIVE_BYTES),
        ("KENSA_MAX_ARCHIVE_MEMBERS", malformed.MAX_ARCHIVE_MEMBERS),
    ]:
        assert getattr(settings, name) == expected, f"the generator sizes its bombs for {name}={expected}"
    assert settings.DATA_UPLOAD_MAX_NUMBER_FILES >= BATCH

    bad = malformed.malformed_uploads(count, seed=seed)
    if count >= len(malformed.KINDS):
        assert {u.kind for u in bad} == set(malformed.KINDS)
    good = malformed.good_uploads(len(bad) // (BATCH - GOOD_PER_BATCH) * GOOD_PER_BATCH + GOOD_PER_BATCH, seed=seed)
    client.force_login(owner)
    url = reverse("image_upload", args=[project.public_id])
    media = Path(settings.MEDIA_ROOT)
    images_folder = f"projects/{project.public_id}/images/"
    kept: dict[str, str] = {}  # sha256 -> stored extension, for every good image so far
    seen_kinds: dict[str, set[str]] = {}

    for batch in batches(bad, good):
        before = media_files(media)
        with capture_on_commit(execute=True):
            response = client.post(
                url, {"files": [SimpleUploadedFile(u.name, u.data) for u in batch]}, HTTP_HX_REQUEST="true"
            )
        assert response.status_code == 200
        content = response.content.decode()
        rows = result_rows(content)

        expected = {name: e for u in batch for name, e in u.expect.items() if e.status != IGNORED}
        ignored = {name for u in batch for name, e in u.expect.items() if e.status == IGNORED}
        # one line per file (or zip member), none for anything else
        assert set(rows) == set(expected), {
            "missing": sorted(set(expected) - set(rows)),
            "unexpected": sorted(set(rows) - set(expected)),
        }
        assert not ignored & set(rows)
        added_here: dict[str, str] = {}
        for u in batch:
            for name, e in u.expect.items():
                if e.status == IGNORED:
                    continue
                status, message = rows[name]
                where = f"{u.kind}: {name}"
                if e.status == REJECTED:
                    assert status == REJECTED, f"{where} was {status}: {message}"
                    assert any(reason in message for reason in e.reasons), f"{where}: {message!r} not in {e.reasons}"
                else:
                    assert status == ADDED, f"{where} was {status}: {message}"
                    added_here[e.sha256] = e.extension
                seen_kinds.setdefault(u.kind, set()).add(status)
        summary = SUMMARY.search(content)
        assert summary and tuple(map(int, summary.groups())) == (len(added_here), 0, len(rows) - len(added_here))

        # the database holds exactly the good images, stored byte for byte, named by content
        kept.update(added_here)
        images = Image.objects.filter(project=project)
        assert sorted(images.values_list("sha256", flat=True)) == sorted(kept)
        for image in images.filter(sha256__in=added_here):
            assert image.file.name == f"{images_folder}{image.sha256}{added_here[image.sha256]}"
            assert image.size_bytes > 0 and image.width > 0 and image.height > 0

        # and the storage: a new file for each good image, nothing else; nothing older changed
        after = media_files(media)
        assert {k: v for k, v in after.items() if k in before} == before
        new = {path: sha for path, sha in after.items() if path not in before}
        assert new == {f"{images_folder}{sha}{ext}": sha for sha, ext in added_here.items()}

        # thumbnails are queued for the good images only, after the commit
        queued = [i for call in thumbnail_calls for i in call]
        assert sorted(queued) == sorted(images.filter(sha256__in=added_here).values_list("id", flat=True))
        thumbnail_calls.clear()

    assert Image.objects.filter(project=project).count() == len(kept)
    assert media_files(media).keys() == {f"{images_folder}{sha}{ext}" for sha, ext in kept.items()}
    # every kind got its lines checked; misnamed images are taken by content, plain bad files never
    assert set(seen_kinds) == {u.kind for u in bad} | {"good"}
    assert seen_kinds["good"] == {ADDED}
    assert seen_kinds.get("misnamed_image", {ADDED}) == {ADDED}
    plain_bad = {u.kind for u in bad if not u.name.lower().endswith(".zip") and u.kind != "misnamed_image"}
    assert all(seen_kinds[kind] == {REJECTED} for kind in plain_bad)
    return kept


# Pillow warns (and Kensa then refuses) on headers claiming too many pixels and on broken TIFF tags.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning", "ignore:Corrupt EXIF data:UserWarning")
@pytest.mark.django_db
def test_1000_malformed_uploads_store_nothing_and_keep_the_good_ones(
    client, owner, project, settings, thumbnail_calls, django_capture_on_commit_callbacks
):
    """About 20 s here (2 shared cores), so it runs with the rest of the suite."""
    kept = run_bad_input(
        1000,
        seed=8,
        client=client,
        owner=owner,
        project=project,
        settings=settings,
        thumbnail_calls=thumbnail_calls,
        capture_on_commit=django_capture_on_commit_callbacks,
    )
    assert len(kept) > 100


@pytest.mark.django_db
def test_a_request_over_the_file_count_limit_is_refused_whole(client, owner, project, settings):
    # given one file more than Django takes in one request, a good image among them
    client.force_login(owner)
    files = [SimpleUploadedFile(f"{i}.png", b"") for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES)]
    files.append(SimpleUploadedFile("good.png", malformed.image_bytes(random.Random(1), "PNG")))
    # when
    response = client.post(reverse("image_upload", args=[project.public_id]), {"files": files})
    # then a client error, not a server error, and nothing stored
    assert response.status_code == 400
    assert not Image.objects.filter(project=project).exists()
    assert media_files(Path(settings.MEDIA_ROOT)) == {}


def test_damaged_zips_only_ever_raise_rejected_file():
    """Random damage to zips of every compression method: reading them fails only as RejectedFile."""
    outcomes = {"opened": 0, "refused": 0, "read": 0, "damaged": 0}
    for seed in range(400):
        rng = random.Random(seed)
        method = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
        members = [malformed.member(f"{k}.png", malformed.image_bytes(rng, "PNG"), method=method) for k in range(2)]
        data = bytearray(malformed.build_zip(members))
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        for _ in range(rng.choice([1, 3, 20])):
            if data:
                data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        try:
            archive = SafeZip(io.BytesIO(bytes(data)), max_member_bytes=10**8, max_total_bytes=10**9, max_members=9)
        except RejectedFile:
            outcomes["refused"] += 1
            continue
        outcomes["opened"] += 1
        for path in archive.readable_paths:
            try:
                archive.read(path)
                outcomes["read"] += 1
            except RejectedFile:
                outcomes["damaged"] += 1
    assert all(outcomes.values()), outcomes


@pytest.mark.parametrize("damage", ["cut_tail", "idat_checksum", "checksum_after_idat"])
def test_png_damaged_after_its_pixels_is_refused(damage):
    """Pillow stops at the last pixel and checks no checksum from IDAT on; Kensa reads every chunk to IEND."""
    rng = random.Random(damage)
    data = malformed.image_bytes(rng, "PNG", low=16, high=32)
    inspect_image(data, max_pixels=10**6, max_bytes=10**6)  # whole, it is fine
    iend = data.rindex(b"IEND") - 4
    if damage == "cut_tail":
        broken = [data[:cut] for cut in range(iend - 8, len(data))]  # Adler-32, IDAT checksum, IEND
    elif damage == "idat_checksum":
        broken = [data[: iend - 1] + bytes([data[iend - 1] ^ 0xFF]) + data[iend:]]
    else:
        text = b"\0\0\0\x04tEXta\0bc" + b"\0\0\0\0"  # a chunk after the pixels with a wrong checksum
        broken = [data[:iend] + text + data[iend:]]
    for png in broken:
        PILImage.open(io.BytesIO(png)).load()  # Pillow alone takes it
        with pytest.raises(RejectedFile, match="truncated or corrupt"):
            inspect_image(png, max_pixels=10**6, max_bytes=10**6)


def test_jpeg_cut_before_its_end_marker_is_refused():
    # given a JPEG whose every pixel Pillow decodes with its 2-byte end marker cut off (a few percent of them)
    for seed in range(200):
        data = malformed.image_bytes(random.Random(seed), "JPEG", low=16, high=96)
        try:
            PILImage.open(io.BytesIO(data[:-2])).load()
            break
        except OSError:
            continue
    else:
        pytest.fail("no JPEG that Pillow decodes without its end marker")
    inspect_image(data, max_pixels=10**6, max_bytes=10**6)
    # when / then
    for cut in (1, 2):
        with pytest.raises(RejectedFile, match="truncated or corrupt"):
            inspect_image(data[:-cut], max_pixels=10**6, max_bytes=10**6)
