"""Supervised defect segmentation with a U-Net (family "unet").

segmentation-models-pytorch's U-Net on timm's EfficientNet-Lite0, its encoder starting from ImageNet weights
(`ml.backbones.load_pretrained_state_dict`). Trained from defect masks (a box arrives as a filled rectangle); good
images contribute all-zero masks. Loss: BCE (with a positive-pixel weight) + soft Dice. Defect images are a fixed
share of every epoch however few there are, and batches are augmented (flips, small shifts, brightness/contrast).

Output: the defect probability map at the input's resolution (`anomaly_map`), the mask `prob > 0.5`, and an image
score = mean of the top `topk_fraction` of the Gaussian-smoothed probability map (so one hot pixel is not enough).
Images of any size are resized to `image_size` (a multiple of 32, as the U-Net needs).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ml.filters import gaussian_blur
from ml.image_batches import images_to_batch, images_to_uint8_batch, map_to_image_size
from ml.types import DEFECT, GOOD, Prediction, ProgressCallback, Sample, no_progress

FAMILY = "unet"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT_VERSION = 1
PRETRAINED_ENCODERS = {"tu-tf_efficientnet_lite0": "tf_efficientnet_lite0"}  # smp encoder -> name for ml.backbones
# Keys of the timm classifier that smp's features-only encoder does not have.
_CLASSIFIER_ONLY_PREFIXES = ("conv_head.", "bn2.", "classifier.")


@dataclass
class UNetConfig:
    """Everything that defines a U-Net segmenter; saved as config.json next to the weights.

    image_size: side (px) every image is resized to, a multiple of 32. good_per_defect: good images drawn per
    defect image in each epoch (an epoch is every usable defect image plus that many good ones).
    """

    image_size: int = 192
    encoder_name: str = "tu-tf_efficientnet_lite0"
    pretrained: bool = True
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16)
    frozen_encoder_stages: int = 2  # stem + this many block stages keep their ImageNet weights (and BN statistics)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet statistics, as the encoder was trained
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    epochs: int = 12
    batch_size: int = 4  # more optimiser steps per CPU-second than 8; the frozen stem keeps its BN statistics
    learning_rate: float = 5e-3  # decoder and head; the fresh decoder needs a high rate to learn in few epochs
    encoder_lr_scale: float = 0.1  # the pretrained encoder learns this much slower
    weight_decay: float = 1e-4
    good_per_defect: float = 0.5
    pos_weight: float = 3.0  # BCE weight of defect pixels: they are a few percent of all pixels
    dice_weight: float = 1.0
    standardise: bool = True  # per-image contrast stretch before ImageNet normalisation (dark, flat surfaces)
    augment: bool = True
    max_shift: float = 0.06  # random translation, fraction of the side
    map_sigma: float = 2.0  # smoothing before scoring, model pixels
    topk_fraction: float = 0.0005  # magnetic-tile blowholes cover ~0.1 % of an image
    mask_threshold: float = 0.5
    seed: int = 0
    num_threads: int | None = None  # torch threads while fitting; None leaves the process setting alone

    def __post_init__(self) -> None:
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

    forward: N x 3 x S x S float32 in [0, 1] -> (scores N, probabilities N x S x S), both float32.
    """

    def __init__(self, network: smp.Unet, config: UNetConfig) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.standardise = config.standardise
        self.map_sigma = config.map_sigma
        self.topk = max(1, round(config.topk_fraction * config.image_size**2))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1 x S x S defect logits for an N x 3 x S x S batch in [0, 1]."""
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
        scores = smoothed.flatten(1).topk(self.topk, dim=1).values.mean(dim=1)
        return scores, probabilities[:, 0]


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


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, config: UNetConfig) -> torch.Tensor:
    """BCE with `pos_weight` on defect pixels plus `dice_weight` x soft Dice loss over the whole batch."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(config.pos_weight))
    probabilities = torch.sigmoid(logits)
    intersection = (probabilities * targets).sum()
    dice = 1.0 - (2.0 * intersection + 1.0) / (probabilities.sum() + targets.sum() + 1.0)
    return bce + config.dice_weight * dice


def _mask_to_tensor(mask: np.ndarray | None, shape: tuple[int, int], size: int) -> torch.Tensor:
    """A H x W bool mask (None: all good) as a 1 x size x size uint8 tensor of coverage (0-255)."""
    if mask is None:
        return torch.zeros(1, size, size, dtype=torch.uint8)
    coverage = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    if coverage.shape[-2:] != (size, size):
        # Area-weighted coverage keeps thin cracks as partial targets instead of dropping them at resize.
        coverage = F.interpolate(coverage, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return coverage[0].clamp(0, 1).mul(255).round().to(torch.uint8)


@dataclass
class TrainingSummary:
    """What fit did, saved with the model for the record."""

    epochs_run: int = 0
    n_good: int = 0
    n_defect: int = 0
    n_defect_skipped: int = 0  # defect images without a usable mask
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


class UNetSegmenter:
    """Family "unet": see the module docstring. Keyword arguments are `UNetConfig` fields."""

    family = FAMILY

    def __init__(self, **config) -> None:
        self.config = UNetConfig(**config)
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
            return UNetScorer(build_network(config), self.config).eval()

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images (H x W x 3 uint8, any size) -> the model's input, N x 3 x S x S float32 in [0, 1]."""
        return images_to_batch(images, self.config.image_size)

    def fit(self, samples: Sequence[Sample], *, progress: ProgressCallback = no_progress) -> None:
        """Trains on good samples (zero masks) and defect samples with a non-empty mask.

        Progress: stage "prepare" while images are resized, then "epoch" with fraction = epochs done / `epochs`
        (updated every 10 batches). A ValueError when no defect sample has a non-empty mask.
        """
        previous_threads = torch.get_num_threads()
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        try:
            self._fit(samples, progress)
        finally:
            torch.set_num_threads(previous_threads)

    def _fit(self, samples: Sequence[Sample], progress: ProgressCallback) -> None:
        started = time.perf_counter()
        config, size = self.config, self.config.image_size
        images, masks, labels = [], [], []
        skipped = 0
        for index in range(len(samples)):
            sample = samples[index]
            if sample.label == DEFECT and (sample.mask is None or not np.any(sample.mask)):
                skipped += 1  # a defect without an outline says nothing about where defects are
                continue
            image = np.asarray(sample.image)
            images.append(images_to_uint8_batch([image], size)[0])
            masks.append(_mask_to_tensor(sample.mask if sample.label == DEFECT else None, image.shape[:2], size))
            labels.append(sample.label)
            if index % 50 == 0:
                progress("prepare", index / len(samples), f"resizing image {index + 1} of {len(samples)}")
        labels_array = np.array(labels)
        defect_indices = np.flatnonzero(labels_array == DEFECT)
        good_indices = np.flatnonzero(labels_array == GOOD)
        if len(defect_indices) == 0:
            raise ValueError("the U-Net needs at least one defect image with a mask to train on")
        image_data, mask_data = torch.stack(images), torch.stack(masks)

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
        steps_per_epoch = math.ceil((len(defect_indices) + n_good_per_epoch) / config.batch_size)
        optimiser = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser,
            max_lr=[group["lr"] for group in groups],
            total_steps=steps_per_epoch * config.epochs,
            pct_start=0.15,
        )
        summary = TrainingSummary(n_good=len(good_indices), n_defect=len(defect_indices), n_defect_skipped=skipped)
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
            for start in range(0, len(order), config.batch_size):
                index = torch.from_numpy(order[start : start + config.batch_size])
                if len(index) < 2:
                    continue  # BatchNorm cannot train on a lone leftover image
                batch = image_data[index].float().div_(255.0)
                targets = mask_data[index].float().div_(255.0)
                if config.augment:
                    batch, targets = augment(batch, targets, config, generator)
                loss = segmentation_loss(self.scorer.logits(batch), targets, config)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if schedule.last_epoch + 1 < schedule.total_steps:
                    schedule.step()
                total, steps = total + loss.item(), steps + 1
                if steps % 10 == 0:  # epochs take minutes on a CPU: report within them too, for the ETA
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
        summary.seconds = time.perf_counter() - started
        self.summary = summary

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> list[Prediction]:
        """Defect probability maps and masks at each image's own resolution, and image scores in [0, 1]."""
        scorer = self.scorer.eval()
        predictions: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = [np.asarray(image) for image in images[start : start + batch_size]]
            scores, probabilities = scorer(self.preprocess(chunk))
            for image, score, probability in zip(chunk, scores, probabilities):
                full = map_to_image_size(probability, image.shape[:2])
                predictions.append(
                    Prediction(score=float(score), anomaly_map=full, mask=full > self.config.mask_threshold)
                )
        return predictions

    def save(self, directory: Path) -> None:
        """Writes config.json (family, config, preprocessing, training summary) and weights.safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            "family": FAMILY,
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "preprocessing": {
                "resize": [self.config.image_size, self.config.image_size],
                "interpolation": "bilinear, antialiased",
                "channels": 3,
                "scale": "uint8 / 255, then (x - mean) / std inside the model",
                "mean": list(self.config.mean),
                "std": list(self.config.std),
            },
            "training": asdict(self.summary),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2))
        state = {k: v.contiguous() for k, v in self.scorer.network.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Restores a model written by `save` (no ImageNet weights are read: the saved ones replace them)."""
        directory = Path(directory)
        document = json.loads((directory / CONFIG_FILE).read_text())
        if document.get("family") != FAMILY:
            raise ValueError(f"{directory} holds family {document.get('family')!r}, not {FAMILY!r}")
        model = cls(**document["config"])
        model.summary = TrainingSummary(**document.get("training", {}))
        model._scorer = model._new_scorer(pretrained=False)
        model._scorer.network.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        model._scorer.eval()
        return model

    def to_onnx(self, path: Path) -> None:
        """Exports the scorer: input "images" N x 3 x S x S float32 in [0, 1] (see `preprocess`),
        outputs "scores" (N) and "maps" (N x S x S defect probabilities at model resolution).
        Unlike the backbone families, mean/std normalisation happens inside the graph."""
        from ml.onnx_export import export_module

        export_module(self.scorer, path, image_size=self.config.image_size)
