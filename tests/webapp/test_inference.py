import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from ml.synthetic import make_image
from tests.webapp.conftest import encode
from webapp.images.intake.decoding import RejectedFile
from webapp.inference.services import mask_boxes, predict_bytes, version_calibration
from webapp.training.models import ModelVersion, Prediction, Purpose


def test_mask_boxes_one_per_region_largest_first():
    mask = np.zeros((20, 30), bool)
    mask[2:4, 3:5] = True  # 4 pixels
    mask[10:15, 20:28] = True  # 40 pixels
    mask[0, 29] = True  # a speck
    assert [(b.x0, b.y0, b.x1, b.y1, b.area) for b in mask_boxes(mask)] == [(20, 10, 28, 15, 40), (3, 2, 5, 4, 4)]


def test_predict_bytes_stores_the_input_and_follows_the_operating_threshold(trained_version):
    # given a defective part
    part = make_image(999, size=96, defect="stain")
    data = encode(part.image, "PNG")
    # when
    result = predict_bytes(version=trained_version, data=data, purpose=Purpose.TRIAL, name="line3.png")
    # then
    row = Prediction.objects.get(id=result.prediction.id)
    assert row.input_name == "line3.png"
    assert default_storage.open(row.input_file.name).read() == data
    heat = np.asarray(PILImage.open(default_storage.open(row.anomaly_map.name)))
    assert heat.shape == (96, 96)
    assert row.is_anomalous == (row.raw_score >= trained_version.threshold)
    assert row.normalised_score == pytest.approx(version_calibration(trained_version).normalise(row.raw_score))
    # moving the operating threshold just above the score flips the call, and 0.5 follows it
    ModelVersion.objects.filter(id=trained_version.id).update(operating_threshold=row.raw_score + 1e-6)
    trained_version.refresh_from_db()
    again = predict_bytes(version=trained_version, data=data, purpose=Purpose.TRIAL).prediction
    assert not again.is_anomalous and again.normalised_score < 0.5


def test_predict_bytes_rejects_bad_input(trained_version):
    with pytest.raises(RejectedFile, match="not an image"):
        predict_bytes(version=trained_version, data=b"GIF89a not really", purpose=Purpose.TRIAL)
