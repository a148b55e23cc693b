"""Human review: the routing rule, the policy hook on every trial/API/batch prediction, two reviewers racing, the
audit trail, and decided images reaching the next training run."""

from __future__ import annotations

import io
import random

import pytest
from django.urls import reverse

from ml.synthetic import make_image
from tests.webapp.conftest import encode, png_bytes
from webapp.api import services as api_services
from webapp.api.models import Scope
from webapp.images.intake.ingest import uploads_ingest
from webapp.images.models import Annotation, Image, Label, Source, Split
from webapp.inference.models import Prediction, Purpose
from webapp.inference.services import predict_bytes
from webapp.projects.models import Role
from webapp.review import selectors, services
from webapp.review.models import Decision, ItemStatus, Reason, ReviewDecision, ReviewItem
from webapp.review.routing import AUDIT, BAND, review_reason
from webapp.training.models import ModelVersion

# --- the routing rule --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "expected"),
    [(0.4, BAND), (0.6, BAND), (0.5, BAND), (0.3999, None), (0.6001, None), (0.0, None), (1.0, None)],
)
def test_band_edges_are_inclusive(score, expected):
    reason = review_reason(normalised_score=score, band_low=0.4, band_high=0.6, audit_percent=0, rng=random.Random(1))
    assert reason == expected


def test_audit_share_zero_never_hundred_always_and_seedable():
    def reasons(percent, seed=7):
        rng = random.Random(seed)
        return [
            review_reason(normalised_score=0.9, band_low=0.4, band_high=0.6, audit_percent=percent, rng=rng)
            for _ in range(2000)
        ]

    assert set(reasons(0)) == {None}
    assert set(reasons(100)) == {AUDIT}
    some = reasons(25)
    assert 400 < some.count(AUDIT) < 600
    assert some == reasons(25), "the same seed routes the same predictions"


# --- the policy and the hook -------------------------------------------------------------------------------------


@pytest.fixture
def version(project):
    return ModelVersion.objects.create(
        project=project, number=1, family="gaussian", artifact_prefix="v1", calibration={"threshold": 1.0, "scale": 1.0}
    )


def _prediction(version, score, *, purpose=Purpose.BATCH, image=None):
    return Prediction.objects.create(
        model_version=version,
        image=image,
        purpose=purpose,
        raw_score=score,
        normalised_score=score,
        is_anomalous=score >= 0.5,
    )


def test_policy_is_off_by_default_and_never_routes_test_predictions(project, owner, version):
    assert services.prediction_route_for_review(prediction=_prediction(version, 0.5)) is None
    services.review_policy_save(project=project, user=owner, enabled=True, band_low=0.4, band_high=0.6, audit_percent=0)
    assert services.prediction_route_for_review(prediction=_prediction(version, 0.5, purpose=Purpose.TEST)) is None
    item = services.prediction_route_for_review(prediction=_prediction(version, 0.45, purpose=Purpose.TRIAL))
    assert item.reason == Reason.BAND and item.status == ItemStatus.PENDING
    assert services.prediction_route_for_review(prediction=_prediction(version, 0.9)) is None


def test_policy_rejects_a_bad_band_and_non_managers(project, owner, member_with):
    from django.core.exceptions import PermissionDenied, ValidationError

    with pytest.raises(ValidationError):
        services.review_policy_save(
            project=project, user=owner, enabled=True, band_low=0.7, band_high=0.6, audit_percent=0
        )
    with pytest.raises(ValidationError):
        services.review_policy_save(
            project=project, user=owner, enabled=True, band_low=0.4, band_high=0.6, audit_percent=101
        )
    with pytest.raises(PermissionDenied):
        services.review_policy_save(
            project=project, user=member_with(Role.REVIEWER), enabled=True, band_low=0, band_high=1, audit_percent=0
        )


@pytest.fixture
def dataset_item(project, owner, version):
    """A pending review item on a batch prediction of an image already in the dataset (unlabelled)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    uploads_ingest(project=project, user=owner, uploads=[SimpleUploadedFile("part.png", png_bytes(3))])
    image = Image.objects.get(project=project)
    services.review_policy_save(project=project, user=owner, enabled=True, band_low=0.4, band_high=0.6, audit_percent=0)
    return services.prediction_route_for_review(prediction=_prediction(version, 0.55, image=image))


def test_two_reviewers_never_decide_the_same_item(project, owner, member_with, dataset_item):
    reviewer = member_with(Role.REVIEWER)
    # both open the same item (stale copies in memory, as two browser tabs would have)
    first, second = ReviewItem.objects.get(id=dataset_item.id), ReviewItem.objects.get(id=dataset_item.id)
    services.review_item_decide(item=first, decision=Decision.GOOD, user=owner)
    with pytest.raises(services.ReviewConflict, match="Someone else decided"):
        services.review_item_decide(item=second, decision=Decision.DEFECT, user=reviewer)
    # one decision, the first reviewer's, in the audit trail and in the dataset
    decision = ReviewDecision.objects.get(item=dataset_item)
    assert decision.reviewer == owner and decision.decision == Decision.GOOD
    assert decision.before == {
        "model_call": "defect",
        "normalised_score": 0.55,
        "model_version": 1,
        "image_label": "unlabelled",
    }
    assert decision.after["label"] == Label.GOOD and decision.agrees_with_model is False
    image = Image.objects.get(project=project)
    assert image.label == Label.GOOD and image.annotation_version == 1


def test_a_claimed_item_is_not_shown_to_a_second_reviewer(project, owner, member_with, dataset_item):
    reviewer = member_with(Role.REVIEWER)
    assert selectors.next_item_for(project=project, user=owner) == dataset_item
    assert services.review_item_claim(item=dataset_item, user=owner)
    assert selectors.next_item_for(project=project, user=reviewer) is None
    assert not services.review_item_claim(item=dataset_item, user=reviewer)


def test_queue_page_decides_and_the_loser_gets_a_clear_message(client, project, owner, member_with, dataset_item):
    reviewer = member_with(Role.REVIEWER)
    client.force_login(reviewer)
    queue = reverse("review_queue", kwargs={"project_id": project.public_id})
    page = client.get(queue).content.decode()
    assert 'id="review-item"' in page and 'data-key="a"' in page
    decide = reverse("review_decide", kwargs={"project_id": project.public_id, "item_id": dataset_item.id})
    response = client.post(decide, {"decision": "accept"})
    assert response.status_code == 302 and f"last={dataset_item.id}" in response.url
    client.force_login(owner)
    page = client.post(decide, {"decision": "good"}, follow=True).content.decode()
    assert services.ALREADY_DECIDED in page
    # the item shows its audit trail
    item_page = client.get(reverse("review_item", kwargs={"project_id": project.public_id, "item_id": dataset_item.id}))
    assert "reviewer-user" in item_page.content.decode() and "Model is right" in item_page.content.decode()
    assert Image.objects.get(project=project).label == Label.DEFECT  # accept of a defect call


def test_filters_by_model_call(project, owner, version):
    services.review_policy_save(project=project, user=owner, enabled=True, band_low=0.4, band_high=0.6, audit_percent=0)
    good = services.prediction_route_for_review(prediction=_prediction(version, 0.45))
    defect = services.prediction_route_for_review(prediction=_prediction(version, 0.55))
    assert list(selectors.pending_items(project=project, call="good")) == [good]
    assert list(selectors.pending_items(project=project, call="defect")) == [defect]
    assert selectors.next_item_for(project=project, user=owner, after=good.id) == defect


# --- end to end with a trained model -----------------------------------------------------------------------------


def test_reviewed_trials_join_the_next_training_and_the_api_says_review(client, trained_version, owner, monkeypatch):
    from webapp.training import services as training_services
    from webapp.training.execution import training_data

    project = trained_version.project
    # with review off, the API says review: false
    secret = api_services.api_token_create(project=project, name="cam", scopes=[Scope.PREDICT], created_by=owner)[1]
    url = reverse("api_predict", kwargs={"project_id": project.public_id})
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    body = client.post(url, {"image": io.BytesIO(png_bytes(901, size=96))}, **headers).json()
    assert body["review"] is False
    # with every score in the band, each API and trial prediction is routed and the API says so
    services.review_policy_save(project=project, user=owner, enabled=True, band_low=0, band_high=1, audit_percent=0)
    body = client.post(url, {"image": io.BytesIO(png_bytes(902, size=96))}, **headers).json()
    assert body["review"] is True
    api_item = ReviewItem.objects.get(prediction_id=body["prediction_id"])
    defect = make_image(4242, size=96, defect="stain").image
    trial = predict_bytes(version=trained_version, data=encode(defect, "PNG"), purpose=Purpose.TRIAL, name="t.png")
    assert trial.review and trial.prediction.is_anomalous
    # reviewers decide: the good API image as good, the defect trial accepted with the model's mask
    services.review_item_decide(item=api_item, decision=Decision.GOOD, user=owner)
    services.review_item_decide(item=trial.prediction.review_item, decision=Decision.ACCEPT, user=owner)
    good_image = ReviewItem.objects.get(id=api_item.id).image
    defect_image = Image.objects.get(predictions=trial.prediction)
    assert (good_image.label, good_image.split, good_image.source) == (Label.GOOD, Split.TRAIN, Source.REVIEW)
    assert (defect_image.label, defect_image.split) == (Label.DEFECT, Split.TRAIN)
    annotation = Annotation.objects.get(image=defect_image)
    assert annotation.source == Source.REVIEW and annotation.mask.name
    assert ReviewDecision.objects.get(item__image=defect_image).after["mask_from_model"] is True
    # the next training run fits on the reviewed good image
    run = training_services.training_run_request(project=project, requested_by=owner, family="gaussian")
    fit, _, _, _ = training_data(run)
    assert good_image.id in {i.id for i in fit.images}
    # the project page counts them and, past the bar, suggests retraining
    summary = selectors.review_summary(project=project)
    assert summary.queue_size == 0 and summary.decided_last_hour == 2 and summary.agreement == pytest.approx(1.0)
    monkeypatch.setattr(selectors, "RETRAIN_AFTER", 2)
    client.force_login(owner)
    page = client.get(reverse("project_detail", kwargs={"project_id": project.public_id})).content.decode()
    assert 'id="retrain-suggestion"' in page and "2 review decisions" in page
    # the trial page marks the tried image as reviewed
    trials = client.get(reverse("trial", kwargs={"project_id": project.public_id})).content.decode()
    assert "Sent for review: model is right" in trials


def test_mask_key_decides_defect_and_opens_the_editor(client, project, owner, dataset_item):
    client.force_login(owner)
    decide = reverse("review_decide", kwargs={"project_id": project.public_id, "item_id": dataset_item.id})
    response = client.post(decide, {"decision": "mask"})
    image = Image.objects.get(project=project)
    assert image.label == Label.DEFECT
    assert response.url == reverse(
        "annotation_editor", kwargs={"project_id": project.public_id, "image_id": image.public_id}
    )


def test_owner_saves_the_policy_on_the_page_and_bad_values_are_refused(client, project, owner):
    client.force_login(owner)
    url = reverse("review_policy_save", kwargs={"project_id": project.public_id})
    fields = {"enabled": "on", "band_low": "0.3", "band_high": "0.7", "audit_percent": "5", "split": "train"}
    page = client.post(url, fields, follow=True).content.decode()
    assert "Review policy saved." in page
    policy = selectors.policy_of(project=project)
    assert (policy.enabled, policy.band_low, policy.band_high, policy.audit_percent) == (True, 0.3, 0.7, 5)
    page = client.post(url, {**fields, "band_low": "0.8"}, follow=True).content.decode()
    assert "The band needs" in page and selectors.policy_of(project=project).band_low == 0.3


def test_age_filter_leaves_out_older_items(project, owner, version):
    from datetime import timedelta

    from django.utils import timezone

    services.review_policy_save(project=project, user=owner, enabled=True, band_low=0.4, band_high=0.6, audit_percent=0)
    old = services.prediction_route_for_review(prediction=_prediction(version, 0.45))
    new = services.prediction_route_for_review(prediction=_prediction(version, 0.55))
    ReviewItem.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=2))
    assert list(selectors.pending_items(project=project, age="24h")) == [new]
    assert list(selectors.pending_items(project=project, age="7d")) == [old, new]
