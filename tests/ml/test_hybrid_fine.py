"""The hybrid's stride-4 outline (fine_outline): thin defects outlined better than by the stride-8 patch grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml.hybrid import HybridSegmenter, outline_loss, soft_dice_loss, stride4_features
from ml.registry import create_model
from ml.segmentation_scores import mean_defect_iou
from ml.types import DEFECT, Sample

SIZE = 96
CONFIG = {
    "pretrained": False,
    "image_size": SIZE,
    "epochs": 30,
    "head_good_images": 12,
    "hidden_channels": 16,
    "patchcore": {
        "backbone": "test_efficientnet",
        "layers": (2, 3),  # a stride-8 patch grid (12 x 12 here), as lite0's default
        "rotations": 1,
        "min_bank_size": 64,
        "max_bank_size": 256,
    },
}


@pytest.fixture(autouse=True)
def seeded_weights():
    torch.manual_seed(0)  # the random test backbone is drawn when the model is built


def _good(rng: np.random.Generator) -> np.ndarray:
    base = 120 + rng.normal(0, 6, (SIZE, SIZE, 1))
    return np.clip(np.repeat(base, 3, axis=2), 0, 255).astype(np.uint8)


def _scratch(rng: np.random.Generator) -> Sample:
    """A dark scratch 3 px wide and 24 to 47 px long, across or down the part: thinner than a patch (8 px)."""
    image, mask = _good(rng), np.zeros((SIZE, SIZE), bool)
    length = int(rng.integers(SIZE // 4, SIZE // 2))
    height, width = (3, length) if rng.random() < 0.5 else (length, 3)
    y, x = rng.integers(4, SIZE - height - 4), rng.integers(4, SIZE - width - 4)
    mask[y : y + height, x : x + width] = True
    image[mask] = 20
    return Sample(image, DEFECT, mask)


def test_the_backbone_s_stride_4_stage_is_read_at_a_quarter_of_the_working_size():
    model = create_model("hybrid", **CONFIG, device="cpu")
    features = stride4_features(model.patchcore, [np.zeros((SIZE, SIZE, 3), np.uint8)] * 2)
    assert features.shape == (2, 24, SIZE // 4, SIZE // 4)  # test_efficientnet's stride-4 stage has 24 channels
    assert model._fine_possible()
    # A patch grid at stride 4 already has nothing finer to learn from: no fine branch is trained there.
    at_stride_4 = {**CONFIG, "patchcore": {**CONFIG["patchcore"], "layers": (1, 2)}}
    assert not create_model("hybrid", **at_stride_4, device="cpu")._fine_possible()


def test_the_stride_4_outline_fits_thin_defects_better_than_the_stride_8_grid_and_is_saved(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    train = [Sample(_good(rng)) for _ in range(14)] + [_scratch(rng) for _ in range(24)]
    tests = [_scratch(rng) for _ in range(8)]
    drawn_rows = {}
    choose = HybridSegmenter._choose_mask_threshold

    def keep_rows(self, *rows):
        drawn_rows["rows"] = rows
        return choose(self, *rows)

    monkeypatch.setattr(HybridSegmenter, "_choose_mask_threshold", keep_rows)

    model = create_model("hybrid", **CONFIG, device="cpu")  # the fine outline is the default
    model.fit(train)
    assert model.fine is not None
    model.save(tmp_path / "model")
    loaded = create_model("hybrid", **CONFIG).load(tmp_path / "model")
    assert loaded.config.fine_outline and loaded.fine is not None
    images = [s.image for s in tests]
    fine = model.predict(images)
    for before, after in zip(fine, loaded.predict(images), strict=True):
        assert before.score == after.score
        np.testing.assert_array_equal(before.anomaly_map, after.anomaly_map)
        np.testing.assert_array_equal(before.mask, after.mask)

    # The stride-8 outline of the same fit (guided filter on in both), cut where it best matches the drawn outlines.
    model.config.fine_outline = False
    model.config.mask_threshold = model._choose_mask_threshold(*drawn_rows["rows"])
    grid = model.predict(images)
    truths = [s.mask for s in tests]
    fine_iou = mean_defect_iou(truths, [p.mask for p in fine])
    grid_iou = mean_defect_iou(truths, [p.mask for p in grid])
    assert fine_iou >= grid_iou + 0.08, (fine_iou, grid_iou)
    # The image score and the anomaly map stay the patch grid's: the fine branch draws the outline only.
    assert [p.score for p in fine] == [p.score for p in grid]
    for with_fine, without in zip(fine, grid, strict=True):
        np.testing.assert_array_equal(with_fine.anomaly_map, without.anomaly_map)

    # A checkpoint saved before the option existed loads with it off.
    document = json.loads((tmp_path / "model" / "config.json").read_text())
    del document["config"]["fine_outline"]
    (tmp_path / "model" / "config.json").write_text(json.dumps(document))
    assert not create_model("hybrid", **CONFIG).load(tmp_path / "model").config.fine_outline


def test_the_soft_dice_loss_counts_a_defect_against_its_own_size():
    truth = torch.zeros(2, 1, 8, 8)
    truth[0, 0, 2:4, 2:4] = 1.0  # a small defect in the first crop, none in the second
    exact = torch.where(truth > 0, 20.0, -20.0)
    assert soft_dice_loss(exact, truth).item() < 1e-3
    missed = torch.full_like(truth, -20.0)
    # Missing the 4-cell defect costs its whole crop (4 / 5 with smooth 1), however few cells it has.
    assert soft_dice_loss(missed[:1], truth[:1]).item() == pytest.approx(0.8, abs=1e-3)
    bce = outline_loss(missed, truth)
    assert outline_loss(missed, truth, dice=True).item() == pytest.approx(
        bce.item() + soft_dice_loss(missed, truth).item(), rel=1e-6
    )


def test_fine_dice_trains_changes_the_loss_and_is_saved(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    train = [Sample(_good(rng)) for _ in range(10)] + [_scratch(rng) for _ in range(8)]
    captured = {}
    train_fine = HybridSegmenter._train_fine

    def keep_inputs(self, coarse, outlines, rng, progress):
        captured["inputs"] = (coarse, outlines)
        return train_fine(self, coarse, outlines, rng, progress)

    monkeypatch.setattr(HybridSegmenter, "_train_fine", keep_inputs)
    model = create_model("hybrid", **{**CONFIG, "epochs": 5}, fine_epochs=4, fine_dice=True, device="cpu")
    model.fit(train)
    assert model.fine is not None and model.config.fine_dice
    assert len([h for h in model.summary.history if "fine_epoch" in h]) == 4

    model.save(tmp_path / "model")
    loaded = create_model("hybrid", **CONFIG).load(tmp_path / "model")
    assert loaded.config.fine_dice and loaded.fine is not None
    images = [s.image for s in train[-3:]]
    for before, after in zip(model.predict(images), loaded.predict(images), strict=True):
        np.testing.assert_array_equal(before.mask, after.mask)

    # The same crops and starting weights with and without the Dice term: Dice (never negative, and large where
    # the untrained branch draws a thin scratch) raises the first epoch's loss, and the branch learns otherwise.
    losses, weights = {}, {}
    for dice in (True, False):
        model.config.fine_dice = dice
        torch.manual_seed(1)
        train_fine(model, *captured["inputs"], np.random.default_rng(0), lambda *a: None)
        losses[dice] = [h["loss"] for h in model.summary.history if "fine_epoch" in h][-4:]
        weights[dice] = model.fine.body[-1].weight.detach().clone()
    assert losses[True][0] > losses[False][0] + 0.05, losses
    assert not torch.equal(weights[True], weights[False])

    # A checkpoint saved before the option existed loads with it off.
    document = json.loads((tmp_path / "model" / "config.json").read_text())
    del document["config"]["fine_dice"]
    (tmp_path / "model" / "config.json").write_text(json.dumps(document))
    assert not create_model("hybrid", **CONFIG).load(tmp_path / "model").config.fine_dice
