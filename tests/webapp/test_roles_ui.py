"""What each role sees: only the tabs and controls it can use; 403, 404 and 500 pages in the app's layout with a
plain reason; the members form offering the least privilege first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import path, reverse

from tests.webapp.conftest import ROLES
from webapp.projects.models import Role
from webapp.urls import urlpatterns as app_urlpatterns

TABS_BY_ROLE = {
    Role.OWNER: {
        "Overview", "Images", "Upload", "Import / export", "Train", "Model", "Try it", "API", "Review", "Audit log",
        "Stations", "Settings",
    },
    Role.ANNOTATOR: {
        "Overview", "Images", "Upload", "Import / export", "Train", "Model", "Try it", "API", "Audit log", "Stations",
        "Settings",
    },
    Role.REVIEWER: {
        "Overview", "Images", "Import / export", "Model", "API", "Review", "Audit log", "Stations", "Settings",
    },
    Role.VIEWER: {"Overview", "Images", "Import / export", "Model", "API", "Stations", "Settings"},
}  # fmt: skip


def tabs(html: str) -> set[str]:
    nav = re.search(r'<nav class="tabs">(.*?)</nav>', html, re.S).group(1)
    return set(re.findall(r">([^<]+)</a>", nav))


def user_with(role, project, owner, member_with):
    return owner if role == Role.OWNER else member_with(role)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_only_the_tabs_it_can_use_and_every_tab_opens(client, role, project, owner, member_with):
    client.force_login(user_with(role, project, owner, member_with))
    for page in ("project_detail", "image_grid", "model_home", "project_settings"):
        html = client.get(reverse(page, args=[project.public_id])).content.decode()
        assert tabs(html) == TABS_BY_ROLE[role], page
    # every tab shown opens for this role (none leads to a 403)
    html = client.get(reverse("project_detail", args=[project.public_id])).content.decode()
    for href in re.findall(r'<nav class="tabs">.*?</nav>', html, re.S)[0].split('href="')[1:]:
        assert client.get(href.split('"')[0]).status_code == 200, href


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_controls_a_role_cannot_use_are_hidden(client, role, project, owner, member_with):
    client.force_login(user_with(role, project, owner, member_with))
    settings_page = client.get(reverse("project_settings", args=[project.public_id])).content.decode()
    assert (reverse("member_set", args=[project.public_id]) in settings_page) == (role == Role.OWNER)
    assert (reverse("defect_class_create", args=[project.public_id]) in settings_page) == (
        role in (Role.OWNER, Role.ANNOTATOR)
    )
    api_page = client.get(reverse("api_docs", args=[project.public_id])).content.decode()
    assert (reverse("api_tokens", args=[project.public_id]) in api_page) == (role == Role.OWNER)
    grid = client.get(reverse("image_grid", args=[project.public_id])).content.decode()
    assert ('id="apply-filter"' in grid) == (role in (Role.OWNER, Role.ANNOTATOR)) or "No images match" in grid


@pytest.mark.django_db
def test_403_page_has_the_layout_navigation_and_the_reason(client, project, member_with):
    client.force_login(member_with(Role.VIEWER))
    response = client.get(reverse("image_upload", args=[project.public_id]))
    html = response.content.decode()
    assert response.status_code == 403
    assert 'class="topbar"' in html and "kensa/kensa.css" in html and "kensa/logo.svg" in html
    assert 'href="/"' in html  # a way back
    assert "A viewer cannot edit data in this project." in html
    assert 'data-status="403"' in html


@pytest.mark.django_db
def test_404_page_has_the_layout_and_says_why(client, owner, outsider, project):
    client.force_login(outsider)  # not a member: the project's existence is not revealed
    response = client.get(reverse("project_detail", args=[project.public_id]))
    html = response.content.decode()
    assert response.status_code == 404
    assert 'class="topbar"' in html and 'data-status="404"' in html
    assert "belongs to a project you are not a member of" in html
    assert client.get("/no/such/page/").status_code == 404


def _boom(request):
    raise RuntimeError("the database fell over")


urlpatterns = [*app_urlpatterns, path("boom/", _boom)]


@pytest.mark.django_db
@pytest.mark.urls("tests.webapp.test_roles_ui")
def test_500_page_has_the_layout_and_needs_neither_request_context_nor_database(owner, django_assert_num_queries):
    client = Client(raise_request_exception=False)
    client.force_login(owner)
    response = client.get("/boom/")
    html = response.content.decode()
    assert response.status_code == 500
    assert 'class="topbar"' in html and "kensa/kensa.css" in html and 'data-status="500"' in html
    assert "Something went wrong on the server" in html
    # the handler renders without a request: no context processor, no database query
    from django.test import RequestFactory
    from django.views.defaults import server_error

    with django_assert_num_queries(0):
        assert b'data-status="500"' in server_error(RequestFactory().get("/")).content


@pytest.mark.django_db
def test_members_form_defaults_to_viewer(client, owner, project):
    client.force_login(owner)
    html = client.get(reverse("project_settings", args=[project.public_id])).content.decode()
    select = re.search(r'<select name="role"[^>]*>(.*?)</select>', html, re.S).group(1)
    assert re.search(r'<option value="viewer" selected>', select)
    assert 'value="owner" selected' not in select


@pytest.mark.django_db
def test_base_layout_links_the_favicon_and_the_logo_as_static_files(client, owner):
    client.force_login(owner)
    html = client.get("/").content.decode()
    icon = re.search(r'<link rel="icon" href="([^"]+)"', html).group(1)
    logo = re.search(r'<img src="([^"]+logo\.svg)"', html).group(1)
    for url in (icon, logo):
        # served by WhiteNoise from the collected static files in production; here straight from the app folder
        found = finders.find(
            url.removeprefix(settings.STATIC_URL if settings.STATIC_URL.startswith("/") else "/static/")
        )
        assert found, url
        body = Path(found).read_bytes()
        # outlines, not text: the brand must not depend on a CJK font being installed
        assert body.startswith(b"<svg") and b"<path" in body and b"<text" not in body


@pytest.mark.django_db
def test_a_form_without_its_csrf_token_gets_the_apps_403_page(owner, project):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post(reverse("project_rename", args=[project.public_id]), {"name": "Renamed"})
    html = response.content.decode()
    assert response.status_code == 403
    assert 'class="topbar"' in html and "security token (CSRF)" in html and "Nothing was changed." in html
    project.refresh_from_db()
    assert project.name == "Brackets"
