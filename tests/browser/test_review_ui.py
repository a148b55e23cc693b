"""A reviewer works through the queue with the keyboard: h shows the heatmap, g and a decide, s skips; decided
images join the dataset and the audit trail names the reviewer."""

from __future__ import annotations

import pytest

from tests.browser.conftest import log_in
from tests.webapp.conftest import png_bytes, trained_version  # noqa: F401  (fixture)
from webapp.images.models import Label
from webapp.inference.models import Purpose
from webapp.inference.services import predict_bytes
from webapp.review import services
from webapp.review.models import ItemStatus, ReviewDecision, ReviewItem

pytestmark = pytest.mark.browser


def test_reviewing_with_the_keyboard(page, live_server, trained_version, owner):  # noqa: F811
    project = trained_version.project
    services.review_policy_save(project=project, user=owner, enabled=True, band_low=0, band_high=1, audit_percent=0)
    for seed in (501, 502, 503):
        predict_bytes(version=trained_version, data=png_bytes(seed, size=96), purpose=Purpose.TRIAL, name=f"{seed}.png")
    first, second, third = ReviewItem.objects.filter(project=project).order_by("id")
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/review/")
    page.wait_for_selector(f"#review-item[data-item='{first.id}']")
    assert page.inner_text("#review-queue-size") == "3"
    # h toggles the heatmap over the image
    assert not page.is_visible("#review-item .heat")
    page.keyboard.press("h")
    assert page.is_visible("#review-item .heat")
    # g: good; the next item comes up
    page.keyboard.press("g")
    page.wait_for_selector(f"#review-item[data-item='{second.id}']")
    # s: skip to the third, a: accept the model's call
    page.keyboard.press("s")
    page.wait_for_selector(f"#review-item[data-item='{third.id}']")
    page.keyboard.press("a")
    page.wait_for_selector(f"#review-item[data-item='{second.id}']")  # the skipped one is still waiting
    assert page.inner_text("#review-queue-size") == "1"
    first.refresh_from_db()
    third.refresh_from_db()
    assert (first.status, first.image.label) == (ItemStatus.DECIDED, Label.GOOD)
    assert third.status == ItemStatus.DECIDED and third.decision == "accept"
    assert ReviewDecision.objects.filter(item__project=project).count() == 2
    # the audit trail of a decided item names the reviewer
    page.goto(f"{live_server.url}/projects/{project.public_id}/review/{first.id}/")
    assert "olivia" in page.inner_text("#audit-trail")
