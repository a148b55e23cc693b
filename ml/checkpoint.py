"""The one checkpoint format every family saves and loads: a directory with

  config.json         {"family", "format_version", "config", "preprocessing", "training"}
  model.safetensors   every tensor the family needs (its state dict), nothing else

`read_checkpoint` also reads the layouts written before this module (format versions 0-2), so old model versions
keep loading:
  - patchcore / gaussian (no version): config.json was the flat config with "family" beside the settings (the
    preprocessing inside it), tensors in model.safetensors;
  - autoencoder (1) and unet (1, 2): the document above, tensors in weights.safetensors (unet 1 had no "native").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.json"
TENSORS_FILE = "model.safetensors"
LEGACY_TENSORS_FILE = "weights.safetensors"  # autoencoder and unet before format 3
FORMAT_VERSION = 3  # 3: one layout for every family (0-2: see the module docstring)

WRONG_FAMILY = "{directory} holds a {found!r} model, not {expected!r}"
NOT_A_CHECKPOINT = "{directory} holds no model: {file} is missing"


@dataclass
class Checkpoint:
    family: str
    config: dict
    tensors: dict[str, torch.Tensor]
    preprocessing: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def write_checkpoint(directory: Path | str, checkpoint: Checkpoint) -> None:
    """Writes `checkpoint` into `directory` (created if needed) in the current format; tensors are copied to the
    CPU first, so a model on a GPU saves the same bytes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "family": checkpoint.family,
        "format_version": FORMAT_VERSION,
        "config": checkpoint.config,
        "preprocessing": checkpoint.preprocessing,
        "training": checkpoint.training,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2))
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in checkpoint.tensors.items()}
    save_file(tensors, str(directory / TENSORS_FILE))


def read_family(directory: Path | str) -> str:
    """The family a checkpoint directory holds (any format), without reading its tensors."""
    return _read_document(Path(directory))["family"]


def read_checkpoint(directory: Path | str, *, family: str | None = None) -> Checkpoint:
    """Reads a checkpoint of any format (tensors on the CPU); with `family`, a ValueError if it holds another."""
    directory = Path(directory)
    document = _read_document(directory)
    if family is not None and document["family"] != family:
        raise ValueError(WRONG_FAMILY.format(directory=directory, found=document["family"], expected=family))
    if "config" in document:
        config, version = dict(document["config"]), int(document.get("format_version", 1))
        preprocessing = document.get("preprocessing", {})
    else:  # format 0: the flat PatchCore / Gaussian config, preprocessing inside it
        config = {key: value for key, value in document.items() if key != "family"}
        version, preprocessing = 0, config.get("preprocessing", {})
    tensors_path = directory / TENSORS_FILE
    if not tensors_path.exists() and (directory / LEGACY_TENSORS_FILE).exists():
        tensors_path = directory / LEGACY_TENSORS_FILE
    if not tensors_path.exists():
        raise FileNotFoundError(NOT_A_CHECKPOINT.format(directory=directory, file=TENSORS_FILE))
    return Checkpoint(
        family=document["family"],
        config=config,
        tensors=load_file(str(tensors_path)),
        preprocessing=preprocessing,
        training=document.get("training", {}),
        format_version=version,
    )


def _read_document(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(NOT_A_CHECKPOINT.format(directory=directory, file=CONFIG_FILE))
    return json.loads(path.read_text())
