"""The U-Net's legacy "resized" input mode (format 1 models, and `native=False`): every training image is resized
to `image_size` x `image_size`, cached as uint8 with its mask coverage, and augmented with flips, a small shift and
brightness/contrast jitter. Kept so that resized-mode models still load, predict and retrain; new models use the
native mode in ml.unet, which imports this module only when a resized model trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ml.images import images_to_uint8_batch
from ml.types import DEFECT, GOOD, ProgressCallback, Sample
from ml.unet import UNetConfig, mask_coverage


class ResizedTrainingData:
    """Resized mode: every usable training image resized to image_size, cached as uint8 with its mask coverage."""

    def __init__(self, samples: Sequence[Sample], config: UNetConfig, progress: ProgressCallback) -> None:
        self.config = config
        size = config.image_size
        images, masks, labels = [], [], []
        self.skipped = 0
        for index in range(len(samples)):
            sample = samples[index]
            if sample.label == DEFECT and (sample.mask is None or not np.any(sample.mask)):
                self.skipped += 1  # a defect without an outline says nothing about where defects are
                continue
            image = np.asarray(sample.image)
            images.append(images_to_uint8_batch([image], size)[0])
            masks.append(mask_coverage(sample.mask if sample.label == DEFECT else None, image.shape[:2], size))
            labels.append(sample.label)
            if index % 50 == 0:
                progress("prepare", index / len(samples), f"resizing image {index + 1} of {len(samples)}")
        labels_array = np.array(labels)
        self.defect_indices = np.flatnonzero(labels_array == DEFECT)
        self.good_indices = np.flatnonzero(labels_array == GOOD)
        if len(labels):
            self.images, self.masks = torch.stack(images), torch.stack(masks)

    def batch(self, index: np.ndarray, rng: np.random.Generator, generator: torch.Generator):
        index_tensor = torch.from_numpy(index)
        images = self.images[index_tensor].float().div_(255.0)
        targets = self.masks[index_tensor].float().div_(255.0)
        if self.config.augment:
            images, targets = augment(images, targets, self.config, generator)
        return images, targets


def augment(images: torch.Tensor, masks: torch.Tensor, config: UNetConfig, generator: torch.Generator):
    """Random flips, a small shift (reflect-padded) and brightness/contrast jitter, the same geometry for the masks.

    images: N x 3 x S x S float in [0, 1]; masks: N x 1 x S x S float in [0, 1]. Returns new tensors.
    """
    n, _, size, _ = images.shape
    both = torch.cat([images, masks], dim=1)
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    both[flip_h] = both[flip_h].flip(-1)
    both[flip_v] = both[flip_v].flip(-2)
    reach = int(round(config.max_shift * size))
    if reach > 0:
        padded = F.pad(both, (reach, reach, reach, reach), mode="reflect")
        offsets = torch.randint(0, 2 * reach + 1, (n, 2), generator=generator)
        both = torch.stack(
            [padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets.tolist())]
        )
    images, masks = both[:, :3], both[:, 3:]
    gain = 1.0 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.3  # contrast +-15 %
    bias = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2  # brightness +-0.1
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * gain + mean + bias).clamp(0.0, 1.0)
    return images, masks
