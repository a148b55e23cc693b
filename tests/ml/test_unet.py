"""Contract tests for the U-Net segmenter on tiny synthetic parts, ONNX parity, and mask IoU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ml import registry
from ml.segmentation_scores import mask_iou, mean_defect_iou
from ml.synthetic import make_dataset
from ml.types import DEFECT, GOOD, Sample
from ml.unet import UNetConfig, UNetSegmenter, build_network

# Pretrained encoder, 64 px, a handful of epochs: enough to rank synthetic defects in a few seconds.
# pos_weight 3, random good crops: in 8 epochs of a few steps the defaults (tuned for long runs on real tiles)
# leave probabilities too low to rank synthetic parts.
TINY = {
    "image_size": 64,
    "epochs": 8,
    "batch_size": 4,
    "good_per_defect": 1.0,
    "pos_weight": 3.0,
    "good_border_fraction": 0.0,
    "seed": 0,
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # On the shared two-core test box, two OpenMP threads spin against other processes: measured 5x slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def as_sample(part) -> Sample:
    if part.defect is None:
        return Sample(image=part.image, label=GOOD)
    return Sample(image=part.image, label=DEFECT, mask=part.mask)


@pytest.fixture(scope="module")
def test_parts():
    return make_dataset(n_good=10, n_defect=10, size=64, seed=2)


@pytest.fixture(scope="module")
def fitted() -> UNetSegmenter:
    train = [as_sample(part) for part in make_dataset(n_good=16, n_defect=16, size=64, seed=1)]
    model = registry.create_model("unet", **TINY)
    model.fit(train)
    return model


def test_synthetic_defects_score_above_good_parts(fitted, test_parts):
    # given
    labels = np.array([GOOD if part.defect is None else DEFECT for part in test_parts])

    # when
    predictions = fitted.predict([part.image for part in test_parts])

    # then: 8 epochs on 32 tiny parts rank unevenly from seed to seed and CPU to CPU (seeds 0/1/2 on this AMD EPYC:
    # 0.85 / 0.94 / 1.0; seed 0 gave >= 0.9 on the Intel hosts), so the bar is "clearly learned", not a ranking
    # this short run only sometimes reaches; the real-data figures are in docs/benchmarks.md
    assert roc_auc_score(labels, [p.score for p in predictions]) >= 0.8


def test_predictions_come_back_at_input_size_with_a_mask(fitted):
    # given: sizes that are not multiples of 32, one of them grayscale
    images = [np.full((45, 77, 3), 140, np.uint8), np.full((100, 64), 90, np.uint8)]

    # when
    predictions = fitted.predict(images)

    # then
    for prediction, image in zip(predictions, images):
        assert prediction.anomaly_map.shape == image.shape[:2]
        assert prediction.mask.shape == image.shape[:2] and prediction.mask.dtype == bool
        np.testing.assert_array_equal(prediction.mask, prediction.anomaly_map > 0.5)
        assert 0.0 <= prediction.score <= 1.0


def test_save_then_load_gives_identical_scores(fitted, test_parts, tmp_path):
    # given
    images = [part.image for part in test_parts[8:14]]
    before = fitted.predict(images)

    # when
    fitted.save(tmp_path)
    after = registry.load_model(tmp_path).predict(images)

    # then
    assert json.loads((tmp_path / "config.json").read_text())["family"] == "unet"
    assert [p.score for p in after] == [p.score for p in before]
    np.testing.assert_array_equal(after[-1].mask, before[-1].mask)


def test_onnx_export_gives_the_same_scores(fitted, test_parts, tmp_path):
    # given
    onnxruntime = pytest.importorskip("onnxruntime")
    images = [part.image for part in test_parts[6:14]]
    expected = np.array([p.score for p in fitted.predict(images)])

    # when
    fitted.to_onnx(tmp_path / "unet.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "unet.onnx"))
    scores, maps = session.run(None, {"images": fitted.preprocess(images).numpy()})

    # then
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert maps.shape == (len(images), 64, 64)


def test_encoder_starts_from_imagenet_weights():
    # given
    from ml.backbones import load_pretrained_state_dict

    imagenet = load_pretrained_state_dict("tf_efficientnet_lite0")

    # when
    network = build_network(UNetConfig(image_size=64))

    # then
    torch.testing.assert_close(network.encoder.model.state_dict()["conv_stem.weight"], imagenet["conv_stem.weight"])


def test_training_needs_an_outlined_defect():
    # given: a defect image without a mask is skipped, leaving nothing to learn defects from
    samples = [Sample(np.zeros((64, 64, 3), np.uint8)), Sample(np.zeros((64, 64, 3), np.uint8), label=DEFECT)]

    # when / then
    with pytest.raises(ValueError, match="at least one defect image with a mask"):
        UNetSegmenter(**TINY).fit(samples)


def test_image_size_must_suit_the_unet():
    with pytest.raises(ValueError, match="multiple of 32"):
        UNetSegmenter(image_size=100)


def test_mean_defect_iou_skips_images_without_defect_pixels():
    # given
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True
    half = np.zeros((4, 4), bool)
    half[:2, :1] = True

    # when
    value = mean_defect_iou([truth, np.zeros((4, 4), bool), None], [half, np.ones((4, 4), bool), None])

    # then
    assert value == pytest.approx(0.5)
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_native_mode_predicts_whole_images_of_any_size_like_the_onnx_graph(fitted, tmp_path):
    # given: a non-square size the graph was not traced at, not a multiple of 32
    onnxruntime = pytest.importorskip("onnxruntime")
    parts = make_dataset(n_good=2, n_defect=2, size=64, seed=3)
    images = [np.pad(part.image, ((0, 20), (0, 50), (0, 0)), mode="reflect") for part in parts]
    expected = fitted.predict(images)

    # when
    fitted.to_onnx(tmp_path / "unet.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "unet.onnx"))
    scores, maps = session.run(None, {"images": fitted.preprocess(images).numpy()})

    # then: padded to 96 x 128 for the graph, cropped back to 84 x 114 for the contract
    assert maps.shape == (len(images), 96, 128)
    np.testing.assert_allclose(scores, [p.score for p in expected], atol=1e-4)
    np.testing.assert_allclose(maps[:, :84, :114], np.stack([p.anomaly_map for p in expected]), atol=1e-4)
    assert expected[0].anomaly_map.shape == (84, 114)


def test_progress_keeps_coming_within_epochs():
    # given
    train = [as_sample(part) for part in make_dataset(n_good=12, n_defect=12, size=64, seed=1)]
    calls = []

    # when: one epoch of 18 crops at batch 2 is 9 steps
    UNetSegmenter(**{**TINY, "epochs": 1, "batch_size": 2}).fit(train, progress=lambda *args: calls.append(args))

    # then: a heartbeat inside the epoch, not only at its end
    epoch_calls = [call for call in calls if call[0] == "epoch"]
    assert len(epoch_calls) >= 2 and epoch_calls[-1][1] == 1.0


def test_resized_mode_still_trains_and_format_1_models_load_resized(tmp_path):
    # given: a resized-mode model saved as format 1 (before the native mode existed)
    train = [as_sample(part) for part in make_dataset(n_good=6, n_defect=6, size=64, seed=1)]
    model = UNetSegmenter(**{**TINY, "native": False, "epochs": 1})
    model.fit(train)
    model.save(tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    del document["config"]["native"]
    document["format_version"] = 1
    (tmp_path / "config.json").write_text(json.dumps(document))
    image = np.full((45, 77, 3), 120, np.uint8)

    # when
    loaded = registry.load_model(tmp_path)

    # then
    assert loaded.config.native is False
    assert loaded.predict([image])[0].score == pytest.approx(model.predict([image])[0].score, abs=1e-6)
    assert loaded.predict([image])[0].anomaly_map.shape == (45, 77)
