"""MVTec-layout folders as lazy sequences of Samples, and the splits the benchmark needs.

Layout: `train/good/*`, `test/good/*`, `test/<defect>/*`, `ground_truth/<defect>/<stem>_mask.png`.
Images are read with Pillow only when a Sample is indexed, so 5,000 images cost a list of paths, not gigabytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ml.images import read_image, read_mask
from ml.types import DEFECT, GOOD, Sample

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class SampleRecord:
    """Where one sample lives on disk. kind: "good" or the defect type (the test sub-folder name)."""

    image_path: Path
    label: int
    kind: str
    mask_path: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.image_path.name}"


class LazySamples(Sequence[Sample]):
    """A Sequence of Samples read from disk on __getitem__ (masks of defect images without a mask file are empty)."""

    def __init__(self, records: Sequence[SampleRecord]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if isinstance(index, slice):
            return LazySamples(self.records[index])  # type: ignore[return-value]
        record = self.records[index]
        image = read_image(record.image_path)
        # Good images have no defect pixels; a defect image without a mask file has none that we know of.
        no_mask = np.zeros(image.shape[:2], dtype=bool)
        mask = read_mask(record.mask_path) if record.mask_path is not None else no_mask
        return Sample(image=image, label=record.label, mask=mask, name=record.name)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]

    def image_sizes(self, indices: Sequence[int]) -> list[tuple[int, int]]:
        """(width, height) of the images at `indices`, from their files' headers (nothing decoded)."""
        sizes = []
        for index in indices:
            with Image.open(self.records[index].image_path) as picture:
                sizes.append(picture.size)
        return sizes

    @property
    def labels(self) -> np.ndarray:
        """N int labels (GOOD / DEFECT) without reading any image."""
        return np.array([record.label for record in self.records], dtype=int)

    @property
    def kinds(self) -> list[str]:
        return [record.kind for record in self.records]

    def subset(self, indices: Sequence[int]) -> LazySamples:
        return LazySamples([self.records[i] for i in indices])

    def __add__(self, other: LazySamples) -> LazySamples:
        return LazySamples(self.records + other.records)


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class MvtecDataset:
    train: LazySamples  # good images only
    test: LazySamples  # good and defective, with masks where the folder has them


def load_mvtec(root: Path | str, *, train_limit: int | None = None, seed: int = 0) -> MvtecDataset:
    """Reads an MVTec-layout folder. `train_limit` keeps a seeded random subset of that many training images."""
    root = Path(root)
    train_paths = _images_in(root / "train" / "good")
    if not train_paths:
        raise FileNotFoundError(f"no training images in {root / 'train' / 'good'}")
    if train_limit is not None and train_limit < len(train_paths):
        keep = np.sort(np.random.default_rng(seed).choice(len(train_paths), size=train_limit, replace=False))
        train_paths = [train_paths[i] for i in keep]
    train = [SampleRecord(path, GOOD, "good") for path in train_paths]

    test: list[SampleRecord] = []
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        kind = folder.name
        for path in _images_in(folder):
            if kind == "good":
                test.append(SampleRecord(path, GOOD, kind))
            else:
                mask_path = root / "ground_truth" / kind / f"{path.stem}_mask.png"
                test.append(SampleRecord(path, DEFECT, kind, mask_path if mask_path.exists() else None))
    return MvtecDataset(train=LazySamples(train), test=LazySamples(test))


def stratified_halves(samples: LazySamples, *, seed: int = 0) -> tuple[LazySamples, LazySamples]:
    """Two halves with the same mix of kinds (good and each defect type), seeded.

    MVTec has no validation split: the benchmark picks a threshold on one half and applies it to the other.
    """
    first, second = _split_by_kind(samples, fraction=0.5, seed=seed, kinds=None)
    return samples.subset(first), samples.subset(second)


def supervised_split(dataset: MvtecDataset, *, fraction: float = 0.5, seed: int = 0) -> tuple[LazySamples, LazySamples]:
    """(training samples, test samples) for supervised families such as the U-Net.

    Training gets all good training images plus `fraction` of each defect type's test images (with their masks);
    the test set keeps every good test image and the remaining defect images, so no test image is trained on.
    """
    if not 0 < fraction < 1:
        raise ValueError("fraction must be strictly between 0 and 1")
    defect_kinds = {kind for kind in dataset.test.kinds if kind != "good"}
    taken, kept = _split_by_kind(dataset.test, fraction=fraction, seed=seed, kinds=defect_kinds)
    return dataset.train + dataset.test.subset(taken), dataset.test.subset(kept)


def _split_by_kind(
    samples: LazySamples, *, fraction: float, seed: int, kinds: set[str] | None
) -> tuple[list[int], list[int]]:
    """Indices split per kind: `fraction` of each kind in `kinds` (all kinds if None) go first, the rest second."""
    rng = np.random.default_rng(seed)
    first: list[int] = []
    second: list[int] = []
    by_kind: dict[str, list[int]] = {}
    for index, kind in enumerate(samples.kinds):
        by_kind.setdefault(kind, []).append(index)
    for kind in sorted(by_kind):
        indices = by_kind[kind]
        if kinds is not None and kind not in kinds:
            second.extend(indices)
            continue
        shuffled = [indices[i] for i in rng.permutation(len(indices))]
        cut = int(round(len(indices) * fraction))
        first.extend(shuffled[:cut])
        second.extend(shuffled[cut:])
    return sorted(first), sorted(second)
