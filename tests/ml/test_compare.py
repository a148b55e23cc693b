"""The candidate comparison (ml.compare) on synthetic sets where the right winner is known."""

from __future__ import annotations

import numpy as np
import pytest

from ml.adaptive import choose_settings, typical_short_side
from ml.compare import (
    BASELINE_FAMILY,
    Candidate,
    alternative_size,
    candidates_for,
    compare_candidates,
    format_leaderboard,
    margin_for,
    patchcore_candidates,
    typical_short_side_of,
)
from ml.types import DEFECT, Sample
from tests.ml.tiny_families import TINY_CONFIGS

SIZE = 48
# Fixed settings (the adaptive defaults would add rotated copies of these grain images, which look alike at any angle).
FEATURES = {"backbone": "test_efficientnet", "layers": (1, 2), "rotations": 1}
PATCHCORE = Candidate(
    "patchcore",
    {**FEATURES, "pretrained": False, "image_size": SIZE, "min_bank_size": 64, "max_bank_size": 256},
    "PatchCore",
)
HYBRID = Candidate(
    "hybrid",
    {"pretrained": False, "image_size": SIZE, "epochs": 30, "head_good_images": 16, "hidden_channels": 16,
     "patchcore": {**FEATURES, "min_bank_size": 64, "max_bank_size": 256}},
    "Hybrid",
)  # fmt: skip


def _grain(rng: np.random.Generator) -> np.ndarray:
    """A grey part with strong grey grain: every patch differs from every other in brightness only."""
    base = 128 + rng.normal(0, 22, (SIZE, SIZE, 1))
    return np.clip(np.repeat(base, 3, axis=2), 0, 255).astype(np.uint8)


def _tinted(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A faint colour tint on a square: smaller than the grain patch by patch, so a patch's distance to the good
    patches barely moves, but always in the same colour direction, which a head taught from masks picks up."""
    image, mask = _grain(rng).astype(int), np.zeros((SIZE, SIZE), bool)
    y, x = rng.integers(4, SIZE - 20, 2)
    mask[y : y + 16, x : x + 16] = True
    image[mask, 0] += 14
    image[mask, 2] -= 14
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _bright_square(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    image, mask = _grain(rng), np.zeros((SIZE, SIZE), bool)
    y, x = rng.integers(4, SIZE - 14, 2)
    image[y : y + 10, x : x + 10] = 250
    mask[y : y + 10, x : x + 10] = True
    return image, mask


def _set(rng, n_good: int, defects) -> list[Sample]:
    return [Sample(_grain(rng)) for _ in range(n_good)] + [Sample(image, DEFECT, mask) for image, mask in defects]


def test_the_supervised_family_wins_where_defects_look_normal_patch_by_patch():
    rng = np.random.default_rng(0)
    train = _set(rng, 16, [_tinted(rng) for _ in range(12)])
    validation = _set(rng, 8, [_tinted(rng) for _ in range(8)])

    comparison = compare_candidates(train, validation, [PATCHCORE, HYBRID])

    patchcore, hybrid = comparison.results
    assert comparison.winner is hybrid
    assert hybrid.metrics["image_ap"] > patchcore.metrics["image_ap"] + margin_for(8)
    assert "Hybrid reached validation AP" in comparison.why
    assert hybrid.metrics["mean_iou"] > 0.3  # the head outlines the tint, PatchCore returns no mask at all
    assert "mean_iou" not in patchcore.metrics


def test_patchcore_wins_when_the_drawn_masks_are_inconsistent():
    rng = np.random.default_rng(1)
    # Three defect images whose masks were drawn somewhere else than the defect (a corner, a stripe, the middle).
    wrong_masks = []
    for shape in ((slice(0, 8), slice(0, 8)), (slice(20, 24), slice(None)), (slice(18, 30), slice(18, 30))):
        image, _ = _bright_square(rng)
        mask = np.zeros((SIZE, SIZE), bool)
        mask[shape] = True
        wrong_masks.append((image, mask))
    train = _set(rng, 16, wrong_masks)
    validation = _set(rng, 8, [_bright_square(rng) for _ in range(8)])

    comparison = compare_candidates(train, validation, [PATCHCORE, HYBRID])

    patchcore, hybrid = comparison.results
    assert hybrid.ok  # it trained; it just does not earn its place
    assert comparison.winner is patchcore
    assert patchcore.metrics["image_ap"] >= hybrid.metrics["image_ap"] - margin_for(8)
    assert "did not beat it" in comparison.why


def _tiny(family: str, label: str, **extra) -> Candidate:
    return Candidate(family, {**TINY_CONFIGS[family], **extra}, label)


def _tiny_sets():
    rng = np.random.default_rng(2)
    return _set(rng, 6, [_bright_square(rng) for _ in range(2)]), _set(rng, 4, [_bright_square(rng) for _ in range(3)])


def test_a_failing_candidate_is_recorded_and_a_spent_budget_skips_the_rest():
    train, validation = _tiny_sets()
    candidates = [
        _tiny("patchcore", "PatchCore"),
        _tiny("gaussian", "Broken", backbone="no_such_backbone"),
        _tiny("patchcore", "Late"),
    ]

    comparison = compare_candidates(train, validation, candidates[:2])
    assert comparison.results[1].model is None and comparison.results[1].error.startswith("failed:")
    assert comparison.winner is comparison.results[0]
    assert "Broken" in format_leaderboard(comparison)

    budgeted = compare_candidates(train, validation, candidates, budget_seconds=0.0)
    assert budgeted.results[0].ok  # the first candidate always runs
    assert [r.error.startswith("skipped: the time budget") for r in budgeted.results[1:]] == [True, True]


def test_validation_without_defects_says_so_and_falls_back_to_the_label_rule():
    train, validation = _tiny_sets()
    goods_only = [s for s in validation if s.label != DEFECT]

    comparison = compare_candidates(train, goods_only, [_tiny("patchcore", "PatchCore"), _tiny("gaussian", "Gaussian")])

    assert not comparison.validation_has_defects
    assert comparison.winner.candidate.family == BASELINE_FAMILY
    assert comparison.rule.startswith("Validation has no defect images")
    assert comparison.winner.validation_scores and len(comparison.winner.validation_scores) == len(goods_only)


def test_a_cancel_raised_by_the_progress_callback_stops_the_comparison():
    train, validation = _tiny_sets()

    class Cancelled(Exception):
        pass

    def progress(stage, fraction, message):
        if "Second" in message:
            raise Cancelled()

    with pytest.raises(Cancelled):
        compare_candidates(
            train, validation, [_tiny("patchcore", "First"), _tiny("patchcore", "Second")], progress=progress
        )


def test_candidates_follow_the_labels():
    few = candidates_for(n_good=30, n_defect=4, n_annotated=3, short_side=512)
    assert [c.family for c in few] == ["patchcore", "patchcore"]
    outlined = candidates_for(n_good=30, n_defect=12, n_annotated=6, n_boxed=6, extra=["gaussian"], short_side=512)
    assert [c.family for c in outlined] == ["patchcore", "patchcore", "hybrid", "gaussian"]
    with pytest.raises(ValueError, match="unknown model family"):
        candidates_for(n_good=30, n_defect=0, n_annotated=0, extra=["nope"])


def test_the_first_patchcore_is_the_data_chosen_one_and_the_second_a_coarser_size():
    # given many good images of 700 px and few of 512 px
    for n_good, short_side in ((300, 700), (20, 512)):
        chosen = choose_settings(n_good=n_good, short_side=short_side)
        # when
        first, second = patchcore_candidates(n_good=n_good, short_side=short_side)
        # then the first leaves every setting to the rule (the fit applies it, rotation check included) and says
        # the size it will choose; the second is the same at a coarser working size
        assert first.config == {} and first.label == f"PatchCore {chosen.image_size} px (chosen from the data)"
        assert second.config == {"image_size": alternative_size(chosen.image_size)}
        assert second.config["image_size"] < chosen.image_size
    # without the images' size the label does not guess it
    assert patchcore_candidates(n_good=300)[0].label == "PatchCore (settings chosen from the data)"


def test_the_short_side_is_read_from_the_good_images_as_the_fit_reads_it():
    sides = (100, 200, 300, 400)
    good = [Sample(image=np.zeros((size, size + 40, 3), np.uint8)) for size in sides]
    defect = Sample(image=np.zeros((20, 20, 3), np.uint8), label=DEFECT)
    expected = typical_short_side((size + 40, size) for size in sides)  # the defect's size does not count
    with_defect = typical_short_side([(20, 20)] + [(s, s) for s in sides])
    assert typical_short_side_of([defect, *good]) == expected != with_defect


def test_the_persons_patchcore_settings_go_into_every_patchcore_candidate():
    turned = patchcore_candidates(n_good=20, short_side=512, settings={"rotations": 1, "image_size": None})
    assert len(turned) == 2 and all(c.config["rotations"] == 1 for c in turned)
    # a working size set by hand leaves nothing to compare among PatchCore's
    sized = patchcore_candidates(n_good=300, short_side=700, settings={"image_size": 256, "rotations": 4})
    assert [(c.config, c.label) for c in sized] == [({"image_size": 256, "rotations": 4}, "PatchCore 256 px")]


def test_the_alternative_size_is_two_thirds_on_the_size_grid_and_never_tiny():
    assert [alternative_size(size) for size in (512, 320, 192, 128, 64)] == [320, 192, 128, 64, None]
