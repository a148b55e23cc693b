"""How far a run is and how long it has left, from what its model reports.

Each family fits in stages that each report their own fraction from 0 to 1 (PatchCore reads features, then picks a
coreset; the autoencoder prepares its images, then trains epochs). The bar gives every stage a share of the family's
fitting time, so it only moves forward; the time left comes from the pace the bar moved at over the last minutes,
so neither a slow start (reading images) nor an earlier stage's pace makes it stick.
"""

from __future__ import annotations

import math
from collections import deque

# Share of a family's fitting time each stage takes, in the order the family reports them (from runs of the
# sample project on a CPU: reading features dominates PatchCore and the Gaussian, epochs the trained networks).
FIT_STAGES: dict[str, dict[str, float]] = {
    "patchcore": {"features": 0.7, "coreset": 0.3},
    "gaussian": {"features": 0.95, "statistics": 0.05},
    "autoencoder": {"prepare": 0.05, "epoch": 0.95},
    "unet": {"prepare": 0.1, "epoch": 0.9},
    "context": {"teacher": 0.05, "train": 0.9, "statistics": 0.05},
}
# Those shares were measured on a CPU; a GPU changes them (the backbone's features, the coreset search and the
# epochs speed up by different factors), and none are measured on one yet: scripts/gpu_check.sh prints a GPU fit's
# stage shares, to be written here. Until then a GPU run gives its stages equal shares rather than the CPU's; either
# way the time left is the pace this run's own bar moved at, never a CPU figure.
FIT_STAGES_ON_GPU: dict[str, dict[str, float]] = {}
EVALUATION_STAGES = {"validation": 0.1, "evaluation": 0.9}
# Families that may stop before their last epoch: their time left is an upper bound.
EARLY_STOPPING = frozenset({"autoencoder"})

PACE_WINDOW_SECONDS = 180.0  # the pace is measured over this much recent time
MIN_PACE_SECONDS = 2.0  # and over at least this much, or there is no estimate yet


def fit_stages(family: str, *, device: str) -> dict[str, float] | None:
    """The stage plan of a family's fit on `device` (as the run page shows it: "cpu", "cuda:0 (NVIDIA H200)")."""
    cpu = FIT_STAGES.get(family)
    if not device.startswith("cuda") or cpu is None:
        return cpu
    return FIT_STAGES_ON_GPU.get(family) or dict.fromkeys(cpu, 1.0)


def stage_fraction(stages: dict[str, float], stage: str, fraction: float) -> float | None:
    """The fraction of a whole part (all its stages) done, given one stage's own fraction; None for a stage the
    plan does not know (the caller keeps the bar where it was)."""
    if stage not in stages:
        return None
    before = 0.0
    for name, share in stages.items():
        if name == stage:
            return (before + share * max(0.0, min(1.0, fraction))) / sum(stages.values())
        before += share
    return None  # unreachable: stage is in stages


class PaceEstimate:
    """Seconds left to 100 % from the percent reached at recent times within the current stage (a new stage starts
    a new measurement: an early stop or a stage's share being off would otherwise read as a burst of speed)."""

    def __init__(self, window: float = PACE_WINDOW_SECONDS):
        self.window = window
        self.points: deque[tuple[float, float]] = deque()
        self.stage = ""

    def observe(self, now: float, percent: float, stage: str = "") -> float | None:
        if stage != self.stage:
            self.stage = stage
            self.points.clear()
        self.points.append((now, percent))
        # Keep one point older than the window as the anchor, so a slow stretch between reports is still measured.
        while len(self.points) > 2 and self.points[1][0] <= now - self.window:
            self.points.popleft()
        (t0, p0), (t1, p1) = self.points[0], self.points[-1]
        if t1 - t0 < MIN_PACE_SECONDS or p1 <= p0:
            return None
        return (100.0 - p1) * (t1 - t0) / (p1 - p0)


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, math.ceil(seconds / 5) * 5)} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def eta_text(seconds: float | None, *, family: str) -> str:
    """The time left as a person reads it."""
    if seconds is None:
        return "estimating the time left…"
    if seconds < 1:
        return "finishing…"
    if family in EARLY_STOPPING:
        return f"at most {duration_text(seconds)} left (it stops early once it stops improving)"
    return f"about {duration_text(seconds)} left"
