"""Memory-bank subsampling for PatchCore: greedy k-center coresets, exact or on a random projection.

Every sampler has one method, `select(features, size, progress) -> indices`, so they swap by constructor.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ml.threads import torch_threads
from ml.types import ProgressCallback, no_progress


class CoresetSampler(Protocol):
    name: str

    def select(self, features: torch.Tensor, size: int, progress: ProgressCallback = no_progress) -> torch.Tensor:
        """Indices (int64, shape `size`) of rows of `features` (N x C) to keep."""
        ...


class RandomSampler:
    """Uniform random rows: the cheapest baseline, and what the memory cap uses before a coreset."""

    name = "random"

    def __init__(self, *, seed: int = 0):
        self.seed = seed

    def select(self, features: torch.Tensor, size: int, progress: ProgressCallback = no_progress) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(len(features), generator=generator)[: min(size, len(features))]


class GreedyCoresetSampler:
    """Greedy k-center selection: each step adds the row farthest from everything chosen so far.

    The result covers the feature space evenly, so a rare normal patch keeps a close neighbour in the bank (the
    PatchCore paper's argument). With `projection_dim`, distances are measured after a seeded Gaussian random
    projection to that many dimensions (Johnson-Lindenstrauss), which makes each step proportionally cheaper; with
    None the distances are exact. Cost: size x N x dim multiply-adds.
    """

    def __init__(self, *, projection_dim: int | None = 128, seed: int = 0):
        self.projection_dim = projection_dim
        self.seed = seed
        self.name = "greedy" if projection_dim is None else "greedy_projected"

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        if self.projection_dim is None or self.projection_dim >= features.shape[1]:
            return features
        generator = torch.Generator().manual_seed(self.seed)
        matrix = torch.randn(features.shape[1], self.projection_dim, generator=generator) / self.projection_dim**0.5
        return features @ matrix.to(features.device)

    @torch.no_grad()
    def select(self, features: torch.Tensor, size: int, progress: ProgressCallback = no_progress) -> torch.Tensor:
        size = min(size, len(features))
        # Each step streams all N x dim points from memory once, so the loop is memory-bound: a dim x N layout makes
        # the product a row-vector times matrix (twice as fast as matrix times vector here), and one thread reads
        # nearly as fast as two while a second thread stalls on every step when other processes share the cores.
        points = self._project(features.float()).T.contiguous()
        squared_norms = (points * points).sum(0)
        # On a GPU every step stays on the device (the loop queues kernels without a host round trip per step).
        device = points.device
        generator = torch.Generator().manual_seed(self.seed)
        chosen = torch.empty(size, dtype=torch.int64, device=device)
        chosen[0] = torch.randint(points.shape[1], (1,), generator=generator).item()
        nearest = torch.full((points.shape[1],), float("inf"), device=device)
        report_every = max(1, size // 50)
        with torch_threads(1 if device.type == "cpu" else None):
            for step in range(size):
                if step > 0:
                    chosen[step] = torch.argmax(nearest)
                # index_select with a one-element index tensor, not points[:, chosen[step]]: indexing by a 0-d tensor
                # reads it back to the host, a stall per step on a GPU.
                index = chosen[step : step + 1]
                center = points.index_select(1, index)[:, 0]
                # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: one vector-matrix product per step.
                distances = torch.addmv(squared_norms, points.T, center, alpha=-2)
                distances += squared_norms.index_select(0, index)
                torch.minimum(nearest, distances, out=nearest)
                if step % report_every == 0:
                    progress("coreset", step / size, f"choosing representative patches: {step} of {size}")
        progress("coreset", 1.0, f"chose {size} representative patches")
        return chosen


def create_sampler(name: str, *, projection_dim: int = 128, seed: int = 0) -> CoresetSampler:
    """A sampler by its config name: "greedy_projected" (default), "greedy" (exact) or "random"."""
    if name == "greedy_projected":
        return GreedyCoresetSampler(projection_dim=projection_dim, seed=seed)
    if name == "greedy":
        return GreedyCoresetSampler(projection_dim=None, seed=seed)
    if name == "random":
        return RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; expected greedy_projected, greedy or random")
