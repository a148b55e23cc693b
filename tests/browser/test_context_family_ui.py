"""The Train page in a browser: the context family (issue 17) is offered with a line saying when to pick it, and
choosing it queues a run of that family."""

import pytest

from tests.browser.conftest import log_in
from webapp.samples import sample_project_create
from webapp.training.models import TrainingRun

pytestmark = pytest.mark.browser


def test_choose_the_context_family_for_arrangement_defects(page, live_server, owner, transactional_db):
    # given a project with enough good images to train
    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=64)
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/train/")

    # when the owner opens the advanced settings
    page.click('summary:text-is("Advanced")')

    # then the family list offers Context with what it is for, and a line says when to choose it
    option = page.text_content("select[name=family] option[value=context]")
    assert option == "Context — your defects include wrong placement, order or missing parts"
    assert "wrong placement, order or missing parts" in page.inner_text("#context-family-help")

    # when the owner chooses it and trains
    page.select_option("select[name=family]", "context")
    page.click("#train-button")

    # then a run of the context family is queued and its page opens
    page.wait_for_selector("#queue-place")
    run = TrainingRun.objects.get(project=project)
    assert run.family == "context"
    assert "context" in page.inner_text("main")
