"""The rule that chooses PatchCore's settings from the data (ml.adaptive), the rotation check it relies on, and
PatchCore applying, storing and honouring it."""

import numpy as np
import pytest
import torch

from ml import adaptive
from ml.patchcore import PatchCore
from ml.registry import load_model
from ml.rotation_check import check_rotation
from ml.synthetic import make_dataset
from ml.types import Sample


def test_few_images_get_more_pixels_and_rotations_within_the_work_budget():
    # when
    twenty = adaptive.choose_settings(n_good=20, short_side=512, rotation_invariant=True)
    ten = adaptive.choose_settings(n_good=10, short_side=512, rotation_invariant=True)
    many = adaptive.choose_settings(n_good=320, short_side=512, rotation_invariant=True)

    # then
    assert (twenty.image_size, twenty.rotations) == (adaptive.FEW_SHOT_SIZE, 8)
    assert (ten.image_size, ten.rotations) == (adaptive.FEW_SHOT_SIZE, 16)
    assert (many.image_size, many.rotations) == (adaptive.DEFAULT_SIZE, 1)
    for choice in (twenty, ten):
        work = choice.facts["n_good"] * choice.rotations * (choice.image_size / adaptive.DEFAULT_SIZE) ** 2
        assert work <= adaptive.WORK_BUDGET
    assert twenty.chosen == ("image_size", "rotations", "coreset_ratio", "score")
    assert (twenty.score, many.score) == ("top_mean", "top_mean")
    assert twenty.sentence.startswith("20 good images: Kensa works at 512 px (few enough to afford more detail)")
    assert "adds 7 rotated copies of each, because the parts appear at any angle" in twenty.sentence


def test_parts_with_one_orientation_get_no_rotations_and_the_sentence_says_why():
    choice = adaptive.choose_settings(n_good=20, short_side=512, rotation_invariant=False)

    assert choice.rotations == 1
    assert "no rotated copies, because the parts keep one orientation" in choice.sentence


def test_before_the_images_are_read_the_sentence_says_rotations_depend_on_the_check():
    choice = adaptive.choose_settings(n_good=20, short_side=512, rotation_invariant=None)

    assert choice.rotations == 8
    assert "if the parts appear at any angle (it checks when training starts)" in choice.sentence


def test_the_working_size_never_enlarges_small_images_beyond_their_own_resolution():
    small = adaptive.choose_settings(n_good=20, short_side=263)
    assert small.image_size == 256
    assert small.sentence.startswith("20 good images: Kensa works at 256 px (sized to the resolution of the images)")
    assert adaptive.choose_settings(n_good=500, short_side=200).image_size == 192
    assert adaptive.choose_settings(n_good=20, short_side=40).image_size == adaptive.MIN_SIZE
    assert adaptive.choose_settings(n_good=20, short_side=None).image_size == adaptive.FEW_SHOT_SIZE


def test_settings_set_by_hand_win_and_are_not_reported_as_chosen():
    choice = adaptive.choose_settings(
        n_good=20, short_side=512, rotation_invariant=True, requested={"image_size": 320, "rotations": 1}
    )

    assert (choice.image_size, choice.rotations) == (320, 1)
    assert choice.chosen == ("coreset_ratio", "score")
    assert "320 px (your setting)" in choice.sentence
    assert "no rotated copies (your setting)" in choice.sentence


def test_the_size_cap_is_the_short_side_nine_in_ten_images_reach():
    # given: twenty images of 512 px, and the same with small crops among them
    same = [(512, 512)] * 20
    one_small = [(100, 100)] + same[1:]
    many_small = [(120, 300), (200, 150), (150, 160), (140, 400)] + same[4:]

    # then: one small image in twenty does not pull the cap down; a fifth of them at 150 px or less does
    assert adaptive.typical_short_side(same) == 512
    assert adaptive.typical_short_side(one_small) == 512
    assert adaptive.typical_short_side(many_small) == 150
    assert adaptive.typical_short_side([]) is None


def test_the_sizes_are_read_from_images_spread_over_the_whole_set():
    few = list(range(10))
    many = list(range(1000))

    assert adaptive.size_probe(few) == few
    probe = adaptive.size_probe(many)
    assert len(probe) == adaptive.SIZE_PROBE_IMAGES
    assert probe[0] == 0 and probe[-1] > 900 and probe == sorted(set(probe))


def _stripes(angle_degrees: float, seed: int, size: int = 224) -> np.ndarray:
    """Grey stripes at an angle, with a little noise: H x W x 3 uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.radians(angle_degrees)
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 5.0 + rng.uniform(0, 6.3))
    gray = np.clip(128 + 60 * wave + rng.normal(0, 8, wave.shape), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def features():
    return PatchCore(pretrained=True).features


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    unit = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return (unit - 0.5) / 0.5


def test_rotation_check_tells_parts_at_any_angle_from_one_orientation(features):
    # given: stripes at every angle, and stripes that are always vertical
    any_angle = [_stripes(angle, seed) for seed, angle in enumerate(np.linspace(0, 180, 8, endpoint=False))]
    one_angle = [_stripes(90.0, seed) for seed in range(8)]

    # when
    turning_any = check_rotation(features, _batch(any_angle))
    turning_one = check_rotation(features, _batch(one_angle))

    # then
    assert turning_any.invariant and not turning_one.invariant
    assert turning_one.ratio > turning_any.ratio
    assert check_rotation(features, _batch(one_angle[:2])) is None


@pytest.fixture(scope="module")
def parts():
    return [Sample(image=p.image) for p in make_dataset(n_good=6, n_defect=0, size=96, seed=3)]


def test_patchcore_fills_auto_settings_stores_the_choice_and_loads_it(parts, tmp_path):
    # given: settings left to the rule (the defaults)
    model = PatchCore(pretrained=True, max_patches=4000)

    # when
    model.fit(parts)
    model.save(tmp_path)
    loaded = load_model(tmp_path)

    # then: 6 images of 96 px: the smallest working size, a recorded choice with its sentence
    config = model.config
    assert config.image_size == adaptive.MIN_SIZE
    assert config.rotations >= 1 and config.coreset_ratio == adaptive.DEFAULT_CORESET_RATIO
    assert config.chosen["sentence"].startswith("6 good images: Kensa works at 128 px")
    assert "rotation_ratio" in config.chosen["facts"]
    assert loaded.config.chosen == config.chosen
    assert (loaded.config.image_size, loaded.config.rotations) == (config.image_size, config.rotations)
    images = [p.image for p in parts[:2]]
    assert np.allclose([p.score for p in model.predict(images)], [p.score for p in loaded.predict(images)], atol=1e-5)


def test_patchcore_keeps_settings_set_by_hand(parts):
    model = PatchCore(pretrained=True, image_size=96, rotations=2, max_patches=4000)

    model.fit(parts)

    assert (model.config.image_size, model.config.rotations) == (96, 2)
    assert model.config.chosen["chosen"] == ["coreset_ratio", "score"]
    assert "96 px (your setting)" in model.config.chosen["sentence"]
    assert "adds 1 rotated copy of each (your setting)" in model.config.chosen["sentence"]


def test_patchcore_caps_its_working_size_by_the_smaller_good_images():
    # given: four good images of 256 px and two of 160 px (the median would allow 256 px)
    large = make_dataset(n_good=4, n_defect=0, size=256, seed=4)
    small = make_dataset(n_good=2, n_defect=0, size=160, seed=5)
    samples = [Sample(image=p.image) for p in large + small]
    model = PatchCore(pretrained=True, rotations=1, max_patches=4000)

    # when
    model.fit(samples)

    # then: a third of the images are small, so the working size does not enlarge them
    assert model.config.image_size == 160
    assert model.config.chosen["facts"]["short_side"] == 160
    assert "sized to the resolution of the images" in model.config.chosen["sentence"]


class _SizedSamples:
    """Samples that tell their sizes without decoding: reading a pixel fails the test."""

    def __init__(self, sizes):
        self.sizes = list(sizes)

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, index):
        pytest.fail("an image was decoded to learn its size")

    def image_sizes(self, indices):
        return [self.sizes[i] for i in indices]


def test_the_short_side_comes_from_every_good_image_where_sizes_are_cheap_so_order_does_not_change_it():
    # given: 700 images, 11 % of them with a 130 px shorter side and the rest 180-219 px (magnetic tile's jump at
    # the rule's 10 % share), the small ones where a 64-image probe does not look
    probe = set(adaptive.size_probe(range(700)))
    small = [k for k in range(700) if k not in probe][::8][:77]
    sizes = [(200, 130) if k in small else (200, 180 + k % 40) for k in range(700)]
    samples, reordered = _SizedSamples(sizes), _SizedSamples(sizes[::-1])
    probed = adaptive.typical_short_side(sizes[i] for i in adaptive.size_probe(range(len(sizes))))

    # when
    short_side = adaptive.short_side_of(samples, range(len(sizes)))

    # then: every image counts, in any order, and nothing is decoded; a probe would have said otherwise
    assert short_side == adaptive.typical_short_side(sizes) == 130
    assert adaptive.short_side_of(reordered, range(len(sizes))) == short_side
    assert probed != short_side
    # samples that cannot tell sizes are probed by decoding (a plain list of Samples)
    plain = [Sample(image=np.zeros((h, w, 3), np.uint8)) for w, h in sizes[:5]]
    assert adaptive.short_side_of(plain, range(5)) == adaptive.typical_short_side(sizes[:5])
