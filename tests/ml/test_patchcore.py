import numpy as np
import pytest
import torch

from ml.coreset import GreedyCoresetSampler, RandomSampler
from ml.metrics import image_auroc
from ml.patchcore import PatchCore, rotated_copies
from ml.registry import load_model
from ml.synthetic import make_dataset
from ml.types import DEFECT, GOOD, Sample

SIZE = 96


@pytest.fixture(scope="module")
def parts():
    """12 good training parts, then 6 good and 6 defective test parts."""
    train = make_dataset(n_good=12, n_defect=0, size=SIZE, seed=1)
    test = make_dataset(n_good=6, n_defect=6, size=SIZE, seed=2)
    return [Sample(image=p.image) for p in train], test


@pytest.fixture(scope="module")
def fitted(parts):
    train, _ = parts
    model = PatchCore(image_size=SIZE, coreset_ratio=0.25, pretrained=True)
    model.fit(train)
    return model


def test_defects_score_above_good_parts(fitted, parts):
    # given
    _, test = parts

    # when
    predictions = fitted.predict([p.image for p in test])

    # then
    labels = [DEFECT if p.defect else GOOD for p in test]
    assert image_auroc(np.array(labels), np.array([p.score for p in predictions])) >= 0.9
    assert predictions[0].anomaly_map.shape == (SIZE, SIZE)
    defect = test[-1]
    anomaly_map = predictions[-1].anomaly_map
    assert anomaly_map[defect.mask].mean() > anomaly_map[~defect.mask].mean()


def test_an_images_score_does_not_depend_on_the_batch_it_comes_in(fitted, parts):
    # The model bundle scores one image at a time and must agree with the app, which scores in batches.
    _, test = parts
    images = [p.image for p in test]
    batched = [p.score for p in fitted.predict(images, batch_size=len(images))]
    alone = [fitted.predict([image], batch_size=1)[0].score for image in images]
    assert fitted.config.search_precision == "float32" and fitted.config.score == "top_mean"
    np.testing.assert_allclose(batched, alone, rtol=1e-5)


def test_save_and_load_give_the_same_scores(fitted, parts, tmp_path):
    # given
    images = [p.image for p in parts[1]]
    before = fitted.predict(images)

    # when
    fitted.save(tmp_path)
    loaded = load_model(tmp_path)
    after = loaded.predict(images)

    # then
    assert isinstance(loaded, PatchCore)
    assert loaded.config.bank_size == len(fitted.memory_bank)
    assert np.allclose([p.score for p in before], [p.score for p in after], atol=1e-5)
    assert np.allclose(before[3].anomaly_map, after[3].anomaly_map, atol=1e-5)
    assert "memory_bank" in loaded.state_dict()


def test_maps_come_back_at_each_image_size(fitted):
    images = [np.zeros((50, 70), np.uint8), np.zeros((120, 80, 3), np.uint8)]
    shapes = [p.anomaly_map.shape for p in fitted.predict(images)]
    assert shapes == [(50, 70), (120, 80)]


def test_progress_is_reported_and_can_cancel(parts):
    # given
    train, _ = parts
    seen = []

    def progress(stage, fraction, message):
        seen.append((stage, fraction))
        if stage == "coreset" and fraction > 0.3:
            raise KeyboardInterrupt("cancelled by user")

    model = PatchCore(image_size=64, coreset_ratio=0.5, batch_size=4, pretrained=False)

    # when / then
    with pytest.raises(KeyboardInterrupt):
        model.fit(train, progress=progress)
    feature_steps = [f for stage, f in seen if stage == "features"]
    assert feature_steps == sorted(feature_steps) and feature_steps[-1] == 1.0
    assert any(stage == "coreset" for stage, _ in seen)


def test_memory_bank_respects_caps(parts):
    # given
    train, _ = parts
    model = PatchCore(image_size=64, max_patches=100, max_bank_size=20, coreset_ratio=1.0, pretrained=False)

    # when
    model.fit(train)

    # then
    assert model.memory_bank.shape == (20, model.features.channels)


@pytest.mark.parametrize(("options", "width"), [({"reduced_channels": 32}, 32), ({"pca_dim": 24}, 24)])
def test_reweighted_score_and_feature_reductions_survive_save_and_load(parts, tmp_path, options, width):
    # given
    train, test = parts
    model = PatchCore(image_size=64, score="reweighted", pretrained=False, **options)
    model.fit(train)
    images = [p.image for p in test[:3]]

    # when
    model.save(tmp_path)
    loaded = PatchCore.load(tmp_path)

    # then
    assert model.memory_bank.shape[1] == width
    scores = [p.score for p in model.predict(images)]
    assert all(np.isfinite(scores))
    assert np.allclose(scores, [p.score for p in loaded.predict(images)], atol=1e-5)


def test_greedy_coreset_spreads_out_and_is_seeded():
    # given: a tight cluster of 100 points and 3 far outliers
    points = torch.cat([torch.randn(100, 8) * 0.01, torch.tensor([[5.0] * 8, [-5.0] * 8, [5.0] * 4 + [-5.0] * 4])])

    # when
    exact = GreedyCoresetSampler(projection_dim=None, seed=0).select(points, 4)
    projected = GreedyCoresetSampler(projection_dim=4, seed=0).select(points, 4)

    # then: every outlier is chosen, exact or projected
    assert {100, 101, 102} <= set(exact.tolist())
    assert {100, 101, 102} <= set(projected.tolist())
    assert torch.equal(RandomSampler(seed=3).select(points, 5), RandomSampler(seed=3).select(points, 5))


def test_rotated_copies_are_exact_at_right_angles_and_keep_shape():
    # given
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)

    # when
    copies = rotated_copies(images, 8)

    # then
    assert copies.shape == (16, 3, 8, 8)
    assert torch.equal(copies[:2], images)
    assert torch.equal(copies[4:6], torch.rot90(images, 1, dims=(2, 3)))  # 90 degrees is the third angle of 8
    assert torch.isfinite(copies[2:4]).all()


def test_rotation_augmentation_fills_the_bank_from_few_images(parts):
    train, _ = parts
    model = PatchCore(image_size=64, rotations=4, coreset_ratio=1.0, pretrained=False)
    model.fit(train[:3])
    assert model.config.bank_size == 3 * 4 * 8 * 8


def test_the_chunked_search_finds_each_patchs_exact_nearest_entry(fitted):
    # given: more query patches than one search chunk holds, so the search runs in several chunks
    generator = torch.Generator().manual_seed(0)
    bank = fitted.memory_bank
    patches = bank[torch.randint(len(bank), (700,), generator=generator)]
    patches = patches + 0.1 * torch.randn(patches.shape, generator=generator)

    # when
    distances, indices = fitted.nearest(patches)

    # then: the same entries and distances as comparing every patch with every entry
    brute = torch.cdist(patches.double(), bank.double())
    assert torch.equal(indices, brute.argmin(dim=1))
    assert torch.allclose(distances.double(), brute.min(dim=1).values, atol=1e-4)
