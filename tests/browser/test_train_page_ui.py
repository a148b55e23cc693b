"""The Train page in a browser: queueing a run behind another project's and behind one's own, reading where it
stands; and fixing an empty validation split before training, then undoing it."""

import pytest

from tests.browser.conftest import log_in
from tests.webapp.conftest import make_user
from webapp.images.models import Image, Label, Split
from webapp.samples import sample_project_create
from webapp.training import services

pytestmark = pytest.mark.browser

SMALL = {"n_good": 30, "n_defect": 9, "size": 64}


def test_queue_runs_and_see_where_they_stand(page, live_server, owner, transactional_db, broker):
    # given another user's project whose run holds the training worker
    stranger = make_user("sam")
    theirs = sample_project_create(owner=stranger, **SMALL)
    theirs.name = "Secret turbine blades"
    theirs.save()
    running = services.training_run_request(project=theirs, requested_by=stranger, family="gaussian")
    assert services.training_run_claim(run_id=running.id, worker="train@gpu-box-7")
    project = sample_project_create(owner=owner, **SMALL)
    log_in(page, live_server, "olivia")
    # when the owner trains
    page.goto(f"{live_server.url}/projects/{project.public_id}/train/")
    page.click("text=Advanced")
    page.select_option("select[name=family]", "gaussian")
    page.click("#train-button")
    # then the run page says where the run stands, what runs ahead and on which worker, without the other name
    page.wait_for_selector("#queue-place")
    assert page.inner_text("#queue-position") == "Position 1"
    ahead = page.inner_text("#queue-ahead")
    assert "a run of another project (gaussian)" in ahead and "running on worker train@gpu-box-7" in ahead
    assert "Secret turbine blades" not in page.content()
    # when the owner queues a retrain while the first run waits
    page.goto(f"{live_server.url}/projects/{project.public_id}/train/")
    assert page.inner_text("#train-button") == "Queue another run"
    page.click("text=Advanced")
    page.select_option("select[name=family]", "patchcore")
    page.click("#train-button")
    # then it waits for the project's earlier run
    page.wait_for_selector("#queue-place")
    assert "Waiting for this project's earlier run to end" in page.inner_text("#queue-place")
    assert "this project's run (gaussian)" in page.inner_text("#queue-ahead")
    # and the Train page lists both, in order
    page.goto(f"{live_server.url}/projects/{project.public_id}/train/")
    queue = page.inner_text("#project-queue")
    assert queue.index("gaussian") < queue.index("patchcore") and "position 1 in the training queue" in queue


def test_fix_an_empty_validation_split_before_training_and_undo_it(page, live_server, owner, transactional_db):
    # given an MVTec-like project: nothing in validation, every defect (with its outline) in test
    project = sample_project_create(owner=owner, n_good=40, n_defect=30, size=64)
    images = Image.objects.filter(project=project)
    images.filter(label=Label.DEFECT).update(split=Split.TEST, split_is_automatic=False)
    images.filter(split=Split.VALIDATION).update(split=Split.TEST, split_is_automatic=False)
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/train/")
    # the page says before training what the splits mean and what is wrong with them
    assert page.inner_text("#split-validation .good") == "0"
    problems = page.inner_text("#split-problems")
    assert "The validation split holds no labelled images" in problems
    assert "You have 30 outlined defects, all in test." in problems
    # when the owner moves a share of test into validation
    page.click("#fill-validation")
    # then a clear message says what moved, and validation has good and defect images
    message = page.inner_text(".messages")
    assert "test images into validation" in message and "seed 0" in message
    assert int(page.inner_text("#split-validation .good")) > 0 and int(page.inner_text("#split-validation .defect")) > 0
    assert "The validation split holds no labelled images" not in page.inner_text("main")
    # and the move can be undone
    page.click("#undo-split-change")
    assert "images back where they were" in page.inner_text(".messages")
    assert page.inner_text("#split-validation .defect") == "0"
