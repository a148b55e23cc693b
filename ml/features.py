"""Locally aware patch features from a pretrained backbone, shared by PatchCore and the Gaussian baseline."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ml.backbones import DEFAULT_BACKBONE, Preprocessing, create_feature_extractor, preprocessing_for


class PatchFeatures(nn.Module):
    """Images N x 3 x S x S (normalised) -> patch features N x C x S/r x S/r, r the finest layer's stride.

    Each layer is average-pooled over a `neighbourhood` x `neighbourhood` window (so a patch sees its
    surroundings), deeper layers are upsampled bilinearly to the finest one and all are concatenated along
    channels. With `reduced_channels`, adjacent channels are averaged down to that width (the paper's adaptive
    average pooling), which shrinks the memory bank and the nearest-neighbour search proportionally.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        *,
        layers: tuple[int, ...] = (2, 3),
        neighbourhood: int = 3,
        reduced_channels: int | None = None,
        pretrained: bool = True,
        weights_path: Path | str | None = None,
    ):
        super().__init__()
        self.extractor = create_feature_extractor(
            backbone, out_indices=tuple(layers), pretrained=pretrained, weights_path=weights_path
        ).to(memory_format=torch.channels_last)
        self.neighbourhood = neighbourhood
        self.reduced_channels = reduced_channels
        self.stride = min(self.extractor.feature_info.reduction())
        full = sum(self.extractor.feature_info.channels())
        self.channels = reduced_channels or full
        if reduced_channels is not None:
            # A 1x1 convolution with adaptive-average-pooling weights: same numbers as adaptive_avg_pool1d over
            # channels, but exportable to ONNX. Derived from sizes, so not saved.
            self.register_buffer("reduction", _channel_pooling(full, reduced_channels), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last made lite0's depthwise convolutions about twice as fast on our 2-core CPU.
        maps = self.extractor(images.contiguous(memory_format=torch.channels_last))
        size = maps[0].shape[-2:]
        pad = self.neighbourhood // 2
        pooled = [F.avg_pool2d(m, self.neighbourhood, stride=1, padding=pad, count_include_pad=False) for m in maps]
        aligned = [pooled[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in pooled[1:]]
        features = torch.cat(aligned, dim=1)
        if self.reduced_channels is not None:
            features = F.conv2d(features, self.reduction)
        return features.contiguous()


def _channel_pooling(channels: int, width: int) -> torch.Tensor:
    """width x channels x 1 x 1 weights averaging channel groups exactly as adaptive_avg_pool1d does."""
    weights = torch.zeros(width, channels, 1, 1)
    for j in range(width):
        start, end = (j * channels) // width, -((-(j + 1) * channels) // width)
        weights[j, start:end] = 1.0 / (end - start)
    return weights


def patch_features_for(
    config, *, pretrained: bool, weights_path: Path | str | None
) -> tuple[Preprocessing, PatchFeatures]:
    """The preprocessing and the (eval-mode) feature module a PatchCore or Gaussian config describes.

    `config` needs backbone, layers, neighbourhood, reduced_channels and preprocessing; an empty preprocessing is
    filled in from the backbone's own pretrained config, so it is saved with the model.
    """
    if not config.preprocessing:
        config.preprocessing = preprocessing_for(config.backbone).to_dict()
    features = PatchFeatures(
        config.backbone,
        layers=config.layers,
        neighbourhood=config.neighbourhood,
        reduced_channels=config.reduced_channels,
        pretrained=pretrained,
        weights_path=weights_path,
    ).eval()
    return Preprocessing.from_dict(config.preprocessing), features
