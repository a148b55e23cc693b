"""A U-Net's scores sit near 0 and 1 with its operating region in 0.0000-0.0003: the threshold slider still walks
through that region one test score at a time, the panel shows each threshold exactly, and saving keeps it exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tests.browser.conftest import log_in
from webapp.dashboard.synthetic import scored_version_create

pytestmark = pytest.mark.browser

OPERATING_REGION = 0.0003


def unet_like_scores(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Good parts score 1e-7 to 2e-4 (log-spread), most defects 0.999+, a few subtle ones inside the region."""
    rng = np.random.default_rng(seed)
    good = 10 ** rng.uniform(-7, np.log10(2e-4), 40)
    defect = np.r_[1 - 10 ** rng.uniform(-6, -3, 12), rng.uniform(1e-4, 3e-4, 4)]
    return np.r_[good, defect], np.r_[np.zeros(len(good), bool), np.ones(len(defect), bool)]


def test_the_slider_steps_through_a_unet_operating_region(page, live_server, project):
    scores, labels = unet_like_scores()
    version = scored_version_create(
        project=project, scores=scores, labels=labels, threshold=2.5e-4, scale=3e-5, is_active=True
    )
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/versions/{version.public_id}/")
    slider = page.locator("#threshold-slider")
    slider.focus()
    page.keyboard.press("Home")  # the low end: every image called defective
    panel = "#threshold-panel"

    def threshold_now() -> str:
        return page.get_attribute(panel, "data-threshold")

    page.wait_for_selector(f"{panel}:not([data-threshold='{version.threshold!r}'])", state="attached")
    seen = [float(threshold_now())]
    while seen[-1] <= OPERATING_REGION and len(seen) < 120:
        before = threshold_now()
        page.keyboard.press("ArrowRight")
        page.wait_for_selector(f"{panel}:not([data-threshold='{before}'])", state="attached")
        seen.append(float(threshold_now()))
    inside = [t for t in seen if 0 < t <= OPERATING_REGION]
    # then every step moved the threshold upwards, and the region took many steps (one per test score in it)
    assert all(a < b for a, b in zip(seen, seen[1:], strict=False))
    n_in_region = int(((scores > 0) & (scores <= OPERATING_REGION)).sum())
    assert len(inside) >= min(40, n_in_region), seen
    assert "t=" in page.url  # the address keeps the exact threshold
    # the readout shows the threshold, and saving keeps exactly the value the slider chose
    shown = threshold_now()
    assert page.inner_text("#threshold-raw") == f"{float(shown):.6g}"
    assert page.get_attribute("#threshold-raw", "title") == shown
    page.click("#save-threshold")
    page.wait_for_selector("#threshold-panel .badge.good")
    version.refresh_from_db()
    assert version.operating_threshold == float(shown)
