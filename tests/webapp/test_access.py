"""Every route: anonymous users go to the login page (the API answers 401), strangers get 404 (a token for another
project too), members whose role does not allow an action get 403 (a token without the scope too). A test checks
that every URL pattern has a row in one of the tables, so a route added without an access check fails."""

import pytest
from django.urls import URLResolver, get_resolver, reverse

from tests.webapp.conftest import make_user, png_bytes
from webapp.api.models import BatchJob, Scope
from webapp.api.services import api_token_create
from webapp.audit.models import AuditAction, AuditEntry
from webapp.images.intake.ingest import uploads_ingest
from webapp.images.models import Annotation, Image
from webapp.inference.models import Prediction, Purpose
from webapp.projects.access import Action, role_allows
from webapp.projects.models import DefectClass, Membership, Role
from webapp.review.models import ReviewItem
from webapp.robustness.models import RobustnessRun
from webapp.stations.models import Sink, Station
from webapp.training.models import ModelVersion, TrainingRun

# (url name, which objects the URL names, method, the action it needs)
ROUTES = [
    ("project_detail", {}, "get", Action.VIEW),
    ("project_settings", {}, "get", Action.VIEW),
    ("image_grid", {}, "get", Action.VIEW),
    ("image_detail", {"image": True}, "get", Action.VIEW),
    ("image_original", {"image": True}, "get", Action.VIEW),
    ("image_thumbnail", {"image": True}, "get", Action.VIEW),
    ("annotation_mask", {"annotation": True}, "get", Action.VIEW),
    ("image_upload", {}, "get", Action.EDIT_DATA),
    ("image_upload", {}, "post", Action.EDIT_DATA),
    ("image_bulk", {}, "post", Action.EDIT_DATA),
    ("image_bulk_undo", {}, "post", Action.EDIT_DATA),
    ("image_detail", {"image": True}, "post", Action.EDIT_DATA),
    ("splits_rebalance", {}, "post", Action.EDIT_DATA),
    ("defect_class_create", {}, "post", Action.EDIT_DATA),
    ("defect_class_delete", {"class": True}, "post", Action.EDIT_DATA),
    ("project_disk_use", {}, "get", Action.MANAGE),
    ("project_rename", {}, "post", Action.MANAGE),
    ("project_delete", {}, "get", Action.MANAGE),
    ("project_delete", {}, "post", Action.MANAGE),
    ("member_set", {}, "post", Action.MANAGE),
    ("member_remove", {"membership": True}, "post", Action.MANAGE),
    ("train", {}, "get", Action.VIEW),
    ("train", {}, "post", Action.TRAIN),
    ("run_detail", {"run": True}, "get", Action.VIEW),
    ("run_cancel", {"run": True}, "post", Action.TRAIN),
    ("validation_fill", {}, "post", Action.EDIT_DATA),
    ("split_change_undo", {"split_change": True}, "post", Action.EDIT_DATA),
    ("model_home", {}, "get", Action.VIEW),
    ("version_detail", {"version": True}, "get", Action.VIEW),
    ("version_compare", {}, "get", Action.VIEW),
    ("version_threshold_save", {"version": True}, "post", Action.TRAIN),
    ("version_bundle", {"version": True}, "get", Action.VIEW),
    ("version_activate", {"version": True}, "post", Action.TRAIN),
    ("prediction_heatmap", {"prediction": True}, "get", Action.VIEW),
    ("prediction_mask", {"prediction": True}, "get", Action.VIEW),
    ("prediction_input", {"prediction": True}, "get", Action.VIEW),
    ("trial", {}, "get", Action.VIEW),
    ("trial", {}, "post", Action.TRAIN),
    ("trial_add", {"prediction": True}, "post", Action.EDIT_DATA),
    ("annotation_editor", {"image": True}, "get", Action.VIEW),
    ("annotation_save", {"image": True}, "post", Action.ANNOTATE),
    ("dataset_transfer", {}, "get", Action.VIEW),
    ("dataset_transfer", {}, "post", Action.EDIT_DATA),
    ("dataset_export", {"fmt": "coco"}, "get", Action.VIEW),
    ("api_docs", {}, "get", Action.VIEW),
    ("api_tokens", {}, "get", Action.MANAGE),
    ("api_tokens", {}, "post", Action.MANAGE),
    ("api_token_revoke", {"token": True}, "post", Action.MANAGE),
    ("review_queue", {}, "get", Action.REVIEW),
    ("review_policy_save", {}, "post", Action.MANAGE),
    ("review_item", {"review_item": True}, "get", Action.VIEW),
    ("review_decide", {"review_item": True}, "post", Action.REVIEW),
    ("audit_log", {}, "get", Action.AUDIT),
    ("audit_export", {}, "get", Action.AUDIT),
    ("robustness_report", {"version": True}, "get", Action.VIEW),
    ("robustness_start", {"version": True}, "post", Action.TRAIN),
    ("robustness_example", {"robustness_run": True, "worst": (0, "before")}, "get", Action.VIEW),
    ("station_list", {}, "get", Action.VIEW),
    ("station_list", {}, "post", Action.MANAGE),
    ("station_detail", {"station": True}, "get", Action.VIEW),
    ("station_edit", {"station": True}, "post", Action.MANAGE),
    ("station_pause", {"station": True}, "post", Action.MANAGE),
    ("station_delete", {"station": True}, "post", Action.MANAGE),
    ("sink_add", {"station": True}, "post", Action.MANAGE),
    ("sink_remove", {"station": True, "sink": True}, "post", Action.MANAGE),
    ("sink_retry", {"station": True, "sink": True}, "post", Action.MANAGE),
]


# Routes outside any project: (url name, method, who may use it).
PUBLIC, SIGNED_IN, STAFF = "public", "signed in", "staff"
SITE_ROUTES = [
    ("login", "get", PUBLIC),
    ("login", "post", PUBLIC),
    ("api_openapi", "get", PUBLIC),
    ("logout", "post", SIGNED_IN),
    ("project_list", "get", SIGNED_IN),
    ("project_list", "post", SIGNED_IN),
    ("sample_create", "post", SIGNED_IN),
    ("user_list", "get", STAFF),
    ("user_list", "post", STAFF),
]

# The HTTP API (bearer tokens, never sessions): (url name, which objects, method, the scope it needs; None: any).
API_ROUTES = [
    ("api_projects", {}, "get", Scope.READ),
    ("api_versions", {}, "get", Scope.READ),
    ("api_version_bundle", {"version": True}, "get", Scope.READ),
    ("api_predict", {}, "post", Scope.PREDICT),
    ("api_batch_create", {}, "post", Scope.PREDICT),
    ("api_batch_detail", {"job": True}, "get", Scope.PREDICT),
    ("api_prediction_map", {"prediction": True}, "get", None),
    ("api_prediction_mask", {"prediction": True}, "get", None),
    ("station_trigger", {"station": True}, "post", Scope.PREDICT),
]


def route_target(project, owner) -> dict:
    """One of everything a project URL can name, so every route in the tables above can be called."""
    uploads_ingest(project=project, user=owner, uploads=[_file()])
    image = Image.objects.get(project=project)
    defect_class = DefectClass.objects.create(project=project, name="scratch", colour="#ff0000")
    other_class = DefectClass.objects.create(project=project, name="dent", colour="#0000ff")
    version = ModelVersion.objects.create(
        project=project, number=1, family="gaussian", artifact_prefix="v1", calibration={"threshold": 1.0, "scale": 1.0}
    )
    prediction = Prediction.objects.create(
        model_version=version, purpose=Purpose.TRIAL, raw_score=2.0, normalised_score=0.7, is_anomalous=True
    )
    token, _ = api_token_create(project=project, name="camera", scopes=["predict"], created_by=owner)
    review_item = ReviewItem.objects.create(project=project, prediction=prediction, reason="band")
    annotator = make_user("anna")
    return {
        "image": image,
        "class": defect_class,
        # not the owner's own membership: the owner may remove this one, so a write test can see it go
        "membership": Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR),
        "version": version,
        "prediction": prediction,
        "token": token,
        "review_item": review_item,
        # on another class: the class above stays deletable (a class with drawings is protected)
        "annotation": Annotation.objects.create(image=image, defect_class=other_class, author=owner),
        "run": TrainingRun.objects.create(project=project, family="gaussian"),
        "split_change": AuditEntry.objects.create(project=project, user=owner, action=AuditAction.SPLIT, target="1"),
        "job": BatchJob.objects.create(project=project, model_version=version, token=token, total=0),
        "robustness_run": RobustnessRun.objects.create(model_version=version),
        "station": (station := Station.objects.create(project=project, name="Line", source_settings={"path": "/x"})),
        "sink": Sink.objects.create(station=station, kind="webhook", settings={"url": "http://127.0.0.1:9/"}),
    }


@pytest.fixture
def target(project, owner):
    return route_target(project, owner)


def _file():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("a.png", png_bytes(1))


URL_KWARGS = {  # key in `needs` -> (URL keyword, how to get its value from the target)
    "image": ("image_id", lambda t: t["image"].public_id),
    "class": ("class_id", lambda t: t["class"].id),
    "membership": ("membership_id", lambda t: t["membership"].id),
    "version": ("version_id", lambda t: t["version"].public_id),
    "prediction": ("prediction_id", lambda t: t["prediction"].id),
    "review_item": ("item_id", lambda t: t["review_item"].id),
    "token": ("token_id", lambda t: t["token"].id),
    "annotation": ("annotation_id", lambda t: t["annotation"].id),
    "run": ("run_id", lambda t: t["run"].public_id),
    "split_change": ("entry_id", lambda t: t["split_change"].id),
    "job": ("job_id", lambda t: t["job"].public_id),
    "robustness_run": ("run_id", lambda t: t["robustness_run"].public_id),
    "station": ("station_id", lambda t: t["station"].public_id),
    "sink": ("sink_id", lambda t: t["sink"].id),
}


def _url(name, needs, project, target):
    kwargs = {"project_id": project.public_id}
    if name == "api_projects":
        kwargs = {}
    for key, value in needs.items():
        if key == "fmt":
            kwargs["fmt"] = value
        elif key == "worst":  # a worst case's picture: its index and kind
            kwargs["index"], kwargs["kind"] = value
        else:
            keyword, get = URL_KWARGS[key]
            kwargs[keyword] = get(target)
    return reverse(name, kwargs=kwargs)


def url_patterns(resolver: URLResolver | None = None, namespace: str = ""):
    """(namespace, name, route) of every URL pattern, through every include."""
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(n for n in (namespace, pattern.namespace or "") if n)
            yield from url_patterns(pattern, inner)
        else:
            yield namespace, pattern.name, str(pattern.pattern)


def test_every_url_pattern_is_in_an_access_table():
    """A route added without a row here fails: each row is walked as anonymous, stranger and every role."""
    patterns = list(url_patterns())
    admin = [p for p in patterns if p[0] == "admin"]
    assert admin, "Django admin's patterns are expected under the 'admin' namespace"
    ours = [p for p in patterns if p[0] != "admin"]
    assert all(namespace == "" for namespace, _, _ in ours), "only the admin is namespaced"
    assert [route for _, name, route in ours if not name] == [], "every route needs a name to be walked"
    covered = {r[0] for r in ROUTES} | {r[0] for r in SITE_ROUTES} | {r[0] for r in API_ROUTES}
    names = {name for _, name, _ in ours}
    assert names - covered == set(), "routes without an access check in the tables"
    assert covered - names == set(), "rows for routes that no longer exist"
    # project routes are exactly those with a project in the URL (so strangers and roles are walked)
    assert {r[0] for r in ROUTES} == {name for _, name, route in ours if "<uuid:project_id>" in route} - {
        r[0] for r in API_ROUTES
    }


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "needs", "method", "action"), ROUTES)
def test_anonymous_is_sent_to_login(client, project, target, name, needs, method, action):
    response = getattr(client, method)(_url(name, needs, project, target))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "needs", "method", "action"), ROUTES)
def test_non_members_get_404(client, project, target, outsider, name, needs, method, action):
    client.force_login(outsider)
    response = getattr(client, method)(_url(name, needs, project, target))
    assert response.status_code == 404


FORBIDDEN = [
    (role, *route)
    for role in (Role.VIEWER, Role.REVIEWER, Role.ANNOTATOR)
    for route in ROUTES
    if not role_allows(role, route[3])
]


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "name", "needs", "method", "action"), FORBIDDEN)
def test_roles_without_the_right_get_403(client, project, target, member_with, role, name, needs, method, action):
    client.force_login(member_with(role))
    response = getattr(client, method)(_url(name, needs, project, target))
    assert response.status_code == 403
    assert project.images.count() == 1 and project.defect_classes.count() == 2


@pytest.mark.django_db
def test_project_list_shows_only_my_projects(client, project, outsider):
    client.force_login(outsider)
    response = client.get(reverse("project_list"))
    assert response.status_code == 200
    assert "Brackets" not in response.content.decode()


@pytest.mark.django_db
def test_viewer_sees_the_project_but_no_edit_controls(client, project, target, member_with):
    client.force_login(member_with(Role.VIEWER))
    page = client.get(reverse("image_grid", kwargs={"project_id": project.public_id})).content.decode()
    assert "a.png" in page
    assert "Apply to selected" not in page


def test_user_admin_page_is_for_staff_only(client, db):
    client.force_login(make_user("plain"))
    assert client.get(reverse("user_list")).status_code == 403
    client.force_login(make_user("boss", is_staff=True))
    assert client.get(reverse("user_list")).status_code == 200


# What an anonymous or unprivileged POST to a site route tries to create.
SITE_POSTS = {
    "project_list": {"name": "Sneaky"},
    "user_list": {"username": "mallory", "password1": "Pw-for-tests-99", "password2": "Pw-for-tests-99"},
    "login": {"username": "olivia", "password": "wrong password"},
}


def _site_rows() -> tuple[int, int]:
    from django.contrib.auth.models import User

    from webapp.projects.models import Project

    return Project.objects.count(), User.objects.count()


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "method", "who"), [r for r in SITE_ROUTES if r[2] != PUBLIC])
def test_anonymous_is_sent_to_login_outside_projects(client, owner, name, method, who):
    before = _site_rows()
    response = getattr(client, method)(reverse(name), SITE_POSTS.get(name, {}) if method == "post" else {})
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    assert _site_rows() == before


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "method", "who"), [r for r in SITE_ROUTES if r[2] == PUBLIC])
def test_public_routes_answer_anonymous_users_without_signing_them_in(client, owner, name, method, who):
    response = getattr(client, method)(reverse(name), SITE_POSTS.get(name, {}) if method == "post" else {})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session  # a wrong password on the login page signs nobody in


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "method", "who"), [r for r in SITE_ROUTES if r[2] == STAFF])
def test_staff_routes_refuse_other_users(client, owner, name, method, who):
    client.force_login(owner)
    before = _site_rows()
    response = getattr(client, method)(reverse(name), SITE_POSTS.get(name, {}) if method == "post" else {})
    assert response.status_code == 403
    assert _site_rows() == before


@pytest.mark.django_db
def test_django_admin_needs_a_staff_login(client, owner):
    for path in ("/admin/", "/admin/auth/user/", "/admin/auth/user/add/"):
        client.logout()
        anonymous = client.get(path)
        assert anonymous.status_code == 302 and "login" in anonymous.url, path
        client.force_login(owner)
        plain = client.get(path)
        assert plain.status_code == 302 and plain.url.startswith(reverse("admin:login")), path
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    assert client.get("/admin/").status_code == 200


def _auth(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def _api_error(response, status: int) -> str:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]["code"]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "needs", "method", "scope"), API_ROUTES)
def test_api_without_a_token_is_401_json(client, project, target, name, needs, method, scope):
    response = getattr(client, method)(_url(name, needs, project, target))
    assert _api_error(response, 401) == "missing_token"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "needs", "method", "scope"), [r for r in API_ROUTES if r[0] != "api_projects"])
def test_api_token_for_another_project_is_404(client, project, target, owner, name, needs, method, scope):
    from webapp.projects.services import project_create

    other = project_create(name="Other line", owner=owner)
    _, secret = api_token_create(project=other, name="other", scopes=[Scope.READ, Scope.PREDICT], created_by=owner)
    response = getattr(client, method)(_url(name, needs, project, target), **_auth(secret))
    assert _api_error(response, 404) == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "needs", "method", "scope"), [r for r in API_ROUTES if r[3] is not None])
def test_api_token_without_the_scope_is_403(client, project, target, owner, name, needs, method, scope):
    others = [s for s in Scope.values if s != scope]
    _, secret = api_token_create(project=project, name="narrow", scopes=others, created_by=owner)
    response = getattr(client, method)(_url(name, needs, project, target), **_auth(secret))
    assert _api_error(response, 403) == "wrong_scope"


@pytest.mark.django_db
def test_reviewers_may_correct_masks_in_the_editor_but_viewers_may_not(client, project, target, member_with):
    url = reverse("annotation_save", kwargs={"project_id": project.public_id, "image_id": target["image"].public_id})
    client.force_login(member_with(Role.REVIEWER))
    assert client.post(url, {}).status_code == 400  # past the permission check: the empty form is refused
    client.force_login(member_with(Role.VIEWER))
    assert client.post(url, {}).status_code == 403
