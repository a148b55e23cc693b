"""Training services: plan, request, claim, cancel, reaper, and a run executed in-process."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from webapp.images.models import Image, Label, Split
from webapp.inference.models import Prediction
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.execution import SELF_CALIBRATED, training_data, training_run_execute
from webapp.training.models import ModelVersion, RunStatus

SMALL = {"n_good": 30, "n_defect": 9, "size": 96}


@pytest.fixture
def small_project(owner):
    return sample_project_create(owner=owner, **SMALL)


@pytest.mark.django_db
def test_plan_chooses_patchcore_and_says_what_is_missing(project, small_project):
    # an empty project cannot train, and says why
    empty = services.training_plan(project=project)
    assert not empty.choice.ready
    assert any("good image" in item for item in empty.choice.missing)
    with pytest.raises(ValidationError, match="Not enough labelled images"):
        services.training_run_request(project=project, requested_by=None)
    # the sample project has masks on its defects: enough of them in train call for the U-Net
    plan = services.training_plan(project=small_project)
    assert plan.n_good_train == 21 and plan.n_defect == 9
    assert plan.choice.ready and plan.choice.family == "patchcore"


@pytest.mark.django_db
def test_a_project_queues_runs_but_never_the_same_one_twice(small_project, owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = services.training_run_request(project=small_project, requested_by=owner)
    # validation holds defects, so the automatic choice compares candidates (issue 20)
    assert first.status == RunStatus.QUEUED and first.family == "compare"
    first.refresh_from_db()
    assert first.enqueued_at is not None
    # the identical request cannot wait twice
    with pytest.raises(ValidationError, match=r"The same run \(compare, same settings\) is already waiting"):
        services.training_run_request(project=small_project, requested_by=owner)
    # a claim happens once
    assert services.training_run_claim(run_id=first.id)
    assert not services.training_run_claim(run_id=first.id)


@pytest.mark.django_db
def test_cancel_a_queued_run_ends_it_at_once(small_project, owner):
    run = services.training_run_request(project=small_project, requested_by=owner)
    services.training_run_cancel(run=run)
    assert run.status == RunStatus.CANCELLED
    assert not services.training_run_claim(run_id=run.id)
    # and the project can train again
    assert services.training_run_request(project=small_project, requested_by=owner).status == RunStatus.QUEUED


@pytest.mark.django_db
def test_a_running_run_shows_which_worker_has_it_and_when_it_last_reported(client, small_project, owner):
    run = services.training_run_request(project=small_project, requested_by=owner)
    assert services.training_run_claim(run_id=run.id, worker="train@gpu-box-2")
    client.force_login(owner)
    response = client.get(reverse("run_detail", args=[small_project.public_id, run.public_id]))
    assert response.status_code == 200
    assert "worker train@gpu-box-2" in response.text and "last report 0\xa0minutes ago" in response.text


@pytest.mark.django_db
def test_cancel_a_running_run_stops_its_progress(small_project, owner):
    run = services.training_run_request(project=small_project, requested_by=owner)
    services.training_run_claim(run_id=run.id)
    assert services.training_run_progress(run_id=run.id, stage="fit", percent=5, message="", eta_seconds=None)
    services.training_run_cancel(run=run)
    assert run.cancel_requested and run.status == RunStatus.RUNNING
    assert not services.training_run_progress(run_id=run.id, stage="fit", percent=6, message="", eta_seconds=None)


@pytest.mark.django_db
def test_reaper_fails_silent_runs_and_requeues_forgotten_ones(small_project, project, owner):
    # given a running run whose heartbeat stopped, and a queued run nobody picked up
    silent = services.training_run_request(project=small_project, requested_by=owner)
    services.training_run_claim(run_id=silent.id)
    later = timezone.now() + services.STALE_AFTER + timedelta(seconds=5)
    # when
    result = services.training_runs_reap(now=later)
    # then
    silent.refresh_from_db()
    assert silent.status == RunStatus.FAILED and silent.error == services.STALE_HEARTBEAT_MESSAGE
    assert result == {"failed": 1, "requeued": 0}
    forgotten = services.training_run_request(project=small_project, requested_by=owner)
    assert services.training_runs_reap(now=timezone.now() + services.REQUEUE_AFTER * 2)["requeued"] == 1
    assert services.training_run_claim(run_id=forgotten.id)


def test_run_executes_in_process_into_an_active_version(transactional_db, owner):
    # given
    project = sample_project_create(owner=owner, **SMALL)
    run = services.training_run_request(project=project, requested_by=owner, image_size=128)
    assert services.training_run_claim(run_id=run.id)
    # when
    training_run_execute(run_id=run.id)
    # then
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.percent == 100 and run.device == "cpu"
    version = ModelVersion.objects.get(run=run)
    assert version.is_active and version.number == 1
    n_validation = Image.objects.filter(project=project, split=Split.VALIDATION).exclude(label=Label.UNLABELLED)
    assert version.metrics["n_validation"] == n_validation.count() and version.metrics["note"] == ""
    test_images = Image.objects.filter(project=project, split=Split.TEST).exclude(label=Label.UNLABELLED)
    predictions = Prediction.objects.filter(model_version=version)
    assert predictions.count() == test_images.count() == version.metrics["n_test"]
    assert version.metrics["image_auroc"] > 0.8
    assert 0 <= version.metrics["pixel_auroc"] <= 1
    for name in version.artifact_files:
        assert default_storage.exists(f"{version.artifact_prefix}/model/{name}")
    assert default_storage.exists(predictions.first().anomaly_map.name)


@pytest.mark.django_db
def test_empty_validation_split_holds_out_good_training_images(small_project, owner):
    # given a project like an MVTec import: nothing in validation, and a family that needs validation images
    Image.objects.filter(project=small_project, split=Split.VALIDATION).update(split=Split.TEST)
    run = services.training_run_request(project=small_project, requested_by=owner, family="gaussian")
    # when
    fit, validation, test, note = training_data(run)
    # then
    assert len(validation) == 3 and "3 good training images were held out" in note
    assert not {i.id for i in fit.images} & {i.id for i in validation.images}
    assert all(i.label == Label.GOOD for i in fit.images)


@pytest.mark.django_db
def test_empty_validation_split_costs_patchcore_no_training_image(small_project, owner):
    # given the same project, trained with the automatic choice (PatchCore)
    Image.objects.filter(project=small_project, split=Split.VALIDATION).update(split=Split.TEST)
    run = services.training_run_request(project=small_project, requested_by=owner)
    # when
    fit, validation, test, note = training_data(run)
    # then every good training image trains it; its threshold comes from those images (issue 20)
    n_good = Image.objects.filter(project=small_project, split=Split.TRAIN, label=Label.GOOD).count()
    assert run.family == "patchcore" and len(fit) == n_good and len(validation) == 0
    assert note == SELF_CALIBRATED


def test_settings_a_family_cannot_use_fail_the_run_with_the_reason(transactional_db, owner):
    # the Gaussian's grid must divide the feature map: 192 px gives 24 cells a side, which 16 does not divide
    project = sample_project_create(owner=owner, **SMALL)
    run = services.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=192)
    assert services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("The gaussian cannot train with these settings: grid 16 must divide")
    assert "Choose another image size or family." in run.error
