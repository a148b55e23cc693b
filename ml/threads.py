"""One place that sets torch's CPU thread count for a stretch of work and puts the previous setting back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Runs the block with `count` intra-op threads (None or 0: the process setting, untouched)."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def bench_threads() -> int:
    """Threads a benchmark command uses: OMP_NUM_THREADS where it is set to a positive count (so
    `OMP_NUM_THREADS=1 python -m ml bench` really runs one torch thread), else every CPU."""
    try:
        asked = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        asked = 0
    return asked if asked > 0 else os.cpu_count() or 1
