"""Model families by name: create one from a config, or load a saved one from its directory.

Families are imported lazily so that `import ml` stays cheap (the web process imports it for family choice).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ml.checkpoint import read_family
from ml.types import AnomalyModel

# family name -> "module:Class"
FAMILIES: dict[str, str] = {
    "patchcore": "ml.patchcore:PatchCore",
    "autoencoder": "ml.autoencoder:Autoencoder",
    "unet": "ml.unet:UNetSegmenter",
    "gaussian": "ml.gaussian:GaussianBaseline",
    "hybrid": "ml.hybrid:HybridSegmenter",
    "context": "ml.context:ContextModel",
}


def family_class(family: str) -> type:
    try:
        module_name, class_name = FAMILIES[family].split(":")
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; expected one of {sorted(FAMILIES)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def create_model(family: str, **config: Any) -> AnomalyModel:
    """A new, unfitted model of `family` with `config` (keyword arguments of the family's constructor)."""
    return family_class(family)(**config)


def load_model(directory: Path | str, *, device: str | None = None) -> AnomalyModel:
    """Loads whatever family was saved in `directory` (its checkpoint names the family, see ml.checkpoint).

    device: None computes where the model was saved to compute ("auto" finds this machine's GPU, if any), except
    that a saved "cuda" on a machine without one falls back to the CPU with a logged warning (a model trained on a
    GPU must serve a CPU-only web server); an explicit spec ("cpu", "cuda", ...) is resolved strictly.
    """
    return family_class(read_family(directory)).load(Path(directory), device=device)
