"""Every figure shown beside an operating threshold is computed at that threshold: after a threshold is saved,
the project overview, the version page and the API's `versions` report precision / recall / F1 there."""

from __future__ import annotations

import re

import numpy as np
from django.urls import reverse

from ml import metrics
from tests.webapp.test_api import auth, make_token, versions_url
from webapp.images.models import Label
from webapp.inference.models import Prediction, Purpose
from webapp.training.models import ModelVersion


def test_scores(version: ModelVersion) -> tuple[np.ndarray, np.ndarray]:
    rows = Prediction.objects.filter(model_version=version, purpose=Purpose.TEST).values_list(
        "raw_score", "image__label"
    )
    scores, labels = zip(*rows, strict=True)
    return np.array(scores), np.array([label == Label.DEFECT for label in labels])


test_scores.__test__ = False  # a helper, not a test


def overview_f1(client, project) -> str:
    """The F1 the project's overview shows in its model card."""
    page = client.get(reverse("project_detail", args=[project.public_id])).text
    card = page[page.index('id="model-card"') :]
    return re.search(r"F1 (?:<span[^>]*>)?([0-9.]+)", card).group(1)


def a_threshold_that_changes_f1(version: ModelVersion) -> float:
    """A threshold between two test scores whose F1 differs from the stored one (the calibrated threshold's)."""
    scores, labels = test_scores(version)
    stored = version.metrics["f1"]
    ranked = np.unique(scores)
    for low, high in zip(ranked[:-1], ranked[1:], strict=True):
        candidate = float((low + high) / 2)
        if abs(metrics.confusion(labels, scores, candidate).f1 - stored) > 0.01:
            return candidate
    raise AssertionError("every threshold gives the stored F1")


def test_saving_a_threshold_moves_every_figure_to_it(client, trained_version, owner):
    version, project = trained_version, trained_version.project
    threshold = a_threshold_that_changes_f1(version)
    scores, labels = test_scores(version)
    expected = metrics.confusion(labels, scores, threshold)
    client.force_login(owner)
    # when the owner saves a new operating threshold on the dashboard
    save = reverse("version_threshold_save", args=[project.public_id, version.public_id])
    assert client.post(save, {"t": repr(threshold)}).status_code == 302
    # then the overview shows the F1 at that threshold
    assert overview_f1(client, project) == f"{expected.f1:.3f}"
    # and the version page's stored-figures row is at that threshold too
    page = client.get(reverse("version_detail", args=[project.public_id, version.public_id])).text
    row = re.search(r"At the operating threshold \(([0-9.]+)\).*?<td>([^<]+)</td>", page, re.S)
    assert float(row.group(1)) == round(threshold, 5)
    assert row.group(2).split(" / ") == [
        f"{v:.3f}"
        for v in (expected.precision, expected.recall, expected.f1, (expected.tp + expected.tn) / len(labels))
    ]
    # and the API reports the new threshold with the figures measured at it
    secret = make_token(project, owner)
    (payload,) = client.get(versions_url(project), **auth(secret)).json()["versions"]
    assert payload["threshold"] == threshold
    assert payload["metrics"]["f1"] == expected.f1
    assert payload["metrics"]["precision"] == expected.precision
    assert payload["metrics"]["recall"] == expected.recall
    # and what is stored follows, for every other reader (a bundle's manifest)
    version.refresh_from_db()
    assert version.metrics["f1"] == expected.f1 and version.metrics["threshold"] == threshold
    assert version.metrics["confusion"] == {"tp": expected.tp, "fp": expected.fp, "fn": expected.fn, "tn": expected.tn}
    # threshold-free figures are untouched
    assert payload["metrics"]["image_auroc"] == version.metrics["image_auroc"]


def test_figures_are_computed_on_read_for_a_threshold_saved_without_them(client, trained_version, owner):
    # given a version whose threshold was changed while its stored figures stayed (as before this fix)
    version, project = trained_version, trained_version.project
    threshold = a_threshold_that_changes_f1(version)
    ModelVersion.objects.filter(id=version.id).update(operating_threshold=threshold)
    scores, labels = test_scores(version)
    expected = metrics.confusion(labels, scores, threshold)
    # then the API and the overview report the figures at the operating threshold, not the stored ones
    secret = make_token(project, owner)
    (payload,) = client.get(versions_url(project), **auth(secret)).json()["versions"]
    assert payload["threshold"] == threshold and payload["metrics"]["f1"] == expected.f1
    client.force_login(owner)
    assert overview_f1(client, project) == f"{expected.f1:.3f}"
