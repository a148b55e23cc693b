"""The families on a CUDA GPU (marked `gpu`: skipped without CUDA, run by `make test-gpu`).

Tolerances, and why:
- CUDA vs CPU on the same fitted weights: image scores within 2 % (relative) and maps within 2 % of the map's
  range. cuDNN runs convolutions in TF32 by default (10-bit mantissa, ~1e-3 relative per layer) and the CPU
  predicts through ONNX Runtime, so bit equality is not expected, but a ranking-relevant difference is. PatchCore
  is compared with `search_precision="float32"`: the CPU's default int8 search may pick a different (near-equal)
  bank entry for a patch, which is a property of that search, not of the device.
- Mixed-precision U-Net training: the last epoch's loss within 20 % (relative) or 0.05 (absolute) of float32
  training on the same data, seeds and batches. Float16 rounding changes the trajectory a little; a broken scaler
  or an overflowing loss would give NaN or a loss that stays at its starting value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ml.autoencoder
from ml.registry import create_model, load_model
from ml.synthetic import make_dataset
from ml.training import OUT_OF_GPU_MEMORY, GpuOutOfMemory
from ml.types import DEFECT, GOOD, Sample
from tests.ml.tiny_families import TINY_CONFIGS, probe_images, tiny_samples

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)"),
]

SCORE_RTOL = 0.02
MAP_RANGE_TOL = 0.02
AMP_LOSS_RTOL, AMP_LOSS_ATOL = 0.20, 0.05
# The same computation on both devices (see the module docstring).
COMPARABLE = {family: {**config, **({"search_precision": "float32"} if family == "patchcore" else {})}
              for family, config in TINY_CONFIGS.items()}  # fmt: skip


def _synthetic_samples(n_good: int = 12, n_defect: int = 12, size: int = 64) -> list[Sample]:
    parts = make_dataset(n_good=n_good, n_defect=n_defect, size=size, seed=3)
    return [Sample(p.image, GOOD) if p.defect is None else Sample(p.image, DEFECT, p.mask) for p in parts]


def _assert_close(cuda_predictions, cpu_predictions):
    np.testing.assert_allclose(
        [p.score for p in cuda_predictions], [p.score for p in cpu_predictions], rtol=SCORE_RTOL, atol=1e-4
    )
    for on_gpu, on_cpu in zip(cuda_predictions, cpu_predictions, strict=True):
        span = float(on_cpu.anomaly_map.max() - on_cpu.anomaly_map.min()) or 1.0
        assert np.abs(on_gpu.anomaly_map - on_cpu.anomaly_map).max() <= MAP_RANGE_TOL * span


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_every_family_fits_and_predicts_on_cuda_and_agrees_with_the_cpu(family, tmp_path):
    model = create_model(family, **COMPARABLE[family], device="cuda")
    assert model.device.type == "cuda"
    model.fit(tiny_samples())
    on_gpu = model.predict(probe_images())
    assert all(np.isfinite(p.score) for p in on_gpu)
    assert [p.anomaly_map.shape for p in on_gpu] == [(40, 40)] * 3

    model.save(tmp_path)
    on_cpu = load_model(tmp_path, device="cpu")
    assert on_cpu.device == torch.device("cpu")
    _assert_close(on_gpu, on_cpu.predict(probe_images()))
    # and the other way round: the saved spec ("cuda") loads back onto the GPU
    assert load_model(tmp_path).device.type == "cuda"


def test_patchcore_with_its_real_backbone_agrees_between_cuda_and_cpu(tmp_path):
    samples = _synthetic_samples(size=128)
    good = [s for s in samples if s.label == GOOD]
    model = create_model("patchcore", image_size=128, search_precision="float32", device="cuda")
    model.fit(good)
    images = [s.image for s in samples]
    on_gpu = model.predict(images)
    model.save(tmp_path)
    _assert_close(on_gpu, load_model(tmp_path, device="cpu").predict(images))


def test_a_model_fitted_on_the_cpu_predicts_the_same_on_cuda(tmp_path):
    model = create_model("gaussian", **TINY_CONFIGS["gaussian"], device="cpu")
    model.fit(tiny_samples())
    model.save(tmp_path)
    _assert_close(load_model(tmp_path, device="cuda").predict(probe_images()), model.predict(probe_images()))


def test_mixed_precision_unet_training_reaches_the_loss_of_full_precision():
    samples = _synthetic_samples()
    config = {"image_size": 64, "epochs": 8, "batch_size": 4, "pos_weight": 3.0, "good_border_fraction": 0.0}
    losses = {}
    for mixed in (False, True):
        model = create_model("unet", **config, mixed_precision=mixed, device="cuda")
        model.fit(samples)
        losses[mixed] = model.summary.history[-1]["train_loss"]
        assert np.isfinite(losses[mixed])
    assert losses[True] < model.summary.history[0]["train_loss"]  # it learned
    assert abs(losses[True] - losses[False]) <= max(AMP_LOSS_ATOL, AMP_LOSS_RTOL * losses[False])


@pytest.fixture
def memory_cap():
    """Caps this process's share of GPU memory for one test, then lifts the cap."""
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory

    def cap(bytes_allowed: int) -> None:
        torch.cuda.set_per_process_memory_fraction(bytes_allowed / total, 0)

    yield cap
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
    torch.cuda.empty_cache()


def test_training_that_cannot_fit_in_a_tiny_memory_cap_fails_with_the_message(memory_cap, monkeypatch):
    sizes = []
    real_step = ml.autoencoder._train_step
    monkeypatch.setattr(ml.autoencoder, "_train_step", lambda *args: sizes.append(len(args[1])) or real_step(*args))
    model = create_model("autoencoder", image_size=256, batch_size=64, epochs=1, device="cuda")
    # 64 MB: the weights fit, but not one 256 px batch's activations (the first layer alone: 64 x 32 x 128^2 floats).
    memory_cap(64 * 2**20)
    samples = [Sample(p.image) for p in make_dataset(n_good=80, n_defect=0, size=256, seed=4)]
    with pytest.raises(GpuOutOfMemory) as error:
        model.fit(samples)
    assert str(error.value) == OUT_OF_GPU_MEMORY.format(batch_size=64, retry_size=32)


def test_a_real_cuda_out_of_memory_error_is_retried_at_half_the_batch(monkeypatch):
    """The first attempt's step asks the CUDA allocator for more than the GPU has (a real OutOfMemoryError)."""
    real_step = ml.autoencoder._train_step
    sizes = []

    def step(*args):
        sizes.append(len(args[1]))
        if len(args[1]) > 4:
            torch.empty(2 * torch.cuda.get_device_properties(0).total_memory, dtype=torch.uint8, device="cuda")
        return real_step(*args)

    monkeypatch.setattr(ml.autoencoder, "_train_step", step)
    model = create_model("autoencoder", **{**TINY_CONFIGS["autoencoder"], "batch_size": 8}, device="cuda")
    model.fit([Sample(image) for image in probe_images() * 4])
    assert sizes[0] == 8 and max(sizes[1:]) == 4
    assert model.summary.batch_size == 4
