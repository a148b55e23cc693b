"""Model families by name: create one from a config, or load a saved one from its directory.

Families are imported lazily so that `import ml` stays cheap (the web process imports it for family choice).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from ml.types import AnomalyModel

# family name -> "module:Class"
FAMILIES: dict[str, str] = {
    "patchcore": "ml.patchcore:PatchCore",
    "autoencoder": "ml.autoencoder:Autoencoder",
    "unet": "ml.unet:UNetSegmenter",
    "gaussian": "ml.gaussian:GaussianBaseline",
}

CONFIG_FILE = "config.json"


def family_class(family: str) -> type:
    try:
        module_name, class_name = FAMILIES[family].split(":")
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; expected one of {sorted(FAMILIES)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def create_model(family: str, **config: Any) -> AnomalyModel:
    """A new, unfitted model of `family` with `config` (keyword arguments of the family's constructor)."""
    return family_class(family)(**config)


def load_model(directory: Path | str) -> AnomalyModel:
    """Loads whatever family was saved in `directory` (its config.json names the family)."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG_FILE).read_text())
    return family_class(config["family"]).load(directory)
