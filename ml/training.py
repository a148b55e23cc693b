"""What the gradient-trained families (autoencoder, U-Net) share: the training record, mixed precision on a GPU,
a batch size that fits the GPU's free memory, and one retry at half the batch after a CUDA out-of-memory error.

Everything here is a no-op on the CPU, so CPU training computes exactly what it computed before the GPU path.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Self, TypeVar

import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")

OUT_OF_GPU_MEMORY = (
    "The GPU ran out of memory training with batch size {batch_size}, and again with {retry_size}. "
    "Lower batch_size (or image_size) in the model settings, train when the GPU is not shared with other jobs, "
    "or set the device to cpu."
)
# Share of the free GPU memory a training batch may plan to use (the rest absorbs fragmentation and the
# optimiser's temporaries, which the probe step does not see at their peak).
BATCH_MEMORY_SHARE = 0.7


class GpuOutOfMemory(RuntimeError):
    """Training did not fit in GPU memory even at half the batch; the message says what a person can do."""


@dataclass
class TrainingSummary:
    """What fit did, saved with the model for the record (one shape for every trained family; a family fills the
    counts that apply to it: n_train / n_val and the best epoch for the autoencoder, n_good / n_defect for the
    U-Net)."""

    epochs_run: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    n_train: int = 0
    n_val: int = 0
    n_good: int = 0
    n_defect: int = 0
    n_defect_skipped: int = 0  # defect images without a usable mask
    batch_size: int = 0  # the batch size training ran with (a GPU may have needed a smaller one than asked)
    device: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        """Unknown keys (a newer version's) are ignored; missing ones take their defaults (an older version's)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def autocast(device: torch.device, enabled: bool = True):
    """Float16 autocast on a CUDA device (when `enabled`); a disabled context on the CPU."""
    on = enabled and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=on)


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """Loss scaling for float16 gradients on CUDA (when `enabled`); a pass-through on the CPU."""
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")


def batch_size_for(
    requested: int, *, free_bytes: int, bytes_per_sample: float, share: float = BATCH_MEMORY_SHARE
) -> int:
    """The requested batch size, lowered (not below 1) so `bytes_per_sample` x batch stays within `share` of
    `free_bytes`. Never raised: a larger batch would change the optimisation, not just its speed."""
    if bytes_per_sample <= 0:
        return requested
    return max(1, min(requested, int(free_bytes * share / bytes_per_sample)))


def fitted_batch_size(requested: int, device: torch.device, probe: Callable[[int], None], probe_size: int = 2) -> int:
    """On a GPU: runs `probe(probe_size)` (one forward and backward pass on that many samples, leaving the model
    as it found it), measures the peak memory it added per sample and returns `batch_size_for` the free memory.
    On the CPU: `requested`, without probing."""
    if device.type != "cuda" or requested <= probe_size:
        return requested
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    try:
        probe(probe_size)
    except torch.OutOfMemoryError:
        oom = True  # not even the probe fits: training at `requested` fails too, and with_oom_fallback says so
    else:
        oom = False
    if oom:
        release_gpu_memory()
        return requested
    torch.cuda.synchronize(device)
    per_sample = (torch.cuda.max_memory_allocated(device) - before) / probe_size
    free, _ = torch.cuda.mem_get_info(device)
    chosen = batch_size_for(requested, free_bytes=free, bytes_per_sample=per_sample)
    if chosen < requested:
        logger.info("batch size %d -> %d to fit %.0f MB of free GPU memory", requested, chosen, free / 2**20)
    return chosen


def release_gpu_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def with_oom_fallback(train: Callable[[int], T], batch_size: int) -> T:
    """`train(batch_size)`; after a CUDA out-of-memory error, once more from scratch with half the batch, and
    after a second one a GpuOutOfMemory with OUT_OF_GPU_MEMORY (what to change), instead of the allocator's text.
    `train` must start over on each call (fresh weights and optimiser), since the failed attempt left them half
    trained."""
    try:
        return train(batch_size)
    except torch.OutOfMemoryError:
        retry_size = max(1, batch_size // 2)
    release_gpu_memory()  # outside the except block: the traceback holds the failed attempt's tensors
    logger.warning("CUDA out of memory at batch size %d; retrying once with %d", batch_size, retry_size)
    try:
        return train(retry_size)
    except torch.OutOfMemoryError:
        pass
    release_gpu_memory()
    raise GpuOutOfMemory(OUT_OF_GPU_MEMORY.format(batch_size=batch_size, retry_size=retry_size))
