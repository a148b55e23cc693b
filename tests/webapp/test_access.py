"""Every project page: anonymous users go to the login page, strangers get 404, viewers cannot change anything."""

import pytest
from django.urls import reverse

from tests.webapp.conftest import png_bytes
from webapp.api.services import api_token_create
from webapp.images.intake.ingest import uploads_ingest
from webapp.images.models import Image
from webapp.projects.access import Action, role_allows
from webapp.projects.models import DefectClass, Role
from webapp.review.models import ReviewItem
from webapp.training.models import ModelVersion, Prediction, Purpose

# (url name, which objects the URL names, method, the action it needs)
ROUTES = [
    ("project_detail", {}, "get", Action.VIEW),
    ("project_settings", {}, "get", Action.VIEW),
    ("image_grid", {}, "get", Action.VIEW),
    ("image_detail", {"image": True}, "get", Action.VIEW),
    ("image_original", {"image": True}, "get", Action.VIEW),
    ("image_upload", {}, "get", Action.EDIT_DATA),
    ("image_upload", {}, "post", Action.EDIT_DATA),
    ("image_bulk", {}, "post", Action.EDIT_DATA),
    ("image_detail", {"image": True}, "post", Action.EDIT_DATA),
    ("splits_rebalance", {}, "post", Action.EDIT_DATA),
    ("defect_class_create", {}, "post", Action.EDIT_DATA),
    ("defect_class_delete", {"class": True}, "post", Action.EDIT_DATA),
    ("project_rename", {}, "post", Action.MANAGE),
    ("project_delete", {}, "get", Action.MANAGE),
    ("project_delete", {}, "post", Action.MANAGE),
    ("member_set", {}, "post", Action.MANAGE),
    ("member_remove", {"membership": True}, "post", Action.MANAGE),
    ("model_home", {}, "get", Action.VIEW),
    ("version_detail", {"version": True}, "get", Action.VIEW),
    ("version_compare", {}, "get", Action.VIEW),
    ("version_threshold_save", {"version": True}, "post", Action.TRAIN),
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
]


@pytest.fixture
def target(project, owner):
    uploads_ingest(project=project, user=owner, uploads=[_file()])
    image = Image.objects.get(project=project)
    defect_class = DefectClass.objects.create(project=project, name="scratch", colour="#ff0000")
    version = ModelVersion.objects.create(
        project=project, number=1, family="gaussian", artifact_prefix="v1", calibration={"threshold": 1.0, "scale": 1.0}
    )
    prediction = Prediction.objects.create(
        model_version=version, purpose=Purpose.TRIAL, raw_score=2.0, normalised_score=0.7, is_anomalous=True
    )
    token, _ = api_token_create(project=project, name="camera", scopes=["predict"], created_by=owner)
    review_item = ReviewItem.objects.create(project=project, prediction=prediction, reason="band")
    return {
        "image": image,
        "class": defect_class,
        "membership": project.memberships.get(user=owner),
        "version": version,
        "prediction": prediction,
        "token": token,
        "review_item": review_item,
    }


def _file():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("a.png", png_bytes(1))


def _url(name, needs, project, target):
    kwargs = {"project_id": project.public_id}
    if needs.get("image"):
        kwargs["image_id"] = target["image"].public_id
    if needs.get("class"):
        kwargs["class_id"] = target["class"].id
    if needs.get("membership"):
        kwargs["membership_id"] = target["membership"].id
    if needs.get("fmt"):
        kwargs["fmt"] = needs["fmt"]
    if needs.get("version"):
        kwargs["version_id"] = target["version"].public_id
    if needs.get("prediction"):
        kwargs["prediction_id"] = target["prediction"].id
    if needs.get("review_item"):
        kwargs["item_id"] = target["review_item"].id
    if needs.get("token"):
        kwargs["token_id"] = target["token"].id
    return reverse(name, kwargs=kwargs)


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
    assert project.images.count() == 1 and project.defect_classes.count() == 1


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
    from tests.webapp.conftest import make_user

    client.force_login(make_user("plain"))
    assert client.get(reverse("user_list")).status_code == 302
    client.force_login(make_user("boss", is_staff=True))
    assert client.get(reverse("user_list")).status_code == 200


@pytest.mark.django_db
def test_reviewers_may_correct_masks_in_the_editor_but_viewers_may_not(client, project, target, member_with):
    url = reverse("annotation_save", kwargs={"project_id": project.public_id, "image_id": target["image"].public_id})
    client.force_login(member_with(Role.REVIEWER))
    assert client.post(url, {}).status_code == 400  # past the permission check: the empty form is refused
    client.force_login(member_with(Role.VIEWER))
    assert client.post(url, {}).status_code == 403
