"""ml.training: the CUDA out-of-memory fallback (driven on the CPU through the families' one-step seam), the
memory-fitted batch size, the shared TrainingSummary, and ml.threads."""

from __future__ import annotations

import pytest
import torch

import ml.autoencoder
import ml.unet
from ml.registry import create_model
from ml.threads import bench_threads, torch_threads
from ml.training import (
    OUT_OF_GPU_MEMORY,
    GpuOutOfMemory,
    TrainingSummary,
    batch_size_for,
    fitted_batch_size,
    with_oom_fallback,
)
from tests.ml.tiny_families import TINY_CONFIGS, probe_images, tiny_samples


def test_out_of_memory_retries_once_with_half_the_batch():
    calls = []

    def train(batch_size):
        calls.append(batch_size)
        if batch_size > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"trained at {batch_size}"

    assert with_oom_fallback(train, 8) == "trained at 4"
    assert calls == [8, 4]


def test_a_second_out_of_memory_fails_with_a_message_a_person_can_act_on():
    calls = []

    def train(batch_size):
        calls.append(batch_size)
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(GpuOutOfMemory) as error:
        with_oom_fallback(train, 8)
    assert str(error.value) == OUT_OF_GPU_MEMORY.format(batch_size=8, retry_size=4)
    assert calls == [8, 4]


def test_other_errors_are_not_retried():
    calls = []

    def train(batch_size):
        calls.append(batch_size)
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        with_oom_fallback(train, 8)
    assert calls == [8]


def test_the_batch_size_is_lowered_to_fit_free_memory_but_never_raised():
    assert batch_size_for(32, free_bytes=1000, bytes_per_sample=100, share=0.7) == 7
    assert batch_size_for(4, free_bytes=10**9, bytes_per_sample=100) == 4
    assert batch_size_for(32, free_bytes=10, bytes_per_sample=100) == 1


def test_on_the_cpu_the_batch_size_is_the_one_asked_for_without_a_probe():
    def probe(count):
        raise AssertionError("no probe on the CPU")

    assert fitted_batch_size(32, torch.device("cpu"), probe) == 32


def _out_of_memory_above(limit, real_step):
    """A training step that runs out of memory for batches larger than `limit`, as a small GPU would."""
    seen = []

    def step(*args):
        batch = args[1]
        seen.append(len(batch))
        if len(batch) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_step(*args)

    return step, seen


@pytest.mark.parametrize("family", ["autoencoder", "unet"])
def test_a_family_that_runs_out_of_memory_trains_again_at_half_the_batch(family, monkeypatch):
    module = {"autoencoder": ml.autoencoder, "unet": ml.unet}[family]
    step, seen = _out_of_memory_above(2, module._train_step)
    monkeypatch.setattr(module, "_train_step", step)
    model = create_model(family, **{**TINY_CONFIGS[family], "batch_size": 4}, device="cpu")
    model.fit(tiny_samples())
    assert seen[0] == 4 and max(seen[1:]) == 2
    assert model.summary.batch_size == 2
    assert model.summary.epochs_run == TINY_CONFIGS[family]["epochs"]
    assert len(model.predict(probe_images())) == 3


@pytest.mark.parametrize("family", ["autoencoder", "unet"])
def test_a_family_that_runs_out_of_memory_twice_fails_with_the_message(family, monkeypatch):
    module = {"autoencoder": ml.autoencoder, "unet": ml.unet}[family]
    step, _ = _out_of_memory_above(0, module._train_step)
    monkeypatch.setattr(module, "_train_step", step)
    model = create_model(family, **{**TINY_CONFIGS[family], "batch_size": 4}, device="cpu")
    with pytest.raises(GpuOutOfMemory) as error:
        model.fit(tiny_samples())
    assert str(error.value) == OUT_OF_GPU_MEMORY.format(batch_size=4, retry_size=2)


def test_training_summary_reads_older_and_newer_records():
    old_autoencoder = {"epochs_run": 3, "best_epoch": 2, "best_val_loss": 0.1, "n_train": 5, "n_val": 1,
                       "seconds": 1.0, "history": []}  # fmt: skip
    assert TrainingSummary.from_dict(old_autoencoder).best_epoch == 2
    assert TrainingSummary.from_dict({"n_defect": 4, "a_later_field": 1}).n_defect == 4


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize(("setting", "expected"), [("1", 1), ("3", 3), ("", None), ("0", None), ("many", None)])
def test_benchmarks_take_their_thread_count_from_omp_num_threads(monkeypatch, setting, expected):
    # given: the variable as a person sets it before a benchmark command (unset, zero or not a number: every CPU)
    monkeypatch.setenv("OMP_NUM_THREADS", setting)
    monkeypatch.setattr("os.cpu_count", lambda: 2)

    # then
    assert bench_threads() == (expected or 2)


def test_the_gpu_loader_path_gives_whole_seeded_batches_from_worker_processes(monkeypatch):
    """epoch_batches' GPU branch (DataLoader workers, a seed per batch), driven on the CPU: every batch arrives
    whole (a lone leftover image is dropped, as on the CPU), and the same seeds give the same crops again."""
    import warnings
    from types import SimpleNamespace

    import numpy as np

    from ml.unet import NativeTrainingData, UNetConfig, epoch_batches

    monkeypatch.setattr(ml.unet, "CUDA_LOADER_WORKERS", 2)
    config = UNetConfig(**{key: value for key, value in TINY_CONFIGS["unet"].items()})
    data = NativeTrainingData(tiny_samples(), config, lambda *args: None)
    order = np.arange(9) % 10
    gpu = SimpleNamespace(type="cuda")  # only the branch is chosen by it; pinning is skipped without CUDA

    def run():
        rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "pin_memory without an accelerator" on a CPU-only box
            return list(epoch_batches(data, order, 4, rng, generator, gpu))

    first, second = run(), run()
    assert [tuple(images.shape) for images, _ in first] == [(4, 3, 32, 32), (4, 3, 32, 32)]  # 9 = 4 + 4 + 1 dropped
    assert [tuple(targets.shape) for _, targets in first] == [(4, 1, 32, 32)] * 2
    for (a, b), (c, d) in zip(first, second, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
