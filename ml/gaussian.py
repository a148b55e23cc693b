"""The "gaussian" family: a per-location multivariate Gaussian of backbone features (PaDiM-like), fits in seconds.

Patch features (see `ml.features`) are averaged onto a coarse grid. Each grid cell gets the mean and covariance of
its features over the good training images; the covariance is shrunk toward the covariance pooled over all cells,
itself Ledoit-Wolf shrunk, so a handful of images still gives an invertible, sensible estimate. A cell's anomaly
score is the Mahalanobis distance of its feature; the image score is the highest cell score; the map is the grid
upsampled to the image and Gaussian-smoothed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import ledoit_wolf

from ml.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from ml.devices import resolve_device, resolve_saved_device
from ml.features import PatchFeatureConfig, patch_features_for
from ml.filters import blur_maps, gaussian_kernel
from ml.images import resize_map, to_tensor
from ml.runtime import GraphOwner, RuntimeGraph, forward_with
from ml.types import GOOD, Prediction, ProgressCallback, Sample, no_progress

FAMILY = "gaussian"


@dataclass
class GaussianConfig(PatchFeatureConfig):
    """grid: cells per side of the Gaussian grid. reduced_channels: feature width (Mahalanobis cost and storage grow
    with its square). prior_strength: weight of the pooled covariance, in images (a cell with n images uses
    (n S_cell + k S_pooled) / (n + k)). The other settings are PatchFeatureConfig's."""

    family: ClassVar[str] = FAMILY

    image_size: int = 256
    reduced_channels: int | None = 96
    grid: int = 16
    prior_strength: float = 32.0


class GaussianBaseline(GraphOwner):
    """`forward` maps a normalised batch N x 3 x S x S to (scores N, maps N x S x S), Mahalanobis units."""

    family = FAMILY

    def __init__(
        self,
        *,
        pretrained: bool = True,
        weights_path: Path | str | None = None,
        resolved_device: torch.device | None = None,
        **config,
    ):
        super().__init__()
        self.config = GaussianConfig(**config)
        # Resolved once (load passes the device it settled on, see ml.devices.resolve_saved_device).
        self.device = resolved_device or resolve_device(self.config.device)
        self.preprocessing, self.features = patch_features_for(
            self.config, pretrained=pretrained, weights_path=weights_path
        )
        side = self.config.image_size // self.features.stride
        if side % self.config.grid:
            raise ValueError(
                f"grid {self.config.grid} must divide the feature map side {side} (image_size / {self.features.stride})"
            )
        self.cell = side // self.config.grid  # feature pixels per grid cell side
        cells, channels = self.config.grid**2, self.features.channels
        self.register_buffer("means", torch.zeros(cells, channels))
        self.register_buffer("precisions", torch.zeros(cells, channels, channels))
        self.register_buffer("blur_kernel", gaussian_kernel(self.config.blur_sigma))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        # predict() runs the whole forward pass as one onnxruntime graph on a CPU (see ml.runtime).
        self.runtime = RuntimeGraph("forward", ["scores", "maps"])
        self.to(self.device)

    def grid_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images N x 3 x S x S -> N x cells x C features averaged onto the grid."""
        # A fixed pooling window (not adaptive pooling) keeps the graph exportable to ONNX.
        features = F.avg_pool2d(self.features(images), self.cell)
        return features.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores N, maps N x S x S): Mahalanobis distance per cell, max over cells, upsampled and smoothed."""
        centred = self.grid_features(images) - self.means
        squared = torch.einsum("ncd,cde,nce->nc", centred, self.precisions, centred)
        distances = squared.clamp_min(0).sqrt()
        grid = self.config.grid
        size = self.config.image_size
        cells = distances.view(-1, 1, grid, grid)
        maps = F.interpolate(cells, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        return distances.max(dim=1).values, blur_maps(maps, self.blur_kernel)

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        size = (self.config.image_size, self.config.image_size)
        return to_tensor(images, self.preprocessing, size).to(self.device, non_blocking=True)

    @torch.no_grad()
    def fit(self, samples: Sequence[Sample], *, progress: ProgressCallback = no_progress) -> None:
        """Estimates the per-cell Gaussians from the good samples. Progress: "features" per batch."""
        labels = getattr(samples, "labels", None)
        if labels is None:
            labels = [sample.label for sample in samples]
        indices = [i for i, label in enumerate(labels) if label == GOOD]
        if len(indices) < 2:
            raise ValueError("the Gaussian baseline needs at least two good images to fit")
        collected = []
        for start in range(0, len(indices), self.config.batch_size):
            chunk = indices[start : start + self.config.batch_size]
            collected.append(self.grid_features(self._batch([samples[i].image for i in chunk])))
            done = start + len(chunk)
            progress("features", done / len(indices), f"read {done} of {len(indices)} images")
        features = torch.cat(collected).double()  # N x cells x C
        n = len(features)
        means = features.mean(0)
        centred = features - means
        per_cell = torch.einsum("ncd,nce->cde", centred, centred) / max(n - 1, 1)
        pooled, _ = ledoit_wolf(centred.reshape(-1, centred.shape[-1]).cpu().numpy(), assume_centered=True)
        prior = torch.from_numpy(pooled).to(centred.device)
        k = self.config.prior_strength
        covariances = (n * per_cell + k * prior) / (n + k)
        self.means = means.float()
        self.precisions = torch.linalg.inv(covariances).float()
        self.fitted.fill_(True)
        self.runtime.reset()
        progress("statistics", 1.0, "estimated the normal appearance of every region")

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> list[Prediction]:
        """One Prediction per image; maps resized to each image's own H x W."""
        if not bool(self.fitted):
            raise RuntimeError("GaussianBaseline is not fitted: call fit() or load() first")
        predictions = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            scores, maps = forward_with(self.runtime, self, self._batch(chunk), engine=self.features.engine)
            scores, maps = scores.float().cpu(), maps.float().cpu()
            for image, score, anomaly_map in zip(chunk, scores, maps, strict=True):
                full = resize_map(anomaly_map, tuple(np.asarray(image).shape[:2])).numpy()
                predictions.append(Prediction(score=float(score), anomaly_map=full))
        return predictions

    def save(self, directory: Path) -> None:
        """Writes the checkpoint (ml.checkpoint): config, and backbone weights, means and precision matrices."""
        write_checkpoint(
            directory, Checkpoint(FAMILY, asdict(self.config), self.state_dict(), self.config.preprocessing)
        )

    @classmethod
    def load(cls, directory: Path, *, device: str | None = None) -> Self:
        """Restores a saved model on `device` (default: the saved spec, or the CPU where that cannot be had)."""
        checkpoint = read_checkpoint(directory, family=FAMILY)
        config = GaussianConfig.from_dict(checkpoint.config)
        resolved = resolve_saved_device(config.device, device)
        model = cls(pretrained=False, resolved_device=resolved, **asdict(config))
        model.load_state_dict(checkpoint.tensors, strict=True)
        return model.eval()

    def to_onnx(self, path: Path) -> None:
        """Exports `forward` (backbone, grid features, Mahalanobis map) to ONNX."""
        from ml.onnx_export import export_module

        export_module(self, path, image_size=self.config.image_size)
