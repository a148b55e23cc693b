"""Locally aware patch features from a pretrained backbone, shared by PatchCore and the Gaussian baseline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Self

import torch
import torch.nn.functional as F

from ml.backbones import DEFAULT_BACKBONE, Preprocessing, create_feature_extractor, preprocessing_for
from ml.devices import check_device_spec
from ml.runtime import GraphOwner, RuntimeGraph, checked_engine, runtime_applies


@dataclass
class PatchFeatureConfig:
    """The settings every family built on PatchFeatures shares; each family's config extends it.

    image_size: side of the square the image is resized to, in pixels. layers: backbone feature indices (for lite0,
    2 = stride 8, 3 = stride 16). neighbourhood: side of the average-pooling window that aggregates each patch
    with its neighbours. reduced_channels: if set, features are averaged down to this many channels.
    blur_sigma: Gaussian smoothing of the anomaly map, in pixels at image_size. preprocessing: the backbone's
    resize/mean/std, filled in from the backbone's own config when empty, so it is saved with the model.
    device: where the family computes ("auto", "cpu", "cuda", "cuda:N"; see ml.devices), saved as asked.
    """

    family: ClassVar[str] = ""

    backbone: str = DEFAULT_BACKBONE
    layers: tuple[int, ...] = (2, 3)
    image_size: int = 320
    neighbourhood: int = 3
    reduced_channels: int | None = None
    blur_sigma: float = 4.0
    batch_size: int = 8
    seed: int = 0
    preprocessing: dict = field(default_factory=dict)
    device: str = "auto"

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)  # JSON and the command line give lists
        self.device = check_device_spec(self.device)

    def to_dict(self) -> dict:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        """Unknown keys (such as "family", or settings of a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


class PatchFeatures(GraphOwner):
    """Images N x 3 x S x S (normalised) -> patch features N x C x S/r x S/r, r the finest layer's stride.

    Each layer is average-pooled over a `neighbourhood` x `neighbourhood` window (so a patch sees its
    surroundings), deeper layers are upsampled bilinearly to the finest one and all are concatenated along
    channels. With `reduced_channels`, adjacent channels are averaged down to that width (the paper's adaptive
    average pooling), which shrinks the memory bank and the nearest-neighbour search proportionally.

    On a CPU, without gradients, the same computation runs in ONNX Runtime by default (`engine`): exported once,
    lazily, from this module's own weights, it gave identical features (within 3e-5) about 3x faster than eager
    PyTorch on our 2-core test machine, where depthwise convolutions are PyTorch's weak spot. "torch" forces eager
    PyTorch; GPUs, tracing and export always use it.
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
        engine: str = "auto",
    ):
        super().__init__()
        self.engine = checked_engine(engine)
        # Batch and image size may vary: the features of any image size come from one graph.
        self.runtime = RuntimeGraph("compute", ["features"], dynamic=(0, 2, 3))
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
        if runtime_applies(self.engine, images):
            return self.runtime.run(self, images)[0]
        return self.compute(images)

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        """The eager PyTorch computation (what the ONNX Runtime path runs, exported)."""
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
    config: PatchFeatureConfig, *, pretrained: bool, weights_path: Path | str | None
) -> tuple[Preprocessing, PatchFeatures]:
    """The preprocessing and the (eval-mode) feature module a config describes; an empty preprocessing is filled
    in from the backbone's own pretrained config, so it is saved with the model."""
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
