"""scripts/make_large_defect_set.py (issue 16's test data): every drawn defect is one a person can see at full
resolution."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_large_defect_set.py"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_large_defect_set", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spots_wipe_the_turning_marks_and_scratches_lie_below_the_darkest_mark(generator):
    rng = np.random.default_rng(3)
    kinds = {"spot": 0, "scratch": 0}
    for _ in range(16):
        # given: a 512 px part and one drawn 20 px defect
        image, rings, where = generator.good_part(rng, 512, 512)
        before = image.copy()
        generator.draw_defect(rng, image, rings, where, 20)
        changed = np.abs(image - before) > 1e-3
        ys, xs = np.nonzero(changed)
        # the defect's full-depth pixels: its marks removed and the grey darkened by the whole amount
        below_unmarked = before - rings - image
        full = max(
            (changed & (np.abs(below_unmarked - darkening) < 1e-3)
             for darkening in (generator.DEFECT_DARKENING, generator.SCRATCH_DARKENING)),
            key=np.sum,
        )  # fmt: skip
        assert full.sum() >= 30
        window = before[max(0, ys.min() - 30) : ys.max() + 30, max(0, xs.min() - 30) : xs.max() + 30]
        if changed.sum() > 200:
            kinds["spot"] += 1
            # then: a spot wipes the marks out (its grey varies far less than the marked part around it)
            assert image[full].std() < 0.5 * window.std()
        else:
            kinds["scratch"] += 1
            # then: a 3 px scratch is darker on average than the darkest 5 % of the part around it, whichever way it
            # runs (wiping the marks over 3 px and 4 levels, as before, left scratches invisible)
            assert image[full].mean() < np.percentile(window, 5)
    assert kinds["spot"] >= 3 and kinds["scratch"] >= 3  # both kinds checked
