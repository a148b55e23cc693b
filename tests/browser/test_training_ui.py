"""A person presses Train, watches the progress bar reach the end, and reads the metrics."""

import pytest

from tests.browser.conftest import log_in
from webapp.samples import sample_project_create

pytestmark = pytest.mark.browser


def test_click_train_and_see_metrics(page, live_server, celery_worker, owner):
    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=96)
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/train/")
    assert page.inner_text("#planned-family") == "patchcore"
    page.click("text=Advanced")
    page.select_option("select[name=image_size]", "128")
    page.click("#train-button")
    # the run page polls its progress until the run ends, then shows the metrics
    # (the worker's first task imports torch: allow for a busy machine)
    page.wait_for_selector("#run-progress[data-status=running], #run-progress[data-status=succeeded]", timeout=90_000)
    page.wait_for_selector("#run-progress[data-status=succeeded]", timeout=180_000)
    assert page.get_attribute("#run-bar", "value") == "100"
    auroc = float(page.inner_text("#run-metrics .auroc"))
    assert 0.5 < auroc <= 1.0
    # polling stopped: the final fragment carries no trigger
    assert page.get_attribute("#run-progress", "hx-trigger") is None
    page.click("#run-metrics a")
    assert "Image AUROC" in page.inner_text("#version-metrics")
    # a second click while nothing runs starts a new run, a third queues a retrain behind it, and the same
    # request again while that one waits is refused
    for _ in range(3):
        page.goto(f"{live_server.url}/projects/{project.public_id}/train/")
        page.click("#train-button")
    assert "is already waiting in this project's queue" in page.inner_text(".messages")
