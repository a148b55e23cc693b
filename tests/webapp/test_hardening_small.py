"""Issue 13, finding 6 ("smaller ones"): project list pagination, reserved defect class names, the editor save's
payload limits, the login throttle, CSP and HSTS, file names a multipart parser drops, and parallel uploads."""

from __future__ import annotations

import pytest
from django.urls import reverse

from webapp.projects.models import Membership, Project, Role
from webapp.projects.views import PROJECTS_PER_PAGE

# --- project list pagination -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_project_list_is_paginated_with_a_fixed_number_of_queries(client, owner, django_assert_num_queries):
    total = PROJECTS_PER_PAGE * 2 + 7
    projects = Project.objects.bulk_create([Project(name=f"Part {i:03d}", created_by=owner) for i in range(total)])
    Membership.objects.bulk_create([Membership(project=p, user=owner, role=Role.OWNER) for p in projects])
    client.force_login(owner)

    pages = []
    for number in (1, 2, 3):
        # session, user, count, one page of projects with their counts: the same for every page and any total
        with django_assert_num_queries(4):
            pages.append(client.get(reverse("project_list"), {"page": number}).content.decode())
    rows = [page.count('<td><a href="/projects/') for page in pages]
    assert rows == [PROJECTS_PER_PAGE, PROJECTS_PER_PAGE, 7]
    assert "Part 000" in pages[0] and f"Part {PROJECTS_PER_PAGE:03d}" not in pages[0]
    assert f"Part {total - 1:03d}" in pages[2]
    assert 'href="?page=2"' in pages[0] and "Page 1 of 3" in pages[0]
    assert 'href="?page=2"' in pages[2] and 'href="?page=4"' not in pages[2]


# --- defect class names the MVTec layout gives a meaning to ------------------------------------------------------


def _mvtec_round_trip(project, owner, class_name: str):
    """A defect image with a mask of `class_name` (made directly, as a project from before the rule could have it),
    exported as MVTec and imported into a new project: (label, {class name: mask}) of the imported image."""
    import numpy as np

    from tests.webapp.conftest import png_bytes
    from webapp.annotations.services import LayerEdit, annotation_save
    from webapp.annotations.transfer import dataset_export, dataset_import
    from webapp.images.intake.ingest import IncomingFile, images_ingest
    from webapp.images.models import Annotation, Image
    from webapp.projects.models import DefectClass
    from webapp.projects.services import project_create

    defect_class = DefectClass.objects.create(project=project, name=class_name, colour="#ff0000")
    data = png_bytes(5, size=32)
    image = images_ingest(project=project, user=owner, files=[IncomingFile("part.png", lambda: data)]).results[0].image
    mask = np.zeros((32, 32), bool)
    mask[4:12, 6:20] = True
    annotation_save(
        image=image, user=owner, expected_version=0, label="defect", layers=[LayerEdit(defect_class.id, mask)]
    )
    Image.objects.filter(id=image.id).update(split="test")
    target = project_create(name="copy", owner=owner)
    report = dataset_import(
        project=target, user=owner, fileobj=dataset_export(project=project, fmt="mvtec"), archive_name="x.zip",
        fmt="mvtec",
    )  # fmt: skip
    assert [r.status for r in report.results] == ["added"], [(r.name, r.message) for r in report.results]
    copied = Image.objects.get(project=target)
    drawings = {a.defect_class.name: a for a in Annotation.objects.filter(image=copied).select_related("defect_class")}
    return copied.label, sorted(drawings)


@pytest.mark.parametrize("name", ["good", "Good", "train", "test", "validation", "ground_truth", "unlabelled"])
def test_mvtec_round_trip_keeps_a_defect_whose_class_is_named_like_a_folder(project, owner, name):
    label, classes = _mvtec_round_trip(project, owner, name)
    assert label == "defect" and len(classes) == 1, (label, classes)


@pytest.mark.parametrize("name", ["good", " Good ", "GOOD"])
def test_good_cannot_name_a_defect_class_when_created_renamed_or_imported(client, project, owner, name):
    from django.core.exceptions import ValidationError

    from webapp.projects.models import RESERVED_CLASS_NAME, DefectClass
    from webapp.projects.services import defect_class_create, defect_class_update

    message = RESERVED_CLASS_NAME.format(name=name.strip())
    with pytest.raises(ValidationError) as refused:
        defect_class_create(project=project, name=name)
    assert refused.value.messages == [message]
    scratch = defect_class_create(project=project, name="scratch")
    with pytest.raises(ValidationError):
        defect_class_update(defect_class=scratch, name=name, colour="#00ff00")
    assert DefectClass.objects.get(id=scratch.id).name == "scratch"
    # the settings page says why
    client.force_login(owner)
    response = client.post(reverse("defect_class_create", args=[project.public_id]), {"name": name}, follow=True)
    assert message in response.content.decode().replace("&ldquo;", "“").replace("&rdquo;", "”")
    assert list(DefectClass.objects.filter(project=project).values_list("name", flat=True)) == ["scratch"]


@pytest.mark.parametrize("fmt", ["coco", "lookout"])
def test_an_import_naming_a_good_class_is_refused_before_anything_is_taken_in(project, owner, fmt):
    import io
    import json
    import zipfile

    from PIL import Image as PILImage

    from tests.webapp.conftest import png_bytes
    from webapp.annotations.transfer import dataset_import
    from webapp.images.models import Image
    from webapp.projects.models import RESERVED_CLASS_NAME

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/a.png", png_bytes(1, size=32))
        if fmt == "coco":
            document = {
                "images": [{"id": 1, "file_name": "images/a.png", "width": 32, "height": 32}],
                "categories": [{"id": 1, "name": "Good"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
            }
            archive.writestr("annotations.json", json.dumps(document))
        else:
            mask = PILImage.new("RGB", (32, 32))
            mask.paste((255, 0, 0), (2, 2, 9, 9))
            mask_png = io.BytesIO()
            mask.save(mask_png, format="PNG")
            archive.writestr("masks/a.png", mask_png.getvalue())
            colours = {"1": {"class-name": "Good", "hex-color": "#ff0000"}}
            line = {
                "source-ref": "images/a.png",
                "anomaly-label": 1,
                "anomaly-mask-ref": "masks/a.png",
                "anomaly-mask-ref-metadata": {"internal-color-map": colours},
            }
            archive.writestr("train.manifest", json.dumps(line) + "\n")
    buffer.seek(0)
    report = dataset_import(project=project, user=owner, fileobj=buffer, archive_name="x.zip", fmt=fmt)
    assert [(r.status, r.message) for r in report.results] == [("rejected", RESERVED_CLASS_NAME.format(name="Good"))]
    assert not Image.objects.filter(project=project).exists()
    assert not project.defect_classes.exists()


# --- the annotation editor's save: shape and size checked before any work ---------------------------------------


@pytest.fixture
def editor_image(project, owner):
    from tests.webapp.conftest import png_bytes
    from webapp.images.intake.ingest import IncomingFile, images_ingest

    data = png_bytes(3, size=48)
    return images_ingest(project=project, user=owner, files=[IncomingFile("p.png", lambda: data)]).results[0].image


def _save(client, project, image, **fields):
    url = reverse("annotation_save", args=[project.public_id, image.public_id])
    return client.post(url, {"version": 0, "label": "defect", **fields})


def test_editor_save_refuses_deep_long_or_oversized_payloads_with_a_reason(client, project, owner, editor_image):
    from webapp.annotations import forms, services, views
    from webapp.images.models import Annotation, Image
    from webapp.projects.services import defect_class_create

    scratch = defect_class_create(project=project, name="scratch")
    client.force_login(owner)
    box = f"boxes_{scratch.id}"
    cases = {
        # nested far deeper than Python's parser recurses (was a 500)
        "deep": ({box: "[" * 20_000 + "]" * 20_000}, views.BOXES_NOT_A_LIST.format(id=scratch.id)),
        "very deep": (
            {box: "[" * 100_000 + "]" * 100_000},
            views.BOXES_TOO_LONG.format(id=scratch.id, length=200_000, limit=views.MAX_BOXES_CHARS),
        ),
        "not json": ({box: "[[1, 2"}, views.BOXES_NOT_A_LIST.format(id=scratch.id)),
        "too many boxes": (
            {box: str([[0, 0, 1, 1]] * (services.MAX_BOXES_PER_CLASS + 1))},
            services.TOO_MANY_BOXES.format(count=services.MAX_BOXES_PER_CLASS + 1, limit=services.MAX_BOXES_PER_CLASS),
        ),
        "outside the image": ({box: "[[0, 0, 49, 10]]"}, services.BAD_BOX.format(w=48, h=48, value=[0, 0, 49, 10])),
        "huge number": (
            {box: f"[[0, 0, {10**30}, 10]]"},
            services.BAD_BOX.format(w=48, h=48, value=[0, 0, 10**30, 10]),
        ),
    }
    for name, (fields, message) in cases.items():
        response = _save(client, project, editor_image, class_ids=str(scratch.id), **fields)
        assert (response.status_code, response.content.decode()) == (400, message), name
    # 50,000 repeated ids (65 s of saving the same layer again and again before): refused at once, by length
    repeated = ",".join([str(scratch.id)] * 50_000)
    response = _save(client, project, editor_image, class_ids=repeated)
    message = forms.CLASS_IDS_TOO_LONG.format(length=len(repeated), limit=forms.MAX_CLASS_IDS_CHARS)
    assert (response.status_code, response.content.decode()) == (400, message)
    # an unknown class is refused before its mask would be decoded
    response = _save(client, project, editor_image, class_ids=f"{scratch.id},999999")
    assert (response.status_code, response.content.decode()) == (400, services.UNKNOWN_CLASS.format(value=999999))
    assert Image.objects.get(id=editor_image.id).annotation_version == 0 and not Annotation.objects.exists()
    # a few repeats are one layer, saved once
    response = _save(client, project, editor_image, class_ids=f"{scratch.id},{scratch.id}", **{box: "[[1, 2, 30, 40]]"})
    assert response.status_code == 200 and response.json()["version"] == 1
    assert list(Annotation.objects.values_list("boxes", flat=True)) == [[[1, 2, 30, 40]]]


def test_annotation_save_refuses_a_class_twice_and_too_many_boxes(project, owner, editor_image):
    from django.core.exceptions import ValidationError

    from webapp.annotations.services import CLASS_TWICE, MAX_BOXES_PER_CLASS, LayerEdit, annotation_save
    from webapp.projects.services import defect_class_create

    scratch = defect_class_create(project=project, name="scratch")
    with pytest.raises(ValidationError) as twice:
        annotation_save(
            image=editor_image,
            user=owner,
            expected_version=0,
            label="defect",
            layers=[LayerEdit(scratch.id, None, [[0, 0, 2, 2]]), LayerEdit(scratch.id, None, [[0, 0, 3, 3]])],
        )
    assert twice.value.messages == [CLASS_TWICE.format(value=scratch.id)]
    with pytest.raises(ValidationError):
        annotation_save(
            image=editor_image,
            user=owner,
            expected_version=0,
            label="defect",
            layers=[LayerEdit(scratch.id, None, [[0, 0, 2, 2]] * (MAX_BOXES_PER_CLASS + 1))],
        )


# --- the sign-in throttle ---------------------------------------------------------------------------------------


@pytest.fixture
def shared_cache(settings, redis_server):
    """The cache on the session's real redis-server, emptied, as web processes share it in production."""
    from django.core.cache import cache

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_server.url.replace("/0", "/3"),
            "KEY_PREFIX": "test-throttle",
        }
    }
    cache.clear()
    yield cache
    cache.clear()


def _sign_in(client, username, password, address="10.0.0.7"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_wrong_passwords_are_slowed_down_then_the_real_user_gets_in_after_the_wait(client, owner, shared_cache):
    import time

    from webapp.accounts.forms import WRONG_PASSWORD
    from webapp.accounts.throttle import FREE_FAILURES, TOO_MANY_ATTEMPTS

    # the first few mistakes are answered as wrong passwords, at once
    for _ in range(FREE_FAILURES["user"] + 1):
        wrong = _sign_in(client, "olivia", "guess")
        assert wrong.status_code == 200 and WRONG_PASSWORD in wrong.content.decode().replace("&#x27;", "'")
    # then the next attempt must wait, and is refused without its password being looked at (even the right one)
    refused = _sign_in(client, "olivia", "pw-for-tests-1")
    assert refused.status_code == 429 and refused["Retry-After"] == "1"
    assert TOO_MANY_ATTEMPTS.format(seconds=1) in refused.content.decode()
    assert "_auth_user_id" not in client.session
    # someone else at another address is not held up by it
    other = _sign_in(client.__class__(), "someone", "guess", address="10.0.0.8")
    assert other.status_code == 200
    # after the wait the real user signs in, and their count starts again
    time.sleep(1.1)
    signed_in = _sign_in(client, "olivia", "pw-for-tests-1")
    assert signed_in.status_code == 302 and client.session["_auth_user_id"] == str(owner.id)
    client.logout()
    assert _sign_in(client, "OLIVIA", "guess").status_code == 200  # a free mistake again (same name, any case)


@pytest.mark.django_db
def test_waits_grow_per_user_name_and_an_address_spraying_names_is_slowed_too(client, owner, shared_cache):
    from django.test import Client

    from webapp.accounts import throttle

    free = throttle.FREE_FAILURES["user"]
    waits = []
    for attempt in range(free + 4):
        if attempt >= free:  # let the previous wait pass without sleeping: forget only the turn, not the count
            shared_cache.delete(f"{throttle._key('user', 'olivia')}:next")
        _sign_in(client, "olivia", "guess", address=f"10.1.0.{attempt}")
        waits.append(
            _sign_in(client, "olivia", "guess", address="10.2.0.1")["Retry-After"] if attempt >= free else None
        )
    assert waits[free:] == ["1", "2", "4", "8"]
    # one address trying many user names: free for a while, then refused for any name
    sprayer = Client()
    for number in range(throttle.FREE_FAILURES["address"] + 1):
        assert _sign_in(sprayer, f"user{number}", "guess", address="10.9.9.9").status_code == 200
    assert _sign_in(sprayer, "olivia", "pw-for-tests-1", address="10.9.9.9").status_code == 429
    # parallel attempts cannot share one turn: of many at once, one is let through
    shared_cache.delete(f"{throttle._key('address', '10.9.9.9')}:next")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: throttle.login_attempt_wait(username="x", address="10.9.9.9"), range(8)))
    assert sorted(outcomes)[:2] == [0, 2] and outcomes.count(0) == 1


@pytest.mark.django_db
def test_the_admin_login_is_throttled_too(client, shared_cache):
    from tests.webapp.conftest import make_user
    from webapp.accounts.throttle import FREE_FAILURES, TOO_MANY_ATTEMPTS

    make_user("root", is_staff=True, is_superuser=True)
    url = reverse("admin:login")
    for _ in range(FREE_FAILURES["user"] + 1):
        client.post(url, {"username": "root", "password": "guess"}, REMOTE_ADDR="10.3.0.1")
    refused = client.post(url, {"username": "root", "password": "pw-for-tests-1"}, REMOTE_ADDR="10.3.0.1")
    assert TOO_MANY_ATTEMPTS.format(seconds=1) in refused.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_sign_in_still_works_when_the_cache_is_down(client, owner, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
        }
    }
    assert _sign_in(client, "olivia", "guess").status_code == 200
    assert _sign_in(client, "olivia", "pw-for-tests-1").status_code == 302


def test_client_address_behind_the_tls_proxy_is_the_one_the_proxy_saw(rf, settings):
    from webapp.accounts.throttle import client_address

    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 192.168.5.6")
    settings.SECURE_PROXY_SSL_HEADER = None
    assert client_address(request) == "10.0.0.1"  # not behind a proxy: the header is the client's own words
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client_address(request) == "192.168.5.6"


# --- Content-Security-Policy and HSTS ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_html_pages_carry_the_content_security_policy_and_stored_files_keep_theirs(client, owner, project):
    from webapp.security import CONTENT_SECURITY_POLICY
    from webapp.serving import STORED_FILE_CSP

    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert client.get(reverse("login"))["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    client.force_login(owner)
    for name in ("project_settings", "image_grid", "dataset_transfer"):
        response = client.get(reverse(name, args=[project.public_id]))
        assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, name
        page = response.content.decode()
        assert " style=" not in page and "<script>" not in page and " onclick=" not in page, name
    export = client.get(reverse("dataset_export", args=[project.public_id, "coco"]))
    assert export["Content-Security-Policy"] == STORED_FILE_CSP


def test_hsts_is_off_by_default_and_set_from_kensa_hsts_seconds(settings, db):
    import os
    import subprocess
    import sys

    from django.test import Client

    def configured(**extra: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "KENSA_HSTS_SECONDS"}
        env.update({"DJANGO_SETTINGS_MODULE": "webapp.settings", "KENSA_SECRET_KEY": "x", **extra})
        code = "import django; django.setup(); from django.conf import settings; print(settings.SECURE_HSTS_SECONDS)"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout

    assert configured().strip() == "0"
    assert configured(KENSA_HSTS_SECONDS="31536000").strip() == "31536000"
    # SecurityMiddleware reads the setting when a handler starts: a new client per setting
    settings.SECURE_HSTS_SECONDS = 0
    assert "Strict-Transport-Security" not in Client().get(reverse("login"), secure=True)
    settings.SECURE_HSTS_SECONDS = 31536000
    client = Client()
    assert client.get(reverse("login"), secure=True)["Strict-Transport-Security"] == "max-age=31536000"
    assert "Strict-Transport-Security" not in client.get(reverse("login"))  # never over plain HTTP


# --- parallel uploads of one file --------------------------------------------------------------------------------


def _logged_in_session(live_server, user, path: str):
    """A requests session signed in as `user` with the CSRF cookie a page sets, like a browser tab."""
    import requests
    from django.conf import settings
    from django.test import Client

    django_client = Client()
    django_client.force_login(user)
    session = requests.Session()
    session.cookies.set(settings.SESSION_COOKIE_NAME, django_client.cookies[settings.SESSION_COOKIE_NAME].value)
    session.get(live_server.url + path).raise_for_status()
    session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
    return session


def test_parallel_uploads_of_one_file_keep_one_image_and_leave_no_orphan_file(live_server, project, owner, monkeypatch):
    import contextlib
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from django.conf import settings
    from django.core.files.storage import FileSystemStorage

    from tests.webapp.conftest import png_bytes
    from webapp.images.models import Image
    from webapp.images.splits import SplitAssigner

    # Both requests are held until each has found no image with this content (the check every upload makes), and
    # again at any existence check of the stored file: the worst interleaving, every time.
    passed_check, at_exists = threading.Barrier(2, timeout=10), threading.Barrier(2, timeout=3)
    assign = SplitAssigner.assign

    def assign_together(self, label):
        passed_check.wait()
        return assign(self, label)

    exists = FileSystemStorage.exists

    def exists_together(self, name):
        if "/images/" in name:
            with contextlib.suppress(threading.BrokenBarrierError):  # only one caller: nothing to line up
                at_exists.wait()
        return exists(self, name)

    monkeypatch.setattr(SplitAssigner, "assign", assign_together)
    monkeypatch.setattr(FileSystemStorage, "exists", exists_together)
    url = reverse("image_upload", args=[project.public_id])
    data = png_bytes(11, size=48)
    sessions = [_logged_in_session(live_server, owner, url) for _ in range(2)]

    def upload(session):
        return session.post(live_server.url + url, files={"files": ("same.png", data, "image/png")}).status_code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(upload, sessions)) == [200, 200]
    image = Image.objects.get(project=project)
    folder = Path(settings.MEDIA_ROOT) / f"projects/{project.public_id}/images"
    stored = sorted(p.relative_to(settings.MEDIA_ROOT).as_posix() for p in folder.iterdir())
    assert stored == [image.file.name]  # the linked file, and no other
    assert (Path(settings.MEDIA_ROOT) / image.file.name).read_bytes() == data


# --- file names and part headers Django's multipart reader drops ----------------------------------------------------


def _multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"kensaBoundary") -> bytes:
    """A multipart body from (header lines, content) pairs, written by hand so that headers can be anything."""
    body = b""
    for header, content in parts:
        body += b"--" + boundary + b"\r\n" + header + b"\r\n\r\n" + content + b"\r\n"
    return body + b"--" + boundary + b"--\r\n"


def _file_part(filename: bytes, content: bytes, extra: bytes = b"") -> tuple[bytes, bytes]:
    header = b'Content-Disposition: form-data; name="files"; filename="' + filename + b'"\r\nContent-Type: image/png'
    return header + extra, content


def test_every_uploaded_file_gets_a_result_line_and_good_files_are_kept(client, project, owner):
    from tests.webapp.conftest import png_bytes
    from webapp.images.intake import multipart
    from webapp.images.models import Image

    client.force_login(owner)
    long_name = b"x" * 3000 + b".png"  # past Django's 1 KiB part header: the whole request was refused
    parts = [
        _file_part(b"good.png", png_bytes(1)),
        _file_part("café.png".encode("latin-1"), png_bytes(2)),  # not UTF-8: was dropped without a word
        _file_part(b"", png_bytes(3)),  # no name: was dropped without a word
        _file_part(long_name, png_bytes(4)),
        _file_part(b"padded.png", png_bytes(5), b"\r\nX-Pad: " + b"p" * (multipart.MAX_PART_HEADER_BYTES + 10)),
        _file_part(b"", b""),  # an empty file input: nothing chosen, nothing to say
        _file_part(b"last.png", png_bytes(6)),
    ]
    response = client.post(
        reverse("image_upload", args=[project.public_id]),
        data=_multipart(parts),
        content_type="multipart/form-data; boundary=kensaBoundary",
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    report = response.context["report"]
    lines = [(r.name, r.status, r.message) for r in report.results]
    assert lines == [
        ("padded.png", "rejected", multipart.HEADER_TOO_LONG.format(limit=multipart.MAX_PART_HEADER_BYTES)),
        ("good.png", "added", ""),
        ("caf\N{REPLACEMENT CHARACTER}.png", "added", multipart.NAME_NOT_UTF8),
        ("unnamed-3", "added", multipart.NO_NAME.format(name="unnamed-3")),
        ("x" * 251 + ".png", "added", ""),  # stored names keep 255 characters and the extension
        ("last.png", "added", ""),
    ]
    assert Image.objects.filter(project=project).count() == 5
    page = response.content.decode()
    assert "padded.png" in page and "unnamed-3" in page


def test_the_upload_page_still_needs_its_csrf_token(project, owner):
    from django.test import Client

    from tests.webapp.conftest import png_bytes
    from webapp.images.models import Image

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    body = _multipart([_file_part(b"a.png", png_bytes(1))])
    url = reverse("image_upload", args=[project.public_id])
    response = client.post(url, data=body, content_type="multipart/form-data; boundary=kensaBoundary")
    assert response.status_code == 403 and not Image.objects.exists()


@pytest.mark.django_db
def test_api_tokens_are_out_of_reach_of_guessing(client, project, owner):
    """Why API tokens get no throttle: the secret is 256 random bits, so guessing is hopeless at any request rate,
    while a per-address throttle would let one misconfigured station behind a shared address lock the line's good
    clients out of predictions. This pins the premise: a known key id with a wrong secret is refused."""
    import base64
    import math

    from webapp.api.models import Scope
    from webapp.api.services import TOKEN_PREFIX, api_token_create

    token, secret = api_token_create(project=project, name="line", scopes=Scope.values, created_by=owner)
    key_id, _, random_part = secret.removeprefix(TOKEN_PREFIX).partition("_")
    assert key_id == token.key_id and len(base64.urlsafe_b64decode(random_part + "==")) * 8 >= 256
    assert math.log2(64) * len(random_part) >= 256
    url = reverse("api_versions", args=[project.public_id])
    guessed = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    assert client.get(url, headers={"Authorization": f"Bearer {guessed}"}).status_code == 401
    assert client.get(url, headers={"Authorization": f"Bearer {secret}"}).status_code == 200
