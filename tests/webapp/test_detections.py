"""Detections (issue 20): every stored prediction carries its defects as boxes with a class and a confidence, the
API returns them in the pixels of the image as sent, and the gallery draws them."""

import io

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image as PILImage

from ml.synthetic import make_image
from ml.thresholds import Calibration
from ml.types import Box, Detection
from ml.types import Prediction as MlPrediction
from tests.webapp.conftest import encode
from tests.webapp.test_api import auth, make_token, predict_url
from webapp.api.models import Scope
from webapp.images.services import annotation_mask_png
from webapp.inference.detections import detections_of, mask_png_with_detections, stored_detections
from webapp.inference.models import Prediction

CALIBRATION = Calibration(threshold=1.0, scale=0.5)


def test_a_family_without_its_own_detections_gets_one_per_region_with_its_peak_as_confidence():
    # given a map with two regions above the threshold, one stronger
    anomaly_map = np.zeros((40, 60), np.float32)
    anomaly_map[5:10, 5:15] = 2.0
    anomaly_map[20:30, 40:50] = 1.2
    prediction = MlPrediction(score=2.0, anomaly_map=anomaly_map)
    # when
    found = detections_of(prediction, anomaly_map >= CALIBRATION.threshold, CALIBRATION)
    # then boxes are exclusive at the end, the class is unnamed, the strongest comes first, and 0.5 is the threshold
    assert [d["box"] for d in found] == [[5, 5, 15, 10], [40, 20, 50, 30]]
    assert [d["label"] for d in found] == ["", ""]
    assert found[0]["confidence"] == pytest.approx(CALIBRATION.normalise(2.0), abs=1e-6)
    assert 0.5 < found[1]["confidence"] < found[0]["confidence"]


def test_a_family_detections_keep_their_class_and_scale_to_the_image_as_sent():
    # given a supervised family's own detection on a 100 x 50 map of an image sent at 200 x 100
    own = Detection(Box(10, 4, 20, 9, "scratch"), 0.9)
    prediction = MlPrediction(score=0.9, anomaly_map=np.zeros((50, 100), np.float32), detections=[own])
    mask = np.zeros((50, 100), bool)
    # when stored in the mask and read back
    found = detections_of(prediction, mask, CALIBRATION, input_size=(200, 100))
    png = mask_png_with_detections(mask, found, size=(200, 100))
    row = Prediction(predicted_mask="x", normalised_score=0.9)
    # then
    assert found == [{"box": [20, 8, 40, 18], "label": "scratch", "confidence": 0.9}]
    assert np.asarray(PILImage.open(io.BytesIO(png))).shape == (50, 100)  # still the mask, 0/255
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("webapp.inference.detections.stored_file_read", lambda name: png)
        assert stored_detections(row) == {"size": [200, 100], "detections": found}


def test_a_mask_stored_before_detections_gives_its_regions(monkeypatch):
    mask = np.zeros((30, 30), bool)
    mask[3:8, 10:20] = True
    monkeypatch.setattr("webapp.inference.detections.stored_file_read", lambda name: annotation_mask_png(mask))
    found = stored_detections(Prediction(predicted_mask="old_mask.png", normalised_score=0.8))
    assert found == {"size": [30, 30], "detections": [{"box": [10, 3, 20, 8], "label": "", "confidence": 0.8}]}


def test_the_api_returns_detections_where_the_defect_is(client, trained_version, owner):
    # given a part with a drawn defect
    project = trained_version.project
    secret = make_token(project, owner, scopes=[Scope.PREDICT])
    part = make_image(4242, size=96, defect="stain")
    # when
    response = client.post(predict_url(project), encode(part.image, "PNG"), "image/png", **auth(secret))
    # then the strongest detection covers the defect, above the threshold's confidence
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["is_anomalous"] and body["detections"]
    ys, xs = np.nonzero(part.mask)
    x0, y0, x1, y1 = body["detections"][0]["box"]
    assert x0 <= xs.mean() < x1 and y0 <= ys.mean() < y1
    assert body["detections"][0]["confidence"] >= 0.5 and body["detections"][0]["label"] == ""
    # and the largest box agrees with the mask's boxes
    assert {tuple(d["box"]) for d in body["detections"]} == {
        (b["x0"], b["y0"], b["x1"], b["y1"]) for b in body["boxes"]
    }


def test_the_gallery_draws_the_detections_of_images_called_defective(client, trained_version, owner):
    client.force_login(owner)
    project = trained_version.project
    page = client.get(reverse("version_detail", args=[project.public_id, trained_version.public_id]))
    html = page.content.decode()
    called = trained_version.predictions.filter(is_anomalous=True).count()
    assert called and html.count('<svg class="thumb boxes"') >= 1
    assert 'class="detection"' in html and 'class="show-boxes"' in html
