"""Train and compare in a browser (issue 20): the Train page says which candidates an automatic run trains and in
what time budget, a person ticks another family and sets the budget, and after a comparison the Train and Model
pages show the leaderboard with the winner and why it won."""

import pytest

from tests.browser.conftest import log_in
from tests.webapp.test_compare_runs import SMALL, tiny_comparison
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.execution import training_run_execute
from webapp.training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.browser


def test_the_leaderboard_after_a_comparison_and_a_ticked_family(page, live_server, owner, transactional_db):
    # given a comparison run to its end (tiny candidates, in this process)
    project = sample_project_create(owner=owner, **SMALL)
    run = tiny_comparison(project, owner)
    assert services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    winner = ModelVersion.objects.get(run=run)
    log_in(page, live_server, "olivia")
    # when the owner opens the Train page
    page.goto(f"{live_server.url}/projects/{project.public_id}/train/")
    # then it lists what the next automatic run trains, its budget, and the last comparison's leaderboard
    planned = [c.label for c in services.training_plan(project=project).candidates.candidates]
    assert page.inner_text("#planned-candidates").split("\n") == planned
    assert planned[0].endswith("(chosen from the data)") and page.inner_text("#planned-settings")
    assert "Time budget: 15 min" in page.inner_text("#compare-budget")
    board = page.locator("#leaderboard")
    assert board.locator("tr[data-candidate]").count() == 3
    winner_row = board.locator("tr.winner")
    assert winner_row.count() == 1 and winner.metrics["candidate"] in winner_row.inner_text()
    assert "failed:" in board.locator("tr[data-candidate=gaussian]").inner_text()
    assert winner.metrics["comparison"]["why"] in page.inner_text("#leaderboard-why")
    # when the owner follows the winner's version link: the Model page shows the same board and the classes
    winner_row.locator("a").click()
    page.wait_for_selector("#version-metrics")
    assert f"Version {winner.number}" in page.inner_text("h2")
    assert page.locator("#leaderboard tr.winner").count() == 1
    assert page.locator("#per-class tr[data-class]").count() == 3
    # when the owner ticks the Gaussian, picks a 5 minute budget and trains
    page.goto(f"{live_server.url}/projects/{project.public_id}/train/")
    page.click("summary:text-is('Advanced')")
    page.check("#compare-families input[value=gaussian]")
    page.select_option("select[name=budget_minutes]", "5")
    page.click("#train-button")
    page.wait_for_selector("#run-progress")
    # then the queued run compares the Gaussian too, within 5 minutes
    queued = TrainingRun.objects.filter(project=project).order_by("-id").first()
    assert [c["family"] for c in queued.config["candidates"]] == ["patchcore", "patchcore", "gaussian"]
    assert queued.config["budget_seconds"] == 300
    assert "comparison of 3 candidates" in page.inner_text("h2")
