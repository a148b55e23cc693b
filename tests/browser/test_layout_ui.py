"""In a real browser (Debian's Chromium here has no CJK font): the brand and the favicon show, a viewer sees no
tabs it cannot use and a styled 403 page with the reason, the upload says what the server is doing once every
byte is sent, and the review policy explains itself."""

from __future__ import annotations

import io
import threading
import zipfile

import pytest

from tests.browser.conftest import log_in
from tests.webapp.conftest import make_user, png_bytes
from webapp.images import views as image_views
from webapp.projects.models import Membership, Role

pytestmark = pytest.mark.browser


def test_brand_logo_and_favicon_load(page, live_server, owner):
    log_in(page, live_server, "olivia")
    logo = page.locator(".brand img.brand-logo")
    assert logo.evaluate("img => img.complete && img.naturalWidth > 0")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    response = page.request.get(live_server.url + icon)
    assert response.ok and response.headers["content-type"].startswith("image/svg+xml")


def test_viewer_sees_only_usable_tabs_and_a_styled_403(page, live_server, project):
    viewer = make_user("vera")
    Membership.objects.create(project=project, user=viewer, role=Role.VIEWER)
    log_in(page, live_server, "vera")
    page.goto(f"{live_server.url}/projects/{project.public_id}/")
    tabs = page.locator("nav.tabs a").all_inner_texts()
    assert tabs == ["Overview", "Images", "Import / export", "Model", "API", "Stations", "Settings"]
    page.goto(f"{live_server.url}/projects/{project.public_id}/images/upload/")
    assert page.inner_text("#error-reason") == "A viewer cannot edit data in this project."
    # the app's layout: the dark top bar with its navigation, not a bare unstyled page
    assert page.locator(".topbar").evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(29, 35, 40)"
    page.click(".topbar nav a:has-text('Projects')")
    page.wait_for_url(f"{live_server.url}/")


def test_upload_shows_the_server_stage_until_the_answer_arrives(page, live_server, owner, project, monkeypatch):
    # the server holds its answer until the test has seen what the page says meanwhile
    release = threading.Event()
    ingest = image_views.uploads_ingest

    def held(**kwargs):
        release.wait(20)
        return ingest(**kwargs)

    monkeypatch.setattr(image_views, "uploads_ingest", held)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(3):
            z.writestr(f"train/good/{i}.png", png_bytes(i))
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/images/upload/")
    page.wait_for_selector("#upload-form[data-ready='1']")
    page.set_input_files(
        "#files", files=[{"name": "parts.zip", "mimeType": "application/zip", "buffer": archive.getvalue()}]
    )
    page.click("#upload-button")
    try:
        page.wait_for_selector("#upload-status:has-text('Upload complete')")
        assert page.inner_text("#upload-status") == "Upload complete — the server is unpacking and checking parts.zip…"
        # the bar shows activity, not a finished 100 %
        assert page.locator("#upload-progress").get_attribute("value") is None
    finally:
        release.set()
    page.wait_for_selector("#upload-status:has-text('Done:')")
    assert page.inner_text("#upload-status").startswith("Done: 3 added")
    assert page.locator("#upload-progress").evaluate("bar => bar.value") == 100


def test_review_policy_form_explains_each_field(page, live_server, owner, project):
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/review/")
    policy = page.inner_text("#review-policy")
    assert "0.5 is the model's threshold" in policy
    assert "Scores in this band (both ends included) go to a person" in policy
    assert "to catch confident mistakes" in policy
