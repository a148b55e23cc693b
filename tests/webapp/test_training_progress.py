"""A run's progress row: reports are throttled to one a second, but a new stage's first report is always written
(a long step after it, such as the training images' self-calibration, would otherwise show the last stage)."""

import pytest

from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.execution import Progress
from webapp.training.models import TrainingRun


@pytest.mark.django_db
def test_a_new_stage_is_shown_at_once_and_reports_within_a_second_are_throttled(owner):
    project = sample_project_create(owner=owner, n_good=24, n_defect=9, size=48)
    run = services.training_run_request(project=project, requested_by=owner, family="patchcore")
    assert services.training_run_claim(run_id=run.id)
    now = [0.0]
    report = Progress(run.id, clock=lambda: now[0]).part(0, 100)

    report("coreset", 1.0, "chose 64 representative patches")
    report("validation", 0.0, "Scoring the 12 training images without their own patches")  # same instant
    assert TrainingRun.objects.get(id=run.id).message.startswith("Scoring the 12 training images")

    report("validation", 0.5, "half way")  # still the same instant, same stage: throttled
    assert TrainingRun.objects.get(id=run.id).message.startswith("Scoring")
    now[0] += 1.5
    report("validation", 0.6, "further")
    assert TrainingRun.objects.get(id=run.id).message == "further"
