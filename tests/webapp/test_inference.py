import threading
import time
import uuid
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from ml.synthetic import make_image
from tests.webapp.conftest import encode
from webapp.images.intake.decoding import RejectedFile
from webapp.inference import services
from webapp.inference.model_files import artifact_local_dir
from webapp.inference.models import Prediction, Purpose
from webapp.inference.services import mask_boxes, predict_bytes, version_calibration
from webapp.storage import stored_file_write
from webapp.training.models import ModelVersion


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


def _at_once(call, count: int = 8) -> tuple[list, list]:
    """`call()` from `count` threads started together: (results, exceptions)."""
    results, errors = [], []
    start = threading.Barrier(count)

    def run() -> None:
        start.wait()
        try:
            results.append(call())
        except Exception as exc:  # collected: an exception in a thread would not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_first_requests_arriving_together_load_the_model_once(monkeypatch, tmp_path):
    loads = []

    def slow_load(directory, *, device):
        loads.append((directory, device))
        time.sleep(0.2)
        return object()

    monkeypatch.setattr(services, "load_model", slow_load)
    monkeypatch.setattr(services, "artifact_local_dir", lambda version: tmp_path)
    monkeypatch.setattr(services, "_models", OrderedDict())
    version = SimpleNamespace(public_id=uuid.uuid4())
    results, errors = _at_once(lambda: services.model_for_version(version))
    assert errors == [] and len(results) == 8
    assert len(loads) == 1 and len({id(model) for model in results}) == 1
    assert loads[0][1] == "cpu"  # KENSA_PREDICT_DEVICE's default: predictions load on the CPU unless told


def test_processes_fetching_one_model_at_once_all_get_the_complete_folder(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    prefix = f"projects/p/runs/{uuid.uuid4()}"
    files = {"config.json": b"{}", "model.safetensors": np.random.default_rng(0).bytes(400_000)}
    for name, data in files.items():
        stored_file_write(f"{prefix}/model/{name}", data)
    version = SimpleNamespace(public_id=uuid.uuid4(), artifact_prefix=prefix, artifact_files=list(files))
    results, errors = _at_once(lambda: artifact_local_dir(version))
    assert errors == [] and len(set(results)) == 1
    folder = results[0]
    assert {name: (folder / name).read_bytes() for name in files} == files
    assert [p.name for p in folder.parent.iterdir()] == [str(version.public_id)]  # no fetch folder left behind
