"""The device seam: specs resolve once, are saved as asked, and a model saved for a GPU serves on a CPU-only box."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from ml import devices
from ml.__main__ import build_parser
from ml.registry import create_model, load_model
from tests.ml.tiny_families import TINY_CONFIGS, probe_images, tiny_samples


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as a CPU-only box, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_resolves_to_the_cpu_without_cuda(no_cuda):
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve_device(" CPU ") == torch.device("cpu")


def test_an_explicit_cuda_request_without_cuda_is_refused_with_the_reason(no_cuda):
    with pytest.raises(RuntimeError) as error:
        devices.resolve_device("cuda")
    assert str(error.value) == devices.NO_CUDA.format(spec="cuda")


def test_a_bad_spec_is_refused():
    with pytest.raises(ValueError) as error:
        devices.check_device_spec("gpu")
    assert str(error.value) == devices.BAD_SPEC.format(spec="gpu")


def test_a_saved_cuda_spec_falls_back_to_the_cpu_with_a_warning_but_an_explicit_override_is_strict(no_cuda, caplog):
    with caplog.at_level(logging.WARNING, logger="ml.devices"):
        assert devices.resolve_saved_device("cuda") == torch.device("cpu")
    assert "model saved for device 'cuda' loads on the CPU here" in caplog.text
    assert devices.resolve_saved_device("cuda", "cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError):
        devices.resolve_saved_device("cpu", "cuda")


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_every_family_fits_and_predicts_on_an_explicit_cpu_and_saves_the_spec(family, tmp_path):
    model = create_model(family, **TINY_CONFIGS[family], device="cpu")
    assert model.device == torch.device("cpu")
    model.fit(tiny_samples())
    predictions = model.predict(probe_images())
    assert [p.anomaly_map.shape for p in predictions] == [(40, 40)] * 3
    assert all(np.isfinite(p.score) for p in predictions)
    model.save(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved.get("config", saved)["device"] == "cpu"


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_a_model_saved_for_cuda_loads_and_predicts_on_a_cpu_only_box(family, tmp_path, no_cuda, caplog):
    model = create_model(family, **TINY_CONFIGS[family], device="auto")
    assert model.device == torch.device("cpu")
    model.fit(tiny_samples())
    expected = [p.score for p in model.predict(probe_images())]
    model.save(tmp_path)
    # What a GPU worker writes: the same checkpoint with "cuda" as the device asked for.
    path = tmp_path / "config.json"
    document = json.loads(path.read_text())
    document.get("config", document)["device"] = "cuda"
    path.write_text(json.dumps(document))

    with caplog.at_level(logging.WARNING, logger="ml.devices"):
        loaded = load_model(tmp_path)
    assert loaded.device == torch.device("cpu")
    assert "model saved for device 'cuda' loads on the CPU here" in caplog.text
    np.testing.assert_allclose([p.score for p in loaded.predict(probe_images())], expected, rtol=1e-5)
    with pytest.raises(RuntimeError):
        load_model(tmp_path, device="cuda")


def test_create_model_refuses_cuda_on_a_cpu_only_box(no_cuda):
    with pytest.raises(RuntimeError) as error:
        create_model("autoencoder", **TINY_CONFIGS["autoencoder"], device="cuda")
    assert str(error.value) == devices.NO_CUDA.format(spec="cuda")


def test_bench_takes_a_device():
    args = build_parser().parse_args(["bench", "--data", "x", "--device", "cpu"])
    assert args.device == "cpu"
