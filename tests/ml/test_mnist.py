"""The IDX reader and the MNIST 1-vs-9 split; the full benchmark is a slow test."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ml.mnist import IMAGES_FILE, LABELS_FILE, load_mnist_test, one_vs_nine_split, read_idx, run_bench
from ml.types import DEFECT, GOOD

MNIST_DIR = Path("/work/shared/datasets/mnist")


def write_idx(path: Path, array: np.ndarray) -> None:
    """A uint8 IDX file, gzip-compressed: magic 0x0000 0x08 <ndim>, big-endian dims, then the bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.array([1] * 8 + [9] * 6 + [3] * 2, dtype=np.uint8)
    images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    write_idx(tmp_path / IMAGES_FILE, images)
    write_idx(tmp_path / LABELS_FILE, labels)
    return tmp_path


def test_read_idx_returns_declared_shape_and_values(tmp_path):
    # given
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "tiny.gz", array)

    # when
    read = read_idx(tmp_path / "tiny.gz")

    # then
    np.testing.assert_array_equal(read, array)
    assert read.dtype == np.uint8


def test_read_idx_rejects_other_files(tmp_path):
    # given
    (tmp_path / "not.idx").write_bytes(b"\x89PNG\r\n\x1a\n")

    # when / then
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "not.idx")


def test_one_vs_nine_split_trains_on_half_the_ones_and_never_tests_on_them(tiny_mnist):
    # given
    images, labels = load_mnist_test(tiny_mnist)

    # when
    train, calibration, evaluation = one_vs_nine_split(images, labels, seed=0)

    # then
    assert len(train) == 4 and all(s.label == GOOD for s in train)
    assert sorted(s.label for s in calibration) == [GOOD] * 2 + [DEFECT] * 3
    assert sorted(s.label for s in evaluation) == [GOOD] * 2 + [DEFECT] * 3
    names = [s.name for s in train + calibration + evaluation]
    assert len(names) == len(set(names))
    assert train[0].image.shape == (28, 28, 3)


@pytest.mark.slow
def test_mnist_benchmark_reaches_the_f1_target(tmp_path):
    # given
    if not MNIST_DIR.exists():
        pytest.skip("MNIST not available")

    # when
    report = run_bench(MNIST_DIR, seed=0, json_out=tmp_path / "report.json")

    # then
    assert report["f1"] >= 0.989
    assert (tmp_path / "report.json").exists()
