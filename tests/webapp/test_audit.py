"""The review counter counts only decisions that changed the dataset, and the project's audit log records who
changed what (labels, splits, masks, review decisions, thresholds, members, the active version), with filters,
CSV export and access for members who change things."""

from __future__ import annotations

import csv
import datetime as dt
import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from tests.webapp.conftest import png_bytes
from tests.webapp.test_bulk import make_images
from webapp.annotations.services import LayerEdit, annotation_save
from webapp.audit.models import AuditAction, AuditEntry
from webapp.dashboard.services import model_version_threshold_save
from webapp.images import bulk
from webapp.images.intake.ingest import uploads_ingest
from webapp.images.models import Image, Label
from webapp.inference.models import Prediction, Purpose
from webapp.projects import services as project_services
from webapp.projects.models import Role
from webapp.projects.services import defect_class_create
from webapp.review import selectors, services
from webapp.review.models import Decision
from webapp.storage import stored_file_write
from webapp.training.models import ModelVersion
from webapp.training.services import model_version_activate


def make_version(project, number: int = 1, *, active: bool = True) -> ModelVersion:
    return ModelVersion.objects.create(
        project=project,
        number=number,
        family="gaussian",
        artifact_prefix=f"v{number}",
        calibration={"threshold": 1.0, "scale": 1.0},
        is_active=active,
    )


def routed(version, *, image=None, data: bytes | None = None, score: float = 0.45):
    """A trial prediction (of a dataset image, or of uploaded bytes) sent to review."""
    prediction = Prediction.objects.create(
        model_version=version,
        image=image,
        purpose=Purpose.TRIAL,
        raw_score=score,
        normalised_score=score,
        is_anomalous=score >= 0.5,
        input_file=stored_file_write(f"trials/{score}-{timezone.now().timestamp()}.png", data) if data else "",
        input_name="tried.png" if data else "",
    )
    return services.prediction_route_for_review(prediction=prediction)


@pytest.mark.django_db
def test_review_counter_counts_only_decisions_that_changed_the_dataset(client, project, owner, monkeypatch):
    # given four dataset images, three of them already labelled good, and an active model
    uploads_ingest(
        project=project, user=owner, uploads=[SimpleUploadedFile(f"{i}.png", png_bytes(i)) for i in range(1, 5)]
    )
    images = list(Image.objects.filter(project=project).order_by("original_name"))
    Image.objects.filter(id__in=[i.id for i in images[:3]]).update(label=Label.GOOD)
    version = make_version(project)
    services.review_policy_save(project=project, user=owner, enabled=True, band_low=0, band_high=1, audit_percent=0)
    # when reviewers confirm the three good images as good (nothing new for the dataset) ...
    for image in images[:3]:
        services.review_item_decide(item=routed(version, image=image), decision=Decision.GOOD, user=owner)
    # ... and confirm a tried copy of one of them (same bytes: a duplicate, already there with that label) ...
    copy = routed(version, data=png_bytes(1))
    services.review_item_decide(item=copy, decision=Decision.GOOD, user=owner)
    # ... label the unlabelled one defect, and add a new image as good
    services.review_item_decide(item=routed(version, image=images[3], score=0.55), decision=Decision.DEFECT, user=owner)
    services.review_item_decide(item=routed(version, data=png_bytes(9)), decision=Decision.GOOD, user=owner)
    # then six decisions were made, but only two changed the dataset, and that is what the card says
    summary = selectors.review_summary(project=project)
    assert summary.decided_last_hour == 6
    assert summary.reviewed_since_training == 2
    monkeypatch.setattr(selectors, "RETRAIN_AFTER", 2)
    client.force_login(owner)
    page = client.get(reverse("project_detail", args=[project.public_id])).content.decode()
    assert "<strong>2 review decisions</strong>" in page
    # and each decision is in the project's audit log with what it did to the dataset
    logged = AuditEntry.objects.filter(project=project, action=AuditAction.REVIEW).order_by("id")
    assert [e.after["dataset"] for e in logged] == ["unchanged"] * 4 + ["relabelled", "added"]


@pytest.mark.django_db
def test_every_kind_of_change_is_logged_with_who_before_and_after(project, owner, outsider):
    images = make_images(project, owner, 3)
    scratch = defect_class_create(project=project, name="scratch")
    # labels and splits (bulk), masks (the editor), members, the threshold, the active version
    bulk.images_label_change(project=project, images=[i.id for i in images], label=Label.DEFECT, user=owner)
    bulk.images_split_change(project=project, images=[images[0].id], split="test", user=owner)
    image = Image.objects.get(id=images[1].id)
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    version = annotation_save(
        image=image,
        user=owner,
        expected_version=image.annotation_version,
        label=Label.DEFECT,
        layers=[LayerEdit(defect_class_id=scratch.id, mask=mask)],
    )
    # an autosave moments later continues the same sitting: one entry, extended
    annotation_save(
        image=image,
        user=owner,
        expected_version=version,
        label=Label.DEFECT,
        layers=[LayerEdit(defect_class_id=scratch.id, mask=mask, boxes=[[0, 0, 2, 2]])],
    )
    project_services.membership_set(project=project, username="oscar", role=Role.VIEWER, actor=owner)
    project_services.membership_set(project=project, username="oscar", role=Role.ANNOTATOR, actor=owner)
    first, second = make_version(project, 1), make_version(project, 2, active=False)
    model_version_threshold_save(version=first, threshold=0.7, user=owner)
    model_version_activate(version=second, user=owner)
    entries = {(e.action, e.target): e for e in AuditEntry.objects.filter(project=project)}
    # then
    assert entries[(AuditAction.LABEL, "3 images")].after == {"label": "defect"}
    assert entries[(AuditAction.SPLIT, "part-000.png")].before == {"split": {"train": 1}}
    annotation = entries[(AuditAction.ANNOTATION, "part-001.png")]
    assert AuditEntry.objects.filter(action=AuditAction.ANNOTATION).count() == 1
    assert annotation.before["drawings"] == {} and annotation.after["drawings"] == {"scratch": "mask + 1 box(es)"}
    roles = AuditEntry.objects.filter(action=AuditAction.MEMBER_SET).order_by("id")
    assert [(e.before["role"], e.after["role"]) for e in roles] == [(None, "viewer"), ("viewer", "annotator")]
    threshold = entries[(AuditAction.THRESHOLD, "version 1")]
    assert threshold.before == {"threshold": 1.0, "from": "calibration"}
    assert threshold.after == {"threshold": 0.7, "from": "chosen"}
    activation = entries[(AuditAction.VERSION_ACTIVATE, "version 2")]
    assert (activation.before, activation.after) == ({"active_version": 1}, {"active_version": 2})
    assert {e.user for e in AuditEntry.objects.filter(project=project)} == {owner}


@pytest.mark.django_db
def test_audit_page_filters_and_csv_export(client, project, owner, member_with):
    annotator = member_with(Role.ANNOTATOR)
    images = make_images(project, owner, 2)
    bulk.images_label_change(project=project, images=[images[0].id], label=Label.GOOD, user=owner)
    bulk.images_label_change(project=project, images=[images[1].id], label=Label.DEFECT, user=annotator)
    bulk.images_split_change(project=project, images=[images[1].id], split="test", user=annotator)
    old = AuditEntry.objects.get(action=AuditAction.LABEL, user=owner)
    AuditEntry.objects.filter(id=old.id).update(created_at=timezone.now() - dt.timedelta(days=10))
    client.force_login(owner)
    url = reverse("audit_log", args=[project.public_id])

    def shown(**query) -> list[str]:
        page = client.get(url, query)
        assert page.status_code == 200
        return [f"{e.user.username} {e.action}" for e in page.context["page"]]

    assert shown() == ["annotator-user split", "annotator-user label", "olivia label"]
    assert shown(user=annotator.id) == ["annotator-user split", "annotator-user label"]
    assert shown(action="label") == ["annotator-user label", "olivia label"]
    today = timezone.localdate()
    assert shown(date_from=(today - dt.timedelta(days=1)).isoformat()) == [
        "annotator-user split",
        "annotator-user label",
    ]
    assert shown(date_to=(today - dt.timedelta(days=5)).isoformat()) == ["olivia label"]
    # the export follows the same filters
    response = client.get(reverse("audit_export", args=[project.public_id]), {"action": "label"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["time", "user", "action", "target", "before", "after", "undone"]
    assert [(r[1], r[2], r[3]) for r in rows[1:]] == [
        ("annotator-user", "label", "part-001.png"),
        ("olivia", "label", "part-000.png"),
    ]
    assert rows[1][4] == '{"label": {"unlabelled": 1}}' and rows[1][5] == '{"label": "defect"}'


@pytest.mark.django_db
def test_csv_export_neutralises_spreadsheet_formulas(client, project, owner):
    (image,) = make_images(project, owner, 1)
    Image.objects.filter(id=image.id).update(original_name="=HYPERLINK(1)")
    bulk.images_label_change(project=project, images=[image.id], label=Label.GOOD, user=owner)
    client.force_login(owner)
    body = b"".join(client.get(reverse("audit_export", args=[project.public_id])).streaming_content).decode()
    assert "'=HYPERLINK(1)" in body


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "allowed"), [(Role.ANNOTATOR, True), (Role.REVIEWER, True), (Role.VIEWER, False)])
def test_audit_log_is_for_members_who_change_things(client, project, member_with, role, allowed, outsider):
    client.force_login(member_with(role))
    for name in ("audit_log", "audit_export"):
        assert client.get(reverse(name, args=[project.public_id])).status_code == (200 if allowed else 403)
    client.force_login(outsider)
    assert client.get(reverse("audit_log", args=[project.public_id])).status_code == 404


@pytest.mark.django_db
def test_image_page_edits_are_logged_and_a_drawn_image_cannot_be_called_good(client, project, owner):
    from webapp.annotations.services import GOOD_WITH_DRAWINGS
    from webapp.images.models import Annotation

    scratch = defect_class_create(project=project, name="scratch")
    drawn, plain = make_images(project, owner, 2, label=Label.DEFECT)
    Annotation.objects.create(image=drawn, defect_class=scratch, boxes=[[0, 0, 2, 2]])
    client.force_login(owner)
    response = client.post(
        reverse("image_detail", args=[project.public_id, drawn.public_id]), {"label": "good", "split": "train"}
    )
    assert GOOD_WITH_DRAWINGS in [str(m) for m in response.wsgi_request._messages]
    assert Image.objects.get(id=drawn.id).label == Label.DEFECT
    client.post(reverse("image_detail", args=[project.public_id, plain.public_id]), {"label": "good", "split": "test"})
    logged = [(e.action, e.target, e.after) for e in AuditEntry.objects.filter(project=project).order_by("id")]
    assert logged == [
        (AuditAction.LABEL, "part-001.png", {"label": "good"}),
        (AuditAction.SPLIT, "part-001.png", {"split": "test"}),
    ]
