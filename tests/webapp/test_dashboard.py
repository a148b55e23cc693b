"""The model dashboard: threshold metrics and presets against ml.metrics, plots, gallery filters, saving the
operating threshold (and inference following it), comparing versions, trial detection and adding to the dataset."""

from __future__ import annotations

import io
import re
import zipfile
from xml.etree import ElementTree

import numpy as np
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from ml import metrics
from ml.synthetic import make_image
from tests.webapp.conftest import encode, make_user, png_bytes
from webapp.dashboard import plots, services
from webapp.dashboard.operating_points import (
    ScoredImages,
    curves,
    operating_point,
    presets,
    threshold_for_precision,
)
from webapp.dashboard.selectors import scored_images
from webapp.dashboard.synthetic import scored_version_create
from webapp.images.bulk import images_label_change
from webapp.images.models import Image, Label, Source
from webapp.images.services import images_delete
from webapp.inference.models import Prediction, Purpose
from webapp.inference.services import predict_bytes
from webapp.projects.models import Membership, Role
from webapp.training.models import ModelVersion

SVG = "{http://www.w3.org/2000/svg}"


def random_scored(seed: int = 0, n: int = 300) -> ScoredImages:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = np.round(rng.normal(0, 1, n) + labels * 1.5, 2)  # rounded: ties on purpose
    return ScoredImages(scores=scores, labels=labels)


# --- operating points (pure numpy) ---------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [-1.0, 0.0, 0.37, 1.2, 5.0])
def test_operating_point_equals_ml_metrics(threshold):
    scored = random_scored()
    point = operating_point(scored, threshold)
    assert point.confusion == metrics.confusion(scored.labels, scored.scores, threshold)
    assert (point.precision, point.recall, point.f1) == metrics.precision_recall_f1(
        scored.labels, scored.scores, threshold
    )
    c = point.confusion
    assert point.accuracy == pytest.approx((c.tp + c.tn) / len(scored))


def test_f1_preset_is_ml_metrics_f1_best_and_recall1_catches_every_defect():
    scored = random_scored(1)
    found = {p.key: p for p in presets(scored)}
    best_threshold, best_f1 = metrics.f1_best_threshold(scored.labels.astype(int), scored.scores)
    assert found["f1"].threshold == best_threshold
    assert operating_point(scored, found["f1"].threshold).f1 == pytest.approx(best_f1)
    no_escapes = operating_point(scored, found["recall1"].threshold)
    assert no_escapes.confusion.fn == 0 and no_escapes.recall == 1.0
    precision, _ = metrics.precision_at_full_recall(scored.labels, scored.scores)
    assert no_escapes.precision == pytest.approx(precision)
    assert f"{precision:.3f}" in found["recall1"].note
    # any higher threshold lets a defect through
    assert operating_point(scored, found["recall1"].threshold + 1e-9).confusion.fn > 0


@pytest.mark.parametrize("target", [0.6, 0.8, 0.95])
def test_target_precision_preset_keeps_precision_and_catches_the_most(target):
    scored = random_scored(2)
    cut = threshold_for_precision(scored, target)
    assert operating_point(scored, cut).precision >= target
    # every lower cut point (more defects caught) falls below the target
    for lower in np.unique(scored.scores[scored.scores < cut]):
        assert operating_point(scored, lower).precision < target or operating_point(scored, lower).recall == (
            operating_point(scored, cut).recall
        )
    assert any(p.key == "precision" and p.threshold == cut for p in presets(scored, target_precision=target))


def test_presets_say_why_they_are_missing_without_defects():
    scored = ScoredImages(scores=np.array([0.1, 0.2]), labels=np.array([False, False]))
    assert all(p.threshold is None for p in presets(scored, target_precision=0.9))
    assert curves(scored) is None


def test_curves_end_at_full_recall():
    scored = random_scored(3)
    drawn = curves(scored)
    assert drawn.roc[0] == (0.0, 0.0) and drawn.roc[-1] == (1.0, 1.0)
    assert drawn.pr[-1][0] == 1.0


# --- plots ----------------------------------------------------------------------------------------------------


def _threshold_x(svg: str) -> float:
    root = ElementTree.fromstring(svg)
    (line,) = [e for e in root.iter(f"{SVG}line") if e.get("class") == "threshold"]
    assert line.get("x1") == line.get("x2")
    return float(line.get("x1"))


@pytest.mark.parametrize(("threshold", "share"), [(2.5, 0.25), (0.0, 0.0), (10.0, 1.0), (7.0, 0.7)])
def test_histogram_draws_the_threshold_line_where_the_score_is(threshold, share):
    svg = plots.score_histogram(
        good=np.array([1.0, 2.0, 3.0]), defect=np.array([8.0, 9.0]), threshold=threshold, lo=0.0, hi=10.0
    )
    frame = plots.HISTOGRAM
    assert _threshold_x(svg) == pytest.approx(frame.left + share * (frame.width - frame.left - frame.right), abs=0.01)


def test_curves_mark_the_operating_point():
    svg = plots.pr_curve(points=[(0, 1), (0.5, 0.8), (1, 0.5)], recall=0.5, precision=0.8)
    root = ElementTree.fromstring(svg)
    (dot,) = [e for e in root.iter(f"{SVG}circle") if e.get("class") == "operating-point"]
    frame = plots.CURVE
    assert float(dot.get("cx")) == pytest.approx(frame.x(0.5, 0, 1))
    assert float(dot.get("cy")) == pytest.approx(frame.y(0.8, 0, 1))
    assert frame.y(1, 0, 1) < frame.y(0, 0, 1)  # precision 1 is at the top


# --- the dashboard page and its fragments ---------------------------------------------------------------------

SCORES = [0.1, 0.2, 0.3, 0.45, 0.55, 0.6, 0.7, 0.8, 0.9, 0.35]
LABELS = [False, False, False, False, False, True, True, True, True, True]
CLASSES = [None, None, None, None, None, "scratch", "scratch", "dent", "dent", "dent"]
# at 0.5: TP 0.6 0.7 0.8 0.9 · FP 0.55 · FN 0.35 · TN 0.1 0.2 0.3 0.45


@pytest.fixture
def version(project):
    return scored_version_create(project=project, scores=SCORES, labels=LABELS, classes=CLASSES, with_maps=True)


def _url(version, name="version_detail"):
    return reverse(name, kwargs={"project_id": version.project.public_id, "version_id": version.public_id})


def _panel(client, version, **params):
    return client.get(_url(version), params, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="threshold-panel")


def _text(html: str, element_id: str) -> str:
    return re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html).group(1).strip()


def test_scored_images_reads_labels_as_they_are_now(version):
    scored = scored_images(version=version)
    assert sorted(scored.scores.tolist()) == sorted(SCORES)
    assert scored.n_defect == 5
    # the per-process cache follows the dataset: a relabelled image counts as it is now, a deleted one is gone
    escaped = Image.objects.get(predictions__raw_score=0.35)
    images_label_change(project=version.project, images=[escaped.id], label=Label.UNLABELLED, user=None)
    assert scored_images(version=version).n_defect == 4
    assert len(scored_images(version=version)) == 9
    images_delete(project=version.project, image_ids=[Image.objects.get(predictions__raw_score=0.9).id])
    assert 0.9 not in scored_images(version=version).scores


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.58, 0.85, 2.0])
def test_metrics_fragment_recomputes_from_stored_scores(client, owner, version, threshold):
    client.force_login(owner)
    response = _panel(client, version, t=threshold)
    html = response.content.decode()
    expected = metrics.confusion(np.array(LABELS), np.array(SCORES), threshold)
    assert response["HX-Trigger"] == "thresholdChanged"
    assert _text(html, "metric-precision") == f"{expected.precision:.3f}"
    assert _text(html, "metric-recall") == f"{expected.recall:.3f}"
    assert _text(html, "metric-f1") == f"{expected.f1:.3f}"
    assert [int(_text(html, f"count-{k}")) for k in ("tp", "fp", "fn", "tn")] == [
        expected.tp,
        expected.fp,
        expected.fn,
        expected.tn,
    ]
    assert "<html" not in html  # a fragment, not the page


def test_metrics_fragment_moves_the_histogram_line(client, owner, version):
    client.force_login(owner)
    xs = []
    for threshold in (0.3, 0.6):
        html = _panel(client, version, t=threshold).content.decode()
        svg = re.search(r'<svg class="plot histogram".*?</svg>', html, re.S).group(0)
        xs.append(_threshold_x(svg))
    lo, hi = 0.1 - 0.8 * 0.03, 0.9 + 0.8 * 0.03  # the scores' range with its 3% margin
    assert xs == [pytest.approx(plots.HISTOGRAM.x(t, lo, hi), abs=0.01) for t in (0.3, 0.6)]


def test_dashboard_page_shows_metrics_plots_presets_and_the_gallery(client, owner, version):
    client.force_login(owner)
    html = client.get(_url(version)).content.decode()
    for expected in ("Image AUROC", "Average precision", "Pixel AUROC", "AU-PRO", 'id="threshold-slider"'):
        assert expected in html
    assert html.count('<svg class="plot') == 3  # histogram, PR, ROC (the heatmap legend is an SVG too)
    f1_threshold, _ = metrics.f1_best_threshold(np.array(LABELS, int), np.array(SCORES))
    assert f'data-threshold="{f1_threshold!r}"' in html
    assert 'id="save-threshold"' in html
    assert html.count('class="tile outcome-') == 10


def test_a_preset_click_moves_the_slider_out_of_band(client, owner, version):
    client.force_login(owner)
    html = _panel(client, version, t=0.35, move=1).content.decode()
    assert 'hx-swap-oob="true"' in html and 'value="0.35"' in html
    assert "hx-swap-oob" not in _panel(client, version, t=0.35).content.decode()


def test_viewer_moves_the_slider_but_cannot_save(client, member_with, version):
    client.force_login(member_with(Role.VIEWER))
    html = _panel(client, version, t=0.4).content.decode()
    assert "metric-precision" in html and "save-threshold" not in html
    response = client.post(_url(version, "version_threshold_save"), {"t": "0.4"})
    assert response.status_code == 403
    version.refresh_from_db()
    assert version.operating_threshold is None


def _gallery(client, version, **params):
    response = client.get(_url(version), params, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="gallery")
    html = response.content.decode()
    assert "<html" not in html
    return re.findall(r'data-outcome="(\w+)"', html), re.findall(r"part-(\d+)\.png</span>", html)


@pytest.mark.parametrize(
    ("outcome", "indices"),
    [("tp", [8, 7, 6, 5]), ("fp", [4]), ("fn", [9]), ("tn", [3, 2, 1, 0]), ("", [8, 7, 6, 5, 4, 3, 9, 2, 1, 0])],
)
def test_gallery_filters_by_outcome_at_the_threshold_highest_score_first(client, owner, version, outcome, indices):
    client.force_login(owner)
    outcomes, names = _gallery(client, version, t=0.5, outcome=outcome)
    assert [int(n) for n in names] == indices
    if outcome:
        assert set(outcomes) == {outcome}


def test_gallery_filters_by_defect_class_and_follows_the_threshold(client, owner, version, project):
    client.force_login(owner)
    dent = project.defect_classes.get(name="dent").id
    outcomes, names = _gallery(client, version, t=0.5, defect_class=dent)
    assert [int(n) for n in names] == [8, 7, 9] and outcomes == ["tp", "tp", "fn"]
    outcomes, _ = _gallery(client, version, t=0.85, defect_class=dent)
    assert outcomes == ["tp", "fn", "fn"]


def test_prediction_overlays_are_rgba_pngs_for_members_only(client, owner, outsider, version):
    from PIL import Image as PILImage

    prediction = version.predictions.order_by("-raw_score").first()
    kwargs = {"project_id": version.project.public_id, "prediction_id": prediction.id}
    client.force_login(owner)
    for name in ("prediction_heatmap", "prediction_mask"):
        response = client.get(reverse(name, kwargs=kwargs))
        assert response["Content-Type"] == "image/png" and response["X-Content-Type-Options"] == "nosniff"
        picture = PILImage.open(io.BytesIO(response.content))
        assert picture.mode == "RGBA" and picture.size == (16, 16)
        alpha = np.asarray(picture)[..., 3]
        if name == "prediction_heatmap":  # every pixel coloured (issue 14 #1), the hot spot the most opaque
            assert 0 < alpha[0, 0] < alpha[6, 6]
        else:  # the predicted mask: clear outside, coloured inside
            assert alpha[0, 0] == 0 and alpha[6, 6] > 0
    assert client.get(reverse("prediction_input", kwargs=kwargs)).status_code == 404  # a test image has no input
    client.force_login(outsider)
    assert client.get(reverse("prediction_heatmap", kwargs=kwargs)).status_code == 404


def test_model_tab_opens_the_active_version_or_says_there_is_none(client, owner, project):
    client.force_login(owner)
    url = reverse("model_home", kwargs={"project_id": project.public_id})
    assert "No model yet" in client.get(url).content.decode()
    scored_version_create(project=project, scores=[0.1], labels=[False], number=1, is_active=True)
    scored_version_create(project=project, scores=[0.2], labels=[True], number=2)
    active = ModelVersion.objects.get(project=project, is_active=True)
    assert client.get(url).url == _url(active)


def test_compare_shows_both_versions_metrics_and_histograms(client, owner, project, version):
    other = scored_version_create(project=project, scores=[0.2, 0.9], labels=[False, True], number=2, threshold=0.3)
    client.force_login(owner)
    url = reverse("version_compare", kwargs={"project_id": project.public_id})
    html = client.get(url, {"a": version.public_id, "b": other.public_id}).content.decode()
    assert "Version 1" in html and "Version 2" in html
    assert html.count('<svg class="plot histogram"') == 2
    assert "0.800" in html  # v1 precision at its calibrated threshold 0.5 (4 TP, 1 FP)
    assert "1 / 1" in html  # v2: 1 good / 1 defect


# --- saving the threshold: inference follows ------------------------------------------------------------------


def test_threshold_service_checks_the_right_to_train(version, member_with):
    with pytest.raises(PermissionDenied):
        services.model_version_threshold_save(version=version, threshold=0.4, user=member_with(Role.REVIEWER))
    with pytest.raises(ValidationError, match=services.BAD_THRESHOLD):
        services.model_version_threshold_save(version=version, threshold=float("nan"), user=version.project.created_by)


def test_saving_the_threshold_changes_what_inference_calls(client, owner, trained_version):
    # given a defective part the model calls defective at its calibrated threshold
    data = encode(make_image(4242, size=96, defect="scratch").image, "PNG")
    before = predict_bytes(version=trained_version, data=data, purpose=Purpose.TRIAL).prediction
    assert before.is_anomalous
    # when the owner saves a threshold just above its score on the dashboard
    client.force_login(owner)
    response = client.post(_url(trained_version, "version_threshold_save"), {"t": repr(before.raw_score + 1e-6)})
    assert response.status_code == 302
    # then the version's operating threshold is that value and the same image now passes
    trained_version.refresh_from_db()
    assert trained_version.operating_threshold == pytest.approx(before.raw_score + 1e-6)
    after = predict_bytes(version=trained_version, data=data, purpose=Purpose.TRIAL).prediction
    assert not after.is_anomalous and after.normalised_score < 0.5
    # the dashboard opens on the saved threshold; reset goes back to the calibrated one
    html = client.get(_url(trained_version)).content.decode()
    assert 'id="threshold-slider"' in html and f'value="{trained_version.operating_threshold!r}"' in html
    client.post(_url(trained_version, "version_threshold_save"), {"reset": "1"})
    trained_version.refresh_from_db()
    assert trained_version.operating_threshold is None
    assert predict_bytes(version=trained_version, data=data, purpose=Purpose.TRIAL).prediction.is_anomalous


# --- trial detection ------------------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("batch.zip", buffer.getvalue())


def test_trial_runs_images_and_zips_and_adds_one_to_the_dataset(client, owner, trained_version):
    project = trained_version.project
    client.force_login(owner)
    url = reverse("trial", kwargs={"project_id": project.public_id})
    defect = encode(make_image(777, size=96, defect="dent").image, "PNG")
    uploads = [
        SimpleUploadedFile("line1.png", png_bytes(501, size=96)),
        _zip({"shift2/part.png": defect, "shift2/notes.txt": b"not an image"}),
    ]
    # when
    response = client.post(url, {"files": uploads}, follow=True)
    # then two images were tried, the text file is reported, and nothing entered the dataset
    html = response.content.decode()
    trials = Prediction.objects.filter(purpose=Purpose.TRIAL, model_version=trained_version).order_by("id")
    assert [t.input_name for t in trials] == ["line1.png", "batch.zip:shift2/part.png"]
    assert "Tried 2 image(s)" in html and "batch.zip:shift2/notes.txt" in html
    assert html.count('class="tile trial-card') == 2
    n_images = Image.objects.filter(project=project).count()
    # a viewer sees the results but cannot add them
    tried = trials.last()
    add_url = reverse("trial_add", kwargs={"project_id": project.public_id, "prediction_id": tried.id})
    viewer = make_user("vera")
    Membership.objects.create(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(url).status_code == 200
    assert client.post(add_url, {"label": "defect"}).status_code == 403
    # the owner confirms it as a defect: stored through intake, split chosen automatically, card swapped in place
    client.force_login(owner)
    card = client.post(add_url, {"label": "defect"}, HTTP_HX_REQUEST="true").content.decode()
    image = Image.objects.get(project=project, original_name="part.png")
    assert Image.objects.filter(project=project).count() == n_images + 1
    assert (image.label, image.source, image.split_is_automatic) == (Label.DEFECT, Source.UPLOAD, True)
    tried.refresh_from_db()
    assert tried.image == image
    assert "In the dataset as" in card and str(image.public_id) in card
    # a second add is refused with a reason
    with pytest.raises(ValidationError, match=services.ALREADY_ADDED):
        services.trial_prediction_add_to_dataset(prediction=tried, label="good", user=owner)


def test_trial_add_refuses_other_labels_and_test_predictions(version, owner):
    prediction = version.predictions.first()
    with pytest.raises(ValidationError, match=services.BAD_TRIAL_LABEL):
        services.trial_prediction_add_to_dataset(prediction=prediction, label="unlabelled", user=owner)
    with pytest.raises(ValidationError, match=services.NOT_A_TRIAL):
        services.trial_prediction_add_to_dataset(prediction=prediction, label="good", user=owner)


def test_trial_without_an_active_model_says_so(client, owner, project):
    client.force_login(owner)
    url = reverse("trial", kwargs={"project_id": project.public_id})
    response = client.post(url, {"files": [SimpleUploadedFile("a.png", png_bytes(1))]}, follow=True)
    assert "no active model" in response.content.decode()
