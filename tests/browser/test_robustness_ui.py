"""A quality engineer opens a version's robustness report from its dashboard: the table, the plots, the advice
and the worst cases' pictures render; someone who may train starts another measurement from the page."""

from __future__ import annotations

import pytest

from tests.browser.conftest import log_in
from tests.browser.test_dashboard_ui import _shot
from tests.webapp.conftest import trained_version  # noqa: F401  (fixture)
from webapp.robustness import services
from webapp.robustness.execution import robustness_run_execute
from webapp.robustness.models import RobustnessRun, RobustnessStatus

pytestmark = pytest.mark.browser


def test_robustness_report_renders_table_plots_advice_and_examples(page, live_server, trained_version):  # noqa: F811
    # given a version measured once
    run = services.robustness_run_request(version=trained_version, requested_by=None)
    assert services.robustness_run_claim(run_id=run.id)
    robustness_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == RobustnessStatus.SUCCEEDED, run.error
    project = trained_version.project
    # when the owner follows the link on the version's dashboard
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/versions/{trained_version.public_id}/")
    page.click("#robustness-link")
    page.wait_for_selector("#robustness-table")
    _shot(page, "robustness")
    # then the table holds the original and every perturbation at each strength
    rows = page.locator("#robustness-table tbody tr")
    assert rows.count() == 1 + len(run.report["conditions"])
    assert page.inner_text("#robustness-table tbody tr.original th") == "original"
    # and the three plots are drawn with a line per perturbation
    for plot in ("robustness-auroc", "robustness-false-alarms", "robustness-recall"):
        assert page.locator(f"#robustness-plots svg.{plot}").is_visible()
        assert page.locator(f"#robustness-plots svg.{plot} polyline.line").count() == 11
    # and the advice reads as sentences
    advice = page.locator("#robustness-advice li").all_inner_texts()
    assert advice == run.report["advice"]
    # and every worst case's pictures loaded (the heatmap over the changed image)
    for case in page.locator("#robustness-worst .worst-case").all():
        for picture in case.locator("img").all():
            assert picture.evaluate("img => img.complete && img.naturalWidth > 0")
    # when the owner measures again, the page follows the run until it is queued on the worker
    page.click("#robustness-start button")
    page.wait_for_selector("#robustness-progress[data-status=queued]")
    assert page.locator("#robustness-start button").is_disabled()
    assert RobustnessRun.objects.filter(model_version=trained_version, status=RobustnessStatus.QUEUED).exists()
