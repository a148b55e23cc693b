"""Where a family computes: one place resolves a device spec ("auto", "cpu", "cuda", "cuda:N") to a torch.device.

A spec is resolved once, when a family is built or fitted, and the *spec* (not the resolved device) is what a
checkpoint stores, so a model trained on a GPU box loads on a CPU-only one ("auto" resolves to the CPU there) and
the other way round. An explicit "cuda" spec on a machine without CUDA is refused with a message a person can act
on, rather than silently falling back: someone asked for the GPU and should learn they did not get it.

Loading is the exception (`resolve_saved_device`): a checkpoint saved with "cuda" on a GPU box must still serve
predictions from a CPU-only web server, so a saved spec the machine cannot honour falls back to the CPU with a
logged warning. An explicit `device=` given at load time is resolved strictly, like any other request.
"""

from __future__ import annotations

import logging
import re

import torch

logger = logging.getLogger(__name__)

DEVICE_SPECS = ("auto", "cpu", "cuda", "cuda:N")
_SPEC_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")

BAD_SPEC = "device {spec!r}: expected one of auto, cpu, cuda, cuda:N"
NO_CUDA = (
    "device {spec!r} asked for, but torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); "
    "use 'auto' or 'cpu'"
)
NO_SUCH_GPU = "device {spec!r} asked for, but this machine has {count} CUDA GPU(s)"
SAVED_DEVICE_FALLBACK = "model saved for device {spec!r} loads on the CPU here: {reason}"


def check_device_spec(spec: str) -> str:
    """The spec, normalised (lower case, stripped); ValueError when it is not one of DEVICE_SPECS."""
    normalised = str(spec).strip().lower()
    if not _SPEC_PATTERN.fullmatch(normalised):
        raise ValueError(BAD_SPEC.format(spec=spec))
    return normalised


def resolve_device(spec: str = "auto") -> torch.device:
    """auto: the first CUDA GPU when torch can use one, else the CPU; cpu / cuda / cuda:N as asked (checked)."""
    spec = check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(NO_CUDA.format(spec=spec))
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise RuntimeError(NO_SUCH_GPU.format(spec=spec, count=count))
    return device


def resolve_saved_device(saved_spec: str, override: str | None = None) -> torch.device:
    """The device a loaded model computes on: `override` when given (strict, as `resolve_device`), else the saved
    spec, falling back to the CPU with a warning when this machine cannot honour it."""
    if override is not None:
        return resolve_device(override)
    try:
        return resolve_device(saved_spec)
    except RuntimeError as error:
        logger.warning(SAVED_DEVICE_FALLBACK.format(spec=saved_spec, reason=error))
        return torch.device("cpu")


def is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def free_memory_bytes(device: torch.device | str) -> int | None:
    """Free memory of a CUDA device in bytes (torch.cuda.mem_get_info); None for the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def device_description(device: torch.device | str) -> str:
    """What a person reads on the run page and in worker logs: "cpu" or "cuda:0 (NVIDIA H200)"."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
