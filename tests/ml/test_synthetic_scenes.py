"""ml.synthetic_scenes: trays that follow the arrangement rule, each defect kind with an exact mask, context defects
made only of things a good tray also shows, and the MVTec-layout folders the benchmark reads."""

from __future__ import annotations

import numpy as np
import pytest

from ml.data import load_mvtec
from ml.synthetic_scenes import (
    CONTEXT_KINDS,
    DEFECT_KINDS,
    DENSE_PART_HALF,
    EMPTY_SLOTS,
    GRID,
    LOCAL_KINDS,
    make_scene,
    make_scenes,
    write_mvtec_folders,
)

SIZE = 192


def _slot(image: np.ndarray, row: int, column: int) -> np.ndarray:
    """The pixels at the centre of a slot (a few pixels, inside the part and clear of its notch)."""
    pitch = image.shape[0] // GRID
    cy, cx = int(pitch * (row + 0.5)), int(pitch * (column + 0.5))
    return image[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(axis=0)


def _palette(image: np.ndarray) -> set[tuple[int, ...]]:
    """The colours (quantised) that cover at least 20 pixels: the tray, each part colour, the notches."""
    colours, counts = np.unique(image.reshape(-1, 3) // 64, axis=0, return_counts=True)
    return {tuple(int(v) for v in colour) for colour, count in zip(colours, counts, strict=True) if count >= 20}


def _is_background(colour: np.ndarray) -> bool:
    return bool(np.ptp(colour) < 20 and colour.mean() < 110)


def test_a_good_tray_follows_the_rule_and_has_no_defect():
    scene = make_scene(3, size=SIZE)
    assert scene.defect is None and not scene.mask.any()
    for row in range(GRID):
        colours = [_slot(scene.image, row, column) for column in range(GRID)]
        for column, colour in enumerate(colours):
            assert _is_background(colour) == ((row, column) in EMPTY_SLOTS)
        # left to right: red, green, blue, yellow (the dominant channel of each part)
        dominant = [int(np.argmax(c)) for column, c in enumerate(colours) if (row, column) not in EMPTY_SLOTS]
        expected = [d for column, d in enumerate((0, 1, 2, 0)) if (row, column) not in EMPTY_SLOTS]
        assert dominant == expected


def test_neighbouring_parts_are_farther_apart_than_a_part_is_wide():
    # the point of the default trays: bare tray between parts, so a patch around one part does not reach the next
    scene = make_scene(4, size=SIZE)
    parts = np.ptp(scene.image.astype(int), axis=2) > 60  # saturated colour: a part; grey: the tray
    columns = np.flatnonzero(parts[SIZE // (2 * GRID)])  # the first row of slots, through the parts' centres
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    widths = [len(run) for run in runs]
    gaps = [int(b[0] - a[-1] - 1) for a, b in zip(runs, runs[1:], strict=False)]
    assert len(runs) == GRID
    assert min(gaps) > 1.5 * max(widths)
    dense = make_scene(4, size=SIZE, part_half=DENSE_PART_HALF)
    assert (np.ptp(dense.image.astype(int), axis=2) > 60).mean() > 3 * parts.mean()


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_every_defect_has_an_exact_mask_where_the_tray_changed(kind):
    scene = make_scene(11, size=SIZE, defect=kind)

    # a mask of a plausible size: a scratch or spot is small, a context defect covers one or two whole parts (a
    # part is about a third of the slot pitch across, so 1/144 of the tray)
    assert scene.defect == kind
    share = scene.mask.mean()
    assert 0.0002 < share < 0.02
    if kind in CONTEXT_KINDS:
        assert share > 0.004


def test_context_defects_change_the_arrangement_not_the_parts():
    # a swap keeps every colour on the tray: only places change
    good = make_scene(5, size=SIZE)
    swapped = make_scene(5, size=SIZE, defect="swapped")
    assert _palette(good.image) == _palette(swapped.image)
    # a missing part leaves background where it belongs; an extra one fills a slot that must stay empty
    missing = make_scene(6, size=SIZE, defect="missing")
    ys, xs = np.nonzero(missing.mask)
    centre = missing.image[int(ys.mean()), int(xs.mean())]
    assert _is_background(centre.astype(float))
    extra = make_scene(7, size=SIZE, defect="extra")
    filled = [slot for slot in EMPTY_SLOTS if not _is_background(_slot(extra.image, *slot))]
    assert len(filled) == 1


def test_scenes_are_deterministic_and_unknown_kinds_refused():
    assert np.array_equal(make_scene(1, size=SIZE).image, make_scene(1, size=SIZE).image)
    assert not np.array_equal(make_scene(1, size=SIZE).image, make_scene(2, size=SIZE).image)
    with pytest.raises(ValueError, match="unknown defect kind"):
        make_scene(1, defect="dent")
    scenes = make_scenes(n_good=2, kinds=LOCAL_KINDS, per_kind=2, size=SIZE)
    assert [s.defect for s in scenes] == [None, None, "scratch", "scratch", "spot", "spot"]


def test_the_folders_are_mvtec_layout_the_benchmark_reads(tmp_path):
    context, local = write_mvtec_folders(tmp_path, n_train=3, n_test_good=2, per_kind=1, size=64)

    for root, kinds in ((context, CONTEXT_KINDS), (local, LOCAL_KINDS)):
        dataset = load_mvtec(root)
        assert len(dataset.train) == 3
        assert sorted(set(dataset.test.kinds)) == sorted(("good", *kinds))
        for sample in dataset.test:
            assert sample.mask.shape == (64, 64)
            assert sample.mask.any() == (sample.label == 1)
    # both folders train on the same trays
    assert (context / "train/good/000.png").read_bytes() == (local / "train/good/000.png").read_bytes()
