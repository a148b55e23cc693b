"""The run page's per-candidate clock (issue 20: candidates trained "within a time budget the user can see"): while a
comparison runs, each candidate's time so far or taken, which ones wait, which the budget skipped, and the budget."""

import html
import re
import time

import pytest
from django.urls import reverse

from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.comparison import CANDIDATE_TIMES, _candidate_of, candidate_clock
from webapp.training.models import RunStatus, TrainingRun

PLANNED = [
    {"family": "patchcore", "config": {}, "label": "PatchCore 320 px"},
    {"family": "patchcore", "config": {}, "label": "PatchCore 192 px"},
    {"family": "hybrid", "config": {}, "label": "Hybrid"},
]


def test_each_candidate_is_done_running_or_waiting_and_then_done_or_skipped_by_the_budget():
    # given candidate 1 began at 100 s, candidate 2 at 142 s, and it is now 150 s
    run = TrainingRun(config={"candidates": PLANNED, CANDIDATE_TIMES: {"started": {"0": 100.0, "1": 142.0}}})
    # then
    assert candidate_clock(run, now=150.0) == [
        {"label": "PatchCore 320 px", "state": "done", "seconds": 42.0},
        {"label": "PatchCore 192 px", "state": "running", "seconds": 8.0},
        {"label": "Hybrid", "state": "waiting", "seconds": None},
    ]
    # when fitting ended at 190 s before the third began (the budget was spent)
    run.config[CANDIDATE_TIMES]["end"] = 190.0
    rows = candidate_clock(run, now=500.0)
    assert [(r["state"], r["seconds"]) for r in rows] == [("done", 42.0), ("done", 48.0), ("not started", None)]
    # and a candidate that failed says so, not that the budget skipped it
    run.config[CANDIDATE_TIMES]["failed"] = [2]
    assert candidate_clock(run, now=500.0)[2]["state"] == "failed"


def test_progress_messages_are_told_apart_by_the_candidate_they_name():
    labels = [c["label"] for c in PLANNED]
    # the end of candidate 1's validation reports fraction 2/3, which alone would name candidate 2
    assert _candidate_of("PatchCore 192 px: scoring validation images", labels, 2 / 3) == 1
    assert _candidate_of("Hybrid: epoch 3 of 30", labels, 0.70) == 2
    assert _candidate_of("compared", labels, 1.0) == 2


@pytest.mark.django_db
def test_the_run_page_shows_each_candidate_s_time_and_the_budget(owner, client):
    # given a comparison whose first candidate took 42 s and whose second has run for at least 8 s
    project = sample_project_create(owner=owner, n_good=24, n_defect=9, size=48)
    run = services.training_run_request(project=project, requested_by=owner, budget_minutes=5)
    now = time.time()
    config = {**run.config, "candidates": PLANNED, CANDIDATE_TIMES: {"started": {"0": now - 50.0, "1": now - 8.0}}}
    TrainingRun.objects.filter(id=run.id).update(config=config, status=RunStatus.RUNNING)
    # when
    client.force_login(owner)
    page = html.unescape(client.get(reverse("run_detail", args=[project.public_id, run.public_id])).content.decode())
    # then
    clock = page[page.index('id="candidate-clock"') :]
    assert "PatchCore 320 px: fitted and scored in 42 s" in clock
    so_far = re.search(r"PatchCore 192 px: running, (\d+) s so far", clock)
    assert so_far and 8 <= int(so_far.group(1)) < 60
    assert "Hybrid: waiting" in clock
    assert "Time budget: 300 s of fitting" in page
