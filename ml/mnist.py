"""The classic autoencoder demo on MNIST: learn the digit 1, flag the digit 9 as anomalous.

Only the 10k MNIST test set is available, so it is split: the autoencoder trains on a seeded half of the ones;
the other ones (normal) and all nines (anomalous) are evaluated. No labels of the evaluated images are used for
training; the decision threshold is chosen on a stratified calibration half of them (`ml.thresholds`) and every
reported metric is computed on the other, untouched half.
"""

from __future__ import annotations

import gzip
import json
import resource
import struct
import time
from pathlib import Path

import numpy as np

from ml import metrics
from ml.autoencoder import Autoencoder
from ml.thresholds import default_threshold
from ml.types import DEFECT, GOOD, Sample

IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
NORMAL_DIGIT = 1
ANOMALOUS_DIGIT = 9

# IDX type codes (third byte of the magic number) -> numpy dtype; multi-byte values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# The autoencoder settings of the benchmark: 28 px grey digits, two stride-2 stages down to 7 x 7, a 16-d code.
MNIST_AUTOENCODER = {
    "image_size": 28,
    "grayscale": True,
    "base_channels": 32,
    "latent_dim": 16,
    "loss": "l2",
    "map_sigma": 1.0,
    "score": "mean",
    "epochs": 60,
    "patience": 8,
    "batch_size": 64,
    "learning_rate": 2e-3,
}


def read_idx(path: Path | str) -> np.ndarray:
    """Reads an IDX file (gzip-compressed if the name ends in .gz) into an array of its declared shape and type."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    zero, type_code, n_dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic {raw[:4].hex()})")
    shape = struct.unpack(f">{n_dims}I", raw[4 : 4 + 4 * n_dims])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * n_dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} declares shape {shape} but holds {data.size} values")
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist_test(mnist_dir: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N uint8) of the MNIST test set in `mnist_dir`."""
    mnist_dir = Path(mnist_dir)
    images = read_idx(mnist_dir / IMAGES_FILE)
    labels = read_idx(mnist_dir / LABELS_FILE)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels in {mnist_dir}")
    return images, labels


def to_rgb(digit: np.ndarray) -> np.ndarray:
    """A 28 x 28 grey digit as the contract's H x W x 3 uint8 image."""
    return np.repeat(digit[..., None], 3, axis=-1)


def one_vs_nine_split(
    images: np.ndarray, labels: np.ndarray, *, seed: int = 0
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """(train, calibration, evaluation) samples.

    train: a seeded half of the ones (all GOOD). The rest of the ones (GOOD) and all nines (DEFECT) are split into
    two stratified halves: calibration (threshold choice) and evaluation (every reported metric).
    """
    rng = np.random.default_rng(seed)
    ones = rng.permutation(np.flatnonzero(labels == NORMAL_DIGIT))
    nines = rng.permutation(np.flatnonzero(labels == ANOMALOUS_DIGIT))
    n_train = len(ones) // 2
    held_ones = ones[n_train:]

    def samples(indices: np.ndarray, label: int) -> list[Sample]:
        return [Sample(image=to_rgb(images[i]), label=label, name=f"mnist-test-{i}") for i in indices]

    train = samples(ones[:n_train], GOOD)
    calibration = samples(held_ones[: len(held_ones) // 2], GOOD) + samples(nines[: len(nines) // 2], DEFECT)
    evaluation = samples(held_ones[len(held_ones) // 2 :], GOOD) + samples(nines[len(nines) // 2 :], DEFECT)
    return train, calibration, evaluation


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports kilobytes


def run_bench(mnist_dir: Path | str, *, seed: int = 0, json_out: Path | str | None = None, **overrides) -> dict:
    """Trains the autoencoder on ones and scores ones against nines; returns (and optionally writes) the report.

    Keys match `python -m ml bench`: image_auroc, image_ap, pixel_auroc (None: MNIST has no masks), aupro (None),
    f1, precision, recall and threshold (threshold chosen on the calibration half by `ml.thresholds.
    default_threshold`, metrics on the evaluation half), precision_at_recall1, fit_seconds, infer_ms_per_image,
    peak_rss_mb, n_train, n_test. `overrides` replace entries of MNIST_AUTOENCODER.
    """
    images, labels = load_mnist_test(mnist_dir)
    train, calibration, evaluation = one_vs_nine_split(images, labels, seed=seed)
    model = Autoencoder(**{**MNIST_AUTOENCODER, **overrides, "seed": seed})

    started = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - started

    calibration_scores = np.array([p.score for p in model.predict([s.image for s in calibration], batch_size=256)])
    threshold = default_threshold(calibration_scores, np.array([s.label for s in calibration]))

    started = time.perf_counter()
    predictions = model.predict([s.image for s in evaluation], batch_size=256)
    infer_ms = 1000.0 * (time.perf_counter() - started) / len(evaluation)

    truth = np.array([s.label for s in evaluation])
    scores = np.array([p.score for p in predictions])
    precision, recall, f1 = metrics.precision_recall_f1(truth, scores, threshold)
    precision_at_recall1, _ = metrics.precision_at_full_recall(truth, scores)
    _, best_f1 = metrics.f1_best_threshold(truth, scores)
    report = {
        "dataset": f"mnist {NORMAL_DIGIT} vs {ANOMALOUS_DIGIT}",
        "model": "autoencoder",
        "image_auroc": metrics.image_auroc(truth, scores),
        "image_ap": metrics.image_average_precision(truth, scores),
        "pixel_auroc": None,
        "aupro": None,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "threshold": threshold,
        "threshold_source": "calibration half of the held-out ones and nines (ml.thresholds.default_threshold)",
        "f1_oracle": best_f1,  # best F1 over thresholds chosen on the evaluation half itself: an upper bound only
        "precision_at_recall1": precision_at_recall1,
        "fit_seconds": fit_seconds,
        "epochs_run": model.summary.epochs_run,
        "infer_ms_per_image": infer_ms,
        "peak_rss_mb": _peak_rss_mb(),
        "n_train": len(train),
        "n_calibration": len(calibration),
        "n_test": len(evaluation),
        "seed": seed,
        "config": {**MNIST_AUTOENCODER, **overrides},
    }
    if json_out is not None:
        Path(json_out).write_text(json.dumps(report, indent=2))
    return report
