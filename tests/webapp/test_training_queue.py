"""The training queue: a project queues its next run behind the running one, a waiting run shows its position, what
runs ahead (other people's projects unnamed) and on which worker; and the time left is honest for every family."""

from __future__ import annotations

from datetime import timedelta
from html import escape

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from ml.registry import create_model
from tests.webapp.conftest import make_user
from webapp.projects.models import Membership, Role
from webapp.samples import sample_project_create
from webapp.training import selectors, services
from webapp.training.datasets import ProjectSamples
from webapp.training.eta import FIT_STAGES, PaceEstimate
from webapp.training.execution import Progress
from webapp.training.models import RunStatus, TrainingRun

SMALL = {"n_good": 30, "n_defect": 9, "size": 64}


@pytest.fixture
def small_project(owner):
    return sample_project_create(owner=owner, **SMALL)


def run_page(client, run: TrainingRun) -> str:
    return client.get(reverse("run_detail", args=[run.project.public_id, run.public_id])).text


@pytest.mark.django_db
def test_a_project_queues_its_next_run_while_one_runs(client, owner, small_project, django_capture_on_commit_callbacks):
    client.force_login(owner)
    train = reverse("train", args=[small_project.public_id])
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(train, {"family": "gaussian"}).status_code == 302
    first = TrainingRun.objects.get(project=small_project)
    assert services.training_run_claim(run_id=first.id, worker="train@box-1")
    # when a retrain is asked for while the first one runs
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(train, {"family": "patchcore"})
    # then it is queued behind it (not sent to the workers yet: a project trains one run at a time)
    assert response.status_code == 302
    second = TrainingRun.objects.exclude(id=first.id).get(project=small_project)
    assert second.status == RunStatus.QUEUED and second.enqueued_at is None
    page = run_page(client, second)
    assert escape(selectors.WAITS_FOR_PROJECT.format(s="")) in page
    assert "this project&#x27;s run" in page and 'running on worker <span class="mono">train@box-1</span>' in page
    # the same request cannot wait twice; the queue has a limit
    response = client.post(train, {"family": "patchcore"}, follow=True)
    assert "The same run (patchcore, same settings) is already waiting" in response.text
    for size in (128, 192):
        services.training_run_request(project=small_project, requested_by=owner, family="patchcore", image_size=size)
    with pytest.raises(ValidationError, match="already has 3 runs waiting"):
        services.training_run_request(project=small_project, requested_by=owner, family="gaussian", image_size=256)
    # the Train page lists the project's queue in order
    page = client.get(train).text
    assert page.index("gaussian</a> · Running") < page.index("patchcore</a> · Queued")
    # when the running run ends, the next one is sent to the workers
    with django_capture_on_commit_callbacks(execute=True):
        services.training_run_finish(run_id=first.id, status=RunStatus.SUCCEEDED)
    second.refresh_from_db()
    assert second.enqueued_at is not None
    assert selectors.NEXT_FOR_WORKER in run_page(client, second)
    # and a second claim of the project waits while one runs
    assert services.training_run_claim(run_id=second.id, worker="train@box-1")
    third = TrainingRun.objects.filter(project=small_project, status=RunStatus.QUEUED).order_by("created_at").first()
    assert not services.training_run_claim(run_id=third.id, worker="train@box-2")
    assert TrainingRun.objects.get(id=third.id).status == RunStatus.QUEUED


@pytest.mark.django_db
def test_a_waiting_run_shows_its_place_without_naming_other_peoples_projects(
    client, owner, small_project, django_capture_on_commit_callbacks
):
    # given another user's project whose run holds the only worker, and another run sent before ours
    stranger = make_user("sam")
    theirs = sample_project_create(owner=stranger, **SMALL)
    theirs.name = "Secret turbine blades"
    theirs.save()
    other = sample_project_create(owner=stranger, **SMALL)
    with django_capture_on_commit_callbacks(execute=True):
        running = services.training_run_request(project=theirs, requested_by=stranger, family="autoencoder")
        waiting = services.training_run_request(project=other, requested_by=stranger, family="gaussian")
    assert services.training_run_claim(run_id=running.id, worker="train@gpu-box-7")
    services.training_run_progress(run_id=running.id, stage="epoch", percent=40, message="", eta_seconds=600)
    # when our owner queues a run
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("train", args=[small_project.public_id]), {"family": "gaussian"})
    ours = TrainingRun.objects.get(project=small_project)
    page = run_page(client, ours)
    # then the page says where it stands, what runs ahead and where, without the other projects' names
    assert 'id="queue-position">Position 2</strong>' in page
    assert selectors.WAITS_FOR_WORKER.format(ahead="1 running and 1 waiting ahead") in page
    assert page.count(selectors.OTHER_PROJECT) == 2
    assert "train@gpu-box-7" in page and "at most 10 min left" in page
    assert "Secret turbine blades" not in page and theirs.public_id.hex not in page.replace("-", "")
    # a member of that project sees its name (and a link)
    Membership.objects.create(project=theirs, user=owner, role=Role.VIEWER)
    page = run_page(client, ours)
    assert "Secret turbine blades" in page and page.count(selectors.OTHER_PROJECT) == 1
    # when their runs end or are cancelled, ours is next
    services.training_run_finish(run_id=running.id, status=RunStatus.FAILED, error="x")
    services.training_run_cancel(run=waiting)
    assert selectors.NEXT_FOR_WORKER in run_page(client, ours)


@pytest.mark.django_db
def test_the_reaper_only_sends_a_projects_next_run(owner, small_project):
    first = services.training_run_request(project=small_project, requested_by=owner, family="gaussian")
    services.training_run_request(project=small_project, requested_by=owner, family="patchcore")
    later = timezone.now() + services.REQUEUE_AFTER * 2
    assert services.training_runs_reap(now=later)["requeued"] == 1
    assert services.training_run_claim(run_id=first.id)
    TrainingRun.objects.filter(id=first.id).update(heartbeat_at=later)  # alive
    assert services.training_runs_reap(now=later) == {"failed": 0, "requeued": 0}  # the second waits for the first


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def recorded_progress(run: TrainingRun, clock: FakeClock, seconds_per_report: float) -> list[TrainingRun]:
    """A Progress whose every report advances the clock and snapshots the run's row."""
    progress = Progress(run.id, clock=clock)
    rows: list[TrainingRun] = []

    def part(start, end, stages=None):
        report = progress.part(start, end, stages)

        def record(stage, fraction, message):
            clock.now += seconds_per_report
            report(stage, fraction, message)
            rows.append(TrainingRun.objects.get(id=run.id))

        return record

    return part, rows


def test_the_autoencoders_time_left_falls_as_it_trains(transactional_db, owner):
    # given a real autoencoder fit reporting through a run's progress, one report every 30 s
    project = sample_project_create(owner=owner, **SMALL)
    run = services.training_run_request(project=project, requested_by=owner, family="autoencoder")
    assert services.training_run_claim(run_id=run.id)
    clock = FakeClock()
    part, rows = recorded_progress(run, clock, seconds_per_report=30)
    part(0, 1)("data", 1.0, "loaded")
    clock.now += 600  # reading the images took ten minutes: that must not weigh on the pace of the epochs
    model = create_model("autoencoder", image_size=32, epochs=12, patience=100, batch_size=8)
    from webapp.images.models import Image, Label, Split

    goods = Image.objects.filter(project=project, split=Split.TRAIN, label=Label.GOOD).order_by("sha256")[:16]
    model.fit(ProjectSamples(list(goods)), progress=part(1, 80, FIT_STAGES["autoencoder"]))
    epochs = [r for r in rows if r.stage == "epoch"]
    assert len(epochs) == 12
    # then the bar only moves forward, and from the second epoch on the time left falls at every report
    percents = [r.percent for r in rows]
    assert percents == sorted(percents)
    etas = [r.eta_seconds for r in epochs[1:]]
    assert all(eta is not None for eta in etas)
    assert all(later < earlier for earlier, later in zip(etas, etas[1:], strict=False)), etas
    # and it is measured from the epochs' pace (30 s each), not from the ten minutes of reading: the last
    # epochs' estimate is what the remaining bar takes at that pace
    last = epochs[-2]
    per_percent = 30 / ((80 - 1) * 0.95 / 12)
    assert last.eta_seconds == pytest.approx((100 - last.percent) * per_percent, rel=0.05)
    # the page says it is an upper bound (it stops early), once
    run.refresh_from_db()
    assert run.eta_text.startswith("at most")


@pytest.mark.django_db
def test_patchcore_stages_keep_the_bar_moving_forward(owner, small_project):
    run = services.training_run_request(project=small_project, requested_by=owner, family="patchcore")
    assert services.training_run_claim(run_id=run.id)
    clock = FakeClock()
    part, rows = recorded_progress(run, clock, seconds_per_report=2)
    fit = part(1, 80, FIT_STAGES["patchcore"])
    for fraction in (0.25, 0.5, 0.75, 1.0):
        fit("features", fraction, "read")
    for fraction in (0.0, 0.5, 1.0):
        fit("coreset", fraction, "choosing")
    percents = [r.percent for r in rows]
    assert percents == sorted(percents) and percents[-1] == pytest.approx(80)
    assert rows[4].percent > rows[3].percent - 1e-9  # the coreset's 0 % is not the bar's start


@pytest.mark.django_db
def test_the_page_counts_the_time_left_down_between_reports_and_says_it_once(client, owner, small_project):
    run = services.training_run_request(project=small_project, requested_by=owner, family="patchcore")
    assert services.training_run_claim(run_id=run.id)
    services.training_run_progress(
        run_id=run.id, stage="features", percent=30, message="read 8 of 21 images", eta_seconds=600
    )
    client.force_login(owner)
    assert "about 10 min left" in run_page(client, run)
    # five minutes later without a new report (a long epoch), the estimate has gone down with the clock
    TrainingRun.objects.filter(id=run.id).update(progress_at=timezone.now() - timedelta(minutes=5))
    page = run_page(client, run)
    assert "about 5 min left" in page
    assert page.count(" left") == 1


def test_patchcore_reports_no_time_left_of_its_own(owner, transactional_db):
    # the web app says the time left once: the model's messages carry none
    project = sample_project_create(owner=owner, **SMALL)
    from webapp.images.models import Image, Label, Split

    goods = Image.objects.filter(project=project, split=Split.TRAIN, label=Label.GOOD).order_by("sha256")[:6]
    messages = []
    model = create_model("patchcore", image_size=64)
    model.fit(ProjectSamples(list(goods)), progress=lambda stage, fraction, message: messages.append(message))
    assert messages and not [m for m in messages if "left" in m]


@pytest.mark.integration
def test_a_real_worker_runs_a_projects_queued_runs_one_after_the_other(owner, celery_worker):
    from tests.conftest import wait_for

    project = sample_project_create(owner=owner, **SMALL)
    first = services.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=128)
    second = services.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=256)
    assert TrainingRun.objects.get(id=second.id).enqueued_at is None  # waits for the first, not in Redis
    ended = wait_for(
        lambda: (
            all(r.status in (RunStatus.SUCCEEDED, RunStatus.FAILED) for r in TrainingRun.objects.all())
            and list(TrainingRun.objects.order_by("created_at"))
        ),
        timeout=240,
        message=f"both runs to end; worker log:\n{celery_worker.log_text()[-3000:]}",
    )
    assert [r.status for r in ended] == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED], celery_worker.log_text()[-6000:]
    one, two = ended
    assert (one.id, two.id) == (first.id, second.id)
    # the second was sent when the first ended, and never ran beside it
    assert two.enqueued_at >= one.finished_at and two.started_at >= one.finished_at
    assert one.worker == two.worker == celery_worker.nodename


def test_a_new_stage_starts_a_new_measurement():
    pace = PaceEstimate()
    assert pace.observe(0, 10, "epoch") is None
    assert pace.observe(10, 20, "epoch") == pytest.approx(80)  # 1 % a second, 80 % to go
    # an early stop jumps the bar to the end of fitting: that is no burst of speed to extrapolate
    assert pace.observe(11, 80, "validation") is None
    assert pace.observe(21, 82, "evaluation") is None
    assert pace.observe(31, 84, "evaluation") == pytest.approx(80)  # 0.2 % a second, 16 % to go
