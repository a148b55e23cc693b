"""Convolutional autoencoder anomaly detector (family "autoencoder").

Trained on good images only: it learns to reconstruct normal appearance through a small dense bottleneck, so what
it cannot reconstruct is anomalous. The anomaly map is the per-pixel reconstruction error (squared error for
`loss="l2"`, 1 - SSIM for `loss="ssim"`), Gaussian-smoothed and resized to the input image. The image score is
the mean of the top `topk_fraction` of map pixels (or the map's max or mean, by `score`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Self

import numpy as np
import torch
from torch import nn

from ml.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from ml.devices import check_device_spec, resolve_device, resolve_saved_device
from ml.filters import gaussian_blur, ssim_map
from ml.images import LUMA, images_to_batch, images_to_uint8_batch, map_to_image_size
from ml.training import TrainingSummary, autocast, fitted_batch_size, grad_scaler, with_oom_fallback
from ml.types import GOOD, Prediction, ProgressCallback, Sample, no_progress

FAMILY = "autoencoder"


@dataclass
class AutoencoderConfig:
    """Everything that defines an autoencoder; saved in its checkpoint (ml.checkpoint).

    image_size: side (px) images are resized to; must be divisible by 2**depth. depth: number of stride-2 stages
    (None: halve while the side stays even and at least 4). grayscale: 1 input channel instead of 3.
    """

    image_size: int = 128
    grayscale: bool = False
    depth: int | None = None
    base_channels: int = 32
    max_channels: int = 256
    latent_dim: int = 128
    loss: Literal["l2", "ssim"] = "l2"
    ssim_window: int = 11
    map_sigma: float = 2.0  # smoothing of the error map, in model pixels
    score: Literal["topk", "max", "mean"] = "topk"
    topk_fraction: float = 0.01
    epochs: int = 60
    patience: int = 8  # epochs without a better validation loss before stopping
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"  # where it trains and predicts: auto, cpu, cuda, cuda:N (ml.devices)
    mixed_precision: bool = True  # float16 autocast and loss scaling when training on CUDA (no effect on a CPU)

    def __post_init__(self) -> None:
        self.device = check_device_spec(self.device)

    def resolved_depth(self) -> int:
        if self.depth is not None:
            return self.depth
        depth, side = 0, self.image_size
        while side % 2 == 0 and side // 2 >= 4:
            side //= 2
            depth += 1
        return depth


def _conv_block(c_in: int, c_out: int, *, stride: int) -> nn.Sequential:
    kernel = 4 if stride == 2 else 3
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2, inplace=True),
    )


class ConvAutoencoder(nn.Module):
    """Strided-conv encoder, dense bottleneck of `latent_dim`, transposed-conv decoder with a sigmoid output.

    forward: N x C x S x S in [0, 1] -> reconstruction of the same shape in [0, 1].
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        depth = config.resolved_depth()
        channels = 1 if config.grayscale else 3
        if depth < 1 or config.image_size % (2**depth):
            raise ValueError(f"image_size {config.image_size} must be divisible by 2**depth (depth={depth})")
        widths = [min(config.base_channels * 2**i, config.max_channels) for i in range(depth)]
        self.bottom_side = config.image_size // 2**depth
        self.bottom_channels = widths[-1]

        encoder: list[nn.Module] = []
        c_in = channels
        for width in widths:
            encoder += [_conv_block(c_in, width, stride=2), _conv_block(width, width, stride=1)]
            c_in = width
        self.encoder = nn.Sequential(*encoder)
        flat = self.bottom_channels * self.bottom_side**2
        self.to_latent = nn.Linear(flat, config.latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(config.latent_dim, flat), nn.LeakyReLU(0.2, inplace=True))

        decoder: list[nn.Module] = []
        for width_in, width_out in zip(reversed(widths), list(reversed(widths))[1:] + [widths[0]]):
            decoder += [_up_block(width_in, width_out), _conv_block(width_out, width_out, stride=1)]
        decoder += [nn.Conv2d(widths[0], channels, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latent = self.to_latent(self.encoder(x).flatten(1))
        bottom = self.from_latent(latent).view(-1, self.bottom_channels, self.bottom_side, self.bottom_side)
        return self.decoder(bottom)


class AutoencoderScorer(nn.Module):
    """Autoencoder plus scoring, the graph that prediction and ONNX export share.

    forward: N x 3 x S x S RGB in [0, 1] -> (scores N, maps N x S x S), both float32, higher = more anomalous.
    A grayscale model converts to grey inside, so every family's exported graph takes the same RGB input.
    """

    def __init__(self, network: ConvAutoencoder, config: AutoencoderConfig) -> None:
        super().__init__()
        self.network = network
        self.grayscale = config.grayscale
        self.register_buffer("luma", LUMA.view(1, 3, 1, 1).clone(), persistent=False)
        self.loss = config.loss
        self.ssim_window = config.ssim_window
        self.map_sigma = config.map_sigma
        self.score = config.score
        self.topk = max(1, round(config.topk_fraction * config.image_size**2))

    def error_map(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Unsmoothed per-pixel error, N x 1 x S x S."""
        if self.loss == "ssim":
            return 1.0 - ssim_map(x, reconstruction, window=self.ssim_window).mean(dim=1, keepdim=True)
        return ((x - reconstruction) ** 2).mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.grayscale:
            x = (x * self.luma).sum(dim=1, keepdim=True)
        maps = gaussian_blur(self.error_map(x, self.network(x)), self.map_sigma)[:, 0]
        flat = maps.flatten(1)
        if self.score == "max":
            scores = flat.amax(dim=1)
        elif self.score == "mean":
            scores = flat.mean(dim=1)
        else:
            scores = flat.topk(self.topk, dim=1).values.mean(dim=1)
        return scores, maps


def _train_step(
    network: ConvAutoencoder,
    batch: torch.Tensor,
    config: AutoencoderConfig,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> float:
    """One optimisation step on `batch`; returns its loss. (Tests replace it to simulate running out of memory.)"""
    with autocast(batch.device, config.mixed_precision):
        reconstruction = network(batch)
    # The loss in float32 whatever the network ran in: SSIM's variances cancel badly in float16.
    loss = _training_loss(config, batch, reconstruction.float())
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()
    return loss.item()


def _training_loss(config: AutoencoderConfig, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    if config.loss == "ssim":
        return 1.0 - ssim_map(x, reconstruction, window=config.ssim_window).mean()
    return ((x - reconstruction) ** 2).mean()


class Autoencoder:
    """Family "autoencoder": see the module docstring. Keyword arguments are `AutoencoderConfig` fields."""

    family = FAMILY

    def __init__(self, *, resolved_device: torch.device | None = None, **config) -> None:
        self.config = AutoencoderConfig(**config)
        # Resolved once (load passes the device it settled on, see ml.devices.resolve_saved_device).
        self.device = resolved_device or resolve_device(self.config.device)
        self.summary = TrainingSummary()
        self._scorer = self._build_scorer()

    def _build_scorer(self) -> AutoencoderScorer:
        with torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            # Built on the CPU from the seed (the same initial weights on every device), then moved.
            return AutoencoderScorer(ConvAutoencoder(self.config), self.config).eval().to(self.device)

    @property
    def network(self) -> ConvAutoencoder:
        return self._scorer.network

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images (H x W x 3 uint8, any size) -> the scorer's input, N x 3 x S x S float32 RGB in [0, 1]."""
        return images_to_batch(images, self.config.image_size).to(self.device, non_blocking=True)

    def fit(self, samples: Sequence[Sample], *, progress: ProgressCallback = no_progress) -> None:
        """Trains on the GOOD samples (others are ignored), holding out `val_fraction` of them for early stopping.

        Progress: stage "epoch", fraction = epochs done / `epochs` (1.0 when stopped early). On a GPU: mixed
        precision, a batch size lowered to fit free memory, and one retry at half the batch after running out of
        memory (then ml.training.GpuOutOfMemory).
        """
        started = time.perf_counter()
        config = self.config
        good = [sample.image for sample in samples if sample.label == GOOD]
        if not good:
            raise ValueError("the autoencoder needs at least one good image to train on")
        progress("prepare", 0.0, f"resizing {len(good)} good images")
        data = images_to_uint8_batch(good, config.image_size, grayscale=config.grayscale)

        generator = torch.Generator().manual_seed(config.seed)
        order = torch.randperm(len(data), generator=generator)
        n_val = int(round(config.val_fraction * len(data))) if len(data) > 1 else 0
        n_val = min(max(n_val, 1 if len(data) > 1 else 0), len(data) - 1)
        val_data, train_data = data[order[:n_val]], data[order[n_val:]]
        if n_val == 0:  # a single good image: validate on what we train on
            val_data = train_data
        if self.device.type == "cuda":  # page-locked, so batches copy to the GPU asynchronously
            train_data, val_data = train_data.pin_memory(), val_data.pin_memory()
        shuffle_state = generator.get_state()  # every attempt (see with_oom_fallback) shuffles alike

        def attempt(batch_size: int) -> TrainingSummary:
            generator.set_state(shuffle_state)
            return self._train(train_data, val_data, batch_size, generator, progress)

        self._scorer = self._build_scorer()
        batch_size = fitted_batch_size(config.batch_size, self.device, lambda n: self._probe(train_data[:n]))
        summary = with_oom_fallback(attempt, batch_size)
        summary.n_val = n_val
        summary.seconds = time.perf_counter() - started
        self.summary = summary

    def _probe(self, images: torch.Tensor) -> None:
        """One forward and backward pass on `images` for measuring memory; the weights, gradients and batch-norm
        statistics are left as they were."""
        network = self.network
        state = {k: v.clone() for k, v in network.state_dict().items()}
        network.train()
        try:
            batch = images.to(self.device).float().div_(255.0)
            with autocast(self.device, self.config.mixed_precision):
                reconstruction = network(batch)
            _training_loss(self.config, batch, reconstruction.float()).backward()
        finally:
            network.zero_grad(set_to_none=True)
            network.load_state_dict(state)

    def _train(
        self,
        train_data: torch.Tensor,
        val_data: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        progress: ProgressCallback,
    ) -> TrainingSummary:
        """One training attempt from fresh weights at `batch_size`; leaves the best epoch's weights in place."""
        config, device = self.config, self.device
        self._scorer = self._build_scorer()
        network = self.network
        optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        scaler = grad_scaler(device, config.mixed_precision)
        best_state = {k: v.clone() for k, v in network.state_dict().items()}
        summary = TrainingSummary(n_train=len(train_data), batch_size=batch_size, device=str(device))

        for epoch in range(config.epochs):
            network.train()
            permutation = torch.randperm(len(train_data), generator=generator)
            train_total = 0.0
            for start in range(0, len(train_data), batch_size):
                batch = train_data[permutation[start : start + batch_size]]
                if len(batch) == 1 and len(train_data) > 1:
                    continue  # BatchNorm cannot train on a lone leftover image
                batch = batch.to(device, non_blocking=True).float().div_(255.0)
                train_total += _train_step(network, batch, config, optimiser, scaler) * len(batch)
            val_loss = self._validation_loss(val_data)
            summary.epochs_run = epoch + 1
            summary.history.append(
                {"epoch": epoch + 1, "train_loss": train_total / len(train_data), "val_loss": val_loss}
            )
            if val_loss < summary.best_val_loss:
                summary.best_val_loss, summary.best_epoch = val_loss, epoch + 1
                best_state = {k: v.clone() for k, v in network.state_dict().items()}
            stop = epoch + 1 - summary.best_epoch >= config.patience
            progress(
                "epoch",
                1.0 if stop else (epoch + 1) / config.epochs,
                f"epoch {epoch + 1}/{config.epochs}: val loss {val_loss:.5f} (best {summary.best_val_loss:.5f})",
            )
            if stop:
                break

        network.load_state_dict(best_state)
        network.eval()
        return summary

    @torch.inference_mode()
    def _validation_loss(self, val_data: torch.Tensor) -> float:
        self.network.eval()
        total = 0.0
        for start in range(0, len(val_data), 64):
            batch = val_data[start : start + 64].to(self.device).float().div_(255.0)
            total += _training_loss(self.config, batch, self.network(batch)).item() * len(batch)
        return total / len(val_data)

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> list[Prediction]:
        """Scores images (H x W x 3 uint8, any size); maps come back at each image's own resolution."""
        self._scorer.eval()
        predictions: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = [np.asarray(image) for image in images[start : start + batch_size]]
            scores, maps = self._scorer(self.preprocess(chunk))
            for image, score, score_map in zip(chunk, scores, maps):
                predictions.append(
                    Prediction(score=float(score), anomaly_map=map_to_image_size(score_map, image.shape[:2]))
                )
        return predictions

    def save(self, directory: Path) -> None:
        """Writes the checkpoint (ml.checkpoint): config, preprocessing, training summary and network weights."""
        preprocessing = {
            "resize": [self.config.image_size, self.config.image_size],
            "interpolation": "bilinear, antialiased",
            "channels": 3,
            "scale": "uint8 / 255 (RGB; a grayscale model converts with BT.601 luma inside)",
        }
        tensors = self.network.state_dict()
        write_checkpoint(
            directory, Checkpoint(FAMILY, asdict(self.config), tensors, preprocessing, asdict(self.summary))
        )

    @classmethod
    def load(cls, directory: Path, *, device: str | None = None) -> Self:
        """Restores a model written by `save` on `device` (default: the saved spec, or the CPU where that cannot
        be had)."""
        checkpoint = read_checkpoint(directory, family=FAMILY)
        config = checkpoint.config
        resolved = resolve_saved_device(check_device_spec(config.get("device", "auto")), device)
        model = cls(resolved_device=resolved, **config)
        model.summary = TrainingSummary.from_dict(checkpoint.training)
        model.network.load_state_dict(checkpoint.tensors)
        model._scorer.eval()
        return model

    def to_onnx(self, path: Path) -> None:
        """Exports the scorer: input "images" N x 3 x S x S float32 RGB in [0, 1] (see `preprocess`; no mean/std),
        outputs "scores" (N) and "maps" (N x S x S, model resolution)."""
        from ml.onnx_export import export_module

        export_module(self._scorer, path, image_size=self.config.image_size)
