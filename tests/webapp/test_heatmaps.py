"""Heatmaps for every prediction, on one scale relative to the threshold: a part called good still shows where it
is warmest, a missed defect (scored below the threshold) shows its spot above the rest of the part, and the outline
of what reaches the threshold is drawn only there."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image as PILImage
from scipy import ndimage

from ml.synthetic import make_image
from ml.thresholds import Calibration
from tests.webapp.conftest import encode, png_bytes
from webapp.dashboard import services
from webapp.dashboard.overlays import HEAT_LUT, MASK_RGB, THRESHOLD_BYTE, heatmap_rgba_png, legend_stops
from webapp.dashboard.synthetic import scored_version_create
from webapp.inference.models import Prediction, Purpose
from webapp.inference.predictions import MAP_GAIN, anomaly_map_png
from webapp.inference.services import predict_bytes
from webapp.storage import stored_file_read, stored_file_write

OUTLINE = (*MASK_RGB, 255)


def _rgba(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as picture:
        assert picture.mode == "RGBA"
        return np.asarray(picture)


def _grey(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as picture:
        return np.asarray(picture)


def _outline_pixels(rgba: np.ndarray) -> np.ndarray:
    return np.all(rgba == OUTLINE, axis=-1)


def _overlay(client, prediction) -> np.ndarray:
    url = reverse("prediction_heatmap", args=[prediction.model_version.project.public_id, prediction.id])
    response = client.get(url)
    assert response.status_code == 200
    return _rgba(response.content)


# --- the stored map and the colour scale ------------------------------------------------------------------------


def test_the_stored_map_keeps_detail_far_below_the_threshold_and_128_is_the_threshold():
    calibration = Calibration(threshold=10.0, scale=0.5)
    raw = np.array([[0.0, 2.0, 5.0, 8.0, 9.5, 9.99], [10.0, 10.5, 11.0, 20.0, 100.0, 1e6]])
    stored = _grey(anomaly_map_png(raw, calibration))
    assert ((stored >= THRESHOLD_BYTE) == (raw >= calibration.threshold)).all()
    # every raw step 20, 16, 10, 4 and 1 scales below the threshold keeps its own byte, in order
    assert (np.diff(stored[0]) > 0).all() and stored[0, 0] > 0
    assert (np.diff(stored[1]) > 0).all()
    # the PNG says how to read it back
    with PILImage.open(io.BytesIO(anomaly_map_png(raw, calibration))) as picture:
        meta = json.loads(picture.text["kensa-map"])
    assert meta == {"encoding": "asinh-z", "gain": MAP_GAIN, "threshold": 10.0, "scale": 0.5}
    back = meta["threshold"] + meta["scale"] * np.sinh((stored[0, :5].astype(float) - 127.5) / meta["gain"])
    assert back == pytest.approx(raw[0, :5], abs=0.05 * calibration.threshold)


def test_the_colour_scale_is_visible_everywhere_and_jumps_at_the_threshold():
    assert (HEAT_LUT[:, 3] > 0).all()  # nothing is blank
    assert (np.diff(HEAT_LUT[:THRESHOLD_BYTE, 3].astype(int)) >= 0).all()  # nearer the threshold, more opaque
    assert HEAT_LUT[THRESHOLD_BYTE - 1, 3] < HEAT_LUT[THRESHOLD_BYTE, 3]
    assert tuple(HEAT_LUT[THRESHOLD_BYTE - 1, :3]) != tuple(HEAT_LUT[THRESHOLD_BYTE, :3])
    # the legend is drawn from the same colours, the threshold halfway
    stops = legend_stops()
    r, g, b, _ = HEAT_LUT[THRESHOLD_BYTE]
    assert (50.0, f"rgb({r},{g},{b})") in stops and stops[0][0] == 0.0 and stops[-1][0] == 100.0


def test_the_outline_is_drawn_only_where_the_map_reaches_the_threshold():
    calibration = Calibration(threshold=1.0, scale=0.1)
    yy, xx = np.mgrid[:64, :64]
    raw = 1.4 - np.hypot(yy - 32, xx - 32) / 40  # a spot that reaches 1.0 within 16 px of the centre
    rgba = _rgba(heatmap_rgba_png(anomaly_map_png(raw, calibration)))
    outline = _outline_pixels(rgba)
    assert outline.any() and (raw[outline] >= 1.0).all()
    below = _rgba(heatmap_rgba_png(anomaly_map_png(raw - 0.5, calibration)))
    assert not _outline_pixels(below).any()
    assert (below[..., 3] > 0).all()


# --- real predictions ----------------------------------------------------------------------------------------------


def test_a_part_called_good_gets_a_heatmap_with_its_detail(client, owner, trained_version):
    prediction = predict_bytes(version=trained_version, data=png_bytes(901, size=96), purpose=Purpose.TRIAL).prediction
    assert not prediction.is_anomalous
    client.force_login(owner)
    rgba = _overlay(client, prediction)
    # every pixel carries a colour, and the colours follow the score (its map is far below the threshold and
    # fairly flat, so a few shades: the logistic map stored one value, 0, for all of it)
    assert (rgba[..., 3] > 0).mean() == 1.0
    assert len(np.unique(rgba.reshape(-1, 4), axis=0)) >= 3
    assert not _outline_pixels(rgba).any()  # nothing reaches the threshold


def test_a_missed_defect_shows_where_the_defect_is(client, owner, trained_version):
    # given a defect the model scores well below a threshold a user raised (an escape)
    sample = make_image(4242, size=96, defect="scratch")
    data = encode(sample.image, "PNG")
    caught = predict_bytes(version=trained_version, data=data, purpose=Purpose.TRIAL).prediction
    scale = float(trained_version.calibration["scale"])
    services.model_version_threshold_save(version=trained_version, threshold=caught.raw_score + 3 * scale, user=owner)
    missed = predict_bytes(version=trained_version, data=data, purpose=Purpose.TRIAL).prediction
    assert not missed.is_anomalous
    # then its heatmap is drawn, hotter on the scratch than on the rest of the part, with no outline
    client.force_login(owner)
    rgba = _overlay(client, missed)
    defect = ndimage.binary_dilation(sample.mask, iterations=4)
    alpha = rgba[..., 3].astype(float)
    assert alpha[defect].max() > np.percentile(alpha[~defect], 99)
    assert alpha[defect].mean() > alpha[~defect].mean()
    stored = _grey(stored_file_read(missed.anomaly_map.name))
    assert defect[np.unravel_index(np.argmax(stored), stored.shape)]
    assert not _outline_pixels(rgba).any()


def test_the_gallery_draws_heatmaps_relative_to_its_own_threshold(client, owner, project):
    # given a test prediction whose map was stored relative to the calibrated threshold 1.0
    version = scored_version_create(project=project, scores=[0.8], labels=[True], threshold=1.0, scale=0.1)
    yy, xx = np.mgrid[:64, :64]
    raw = 0.8 - np.hypot(yy - 32, xx - 32) / 40  # peaks at 0.8: below 1.0, above 0.6 within 8 px of the centre
    prediction = Prediction.objects.get(model_version=version)
    prediction.anomaly_map = stored_file_write(
        f"{version.artifact_prefix}/p/{prediction.id}_map.png", anomaly_map_png(raw, Calibration(1.0, 0.1))
    )
    prediction.save()
    client.force_login(owner)
    url = reverse("prediction_heatmap", args=[project.public_id, prediction.id])
    # at the threshold it was made with, nothing reaches it
    assert not _outline_pixels(_rgba(client.get(url).content)).any()
    # at the slider's lower threshold the spot is outlined where the raw map reaches it, and only there
    lowered = _rgba(client.get(url, {"t": "0.6"}).content)
    outline = _outline_pixels(lowered)
    assert outline.any() and (raw[outline] >= 0.6 - 0.01).all()
    # and the gallery asks for its threshold
    gallery = client.get(
        reverse("version_detail", args=[project.public_id, version.public_id]),
        {"t": "0.6"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="gallery",
    ).content.decode()
    assert f"{url}?t=0.6" in gallery


def test_the_gallery_draws_a_predicted_mask_only_on_images_called_defective_at_its_threshold(client, owner, project):
    version = scored_version_create(project=project, scores=[0.2, 0.7], labels=[True, True], with_maps=True)
    client.force_login(owner)
    url = reverse("version_detail", args=[project.public_id, version.public_id])

    def masks_at(threshold: str) -> int:
        html = client.get(url, {"t": threshold}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="gallery").content.decode()
        return html.count('class="thumb mask"')

    assert masks_at("0.1") == 2  # both caught
    assert masks_at("0.5") == 1  # one escapes: its heatmap stays, its mask goes
    assert masks_at("0.9") == 0
