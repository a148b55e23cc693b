"""Supervised defect segmentation with a U-Net (family "unet").

segmentation-models-pytorch's U-Net on timm's EfficientNet-Lite0, its encoder starting from ImageNet weights
(`ml.backbones.load_pretrained_state_dict`). Trained from defect masks (a box arrives as a filled rectangle); good
images contribute all-zero masks. Loss: BCE (with a positive-pixel weight) + soft Dice. Defect images are a fixed
share of every epoch however few there are, and batches are augmented (flips, small shifts, brightness/contrast).

Two input modes (`native`):
- native (the default since format 2): the network sees images at their own resolution (downscaled only when the
  longer side exceeds `max_side`). It trains on `image_size` x `image_size` crops, most of them centred near a
  defect pixel, the rest drawn from good images, and predicts on the whole image in one pass (the U-Net is fully
  convolutional; the image is reflect-padded to a multiple of 32 and the map cropped back). Small defects (a
  magnetic-tile blowhole is ~12 px across) keep their pixels instead of shrinking away in a resize.
- resized (format 1 models): every image is resized to `image_size` x `image_size`; its training data and
  augmentation live in ml.unet_resized (the legacy mode, kept so those models load, predict and retrain).

Output: the defect probability map at the input's resolution (`anomaly_map`), the mask `prob > mask_threshold`,
and an image score = mean of the top pixels of the Gaussian-smoothed probability map (`topk_pixels` of them in
native mode, `topk_fraction` of the map when resized), so one hot pixel is not enough.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from ml.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from ml.devices import check_device_spec, resolve_device, resolve_saved_device
from ml.filters import gaussian_blur
from ml.images import images_to_batch, map_to_image_size, resize_unit, unit_tensor
from ml.threads import torch_threads
from ml.training import TrainingSummary, autocast, fitted_batch_size, grad_scaler, with_oom_fallback
from ml.types import DEFECT, GOOD, Prediction, ProgressCallback, Sample, no_progress

FAMILY = "unet"
# Checkpoint format 2 introduced the native input mode; format 1 models resized whole images (see `load`).
CUDA_LOADER_WORKERS = 4  # processes preparing training crops for a GPU (at most the CPU count less one)
PRETRAINED_ENCODERS = {"tu-tf_efficientnet_lite0": "tf_efficientnet_lite0"}  # smp encoder -> name for ml.backbones
# Keys of the timm classifier that smp's features-only encoder does not have.
_CLASSIFIER_ONLY_PREFIXES = ("conv_head.", "bn2.", "classifier.")


@dataclass
class UNetConfig:
    """Everything that defines a U-Net segmenter; saved in its checkpoint (ml.checkpoint).

    image_size: native mode: side (px) of the square training crops; resized mode: side every image is resized
    to. A multiple of 32 either way. good_per_defect: good images (crops) drawn per defect image in each epoch (an
    epoch is one crop of every usable defect image plus that many good ones).
    """

    image_size: int = 128
    native: bool = True
    scale: float = 1.0  # native mode: working resolution relative to the image's own (< 1 trades detail for context)
    max_side: int = 1024  # native mode: larger images are downscaled to this longer side (inference cost)
    good_border_fraction: float = 0.5  # native mode: share of good crops snapped to an image edge or corner
    defect_crop_margin: float = 0.15  # native mode: the centred defect pixel lies at least this far inside a crop
    encoder_name: str = "tu-tf_efficientnet_lite0"
    pretrained: bool = True
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16)
    frozen_encoder_stages: int = 2  # stem + this many block stages keep their ImageNet weights (and BN statistics)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet statistics, as the encoder was trained
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    epochs: int = 48  # magnetic tile, 24 / 48 / 96 epochs: image AUROC 0.831 / 0.867 / 0.823, IoU 0.40 / 0.46 / 0.45
    batch_size: int = 8
    learning_rate: float = 5e-3  # decoder and head; the fresh decoder needs a high rate to learn in few epochs
    encoder_lr_scale: float = 0.1  # the pretrained encoder learns this much slower
    weight_decay: float = 1e-4
    good_per_defect: float = 1.0
    pos_weight: float = 1.0  # BCE weight of defect pixels (3 made good tile edges fire; measured)
    dice_weight: float = 1.0
    standardise: bool = True  # per-image contrast stretch before ImageNet normalisation (dark, flat surfaces)
    augment: bool = True
    max_shift: float = 0.06  # random translation, fraction of the side
    map_sigma: float = 2.0  # smoothing before scoring, model pixels
    topk_fraction: float = 0.0005  # resized mode: magnetic-tile blowholes cover ~0.1 % of an image
    topk_pixels: int = 10  # native mode: the smallest magnetic-tile blowholes cover ~30 pixels
    mask_threshold: float = 0.5
    seed: int = 0
    num_threads: int | None = None  # torch threads while fitting and predicting; None leaves the process setting
    device: str = "auto"  # where it trains and predicts: auto, cpu, cuda, cuda:N (ml.devices)
    mixed_precision: bool = True  # float16 autocast and loss scaling when training on CUDA (no effect on a CPU)

    def __post_init__(self) -> None:
        self.device = check_device_spec(self.device)
        self.decoder_channels = tuple(self.decoder_channels)
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 for the U-Net, got {self.image_size}")


def build_network(config: UNetConfig) -> smp.Unet:
    """The U-Net with random weights; with `config.pretrained`, the encoder gets its ImageNet weights."""
    network = smp.Unet(
        encoder_name=config.encoder_name,
        encoder_weights=None,
        decoder_channels=config.decoder_channels,
        classes=1,
    )
    if config.pretrained:
        load_encoder_weights(network, config.encoder_name)
    return network


def frozen_encoder_modules(network: smp.Unet, stages: int) -> list[nn.Module]:
    """The stem and first `stages` block stages of a timm EfficientNet encoder: the high-resolution layers whose
    backward pass costs most on a CPU and whose generic ImageNet filters need no retraining."""
    if stages <= 0:
        return []
    encoder = network.encoder.model
    return [encoder.conv_stem, encoder.bn1, *encoder.blocks[:stages]]


def load_encoder_weights(network: smp.Unet, encoder_name: str) -> None:
    """Loads ImageNet weights into `network.encoder`, failing loudly if any encoder tensor is left unset."""
    if encoder_name not in PRETRAINED_ENCODERS:
        raise ValueError(f"no bundled weights for encoder {encoder_name!r}; use pretrained=False")
    from ml.backbones import load_pretrained_state_dict

    state = load_pretrained_state_dict(PRETRAINED_ENCODERS[encoder_name])
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_ONLY_PREFIXES)}
    result = network.encoder.model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"ImageNet weights do not fit {encoder_name}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


class UNetScorer(nn.Module):
    """Normalisation, U-Net, sigmoid and scoring: the graph that prediction and ONNX export share.

    forward: N x 3 x H x W float32 (resized mode: in [0, 1], H = W = image_size; native mode: standardised by
    `preprocess`, H and W multiples of 32) -> (scores N, probabilities N x H x W), both float32.
    """

    def __init__(self, network: smp.Unet, config: UNetConfig) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        # Native mode standardises each image in `preprocess` (over the image, not a crop or its padding).
        self.standardise = config.standardise and not config.native
        self.map_sigma = config.map_sigma
        if config.native:
            self.topk = max(1, config.topk_pixels)
        else:
            self.topk = max(1, round(config.topk_fraction * config.image_size**2))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1 x H x W defect logits for an N x 3 x H x W batch (see `forward`)."""
        if self.standardise:
            # Each image gets the mean and spread of an average ImageNet photo, so a dark, low-contrast surface
            # uses the range the pretrained filters were tuned to.
            centre = x.mean(dim=(1, 2, 3), keepdim=True)
            spread = x.std(dim=(1, 2, 3), keepdim=True) + 1e-3
            x = (x - centre) / spread * self.std + self.mean
        return self.network((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.sigmoid(self.logits(x))
        smoothed = gaussian_blur(probabilities, self.map_sigma)
        flat = smoothed.flatten(1)
        scores = flat.topk(min(self.topk, flat.shape[1]), dim=1).values.mean(dim=1)
        return scores, probabilities[:, 0]


def standardise_image(image: torch.Tensor, config: UNetConfig) -> torch.Tensor:
    """A C x H x W float image in [0, 1] given the mean and spread of an average ImageNet photo, so a dark,
    low-contrast surface uses the range the pretrained filters were tuned to."""
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    return (image - image.mean()) / (image.std() + 1e-3) * std + mean


def native_tensor(image: np.ndarray, config: UNetConfig) -> torch.Tensor:
    """One image (H x W x 3 or H x W uint8) as a 3 x h x w float32 tensor in [0, 1] at the working resolution:
    the image's own, or smaller when its longer side exceeds `config.max_side`."""
    tensor = unit_tensor(image)
    return resize_unit(tensor, working_shape(tensor.shape[-2:], config))


def working_shape(shape: tuple[int, int], config: UNetConfig) -> tuple[int, int]:
    """(h, w) the native mode works at for an image of `shape`: scaled by `config.scale`, and further so that
    max(h, w) <= `config.max_side`."""
    height, width = int(shape[0]), int(shape[1])
    scale = min(config.scale, config.max_side / max(height, width))
    return (height, width) if scale == 1.0 else (max(1, round(height * scale)), max(1, round(width * scale)))


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pads ... x H x W at the bottom and right to `height` x `width` by reflection (repeated when the pad is
    larger than the image), so padding looks like more of the surface rather than an edge."""
    squeeze = x.dim() == 3
    x = x[None] if squeeze else x
    while x.shape[-2] < height or x.shape[-1] < width:
        need_h, need_w = max(0, height - x.shape[-2]), max(0, width - x.shape[-1])
        if (need_h and x.shape[-2] == 1) or (need_w and x.shape[-1] == 1):  # one pixel cannot be reflected
            x = F.pad(x, (0, need_w, 0, need_h), mode="replicate")
            break
        x = F.pad(x, (0, min(need_w, x.shape[-1] - 1), 0, min(need_h, x.shape[-2] - 1)), mode="reflect")
    return x[0] if squeeze else x


def round_up(value: int, multiple: int = 32) -> int:
    return -(-value // multiple) * multiple


def augment_crops(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """Native-mode augmentation of square standardised crops: the 8 flips/rotations (same for the masks) and a
    small gain/offset jitter (no clamping: crops are standardised, not in [0, 1])."""
    n = images.shape[0]
    both = torch.cat([images, masks], dim=1)
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    transpose = torch.rand(n, generator=generator) < 0.5
    both[flip_h] = both[flip_h].flip(-1)
    both[flip_v] = both[flip_v].flip(-2)
    both[transpose] = both[transpose].transpose(-1, -2)
    images, masks = both[:, :3], both[:, 3:]
    gain = 1.0 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2
    bias = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.1
    return images * gain + bias, masks


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, config: UNetConfig) -> torch.Tensor:
    """BCE with `pos_weight` on defect pixels plus `dice_weight` x soft Dice loss over the whole batch."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=logits.new_tensor(config.pos_weight))
    probabilities = torch.sigmoid(logits)
    intersection = (probabilities * targets).sum()
    dice = 1.0 - (2.0 * intersection + 1.0) / (probabilities.sum() + targets.sum() + 1.0)
    return bce + config.dice_weight * dice


def mask_coverage(
    mask: np.ndarray | None, shape: tuple[int, int], size: int, *, shape_out: tuple[int, int] | None = None
) -> torch.Tensor:
    """A H x W bool mask (None: all good) as a 1 x size x size (or 1 x `shape_out`) uint8 tensor of coverage (0-255)."""
    out = (size, size) if shape_out is None else tuple(shape_out)
    if mask is None:
        return torch.zeros(1, *out, dtype=torch.uint8)
    coverage = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    if tuple(coverage.shape[-2:]) != out:
        # Area-weighted coverage keeps thin cracks as partial targets instead of dropping them at resize.
        coverage = F.interpolate(coverage, size=out, mode="bilinear", align_corners=False, antialias=True)
    return coverage[0].clamp(0, 1).mul(255).round().to(torch.uint8)


class NativeTrainingData:
    """Native mode: training images at working resolution (uint8, one channel when gray) with their mask coverage
    and defect pixel positions; batches are image_size crops, a defect image's crop placed so a random defect pixel
    lies inside it (at least `defect_crop_margin` from the border), a good image's crop anywhere."""

    def __init__(self, samples: Sequence[Sample], config: UNetConfig, progress: ProgressCallback) -> None:
        self.config = config
        self.images: list[torch.Tensor] = []
        self.masks: list[torch.Tensor | None] = []
        self.defect_pixels: list[np.ndarray | None] = []
        self.stats: list[tuple[float, float]] = []
        labels = []
        self.skipped = 0
        for index in range(len(samples)):
            if index % 20 == 0:
                progress("prepare", index / len(samples), f"reading image {index + 1} of {len(samples)}")
            sample = samples[index]
            if sample.label == DEFECT and (sample.mask is None or not np.any(sample.mask)):
                self.skipped += 1  # a defect without an outline says nothing about where defects are
                continue
            image = native_tensor(sample.image, config)
            height, width = image.shape[-2:]
            self.stats.append((float(image.mean()), float(image.std()) + 1e-3))
            gray = bool(torch.equal(image[0], image[1]) and torch.equal(image[0], image[2]))
            self.images.append(
                image[:1].mul(255).round_().to(torch.uint8) if gray else image.mul(255).round_().to(torch.uint8)
            )
            if sample.label == DEFECT:
                coverage = mask_coverage(sample.mask, sample.mask.shape, 0, shape_out=(height, width))
                self.masks.append(coverage)
                pixels = np.argwhere(coverage[0].numpy() >= 128).astype(np.int32)
                if len(pixels) == 0:  # a defect thinner than a pixel after downscaling: any covered pixel
                    pixels = np.argwhere(coverage[0].numpy() > 0).astype(np.int32)
                self.defect_pixels.append(pixels)
            else:
                self.masks.append(None)
                self.defect_pixels.append(None)
            labels.append(sample.label)
        labels_array = np.array(labels)
        self.defect_indices = np.flatnonzero(labels_array == DEFECT)
        self.good_indices = np.flatnonzero(labels_array == GOOD)
        mean, std = torch.tensor(config.mean).view(3, 1, 1), torch.tensor(config.std).view(3, 1, 1)
        self._imagenet = (mean, std)

    def crop(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One standardised 3 x S x S crop and its 1 x S x S target coverage in [0, 1]."""
        size = self.config.image_size
        image, mask, pixels = self.images[index], self.masks[index], self.defect_pixels[index]
        height, width = image.shape[-2:]
        if pixels is not None:
            y, x = pixels[rng.integers(len(pixels))]
            margin = int(self.config.defect_crop_margin * size)
            top = int(y) - int(rng.integers(margin, size - margin))
            left = int(x) - int(rng.integers(margin, size - margin))
        else:
            top, left = int(rng.integers(0, max(height - size, 0) + 1)), int(rng.integers(0, max(width - size, 0) + 1))
            if rng.random() < self.config.good_border_fraction:
                # Tile edges and corners look most like breaks and frays: show the network more of the good ones.
                if rng.random() < 0.6:
                    top = int(rng.choice([0, max(height - size, 0)]))
                if rng.random() < 0.6:
                    left = int(rng.choice([0, max(width - size, 0)]))
        top = min(max(top, 0), max(height - size, 0))
        left = min(max(left, 0), max(width - size, 0))
        patch = image[:, top : top + size, left : left + size].float().div_(255.0).expand(3, -1, -1)
        centre, spread = self.stats[index]
        mean, std = self._imagenet
        patch = (patch - centre) / spread * std + mean  # the whole image's statistics, as `preprocess` uses
        if mask is None:
            target = torch.zeros(1, *patch.shape[-2:])
        else:
            target = mask[:, top : top + size, left : left + size].float().div_(255.0)
        if patch.shape[-2:] != (size, size):  # an image smaller than a crop: reflect it out, as prediction pads
            patch, target = pad_to(patch, size, size), pad_to(target, size, size)
        return patch, target

    def batch(self, index: np.ndarray, rng: np.random.Generator, generator: torch.Generator):
        crops = [self.crop(int(i), rng) for i in index]
        images = torch.stack([c[0] for c in crops])
        targets = torch.stack([c[1] for c in crops])
        if self.config.augment:
            images, targets = augment_crops(images, targets, generator)
        return images, targets


def _train_step(
    scorer: UNetScorer,
    batch: torch.Tensor,
    targets: torch.Tensor,
    config: UNetConfig,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> float:
    """One optimisation step; returns its loss. (Tests replace it to simulate running out of memory.)"""
    with autocast(batch.device, config.mixed_precision):
        logits = scorer.logits(batch)
    # The loss in float32 whatever the network ran in: Dice sums every pixel of the batch, past float16's range.
    loss = segmentation_loss(logits.float(), targets, config)
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()
    return loss.item()


class _SeededBatches(torch.utils.data.Dataset):
    """An epoch's batches for DataLoader workers: batch i is cropped and augmented with its own seed, so the
    workers need no shared random state."""

    def __init__(self, data, batches: list[np.ndarray], seeds: np.ndarray) -> None:
        self.data, self.batches, self.seeds = data, batches, seeds

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        seed = int(self.seeds[i])
        return self.data.batch(self.batches[i], np.random.default_rng(seed), torch.Generator().manual_seed(seed))


def epoch_batches(data, order: np.ndarray, batch_size: int, rng, generator, device: torch.device):
    """(images, targets) CPU batches of one epoch, in `order`. On the CPU they are made in this process from the
    shared random streams (what training always did); for a GPU, DataLoader workers crop and augment the next
    batches into pinned memory while the GPU computes."""
    # BatchNorm cannot train on a lone leftover image.
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    batches = [batch for batch in batches if len(batch) >= 2]
    if device.type != "cuda":
        for batch in batches:
            yield data.batch(batch, rng, generator)
        return
    seeds = rng.integers(0, 2**31, size=len(batches))
    workers = min(CUDA_LOADER_WORKERS, max(0, (os.cpu_count() or 1) - 1))
    yield from torch.utils.data.DataLoader(
        _SeededBatches(data, batches, seeds), batch_size=None, num_workers=workers, pin_memory=True
    )


class UNetSegmenter:
    """Family "unet": see the module docstring. Keyword arguments are `UNetConfig` fields."""

    family = FAMILY

    def __init__(self, *, resolved_device: torch.device | None = None, **config) -> None:
        self.config = UNetConfig(**config)
        # Resolved once (load passes the device it settled on, see ml.devices.resolve_saved_device).
        self.device = resolved_device or resolve_device(self.config.device)
        self.summary = TrainingSummary()
        self._scorer: UNetScorer | None = None

    @property
    def scorer(self) -> UNetScorer:
        if self._scorer is None:
            raise RuntimeError("the U-Net is not fitted or loaded yet")
        return self._scorer

    def _new_scorer(self, *, pretrained: bool) -> UNetScorer:
        config = self.config if pretrained else UNetConfig(**{**asdict(self.config), "pretrained": False})
        with torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            # Built on the CPU from the seed (the same initial weights on every device), then moved.
            return UNetScorer(build_network(config), self.config).eval().to(self.device)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images (H x W x 3 uint8, any size) -> the model's input (the ONNX graph's "images").

        Resized mode: N x 3 x S x S float32 in [0, 1]. Native mode: each image at working resolution, standardised
        over its own pixels, reflect-padded at the bottom and right to the batch's largest height and width rounded
        up to a multiple of 32: N x 3 x H x W float32. (`predict` batches only images of the same size.)
        """
        if not self.config.native:
            return images_to_batch(images, self.config.image_size).to(self.device, non_blocking=True)
        tensors = [standardise_image(native_tensor(image, self.config), self.config) for image in images]
        height = round_up(max(t.shape[-2] for t in tensors))
        width = round_up(max(t.shape[-1] for t in tensors))
        return torch.stack([pad_to(t, height, width) for t in tensors]).to(self.device, non_blocking=True)

    def fit(self, samples: Sequence[Sample], *, progress: ProgressCallback = no_progress) -> None:
        """Trains on good samples (zero masks) and defect samples with a non-empty mask.

        Progress: stage "prepare" while images are read, then "epoch" with fraction = epochs done / `epochs`
        (updated every 5 batches, a few seconds apart on a CPU). A ValueError when no defect sample has a mask.
        """
        with torch_threads(self.config.num_threads):
            self._fit(samples, progress)

    def _fit(self, samples: Sequence[Sample], progress: ProgressCallback) -> None:
        started = time.perf_counter()
        config = self.config
        if config.native:
            data = NativeTrainingData(samples, config, progress)
        else:  # the legacy mode lives in its own module
            from ml.unet_resized import ResizedTrainingData

            data = ResizedTrainingData(samples, config, progress)
        if len(data.defect_indices) == 0:
            raise ValueError("the U-Net needs at least one defect image with a mask to train on")
        self._scorer = self._new_scorer(pretrained=config.pretrained)
        batch_size = fitted_batch_size(config.batch_size, self.device, lambda n: self._probe(data, n))
        summary = with_oom_fallback(lambda size: self._train(data, size, progress), batch_size)
        summary.seconds = time.perf_counter() - started
        self.summary = summary

    def _probe(self, data, count: int) -> None:
        """One forward and backward pass on `count` training crops for measuring memory; weights, gradients,
        batch-norm statistics and the training random streams are left as they were."""
        network = self.scorer.network
        state = {k: v.clone() for k, v in network.state_dict().items()}
        network.train()
        index = np.concatenate([data.defect_indices, data.good_indices])[:count]
        batch, targets = data.batch(np.resize(index, count), np.random.default_rng(0), torch.Generator().manual_seed(0))
        try:
            with autocast(self.device, self.config.mixed_precision):
                logits = self.scorer.logits(batch.to(self.device))
            segmentation_loss(logits.float(), targets.to(self.device), self.config).backward()
        finally:
            network.zero_grad(set_to_none=True)
            network.load_state_dict(state)

    def _train(self, data, batch_size: int, progress: ProgressCallback) -> TrainingSummary:
        """One training attempt from fresh weights at `batch_size` (see ml.training.with_oom_fallback)."""
        config, device = self.config, self.device
        defect_indices, good_indices = data.defect_indices, data.good_indices
        self._scorer = self._new_scorer(pretrained=config.pretrained)
        network = self.scorer.network
        frozen = frozen_encoder_modules(network, config.frozen_encoder_stages if config.pretrained else 0)
        for module in frozen:
            module.requires_grad_(False)
        encoder_params = [p for p in network.encoder.parameters() if p.requires_grad]
        encoder_ids = {id(p) for p in network.encoder.parameters()}
        other_params = [p for p in network.parameters() if p.requires_grad and id(p) not in encoder_ids]
        groups = [
            {"params": encoder_params, "lr": config.learning_rate * config.encoder_lr_scale},
            {"params": other_params, "lr": config.learning_rate},
        ]
        generator = torch.Generator().manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        n_good_per_epoch = min(len(good_indices), int(round(config.good_per_defect * len(defect_indices))))
        steps_per_epoch = math.ceil((len(defect_indices) + n_good_per_epoch) / batch_size)
        optimiser = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser,
            max_lr=[group["lr"] for group in groups],
            total_steps=steps_per_epoch * config.epochs,
            pct_start=0.15,
        )
        scaler = grad_scaler(device, config.mixed_precision)
        summary = TrainingSummary(
            n_good=len(good_indices),
            n_defect=len(defect_indices),
            n_defect_skipped=data.skipped,
            batch_size=batch_size,
            device=str(device),
        )
        good_queue: list[int] = []

        for epoch in range(config.epochs):
            # Good images rotate through a shuffled queue so every one is seen before any repeats.
            while len(good_queue) < n_good_per_epoch:
                good_queue += rng.permutation(good_indices).tolist()
            chosen = np.concatenate([defect_indices, good_queue[:n_good_per_epoch]]).astype(int)
            good_queue = good_queue[n_good_per_epoch:]
            order = rng.permutation(chosen)
            network.train()
            for module in frozen:
                module.eval()  # frozen layers keep their ImageNet batch-norm statistics too
            total, steps = 0.0, 0
            for batch, targets in epoch_batches(data, order, batch_size, rng, generator, device):
                batch, targets = batch.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                total, steps = total + _train_step(self.scorer, batch, targets, config, optimiser, scaler), steps + 1
                if schedule.last_epoch + 1 < schedule.total_steps:
                    schedule.step()
                if steps % 5 == 0:  # epochs take minutes on a CPU: report within them too (ETA, heartbeat, cancel)
                    done = (epoch + steps / steps_per_epoch) / config.epochs
                    progress("epoch", min(done, 1.0), f"epoch {epoch + 1}/{config.epochs}: step {steps}")
            summary.epochs_run = epoch + 1
            summary.history.append({"epoch": epoch + 1, "train_loss": total / max(steps, 1)})
            progress(
                "epoch",
                (epoch + 1) / config.epochs,
                f"epoch {epoch + 1}/{config.epochs}: loss {total / max(steps, 1):.4f}",
            )
        network.eval()
        return summary

    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> list[Prediction]:
        """Defect probability maps and masks at each image's own resolution, and image scores in [0, 1]."""
        with torch_threads(self.config.num_threads), torch.inference_mode():
            return self._predict(images, batch_size)

    def _predict(self, images: Sequence[np.ndarray], batch_size: int) -> list[Prediction]:
        scorer = self.scorer.eval()
        arrays = [np.asarray(image) for image in images]
        if self.config.native:  # batch images of one size together so none is padded beyond its multiple of 32
            by_shape: dict[tuple, list[int]] = {}
            for index, image in enumerate(arrays):
                by_shape.setdefault(tuple(image.shape[:2]), []).append(index)
            chunks = [
                group[i : i + batch_size] for group in by_shape.values() for i in range(0, len(group), batch_size)
            ]
        else:
            chunks = [list(range(i, min(i + batch_size, len(arrays)))) for i in range(0, len(arrays), batch_size)]
        predictions: list[Prediction | None] = [None] * len(arrays)
        for chunk in chunks:
            scores, probabilities = scorer(self.preprocess([arrays[i] for i in chunk]))
            scores, probabilities = scores.float().cpu(), probabilities.float().cpu()
            for index, score, probability in zip(chunk, scores, probabilities):
                image = arrays[index]
                if self.config.native:
                    height, width = working_shape(image.shape[:2], self.config)
                    probability = probability[:height, :width]
                full = map_to_image_size(probability, image.shape[:2])
                predictions[index] = Prediction(
                    score=float(score), anomaly_map=full, mask=full > self.config.mask_threshold
                )
        return predictions  # type: ignore[return-value]

    def _preprocessing_record(self) -> dict:
        config = self.config
        if not config.native:
            return {
                "resize": [config.image_size, config.image_size],
                "interpolation": "bilinear, antialiased",
                "channels": 3,
                "scale": "uint8 / 255, then (x - mean) / std inside the model",
                "mean": list(config.mean),
                "std": list(config.std),
            }
        return {
            "resize": f"scale by {config.scale}, and further if the longer side would exceed {config.max_side} px "
            "(bilinear, antialiased; none at scale 1 below that)",
            "channels": 3,
            "scale": "uint8 / 255; x = (x - mean of x) / (std of x + 0.001) * std + mean (one image's pixels, all "
            "channels); reflect-pad bottom/right to multiples of 32; (x - mean) / std inside the model",
            "mean": list(config.mean),
            "std": list(config.std),
        }

    def save(self, directory: Path) -> None:
        """Writes the checkpoint (ml.checkpoint): config, preprocessing, training summary and network weights."""
        tensors = self.scorer.network.state_dict()
        record = self._preprocessing_record()
        write_checkpoint(directory, Checkpoint(FAMILY, asdict(self.config), tensors, record, asdict(self.summary)))

    @classmethod
    def load(cls, directory: Path, *, device: str | None = None) -> Self:
        """Restores a model written by `save` (no ImageNet weights are read: the saved ones replace them) on
        `device` (default: the saved spec, or the CPU where that cannot be had)."""
        checkpoint = read_checkpoint(directory, family=FAMILY)
        config = checkpoint.config
        if checkpoint.format_version < 2:
            config.setdefault("native", False)  # format 1 resized whole images
        resolved = resolve_saved_device(check_device_spec(config.get("device", "auto")), device)
        model = cls(resolved_device=resolved, **config)
        model.summary = TrainingSummary.from_dict(checkpoint.training)
        model._scorer = model._new_scorer(pretrained=False)
        model._scorer.network.load_state_dict(checkpoint.tensors)
        model._scorer.eval()
        return model

    def to_onnx(self, path: Path) -> None:
        """Exports the scorer: input "images" (see `preprocess`), outputs "scores" (N) and "maps" (N x H x W defect
        probabilities at model resolution). Resized mode: N x 3 x S x S in [0, 1]. Native mode: the height and
        width axes are dynamic (multiples of 32). Unlike the backbone families, mean/std normalisation happens
        inside the graph."""
        from ml.onnx_export import export_module

        if not self.config.native:
            export_module(self.scorer, path, image_size=self.config.image_size)
            return
        import warnings

        from ml.onnx_export import OPSET

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        scorer = self.scorer.eval()
        example = torch.randn(2, 3, 96, 128, device=self.device)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                scorer,
                (example,),
                str(path),
                dynamo=False,
                input_names=["images"],
                output_names=["scores", "maps"],
                dynamic_axes={
                    "images": {0: "batch", 2: "height", 3: "width"},
                    "scores": {0: "batch"},
                    "maps": {0: "batch", 1: "height", 2: "width"},
                },
                opset_version=OPSET,
            )
