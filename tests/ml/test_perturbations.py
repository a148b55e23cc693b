"""Perturbations on small synthetic images: identity at strength 0, monotone strengths, masks that follow the
geometry, determinism, and clutter that stays off the part and off the defects."""

from __future__ import annotations

import numpy as np
import pytest

from ml.perturbations import PERTURBATIONS, background_mask, perturb
from ml.synthetic import make_image


def _part_with_defect(size: int = 96):
    synthetic = make_image(7, size=size, defect="scratch")
    return synthetic.image, synthetic.mask


def _square(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A mid-grey image with one white square off centre: the square is the 'defect', exactly its mask."""
    image = np.full((size, size, 3), 100, np.uint8)
    mask = np.zeros((size, size), bool)
    mask[30:50, 40:62] = True
    image[mask] = 250
    return image, mask


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_strength_zero_is_the_identity(name):
    # given
    image, mask = _part_with_defect()
    # when
    out, out_mask = perturb(image, mask, name, 0.0, seed=3)
    # then
    assert np.array_equal(out, image) and np.array_equal(out_mask, mask)
    assert out is not image  # a copy: a caller may change it


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_strengths_are_monotone_and_change_the_image(name):
    # given an image and the perturbation's strengths, increasing
    image, mask = _part_with_defect()
    strengths = PERTURBATIONS[name].strengths
    assert list(strengths) == sorted(strengths) and strengths[0] > 0
    # when each strength is applied with the same seed
    changes = [np.abs(perturb(image, mask, name, s, seed=5)[0].astype(float) - image).mean() for s in strengths]
    # then every strength changes the image, and a stronger one changes it more
    assert changes[0] > 0
    assert all(later > earlier for earlier, later in zip(changes, changes[1:], strict=False)), changes


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_same_seed_same_result_other_seed_other_result(name):
    image, mask = _part_with_defect()
    strength = PERTURBATIONS[name].strengths[-1]
    first, _ = perturb(image, mask, name, strength, seed=11)
    again, _ = perturb(image, mask, name, strength, seed=11)
    assert np.array_equal(first, again)
    if name not in ("blur", "jpeg"):  # these two draw nothing at random
        others = [perturb(image, mask, name, strength, seed=s)[0] for s in (12, 13, 14)]
        assert any(not np.array_equal(first, other) for other in others)


@pytest.mark.parametrize("name", [n for n, p in PERTURBATIONS.items() if p.geometric])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometry_keeps_the_mask_on_the_defect(name, seed):
    # given a square whose mask is exactly its pixels
    image, mask = _square()
    for strength in PERTURBATIONS[name].strengths:
        # when the image moves
        out, moved = perturb(image, mask, name, strength, seed=seed)
        # then the moved mask covers the moved square (bright pixels), pixel for pixel up to the resampled edge
        bright = out[..., 0] > 175
        assert moved is not None and moved.any()
        overlap = (bright & moved).sum() / (bright | moved).sum()
        assert overlap > 0.85, (name, strength, overlap)
        assert not np.array_equal(moved, mask) or name == "crop" and strength == 0


@pytest.mark.parametrize("name", [n for n, p in PERTURBATIONS.items() if not p.geometric])
def test_photometric_changes_leave_the_mask_alone(name):
    image, mask = _part_with_defect()
    _, out_mask = perturb(image, mask, name, PERTURBATIONS[name].strengths[-1], seed=0)
    assert np.array_equal(out_mask, mask)


def test_background_is_found_around_the_part_not_on_it():
    # given a synthetic part: a disc of radius 0.4 x side on a plain dark backdrop
    size = 128
    image = make_image(3, size=size).image
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(yy - size / 2, xx - size / 2)
    # when
    background = background_mask(image)
    # then the corners are background and the part (with a margin) is not
    assert background[radius > 0.5 * size].mean() > 0.95
    assert not background[radius < 0.38 * size].any()


def test_clutter_never_touches_the_part_or_the_defect():
    # given a defect on the part
    image, mask = _part_with_defect(size=128)
    keep_out = ~background_mask(image, mask)
    for strength in PERTURBATIONS["clutter"].strengths:
        # when clutter is added
        out, out_mask = perturb(image, mask, "clutter", strength, seed=4)
        changed = np.any(out != image, axis=-1)
        # then only background pixels changed, about `strength` of them, and the defect is intact
        assert not (changed & keep_out).any()
        assert np.array_equal(out[mask], image[mask]) and np.array_equal(out_mask, mask)
        share = changed.sum() / (~keep_out).sum()
        assert strength * 0.8 <= share <= strength + 0.2, (strength, share)


def test_clutter_at_a_larger_strength_covers_what_a_smaller_one_covers():
    image, mask = _part_with_defect(size=128)
    weaker, _ = perturb(image, mask, "clutter", 0.05, seed=9)
    stronger, _ = perturb(image, mask, "clutter", 0.2, seed=9)
    changed_weak = np.any(weaker != image, axis=-1)
    assert np.array_equal(stronger[changed_weak], weaker[changed_weak])


def test_no_clutter_where_the_frame_has_no_background():
    # a texture filling the whole frame (busy border): no background to clutter
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out, _ = perturb(texture, None, "clutter", 0.2, seed=0)
    assert np.array_equal(out, texture)


def test_unknown_name_and_negative_strength_are_refused():
    image, mask = _square()
    with pytest.raises(ValueError, match="unknown perturbation 'fog'"):
        perturb(image, mask, "fog", 0.1)
    with pytest.raises(ValueError, match="0 or more"):
        perturb(image, mask, "blur", -1)


def test_descriptions_read_as_a_person_would_say_them():
    assert PERTURBATIONS["brightness"].describe(0.2) == "brightness ±20 %"
    assert PERTURBATIONS["jpeg"].describe(50) == "JPEG quality 50"
    assert PERTURBATIONS["shift"].describe(0.1) == "shifted by 10 % of the side"
