"""PatchCore's training images scored with their own patches left out (ml.calibration)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.calibration import leave_own_out_distances, own_entries
from ml.registry import create_model
from ml.types import Sample
from tests.ml.tiny_families import TINY_CONFIGS


def _goods(seed: int, count: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [Sample(np.clip(120 + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)) for _ in range(count)]


def test_own_entries_are_the_copies_of_the_image_patches_only():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    patches = torch.tensor([[1.0, 0.0], [4.0, 4.0]])
    assert own_entries(bank, patches).tolist() == [False, True, False]
    # The patch equal to entry 1 is matched to its nearest other entry (0, 0); the other to (5, 5).
    assert leave_own_out_distances(bank, patches).tolist() == pytest.approx([1.0, 2**0.5])
    with pytest.raises(ValueError, match="at least two good images"):
        leave_own_out_distances(bank[1:2], patches)


def test_training_images_score_like_unseen_ones_instead_of_near_zero():
    train, unseen = _goods(0, 8), _goods(1, 4)
    model = create_model(
        "patchcore",
        **{**TINY_CONFIGS["patchcore"], "min_bank_size": 4096, "max_bank_size": 4096, "search_precision": "float32"},
        device="cpu",
    )
    model.fit(train)

    plain = np.array([p.score for p in model.predict([s.image for s in train])])
    calibrated = model.calibration_scores(train)
    unseen_plain = np.array([p.score for p in model.predict([s.image for s in unseen])])
    unseen_calibrated = model.calibration_scores(unseen)

    # With every patch in the bank a training image matches itself; left out, it scores like an unseen image.
    assert plain.max() < 0.2 * unseen_plain.min()
    assert 0.6 * unseen_plain.mean() < calibrated.mean() < 1.6 * unseen_plain.mean()
    # Images that were not trained on have no copies in the bank: the same score as predict .
    np.testing.assert_allclose(unseen_calibrated, unseen_plain, rtol=1e-3)


def test_the_search_steps_stay_within_their_memory_block_and_find_the_exact_nearest(monkeypatch):
    # given: a block that holds 16 distances per query row's step, so 1,000 patches against 300 entries take many
    import ml.nearest

    monkeypatch.setattr(ml.nearest, "CPU_SEARCH_BYTES", 4 * 16 * 300)
    monkeypatch.setattr(ml.nearest, "CPU_SEARCH_MIN_ROWS", 1)
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(300, 8, generator=generator)
    patches = torch.randn(1000, 8, generator=generator)
    steps = []
    addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: steps.append(a[1].shape[0]) or addmm(*a, **k))

    # when
    distances = leave_own_out_distances(bank, patches)

    # then: no step searched more than 16 query rows, and every patch got its exact nearest entry
    assert max(steps) <= 16
    assert torch.allclose(distances, torch.cdist(patches, bank).min(dim=1).values, atol=1e-5)
