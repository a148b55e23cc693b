"""`ml bench --model compare`'s data: the split, boxes for outlines, and the defect types as classes, given as the
app gives an MVTec upload (no fitting here: ml.compare's own tests fit)."""

import numpy as np
import pytest
from PIL import Image

from ml.compare_bench import PreparedSamples, boxed_split, validation_split
from ml.data import load_mvtec, supervised_split
from ml.types import DEFECT

KINDS = ("dent", "scratch")


@pytest.fixture
def folder(tmp_path):
    def write(path, array):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)

    for i in range(20):
        write(tmp_path / "train" / "good" / f"{i:03d}.png", np.full((32, 32), 100, np.uint8))
    for i in range(4):
        write(tmp_path / "test" / "good" / f"{i:03d}.png", np.full((32, 32), 100, np.uint8))
    for kind in KINDS:
        for i in range(6):
            mask = np.zeros((32, 32), np.uint8)
            mask[4 + i : 10 + i, 8:20] = 255
            write(tmp_path / "test" / kind / f"{i:03d}.png", np.full((32, 32), 200, np.uint8))
            write(tmp_path / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    return tmp_path


def test_validation_takes_a_share_of_each_kind_and_never_an_image_twice(folder):
    pool, test = supervised_split(load_mvtec(folder), fraction=0.5, seed=0)
    fit, validation = validation_split(pool, seed=0)
    fit_paths = {r.image_path for r in fit.records}
    validation_paths = {r.image_path for r in validation.records}
    test_paths = {r.image_path for r in test.records}
    assert not fit_paths & validation_paths and not (fit_paths | validation_paths) & test_paths
    assert len(fit_paths | validation_paths) == len(pool)
    for kind in KINDS:  # a third of each type's three training defects: one
        assert validation.kinds.count(kind) == 1 and fit.kinds.count(kind) == 2
    assert validation.kinds.count("good") == 2  # a tenth of 20


def test_boxed_defects_are_drawn_in_turn_from_each_type_and_come_as_filled_boxes_with_their_class(folder):
    # given: 4 boxed defects, the two types as classes
    pool, test, boxed = boxed_split(load_mvtec(folder), n_boxed=4, seed=0)
    samples = PreparedSamples(pool, boxed=boxed, classes=KINDS)
    # then: two of each type left the test, and each comes with its boxes, a box mask and a class map of its type
    assert sorted(pool.records[i].kind for i in range(len(pool)) if pool.labels[i] == DEFECT) == sorted(KINDS * 2)
    assert not boxed & {r.image_path for r in test.records}
    for index in np.flatnonzero(pool.labels == DEFECT):
        sample, kind = samples[int(index)], pool.records[int(index)].kind
        box = sample.boxes[0]
        assert len(sample.boxes) == 1 and box.label == kind
        assert sample.mask[box.y0 : box.y1, box.x0 : box.x1].all() and sample.mask.sum() == box.area
        assert sample.classes == KINDS
        assert set(np.unique(sample.class_mask)) == {0, KINDS.index(kind) + 1}
        assert np.array_equal(sample.class_mask > 0, sample.mask)


def test_without_classes_outlines_stay_plain_masks(folder):
    pool, _ = supervised_split(load_mvtec(folder), fraction=0.5, seed=0)
    samples = PreparedSamples(pool)
    defect = samples[int(np.flatnonzero(pool.labels == DEFECT)[0])]
    assert defect.boxes is None and defect.class_mask is None and defect.mask.any()


def test_the_app_order_puts_training_goods_first_each_by_content_and_leaves_out_undrawn_defects(folder):
    # given: a training pool whose first defect's mask is emptied (the app keeps no annotation for it)
    import hashlib

    from ml.compare_bench import app_order

    pool, _ = supervised_split(load_mvtec(folder), fraction=0.5, seed=0)
    empty = next(r for r in pool.records if r.label == DEFECT)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(empty.mask_path)

    def digest(record):
        return hashlib.sha256(record.image_path.read_bytes()).hexdigest()

    # when
    ordered = app_order(pool, goods_first=True)
    plain = app_order(pool, goods_first=False)

    # then
    labels = list(ordered.labels)
    assert labels == sorted(labels) and empty not in ordered.records and len(ordered) == len(pool) - 1
    for label in (0, DEFECT):
        part = [digest(r) for r in ordered.records if r.label == label]
        assert part == sorted(part)
    assert [digest(r) for r in plain.records] == sorted(digest(r) for r in pool.records)
