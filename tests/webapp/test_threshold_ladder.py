"""The threshold slider works on positions: one per way the test images can be called, plus the version's saved
and calibrated thresholds, so it crosses a U-Net's 0.0000-0.0003 operating region in as many steps as there are
test scores in it; the page keeps and saves the exact threshold."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.urls import reverse

from tests.browser.test_threshold_slider_ui import OPERATING_REGION, unet_like_scores
from webapp.dashboard import plots
from webapp.dashboard.operating_points import ScoredImages, operating_point, presets, threshold_ladder
from webapp.dashboard.synthetic import scored_version_create


def _confusion(scored, threshold):
    return operating_point(scored, threshold).confusion


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_step_calls_one_more_score_or_lands_on_a_named_threshold(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(200) < 0.3
    scores = np.round(rng.normal(0, 1, 200) + labels * 1.5, 2)  # rounded: ties on purpose
    scored = ScoredImages(scores=scores, labels=labels)
    named = (0.123456, 5.0)
    ladder = threshold_ladder(scored, *named)
    assert list(ladder.rungs) == sorted(set(ladder.rungs))
    # both ends: every image called defective, none
    assert _confusion(scored, ladder.threshold_at(0)).fn == 0 and _confusion(scored, ladder.threshold_at(0)).tn == 0
    top = _confusion(scored, ladder.threshold_at(len(ladder) - 1))
    assert top.tp == 0 and top.fp == 0
    calls = [int((scores >= t).sum()) for t in ladder.rungs]
    for i in range(1, len(ladder)):
        assert calls[i] < calls[i - 1] or ladder.rungs[i] in named or ladder.rungs[i - 1] in named
    # one position per distinct score and one above them all, plus the named ones
    assert len(ladder) == len(np.unique(scores)) + 1 + len(named)


def test_the_position_of_a_threshold_calls_the_images_as_it_does():
    rng = np.random.default_rng(4)
    labels = rng.random(150) < 0.3
    scored = ScoredImages(scores=np.round(rng.normal(0, 1, 150) + labels, 2), labels=labels)
    ladder = threshold_ladder(scored, 0.3)
    thresholds = [p.threshold for p in presets(scored, target_precision=0.8) if p.threshold is not None]
    for threshold in [*thresholds, *np.unique(scored.scores), -9.0, 9.0, 0.3, 0.301]:
        assert _confusion(scored, ladder.threshold_at(ladder.position_of(threshold))) == _confusion(scored, threshold)
    assert ladder.threshold_at(ladder.position_of(0.3)) == 0.3  # a named threshold is reached exactly


def test_a_unet_operating_region_takes_one_step_per_score_in_it():
    scores, labels = unet_like_scores()
    ladder = threshold_ladder(ScoredImages(scores=scores, labels=labels), 2.5e-4)
    inside = ladder.rungs[(ladder.rungs > 0) & (ladder.rungs <= OPERATING_REGION)]
    assert len(inside) >= int((scores <= OPERATING_REGION).sum())
    # a linear slider of 1,000 steps over the same scores would have crossed the region in one step
    assert (scores.max() - scores.min()) / 1000 > OPERATING_REGION


def test_no_scores_still_gives_a_slider():
    empty = ScoredImages(scores=np.zeros(0), labels=np.zeros(0, bool))
    assert len(threshold_ladder(empty)) == 1
    ladder = threshold_ladder(empty, 0.5)
    assert ladder.threshold_at(ladder.position_of(0.7)) == 0.5


def test_the_slider_position_becomes_the_exact_threshold_in_the_panel_and_the_address(client, owner, project):
    scores, labels = unet_like_scores()
    version = scored_version_create(project=project, scores=scores, labels=labels, threshold=2.5e-4, scale=3e-5)
    scored = ScoredImages(scores=scores, labels=labels)
    ladder = threshold_ladder(scored, version.threshold)
    position = ladder.position_of(1.5e-4) + 1
    expected = ladder.threshold_at(position)
    client.force_login(owner)
    url = reverse("version_detail", kwargs={"project_id": project.public_id, "version_id": version.public_id})
    response = client.get(url, {"pos": position}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="threshold-panel")
    html = response.content.decode()
    assert f'data-threshold="{expected!r}"' in html
    assert f'name="t" value="{expected!r}"' in html  # the save form posts the exact value
    assert response["HX-Replace-Url"] == f"{url}?t={expected!r}"
    # a full page at that position puts the slider there
    page = client.get(url, {"pos": position}).content.decode()
    assert f'value="{position}"' in page and f'max="{len(ladder) - 1}"' in page


def _threshold_line_x(svg: str) -> tuple[float, str]:
    line = re.search(r'<line class="threshold" data-threshold="([^"]+)" x1="([^"]+)"', svg)
    return float(line.group(2)), line.group(1)


def test_the_histogram_of_unet_like_scores_reads_on_a_log_axis():
    scores, labels = unet_like_scores()
    assert plots.wants_log_axis(scores)
    assert not plots.wants_log_axis(np.random.default_rng(0).normal(10, 2, 100))
    drawn = {}
    for threshold in (1e-5, 2e-4):
        svg = plots.score_histogram(
            good=scores[~labels], defect=scores[labels], threshold=threshold, lo=0.0, hi=1.0, log_axis=True
        )
        drawn[threshold] = _threshold_line_x(svg)
        assert "log scale" in svg
    # a decade and more apart on the plot (on a linear 0..1 axis both lines sit on the same pixel)
    assert drawn[2e-4][0] - drawn[1e-5][0] > 40
    assert drawn[1e-5][1] == repr(1e-5)  # the line still carries the raw threshold
