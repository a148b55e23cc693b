import numpy as np
import pytest
from PIL import Image

from ml.data import load_mvtec, stratified_halves, supervised_split
from ml.types import DEFECT, GOOD


@pytest.fixture
def mvtec_folder(tmp_path):
    def write(path, value, mode="L"):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), value, np.uint8), mode=mode).save(path)

    for i in range(6):
        write(tmp_path / "train" / "good" / f"{i:03d}.png", 100)
    for i in range(4):
        write(tmp_path / "test" / "good" / f"{i:03d}.png", 100)
    for kind in ("scratch", "dent"):
        for i in range(4):
            write(tmp_path / "test" / kind / f"{i:03d}.png", 200)
            write(tmp_path / "ground_truth" / kind / f"{i:03d}_mask.png", 255)
    return tmp_path


def test_load_mvtec_reads_lazily_with_masks(mvtec_folder):
    # when
    dataset = load_mvtec(mvtec_folder)

    # then
    assert len(dataset.train) == 6
    assert list(dataset.test.labels).count(DEFECT) == 8
    sample = dataset.test[-1]
    assert sample.image.shape == (16, 16, 3)
    assert sample.label == DEFECT and sample.mask.all()
    good = dataset.test[int(np.flatnonzero(dataset.test.labels == GOOD)[0])]
    assert not good.mask.any()


def test_train_limit_is_seeded(mvtec_folder):
    a = load_mvtec(mvtec_folder, train_limit=3, seed=1).train
    b = load_mvtec(mvtec_folder, train_limit=3, seed=1).train
    assert len(a) == 3
    assert [r.image_path for r in a.records] == [r.image_path for r in b.records]


def test_supervised_split_never_tests_on_trained_images(mvtec_folder):
    # given
    dataset = load_mvtec(mvtec_folder)

    # when
    train, test = supervised_split(dataset, fraction=0.5, seed=0)

    # then
    trained = {r.image_path for r in train.records}
    assert not trained & {r.image_path for r in test.records}
    assert list(train.labels).count(DEFECT) == 4
    assert list(test.labels).count(GOOD) == 4  # every good test image stays in test


def test_stratified_halves_keep_the_mix(mvtec_folder):
    first, second = stratified_halves(load_mvtec(mvtec_folder).test, seed=0)
    assert sorted(first.kinds) == sorted(second.kinds)


def test_image_sizes_come_from_the_file_headers_as_width_and_height(tmp_path):
    # given: two images of different shapes in an MVTec folder
    for folder, name, shape in (("train", "a.png", (30, 50)), ("train", "b.png", (70, 20)), ("test", "c.png", (8, 8))):
        (tmp_path / folder / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / folder / "good" / name)
    train = load_mvtec(tmp_path).train
    # then: (width, height) of each, as a decoded image's shape says
    assert train.image_sizes([0, 1]) == [(s.image.shape[1], s.image.shape[0]) for s in train] == [(50, 30), (20, 70)]
