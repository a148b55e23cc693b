"""Checkpoints written before issue 15's one checkpoint format still load and predict what they predicted then.

The fixtures under fixtures/checkpoints/ were saved by make_legacy_checkpoints.py at commit 0fb7307 (tiny timm test
backbones, random weights), with the scores they gave on three probe images (expected.json).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.registry import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
sys.path.insert(0, str(FIXTURES))
from make_legacy_checkpoints import probe  # noqa: E402  (the same probe images the scores were recorded on)

sys.path.remove(str(FIXTURES))

FAMILIES = {"patchcore": "patchcore", "gaussian": "gaussian", "autoencoder": "autoencoder", "unet": "unet",
            "unet_resized": "unet"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_legacy_checkpoint_loads_and_predicts_its_recorded_scores(name, tmp_path):
    directory = tmp_path / name
    shutil.copytree(FIXTURES / name, directory)
    expected = json.loads((directory / "expected.json").read_text())
    model = load_model(directory, device="cpu")
    assert model.family == FAMILIES[name]
    predictions = model.predict(probe)
    # PatchCore's int8 search quantises its queries per graph call: the scores were recorded with the three probes
    # in one call, it now runs one image per call, so a near-tie may pick another bank entry a hair farther away.
    rtol = 1e-3 if name == "patchcore" else 1e-4
    np.testing.assert_allclose([p.score for p in predictions], expected["scores"], rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(
        [float(p.anomaly_map.mean()) for p in predictions], expected["map_means"], rtol=rtol, atol=1e-6
    )
