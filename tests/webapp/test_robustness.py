"""Robustness runs in the app: requested by a person or by training's end, executed on the worker (in process
here, and through a real Celery worker in the integration test), the report page and its pictures, the version
comparison, and who may see or start what."""

from __future__ import annotations

from datetime import timedelta
from html import escape

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from tests.conftest import wait_for
from tests.webapp.conftest import make_user, trained_version  # noqa: F401  (fixture)
from webapp.projects.models import Membership, Role
from webapp.robustness import services
from webapp.robustness.execution import robustness_run_execute
from webapp.robustness.models import RobustnessRun, RobustnessStatus
from webapp.robustness.tasks import robustness_runs_reap_task


def _measured(version) -> RobustnessRun:
    run = services.robustness_run_request(version=version, requested_by=None)
    assert services.robustness_run_claim(run_id=run.id)
    robustness_run_execute(run_id=run.id)
    run.refresh_from_db()
    return run


def _member(project, role: str):
    user = make_user(f"{role}-of-{project.id}")
    Membership.objects.create(project=project, user=user, role=role)
    return user


# One trained version serves several checks per test: training it is the slow part of these tests.


def test_a_run_reports_every_perturbation_and_its_page_shows_it(client, owner, trained_version):  # noqa: F811
    # given a version measured on the worker's code path (in process)
    measured = _measured(trained_version)
    assert measured.status == RobustnessStatus.SUCCEEDED, measured.error
    # then the report has the images as taken and every perturbation at each of its strengths
    report = measured.report
    n_test = services.test_images_of(trained_version).count()
    assert report["n_images"] == n_test
    assert report["baseline"]["n_good"] + report["baseline"]["n_defect"] == n_test
    perturbations = {row["perturbation"] for row in report["conditions"]}
    assert {"shift", "brightness", "contrast", "clutter", "blur", "noise", "jpeg"} <= perturbations
    assert report["threshold"] == pytest.approx(trained_version.threshold) and measured.percent == 100
    assert report["advice"]
    # and each worst case's pictures are stored under the version's folder
    for case in report["worst_cases"]:
        for name in case["files"].values():
            assert name.startswith(trained_version.artifact_prefix) and default_storage.exists(name)

    # when the owner opens the report
    project = trained_version.project
    client.force_login(owner)
    report_url = reverse("robustness_report", args=[project.public_id, trained_version.public_id])
    page = client.get(report_url)
    html = page.content.decode()
    # then the table, the three plots and the advice are there
    assert page.status_code == 200
    assert 'id="robustness-table"' in html and "brightness ±40 %" in html
    assert html.count("<svg") >= 3 and 'class="plot robustness-auroc"' in html
    assert escape(report["advice"][0]) in html
    if report["worst_cases"]:
        picture = client.get(reverse("robustness_example", args=[project.public_id, measured.public_id, 0, "heatmap"]))
        assert picture.status_code == 200 and picture["Content-Type"] == "image/png"
    # and the version's dashboard links to it, and the comparison shows robustness beside accuracy
    dashboard = client.get(reverse("version_detail", args=[project.public_id, trained_version.public_id]))
    assert report_url in dashboard.text
    compare = client.get(reverse("version_compare", args=[project.public_id]))
    assert "Robustness: lowest image AUROC under a change" in compare.text
    lowest = min(c["image_auroc"] for c in report["conditions"] if c["image_auroc"] is not None)
    assert f"{lowest:.3f}" in compare.text

    # who may see what: nobody signed in gets the login page, a stranger a 404 (pictures included), a viewer reads
    client.logout()
    assert client.get(report_url).status_code == 302
    client.force_login(make_user("stranger"))
    assert client.get(report_url).status_code == 404
    assert (
        client.get(reverse("robustness_example", args=[project.public_id, measured.public_id, 0, "after"])).status_code
        == 404
    )
    client.force_login(_member(project, Role.VIEWER))
    assert client.get(report_url).status_code == 200


def test_requests_refusals_training_hook_and_silent_runs(client, trained_version, settings):  # noqa: F811
    project = trained_version.project
    start_url = reverse("robustness_start", args=[project.public_id, trained_version.public_id])
    report_url = reverse("robustness_report", args=[project.public_id, trained_version.public_id])
    # a stranger cannot start one, nor can a viewer
    client.force_login(make_user("stranger"))
    assert client.post(start_url).status_code == 404
    client.force_login(_member(project, Role.VIEWER))
    page = client.get(report_url)
    assert page.status_code == 200 and 'id="robustness-start"' not in page.text
    assert client.post(start_url).status_code == 403
    assert not RobustnessRun.objects.exists()
    # training's end measures only small test splits
    n_test = services.test_images_of(trained_version).count()
    settings.KENSA_ROBUSTNESS_AUTO_MAX_TEST_IMAGES = n_test - 1
    assert services.robustness_after_training(version=trained_version) is None
    settings.KENSA_ROBUSTNESS_AUTO_MAX_TEST_IMAGES = n_test
    automatic = services.robustness_after_training(version=trained_version)
    assert automatic is not None and automatic.automatic and automatic.status == RobustnessStatus.QUEUED
    # a second request while one waits is refused, on the page with the reason
    with pytest.raises(ValidationError, match="already waiting or running"):
        services.robustness_run_request(version=trained_version, requested_by=None)
    client.force_login(_member(project, Role.ANNOTATOR))
    refused = client.post(start_url, follow=True)
    assert "already waiting or running" in refused.text and RobustnessRun.objects.count() == 1
    # a run whose worker went silent is failed when someone asks again, and the new one waits
    assert services.robustness_run_claim(run_id=automatic.id)
    RobustnessRun.objects.filter(id=automatic.id).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    assert client.post(start_url).status_code == 302
    automatic.refresh_from_db()
    assert automatic.status == RobustnessStatus.FAILED and "stopped reporting" in automatic.error
    waiting = RobustnessRun.objects.get(status=RobustnessStatus.QUEUED, requested_by__isnull=False)
    # and the periodic reaper fails one whose worker died, without anyone asking
    assert services.robustness_run_claim(run_id=waiting.id)
    RobustnessRun.objects.filter(id=waiting.id).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    robustness_runs_reap_task()
    waiting.refresh_from_db()
    assert waiting.status == RobustnessStatus.FAILED


@pytest.fixture
def robustness_after_training_on(monkeypatch):
    """Training measures robustness for small test splits, in this process and in workers started after this."""
    monkeypatch.setenv("KENSA_ROBUSTNESS_AUTO_MAX_TEST_IMAGES", "150")


@pytest.mark.integration
def test_training_on_the_worker_is_followed_by_its_robustness_run(owner, robustness_after_training_on, celery_worker):
    # given a worker whose training starts robustness runs for small test splits (the fixture order matters)
    from webapp.samples import sample_project_create
    from webapp.training import services as training
    from webapp.training.models import ModelVersion, RunStatus, TrainingRun

    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=96)
    # when a run trains
    run = training.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=128)
    done = wait_for(
        lambda: TrainingRun.objects.get(id=run.id).status not in (RunStatus.QUEUED, RunStatus.RUNNING),
        timeout=180,
        message=f"training; worker log:\n{celery_worker.log_text()[-3000:]}",
    )
    assert done
    version = ModelVersion.objects.get(run_id=run.id)
    # then the worker measures the new version's robustness, reporting progress on the way
    seen_progress = []

    def ended():
        measured = RobustnessRun.objects.filter(model_version=version).first()
        if measured is not None and measured.status == RobustnessStatus.RUNNING:
            seen_progress.append(measured.percent)
        return measured is not None and not measured.is_active and measured

    measured = wait_for(
        ended, timeout=240, interval=0.5, message=f"robustness; log:\n{celery_worker.log_text()[-3000:]}"
    )
    assert measured.status == RobustnessStatus.SUCCEEDED, measured.error
    assert measured.automatic and measured.report["conditions"] and measured.report["advice"]
    assert any(0 < percent < 100 for percent in seen_progress)
