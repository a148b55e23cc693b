"""Contract tests for the autoencoder family on tiny synthetic parts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ml import registry
from ml.autoencoder import Autoencoder
from ml.synthetic import make_dataset
from ml.types import DEFECT, GOOD, Sample

# Small enough to train in a few seconds on two CPU cores, large enough to separate synthetic defects.
TINY = {
    "image_size": 64,
    "epochs": 15,
    "latent_dim": 32,
    "base_channels": 16,
    "loss": "ssim",
    "batch_size": 4,
    "map_sigma": 1.0,
    "learning_rate": 2e-3,
    "seed": 0,
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # On the shared two-core test box, two OpenMP threads spin against other processes: measured 5x slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def train_samples() -> list[Sample]:
    return [Sample(image=part.image) for part in make_dataset(n_good=32, n_defect=0, size=64, seed=1)]


@pytest.fixture(scope="module")
def test_parts():
    return make_dataset(n_good=12, n_defect=12, size=64, seed=2)


@pytest.fixture(scope="module")
def fitted(train_samples) -> Autoencoder:
    model = registry.create_model("autoencoder", **TINY)
    model.fit(train_samples)
    return model


def test_synthetic_defects_score_above_good_parts(fitted, test_parts):
    # given
    labels = np.array([GOOD if part.defect is None else DEFECT for part in test_parts])

    # when
    predictions = fitted.predict([part.image for part in test_parts])

    # then
    scores = np.array([p.score for p in predictions])
    assert roc_auc_score(labels, scores) >= 0.9


def test_prediction_maps_match_each_input_size(fitted):
    # given
    images = [np.full((50, 70, 3), 120, np.uint8), np.full((64, 64), 90, np.uint8)]

    # when
    predictions = fitted.predict(images)

    # then
    assert [p.anomaly_map.shape for p in predictions] == [(50, 70), (64, 64)]
    assert all(p.anomaly_map.dtype == np.float32 and p.mask is None for p in predictions)


def test_save_then_load_gives_identical_scores(fitted, test_parts, tmp_path):
    # given
    images = [part.image for part in test_parts[:6]]
    before = fitted.predict(images)

    # when
    fitted.save(tmp_path)
    loaded = registry.load_model(tmp_path)
    after = loaded.predict(images)

    # then
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["family"] == "autoencoder" and config["config"]["image_size"] == 64
    assert [p.score for p in after] == [p.score for p in before]
    np.testing.assert_array_equal(after[0].anomaly_map, before[0].anomaly_map)


def test_same_seed_trains_the_same_model(train_samples):
    # given
    config = {**TINY, "epochs": 2}
    first, second = Autoencoder(**config), Autoencoder(**config)

    # when
    first.fit(train_samples[:8])
    second.fit(train_samples[:8])

    # then
    image = [train_samples[0].image]
    assert first.predict(image)[0].score == second.predict(image)[0].score


def test_progress_reports_epochs_and_a_raising_callback_cancels(train_samples):
    # given
    model = Autoencoder(**{**TINY, "epochs": 3})
    seen: list[tuple[str, float]] = []

    class Cancelled(Exception):
        pass

    def progress(stage: str, fraction: float, message: str) -> None:
        seen.append((stage, fraction))
        if stage == "epoch" and fraction >= 2 / 3:
            raise Cancelled

    # when / then
    with pytest.raises(Cancelled):
        model.fit(train_samples[:8], progress=progress)
    epochs = [fraction for stage, fraction in seen if stage == "epoch"]
    assert epochs == pytest.approx([1 / 3, 2 / 3])


def test_fit_without_good_images_is_refused():
    # given
    defect_only = [Sample(image=np.zeros((64, 64, 3), np.uint8), label=DEFECT)]

    # when / then
    with pytest.raises(ValueError, match="at least one good image"):
        Autoencoder(**TINY).fit(defect_only)


def test_l2_loss_and_max_score_run(train_samples):
    # given
    model = Autoencoder(**{**TINY, "loss": "l2", "score": "max", "epochs": 1})

    # when
    model.fit(train_samples[:8])
    prediction = model.predict([train_samples[0].image])[0]

    # then
    assert prediction.score == pytest.approx(float(prediction.anomaly_map.max()), rel=0.2)


def test_onnx_export_gives_the_same_scores(fitted, test_parts, tmp_path):
    # given
    onnxruntime = pytest.importorskip("onnxruntime")
    images = [part.image for part in test_parts[:4]]
    expected = np.array([p.score for p in fitted.predict(images)])

    # when
    fitted.to_onnx(tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    scores, maps = session.run(None, {"images": fitted.preprocess(images).numpy()})

    # then
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert maps.shape == (4, 64, 64)
