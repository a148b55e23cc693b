"""Exact nearest bank entry of each query patch, searched in row blocks that bound one step's memory.

|q - b|^2 = |b|^2 - 2 q.b + |q|^2 finds the nearest entry with one fused matmul per block (|q|^2 is the same for
every entry of a row, so it is left out). That expansion loses precision for near-zero distances (float32
cancellation, amplified by the square root), so the winner's distance is recomputed directly. PatchCore's
prediction and ml.calibration's leave-own-out search both go through here.
"""

from __future__ import annotations

import torch

from ml.devices import free_memory_bytes

# The distance block per step on a CPU, in bytes (query rows x bank entries floats): near the L2 cache it is swept
# by the reduction while still there. 16,900 patches of a 1,040 px tile, Intel Xeon, one thread: bank 2,048: 137
# CPU ms in 128-row blocks (1 MB), 184 in 2,048-row blocks; bank 5,120: 368 vs 559 (issue 16, h16).
CPU_SEARCH_BYTES = 1 << 20
CPU_SEARCH_MIN_ROWS = 64
DEFAULT_CHUNK = 2048


def search_rows(bank_size: int, device: torch.device, *, chunk: int = DEFAULT_CHUNK) -> int:
    """Query rows per step: on the CPU at most `chunk`, fewer when the block would outgrow CPU_SEARCH_BYTES; on a
    GPU as many as a quarter of its free memory holds (the block, plus as much again for the reduction's
    temporaries)."""
    free = free_memory_bytes(device)
    if free is None:
        return min(chunk, max(CPU_SEARCH_MIN_ROWS, CPU_SEARCH_BYTES // max(1, 4 * bank_size)))
    return max(chunk, free // 4 // max(1, 2 * bank_size * 4))


def nearest_entries(
    queries: torch.Tensor, bank: torch.Tensor, *, chunk: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries Q x D, bank B x D -> (Euclidean distance to the nearest entry Q, its index Q)."""
    bank_norms = (bank * bank).sum(1)
    distances, indices = [], []
    for block in queries.split(search_rows(len(bank), bank.device, chunk=chunk)):
        # min(dim) gives the same first-minimum index as argmin in about half the time on a CPU (38,416 patches x
        # 2,048 entries, one thread: 118 against 209 ms).
        index = torch.addmm(bank_norms, block, bank.T, alpha=-2).min(dim=1).indices
        distances.append((block - bank[index]).norm(dim=1))
        indices.append(index)
    return torch.cat(distances), torch.cat(indices)
