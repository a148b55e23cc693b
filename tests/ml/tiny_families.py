"""Tiny configs of every family (timm test backbones, random weights) and a tiny data set, for fast contract tests."""

from __future__ import annotations

import numpy as np

from ml.types import DEFECT, Sample

_FEATURES = {"backbone": "test_efficientnet", "pretrained": False, "layers": (1, 2), "image_size": 32}
_UNET = {"image_size": 32, "encoder_name": "tu-test_efficientnet", "pretrained": False,
         "decoder_channels": (8, 8, 8, 8, 8), "epochs": 1, "batch_size": 2, "frozen_encoder_stages": 0}  # fmt: skip

TINY_CONFIGS: dict[str, dict] = {
    # rotations and score pinned: the data-chosen ones (ml.adaptive, tested in test_adaptive) cost up to 16x here
    "patchcore": {**_FEATURES, "min_bank_size": 16, "max_bank_size": 32, "rotations": 1, "score": "max"},
    "gaussian": {**_FEATURES, "grid": 4, "reduced_channels": 8},
    "autoencoder": {
        "image_size": 16,
        "base_channels": 4,
        "max_channels": 8,
        "latent_dim": 8,
        "epochs": 2,
        "batch_size": 4,
    },  # fmt: skip
    "unet": _UNET,
    "hybrid": {
        "pretrained": False,
        "image_size": 32,
        "epochs": 2,
        "head_good_images": 6,
        "hidden_channels": 8,
        "patchcore": {k: v for k, v in _FEATURES.items() if k not in ("image_size", "pretrained")}
        | {"min_bank_size": 16, "max_bank_size": 32},
    },
    "context": {
        "backbone": "test_efficientnet",
        "pretrained": False,
        "teacher_layers": (1, 2),
        "image_size": 32,
        "teacher_padding": 8,
        "student_channels": (8, 8, 16),
        "classifier_hidden": 16,
        "neighbour_offset": 2,
        "pairs_per_image": 8,
        "steps": 20,
        "batch_size": 4,
    },
}


def _images(seed: int, count: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(90, 140, (size, size, 3), dtype=np.uint8).astype(int)
    return [np.clip(base + rng.integers(-8, 9, (size, size, 3)), 0, 255).astype(np.uint8) for _ in range(count)]


def _with_defect(image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image, mask = image.copy(), np.zeros(image.shape[:2], bool)
    y, x = rng.integers(4, 20, 2)
    image[y : y + 8, x : x + 8] = 250
    mask[y : y + 8, x : x + 8] = True
    return image, mask


def tiny_samples() -> list[Sample]:
    """Six good images and four with a bright square outlined by its mask."""
    defects = [_with_defect(image, i) for i, image in enumerate(_images(1, 4))]
    return [Sample(image) for image in _images(0, 6)] + [Sample(image, DEFECT, mask) for image, mask in defects]


def probe_images() -> list[np.ndarray]:
    """Two good-looking images and one with a defect, at a size unlike the training images' (maps resize)."""
    return _images(2, 2, size=40) + [_with_defect(_images(3, 1, size=40)[0], 9)[0]]
