"""Security rules across every route (issue #8): a viewer's write is 403 and changes nothing; every form carries
a CSRF token and every write without one is 403 and changes nothing; the API is never reached through a session;
stored files are served only as the image type Kensa decoded (or a zip attachment), with nosniff and a sandboxing
Content-Security-Policy, and HTML, SVG or scripts disguised as images never get in.

Who may call which route (anonymous, strangers, each role, API tokens and scopes) is walked in test_access.py,
whose tables a test checks against every URL pattern; the tables of writes here are checked against those."""

from __future__ import annotations

import functools
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.apps import apps
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage

from ml.registry import create_model
from ml.types import Sample
from tests.webapp.conftest import encode, make_user, png_bytes
from tests.webapp.test_access import API_ROUTES, ROUTES, SITE_ROUTES, _url, route_target
from webapp.api.models import Scope
from webapp.api.services import api_token_create
from webapp.images.bulk import images_split_change
from webapp.images.models import Image
from webapp.images.services import annotation_mask_png, image_thumbnail_make
from webapp.projects.models import Project, Role
from webapp.samples import sample_project_create
from webapp.serving import STORED_FILE_CSP
from webapp.storage import stored_file_write
from webapp.training.artifacts import artifact_upload

OUR_APPS = {
    "accounts", "projects", "images", "training", "inference", "dashboard", "api", "annotations", "review",
    "robustness", "stations",
}  # fmt: skip
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/bmp": "BMP", "image/tiff": "TIFF"}
REPO = Path(__file__).resolve().parents[2]


def state() -> tuple[dict, list[str]]:
    """Every row of Kensa's tables and of the users table, and every stored file: what a write would change."""
    rows = {
        model._meta.label: list(model.objects.order_by("pk").values())
        for model in apps.get_models()
        if model._meta.app_label in OUR_APPS or model._meta.label == "auth.User"
    }
    media = Path(settings.MEDIA_ROOT)
    files = sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()) if media.exists() else []
    return rows, files


def _mvtec_zip() -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train/good/imported.png", png_bytes(31))
    return SimpleUploadedFile("dataset.zip", buffer.getvalue(), content_type="application/zip")


# Every POST route with the form a real user would send, built afresh for each request (an upload is read once).
# With the world below, the owner sending it changes something (checked), so a 403 is the rule refusing a write
# that would otherwise happen, not a form that was refused anyway.
WRITES = {
    "image_upload": lambda w: {"files": [SimpleUploadedFile("new.png", png_bytes(11))]},
    "image_bulk": lambda w: {"action": "label_defect", "image_ids": [w["image"].id]},
    "image_bulk_undo": lambda w: {"entry": w["bulk_change"].id},
    "image_detail": lambda w: {"label": "defect", "split": "test"},
    "splits_rebalance": lambda w: {},
    "validation_fill": lambda w: {},
    "split_change_undo": lambda w: {},
    "defect_class_create": lambda w: {"name": "stain", "colour": "#00aa00"},
    "defect_class_delete": lambda w: {},
    "project_rename": lambda w: {"name": "Renamed"},
    "project_delete": lambda w: {"confirm_name": w["project"].name},
    "member_set": lambda w: {"username": w["membership"].user.username, "role": Role.REVIEWER},
    "member_remove": lambda w: {},
    "train": lambda w: {"family": "gaussian"},
    "run_cancel": lambda w: {},
    "version_threshold_save": lambda w: {"t": "0.5"},
    "version_activate": lambda w: {},
    "trial": lambda w: {"files": [SimpleUploadedFile("try.png", png_bytes(12))]},
    "trial_add": lambda w: {"label": "good"},
    "annotation_save": lambda w: {"version": w["image"].annotation_version, "label": "defect", "class_ids": ""},
    "dataset_transfer": lambda w: {"format": "mvtec", "archive": _mvtec_zip()},
    "api_tokens": lambda w: {"name": "line 4", "scopes": [Scope.READ]},
    "api_token_revoke": lambda w: {},
    "review_policy_save": lambda w: {
        "enabled": "on",
        "band_low": "0.3",
        "band_high": "0.7",
        "audit_percent": "5",
        "split": "train",
    },
    "review_decide": lambda w: {"decision": "good"},
    "robustness_start": lambda w: {},
    "station_list": lambda w: {"name": "Line 2", "source_kind": "folder", "folder_path": str(w["inbox"])},
    "station_edit": lambda w: {"name": "Line 1b", "source_kind": "folder", "folder_path": str(w["inbox"])},
    "station_pause": lambda w: {"paused": "1"},
    "station_delete": lambda w: {},
    "sink_add": lambda w: {"kind": "webhook", "settings": '{"url": "http://127.0.0.1:9/hook"}'},
    "sink_remove": lambda w: {},
    "sink_retry": lambda w: {},
    # outside projects: any signed-in user may create a project; users are created by staff
    "project_list": lambda w: {"name": "New line"},
    "sample_create": lambda w: {},
    "user_list": lambda w: {"username": "newcomer", "password1": "Pw-for-tests-99", "password2": "Pw-for-tests-99"},
}
# Writes that, with this small world, legitimately change nothing even for the owner (each says why); the
# refusals are still checked, and their effect is tested where the data allows (test_training, test_dashboard).
NO_EFFECT_HERE = {
    "train": "one image is not enough to train: the page explains what is missing",
    "trial": "no active model version: the page says to train one first",
    "splits_rebalance": "one image: nothing to move",
    "validation_fill": "one test image: a stratified share of one is none",
    "robustness_start": "the one test image is unlabelled: the page says there is nothing to measure",
    "sink_retry": "no message of the sink is dead-lettered: nothing to send again (tested in test_stations)",
}
STAFF_WRITES = {"user_list"}
PROJECT_POSTS = sorted({name for name, _, method, _ in ROUTES if method == "post"})
SITE_POSTS = sorted({name for name, method, _ in SITE_ROUTES if method == "post"} - {"login", "logout"})


def test_the_write_tables_cover_every_post_route():
    """login and logout, the other two POST routes, have their own CSRF test below."""
    assert set(WRITES) == set(PROJECT_POSTS) | set(SITE_POSTS)
    assert set(NO_EFFECT_HERE) <= set(WRITES)


@pytest.fixture
def world(project, owner) -> dict:
    """test_access's target, plus a stored input for the trial prediction (which the review item also holds),
    so adding it to the dataset or deciding its review item has something to ingest."""
    target = route_target(project, owner)
    prediction = target["prediction"]
    prediction.input_file = stored_file_write(f"{prediction.model_version.artifact_prefix}/inputs/t.png", png_bytes(21))
    prediction.input_name = "tried.png"
    prediction.save(update_fields=["input_file", "input_name"])
    # the owner's last bulk change, which an undo can take back
    moved = images_split_change(project=project, images=[target["image"].id], split="test", user=owner)
    inbox = Path(settings.MEDIA_ROOT).parent / "inbox"  # a station's watched folder, outside the stored files
    inbox.mkdir(parents=True, exist_ok=True)
    return {
        **target,
        "project": project,
        "owner": owner,
        "bulk_change": moved.entry,
        "split_change": moved.entry,
        "inbox": inbox,
    }


def _needs(name: str) -> dict:
    return next(needs for route, needs, method, _ in ROUTES if route == name and method == "post")


def _write_url(name: str, w: dict) -> str:
    return reverse(name) if name in SITE_POSTS else _url(name, _needs(name), w["project"], w)


def _page_csrf(client: Client, url: str) -> tuple[str, str]:
    """The token a page's forms carry and the one its <body hx-headers> gives htmx and the editor's fetch."""
    html = client.get(url).content.decode()
    form = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    headers = json.loads(re.search(r"<body[^>]*hx-headers='([^']*)'", html).group(1))
    return form, headers["x-csrftoken"]


# --- a viewer's writes ------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", PROJECT_POSTS)
def test_viewer_write_is_403_and_changes_nothing(client, world, member_with, name):
    client.force_login(member_with(Role.VIEWER))
    before = state()
    response = client.post(_write_url(name, world), WRITES[name](world))
    assert response.status_code == 403
    assert state() == before


READ_ONLY_PROJECT_ROUTES = sorted({r[0] for r in ROUTES} - set(PROJECT_POSTS))


@pytest.mark.django_db
@pytest.mark.parametrize("name", READ_ONLY_PROJECT_ROUTES)
def test_viewer_posting_to_a_read_only_route_changes_nothing(client, world, member_with, name):
    """A page that only reads answers a POST as it answers a GET (or refuses it); it never writes."""
    needs = next(needs for route, needs, _, _ in ROUTES if route == name)
    client.force_login(member_with(Role.VIEWER))
    before = state()
    response = client.post(_url(name, needs, world["project"], world), {"name": "x", "label": "defect"})
    assert response.status_code < 500  # 404 too: some files of this world are not stored
    assert state() == before


# --- CSRF -------------------------------------------------------------------------------------------------------


def _writer(w: dict, name: str):
    if name in STAFF_WRITES:
        return make_user("root", is_staff=True)
    return w["owner"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(WRITES))
def test_write_without_a_csrf_token_is_403_and_changes_nothing(world, name):
    client = Client(enforce_csrf_checks=True)
    client.force_login(_writer(world, name))
    client.get(reverse("project_list"))  # the CSRF cookie is set: only the token in the request is missing
    before = state()
    response = client.post(_write_url(name, world), WRITES[name](world))
    assert response.status_code == 403
    assert "CSRF" in response.content.decode()
    assert state() == before


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(WRITES))
def test_the_same_write_with_the_pages_token_goes_through(world, monkeypatch, name):
    """Proves the 403 above is the missing token: the owner's request with the token a page hands out (the form
    field, or the hx-headers value that htmx and the editor send as X-CSRFToken) does its work."""
    monkeypatch.setattr(  # the real sample (110 images) is tested in test_images_views
        "webapp.projects.views.sample_project_create",
        functools.partial(sample_project_create, n_good=3, n_defect=1, size=32),
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(_writer(world, name))
    form_token, header_token = _page_csrf(client, reverse("project_list"))
    before = state()
    if name in ("annotation_save", "trial_add", "image_upload"):  # sent by editor.js, htmx and upload.js
        response = client.post(_write_url(name, world), WRITES[name](world), HTTP_X_CSRFTOKEN=header_token)
    else:
        response = client.post(_write_url(name, world), {**WRITES[name](world), "csrfmiddlewaretoken": form_token})
    assert response.status_code in (200, 302), response.content[:500]
    assert (state() != before) == (name not in NO_EFFECT_HERE)


@pytest.mark.django_db
def test_login_and_logout_need_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    form_token, _ = _page_csrf(client, reverse("login"))
    credentials = {"username": owner.username, "password": "pw-for-tests-1"}
    assert client.post(reverse("login"), credentials).status_code == 403
    assert "_auth_user_id" not in client.session
    assert client.post(reverse("login"), {**credentials, "csrfmiddlewaretoken": form_token}).status_code == 302
    assert client.session["_auth_user_id"] == str(owner.pk)
    form_token, _ = _page_csrf(client, reverse("project_list"))
    assert client.post(reverse("logout")).status_code == 403
    assert client.session["_auth_user_id"] == str(owner.pk)
    assert client.post(reverse("logout"), {"csrfmiddlewaretoken": form_token}).status_code == 302
    assert "_auth_user_id" not in client.session


def _post_forms_in_templates() -> dict[str, int]:
    """Template name -> number of <form method="post"> in it, for every template of the app (not the admin's)."""
    found = {}
    for path in sorted((REPO / "webapp").glob("**/templates/**/*.html")):
        text = path.read_text()
        forms = re.findall(r"<form\b[^>]*\bmethod=\"post\"[^>]*>(.*?)</form>", text, re.S | re.I)
        if forms:
            found[str(path).split("/templates/", 1)[1]] = len(forms)
            for body in forms:
                assert "{% csrf_token %}" in body, f"{path}: a POST form without {{% csrf_token %}}"
    return found


def test_every_post_form_in_the_templates_has_a_csrf_token():
    forms = _post_forms_in_templates()
    assert "base.html" in forms and "projects/settings.html" in forms  # the scan finds the forms it should


def test_every_script_that_posts_sends_the_csrf_token():
    for path in (REPO / "webapp" / "static" / "kensa").glob("*.js"):
        text = path.read_text()
        if re.search(r"fetch\(|XMLHttpRequest", text) and re.search(r"""["']POST["']""", text):
            assert "X-CSRFToken" in text, f"{path.name} posts without the X-CSRFToken header"


def _forms(html: str) -> list[tuple[str, str]]:
    return re.findall(r"<form\b([^>]*)>(.*?)</form>", html, re.S | re.I)


def _check_page(html: str, where: str) -> int:
    """Every POST form in the page carries the token; a whole page gives htmx the token for its requests."""
    checked = 0
    for attributes, body in _forms(html):
        if re.search(r"""\bmethod=["']?post""", attributes, re.I):
            assert re.search(r'name="csrfmiddlewaretoken" value="\w{32,}"', body), f"{where}: {attributes}"
            checked += 1
    if "<body" in html:
        headers = json.loads(re.search(r"<body[^>]*hx-headers='([^']*)'", html).group(1))
        assert len(headers["x-csrftoken"]) >= 32, where
    for element in re.findall(r"<[^>]*\bhx-(?:post|put|patch|delete)=[^>]*>", html):
        assert "<body" in html or element.startswith("<form"), f"{where}: an htmx write outside a page: {element}"
    return checked


@pytest.mark.django_db(transaction=True)
def test_every_rendered_form_carries_the_csrf_token(client, owner, trained_version):
    """Every GET page and htmx fragment, rendered with enough data that their forms show: every POST form has
    the token, and every template that holds a POST form was among those rendered."""
    from webapp.inference.models import Prediction, Purpose
    from webapp.review.models import ReviewItem
    from webapp.stations.models import Sink, Station
    from webapp.training.models import TrainingRun

    project = trained_version.project
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    client.force_login(owner)
    image = project.images.filter(annotations__isnull=False).first()
    client.post(reverse("trial", args=[project.public_id]), {"files": [SimpleUploadedFile("t.png", png_bytes(3))]})
    trial = Prediction.objects.get(purpose=Purpose.TRIAL, model_version=trained_version)
    target = {
        "image": image,
        "annotation": image.annotations.first(),
        "version": trained_version,
        "prediction": trained_version.predictions.exclude(purpose=Purpose.TRIAL).first(),
        "review_item": ReviewItem.objects.create(project=project, prediction=trial, reason="band"),
        "run": TrainingRun.objects.create(project=project, family="gaussian"),  # active: its cancel form shows
        "station": Station.objects.create(project=project, name="Line", source_settings={"path": "/x"}),
    }
    Sink.objects.create(station=target["station"], kind="webhook", settings={"url": "http://127.0.0.1:9/"})
    gets = [(name, needs) for name, needs, method, _ in ROUTES if method == "get" and name not in FILE_ROUTES]
    pages = [(name, _url(name, needs, project, target), {}) for name, needs in gets]
    pages += [(name, reverse(name), {}) for name, method, who in SITE_ROUTES if method == "get" and who != "public"]
    pages += [
        ("image_grid", reverse("image_grid", args=[project.public_id]), {"HTTP_HX_REQUEST": "true"}),
        ("run_detail", _url("run_detail", {"run": True}, project, target), {"HTTP_HX_REQUEST": "true"}),
    ]
    for hx_target in ("gallery", "threshold-panel"):
        url = _url("version_detail", {"version": True}, project, target)
        pages.append(("version_detail", url, {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": hx_target}))
    rendered, checked = set(), 0
    for name, url, headers in pages:
        response = client.get(url, **headers, follow=True)  # the model home redirects to the active version
        assert response.status_code == 200, (name, url)
        if response["Content-Type"].startswith("text/html"):
            checked += _check_page(response.content.decode(), f"{name} {headers}")
            rendered |= {t.name for t in response.templates if t.name}
    anonymous = Client().get(reverse("login"))
    checked += _check_page(anonymous.content.decode(), "login")
    rendered |= {t.name for t in anonymous.templates if t.name}
    assert checked >= 20
    assert set(_post_forms_in_templates()) - rendered == set(), "templates with POST forms not rendered here"


# --- the API is reached with tokens only ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "needs", "method", "scope"), API_ROUTES)
def test_a_signed_in_session_cannot_call_the_api(client, world, name, needs, method, scope):
    """The API is exempt from CSRF because it does not authenticate by cookie: a session alone is a 401."""
    client.force_login(world["owner"])
    before = state()
    data = {"image": io.BytesIO(png_bytes(41))} if method == "post" else {}
    response = getattr(client, method)(_url(name, needs, world["project"], world), data)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_token"
    assert state() == before


# --- stored files are served as images only ---------------------------------------------------------------------


def _grey_png(size: int = 16) -> bytes:
    return encode(np.linspace(0, 255, size * size).reshape(size, size).astype(np.uint8), "PNG")


@pytest.fixture
def stored(world, tmp_path) -> dict:
    """The world with every kind of stored file in place: thumbnail, mask, a prediction's maps and input."""
    project, image, prediction = world["project"], world["image"], world["prediction"]
    image_thumbnail_make(image=image)
    annotation = world["annotation"]
    annotation.mask = stored_file_write(
        f"projects/{project.public_id}/masks/m.png", annotation_mask_png(np.zeros((64, 64), bool))
    )
    annotation.save(update_fields=["mask"])
    prefix = prediction.model_version.artifact_prefix
    prediction.anomaly_map = stored_file_write(f"{prefix}/predictions/p_map.png", _grey_png())
    prediction.predicted_mask = stored_file_write(f"{prefix}/predictions/p_mask.png", _grey_png())
    prediction.save(update_fields=["anomaly_map", "predicted_mask"])
    _version_model_store(prediction.model_version, tmp_path)
    robustness = world["robustness_run"]  # a worst case's picture, as a finished run stores it
    picture = stored_file_write(f"{prefix}/robustness/{robustness.public_id}/0_before.png", _grey_png())
    robustness.report = {"worst_cases": [{"files": {"before": picture}}]}
    robustness.save(update_fields=["report"])
    _, secret = api_token_create(project=project, name="all", scopes=Scope.values, created_by=world["owner"])
    return {**world, "secret": secret}


def _version_model_store(version, tmp_path: Path) -> None:
    """A real (tiny, untrained backbone) Gaussian model as the version's artifact, so its bundle can be built."""
    model = create_model("gaussian", pretrained=False, image_size=64, grid=4)
    rng = np.random.default_rng(0)
    model.fit([Sample(image=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(4)])
    model.save(tmp_path / "model")
    version.artifact_files = artifact_upload(tmp_path / "model", version.artifact_prefix)
    version.save(update_fields=["artifact_files"])


FILE_ROUTES = {
    "image_original",
    "image_thumbnail",
    "annotation_mask",
    "prediction_heatmap",
    "prediction_mask",
    "prediction_input",
    "dataset_export",
    "version_bundle",
    "api_version_bundle",
    "api_prediction_map",
    "api_prediction_mask",
    "robustness_example",
}


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def assert_served_safely(response) -> bytes:
    """An image of the type it says (checked by decoding it) or a zip attachment; nosniff; sandboxing CSP."""
    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == STORED_FILE_CSP
    assert "sandbox" in STORED_FILE_CSP and "default-src 'none'" in STORED_FILE_CSP
    body = _body(response)
    content_type = response["Content-Type"]
    if content_type == "application/zip":
        assert response["Content-Disposition"].startswith("attachment;")
        assert zipfile.ZipFile(io.BytesIO(body)).testzip() is None
    else:
        assert content_type in IMAGE_TYPES
        assert PILImage.open(io.BytesIO(body)).format == IMAGE_TYPES[content_type]
    return body


@pytest.mark.django_db
def test_every_route_that_serves_a_file_sends_it_safely(client, stored):
    """Every GET route is walked as the owner (API routes with a token); whatever is neither a page nor JSON is
    a stored file and must be served safely. The walk finds exactly the routes known to serve files."""
    project = stored["project"]
    client.force_login(stored["owner"])
    serving = set()
    walk = [(name, needs, {}) for name, needs, method, _ in ROUTES if method == "get"]
    walk += [(name, needs, {"HTTP_AUTHORIZATION": f"Bearer {stored['secret']}"}) for name, needs, m, _ in API_ROUTES]
    for name, needs, headers in walk:
        if name in {r[0] for r in API_ROUTES if r[2] == "post"}:
            continue
        response = client.get(_url(name, needs, project, stored), **headers)
        assert response.status_code in (200, 302), (name, response.content[:300])
        # the audit log's CSV is a report made from database rows, not a stored file
        generated = ("text/html", "application/json", "text/csv")
        if response.status_code == 200 and not response["Content-Type"].startswith(generated):
            serving.add(name)
            assert_served_safely(response)
    assert serving == FILE_ROUTES


@pytest.mark.django_db
def test_api_map_of_a_prediction_stored_without_maps_is_a_json_404(client, world):
    _, secret = api_token_create(project=world["project"], name="r", scopes=[Scope.READ], created_by=world["owner"])
    url = _url("api_prediction_map", {"prediction": True}, world["project"], world)
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


SCRIPT = b"<script>alert(document.cookie)</script>"
DISGUISED = [
    ("evil.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">' + SCRIPT + b"</svg>"),
    ("evil.html", b"<!doctype html><html><body>" + SCRIPT + b"</body></html>"),
    ("x.png", SCRIPT),
    ("x.png", b"\x89PNG\r\n\x1a\n" + SCRIPT),  # a PNG signature, then no PNG
    ("evil.js", b"alert(document.cookie)"),
    ("x.jpg", b"\xff\xd8\xff\xe0" + SCRIPT),
]


def _gif_polyglot() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue() + SCRIPT  # a real GIF: refused for its format, whatever it carries


def _polyglot() -> bytes:
    """A valid PNG with an HTML page after its IEND chunk: it decodes, so it is kept, and must stay a PNG."""
    return png_bytes(51) + b"<!doctype html><html><body>" + SCRIPT + b"</body></html>"


@pytest.mark.django_db
def test_html_svg_and_scripts_disguised_as_images_are_refused_at_intake(client, project, owner):
    client.force_login(owner)
    uploads = [SimpleUploadedFile(name, data) for name, data in DISGUISED]
    uploads.append(SimpleUploadedFile("anim.gif", _gif_polyglot()))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for index, (name, data) in enumerate(DISGUISED):
            z.writestr(f"inside/{index}/{name}", data)
    uploads.append(SimpleUploadedFile("parts.zip", archive.getvalue()))
    response = client.post(reverse("image_upload", args=[project.public_id]), {"files": uploads})
    assert response.status_code == 200
    report = response.context["report"]
    assert report.added == 0 and report.rejected == 2 * len(DISGUISED) + 1
    assert not Image.objects.filter(project=project).exists()
    assert not list((Path(settings.MEDIA_ROOT) / "projects").glob("*/images/*"))


MARKUP_NAME = "<b onmouseover=alert(1)>page.htm"


@pytest.mark.django_db
def test_a_png_with_html_appended_is_kept_but_served_only_as_png(client, project, owner):
    """The type comes from the decoded format, never from the name the uploader gave."""
    client.force_login(owner)
    jpeg = encode(np.full((32, 32, 3), 90, np.uint8), "JPEG")
    uploads = [
        SimpleUploadedFile("evil.html", _polyglot(), content_type="text/html"),
        SimpleUploadedFile("evil.svg", jpeg, content_type="image/svg+xml"),
    ]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"inside/{MARKUP_NAME}", png_bytes(52) + SCRIPT)
    uploads.append(SimpleUploadedFile("parts.zip", archive.getvalue()))
    client.post(reverse("image_upload", args=[project.public_id]), {"files": uploads})
    served = {}
    for image in Image.objects.filter(project=project):
        assert Path(image.file.name).suffix in (".png", ".jpg")  # named by Kensa from the decoded format
        response = client.get(reverse("image_original", args=[project.public_id, image.public_id]))
        body = assert_served_safely(response)
        assert "Content-Disposition" not in response or ".htm" not in response["Content-Disposition"]
        served[image.original_name] = (response["Content-Type"], body)
    assert served["evil.html"] == ("image/png", _polyglot())
    assert served["evil.svg"] == ("image/jpeg", jpeg)
    assert served[MARKUP_NAME][0] == "image/png"
    # the names people gave are shown, escaped, on the pages
    grid = client.get(reverse("image_grid", args=[project.public_id])).content.decode()
    assert "&lt;b onmouseover=alert(1)&gt;page.htm" in grid and "<b onmouseover" not in grid


@pytest.mark.django_db(transaction=True)
def test_disguised_files_sent_to_the_trial_and_the_api_are_refused_or_served_as_png(client, owner, trained_version):
    from webapp.inference.models import Prediction, Purpose

    project = trained_version.project
    client.force_login(owner)
    files = [SimpleUploadedFile(name, data) for name, data in DISGUISED[:2]]
    files.append(SimpleUploadedFile("evil.svg", _polyglot()))
    client.post(reverse("trial", args=[project.public_id]), {"files": files})
    trial = Prediction.objects.get(purpose=Purpose.TRIAL, model_version=trained_version)  # only the polyglot
    assert Path(trial.input_file.name).suffix == ".png" and trial.input_name == "evil.svg"
    response = client.get(reverse("prediction_input", args=[project.public_id, trial.id]))
    assert response["Content-Type"] == "image/png" and assert_served_safely(response) == _polyglot()

    _, secret = api_token_create(project=project, name="cam", scopes=[Scope.PREDICT], created_by=owner)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    predict = reverse("api_predict", args=[project.public_id])
    refused = client.post(predict, {"image": SimpleUploadedFile("evil.svg", DISGUISED[0][1])}, **auth)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_image"
    html_body = client.post(predict, DISGUISED[1][1], content_type="text/html", **auth)
    assert html_body.status_code == 400  # not an image type, and no multipart image: refused
    body = client.post(predict + "?include=maps", {"image": SimpleUploadedFile("evil.html", _polyglot())}, **auth)
    assert body.status_code == 200
    for key in ("anomaly_map", "mask"):
        url = body.json()[key]
        assert assert_served_safely(client.get(url, **auth))[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.django_db
@pytest.mark.parametrize("name", ['Line "3"\r\nSet-Cookie: x=1', "../évil\n<b>"])
def test_dataset_export_of_a_project_with_odd_characters_in_its_name(client, owner, project, name):
    Project.objects.filter(id=project.id).update(name=name)
    client.force_login(owner)
    response = client.get(reverse("dataset_export", args=[project.public_id, "coco"]))
    assert_served_safely(response)
    assert "\n" not in response["Content-Disposition"] and "/" not in response["Content-Disposition"].split("=")[-1]
