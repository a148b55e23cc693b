"""ml.checkpoint: every family saves one layout (family, format version, config, preprocessing, training, one tensor
file) and loads it back to the same predictions; the reader names what is wrong with a directory that is not one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml import checkpoint
from ml.registry import create_model, load_model
from tests.ml.tiny_families import TINY_CONFIGS, probe_images, tiny_samples


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_every_family_round_trips_through_the_one_checkpoint_format(family, tmp_path):
    model = create_model(family, **TINY_CONFIGS[family], device="cpu")
    model.fit(tiny_samples())
    before = model.predict(probe_images())
    model.save(tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == [checkpoint.CONFIG_FILE, checkpoint.TENSORS_FILE]
    document = json.loads((tmp_path / checkpoint.CONFIG_FILE).read_text())
    assert document["family"] == family
    assert document["format_version"] == checkpoint.FORMAT_VERSION
    assert document["config"]["device"] == "cpu"
    assert document["preprocessing"]  # how images become the model's input, for the record and for bundles
    if family in ("autoencoder", "unet"):
        assert document["training"]["epochs_run"] == TINY_CONFIGS[family]["epochs"]
        assert document["training"]["device"] == "cpu"

    loaded = load_model(tmp_path)
    after = loaded.predict(probe_images())
    assert type(loaded) is type(model)
    assert [p.score for p in after] == pytest.approx([p.score for p in before], rel=1e-6, abs=1e-7)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_another_family_is_refused_by_name(tmp_path):
    model = create_model("autoencoder", **TINY_CONFIGS["autoencoder"], device="cpu")
    model.save(tmp_path)
    with pytest.raises(ValueError) as error:
        checkpoint.read_checkpoint(tmp_path, family="unet")
    assert str(error.value) == checkpoint.WRONG_FAMILY.format(directory=tmp_path, found="autoencoder", expected="unet")


def test_a_directory_without_a_checkpoint_says_which_file_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_model(tmp_path)
    assert str(error.value) == checkpoint.NOT_A_CHECKPOINT.format(directory=tmp_path, file=checkpoint.CONFIG_FILE)
