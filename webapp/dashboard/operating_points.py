"""What a threshold does on a version's scored test images: confusion counts, precision / recall / F1, the
threshold presets, and the PR and ROC curves. Pure numpy on arrays loaded once per request; no model runs.

Conventions as in ml.metrics: raw scores, higher = more anomalous, an image is called defective when
`score >= threshold`; labels are True for defect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ml import metrics

# The curves are drawn with at most this many points: enough for a smooth line, small enough for a fast swap.
CURVE_POINTS = 240


@dataclass(frozen=True)
class ScoredImages:
    """The test split as the dashboard sees it: one raw score and one truth per image."""

    scores: np.ndarray  # float64, raw
    labels: np.ndarray  # bool, True = defect

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def n_defect(self) -> int:
        return int(self.labels.sum())

    @property
    def n_good(self) -> int:
        return len(self) - self.n_defect

    @property
    def has_both_classes(self) -> bool:
        return 0 < self.n_defect < len(self)

    # What does not depend on the threshold is computed once per loaded set (the selector caches the set per
    # version), so a slider move only pays for the confusion counts at the new threshold.
    @cached_property
    def cut_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _cut_points(self)

    @cached_property
    def f1_best(self) -> tuple[float, float]:
        return metrics.f1_best_threshold(self.labels.astype(int), self.scores)

    @cached_property
    def full_recall(self) -> tuple[float, float]:
        return metrics.precision_at_full_recall(self.labels, self.scores)

    @cached_property
    def curves(self) -> Curves | None:
        return _curves(self)

    @cached_property
    def distinct_scores(self) -> np.ndarray:
        return np.unique(self.scores)


@dataclass(frozen=True)
class OperatingPoint:
    """The calls at one threshold."""

    threshold: float
    confusion: metrics.Confusion

    @property
    def precision(self) -> float:
        return self.confusion.precision

    @property
    def recall(self) -> float:
        return self.confusion.recall

    @property
    def f1(self) -> float:
        return self.confusion.f1

    @property
    def accuracy(self) -> float:
        c = self.confusion
        return (c.tp + c.tn) / max(1, c.tp + c.tn + c.fp + c.fn)

    @property
    def false_positive_rate(self) -> float:
        c = self.confusion
        return c.fp / (c.fp + c.tn) if c.fp + c.tn else 0.0


def operating_point(scored: ScoredImages, threshold: float) -> OperatingPoint:
    return OperatingPoint(
        threshold=float(threshold), confusion=metrics.confusion(scored.labels, scored.scores, threshold)
    )


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    threshold: float | None  # None: this preset cannot be reached on these images
    note: str


def _cut_points(scored: ScoredImages) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(threshold, tp, fp) at every distinct score, highest threshold first (ties are called together)."""
    order = np.argsort(-scored.scores, kind="stable")
    ranked = scored.scores[order]
    truth = scored.labels[order]
    tp = np.cumsum(truth)
    fp = np.cumsum(~truth)
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    return ranked[last_of_tie], tp[last_of_tie], fp[last_of_tie]


def threshold_for_precision(scored: ScoredImages, target: float) -> float | None:
    """The lowest threshold (most defects caught) whose precision still reaches `target`; None if none does."""
    if scored.n_defect == 0:
        return None
    thresholds, tp, fp = scored.cut_points
    precision = tp / np.maximum(tp + fp, 1)
    reaching = np.flatnonzero((precision >= target - 1e-12) & (tp > 0))
    return float(thresholds[reaching[-1]]) if len(reaching) else None


def presets(scored: ScoredImages, *, target_precision: float | None = None) -> list[Preset]:
    """F1-best, "no escapes" (recall = 1) with the precision it costs, and optionally a target precision."""
    found: list[Preset] = []
    if scored.has_both_classes:
        cut, best = scored.f1_best
        found.append(Preset("f1", "Best F1", cut, f"F1 {best:.3f}"))
    else:
        found.append(Preset("f1", "Best F1", None, "needs good and defect test images"))
    if scored.n_defect:
        precision, cut = scored.full_recall
        found.append(Preset("recall1", "No escapes", cut, f"catches every defect at precision {precision:.3f}"))
    else:
        found.append(Preset("recall1", "No escapes", None, "needs defect test images"))
    if target_precision is not None:
        cut = threshold_for_precision(scored, target_precision)
        if cut is None:
            note = f"no threshold reaches precision {target_precision:.2f}"
        else:
            note = f"recall {operating_point(scored, cut).recall:.3f} at precision ≥ {target_precision:.2f}"
        found.append(Preset("precision", f"Precision ≥ {target_precision:.2f}", cut, note))
    return found


@dataclass(frozen=True)
class Curves:
    """ROC (false positive rate, recall) and PR (recall, precision) polylines, each from (0, ·) onwards."""

    roc: list[tuple[float, float]]
    pr: list[tuple[float, float]]


def _thin(n: int) -> np.ndarray:
    if n <= CURVE_POINTS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, CURVE_POINTS).round().astype(int))


def curves(scored: ScoredImages) -> Curves | None:
    """None without both classes (neither curve means anything then)."""
    return scored.curves


def _curves(scored: ScoredImages) -> Curves | None:
    if not scored.has_both_classes:
        return None
    _, tp, fp = scored.cut_points
    recall = tp / scored.n_defect
    fpr = fp / scored.n_good
    precision = tp / (tp + fp)
    keep = _thin(len(tp))
    roc = [(0.0, 0.0), *zip(fpr[keep].tolist(), recall[keep].tolist(), strict=True)]
    pr = [(0.0, 1.0), *zip(recall[keep].tolist(), precision[keep].tolist(), strict=True)]
    return Curves(roc=roc, pr=pr)


def score_range(scored: ScoredImages, *also: float | None) -> tuple[float, float]:
    """The axis of the histogram and the slider: every score and the given thresholds, with a little margin."""
    values = [v for v in also if v is not None and math.isfinite(v)]
    if len(scored):
        values += [float(scored.scores.min()), float(scored.scores.max())]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.03 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


@dataclass(frozen=True)
class ThresholdLadder:
    """The threshold slider's positions, lowest threshold first: one per way the scored images can be called
    (at the lowest score, halfway between each pair of neighbouring scores, above the highest) plus the named
    thresholds (saved, calibrated) exactly. Every step calls at least one more or one fewer real image, or lands on
    a named threshold, however the scores are spread: a U-Net's scores sit near 0 and 1 with its operating region
    in 0.0000-0.0003, which a linear slider crosses in one step."""

    rungs: np.ndarray  # ascending raw thresholds
    gaps: np.ndarray  # per rung: how many distinct scores lie below it (rungs with the same gap call alike)
    distinct: np.ndarray  # the distinct scores, ascending

    def __len__(self) -> int:
        return len(self.rungs)

    def threshold_at(self, position: int) -> float:
        return float(self.rungs[min(max(position, 0), len(self.rungs) - 1)])

    def position_of(self, threshold: float) -> int:
        """The rung that calls the images as `threshold` does, the nearest one of those if several do."""
        gap = int(np.searchsorted(self.distinct, threshold, side="left"))
        alike = np.flatnonzero(self.gaps == gap)
        if not len(alike):  # only without scores
            return int(np.argmin(np.abs(self.rungs - threshold)))
        return int(alike[np.argmin(np.abs(self.rungs[alike] - threshold))])


def threshold_ladder(scored: ScoredImages, *named: float | None) -> ThresholdLadder:
    distinct = scored.distinct_scores
    extra = [float(v) for v in named if v is not None and math.isfinite(v)]
    if len(distinct):
        below, above = distinct[:-1], distinct[1:]
        halfway = below + (above - below) / 2
        # Neighbours one float apart have no halfway point: the upper score itself calls alike.
        halfway = np.where(halfway > below, halfway, above)
        lo, hi = score_range(scored)
        top = distinct[-1] + max(hi - distinct[-1], np.spacing(distinct[-1]))
        base = np.concatenate([distinct[:1], halfway, [top]])
    else:
        base = np.zeros(0) if extra else np.zeros(1)
    rungs = np.unique(np.concatenate([base, extra]))
    return ThresholdLadder(rungs=rungs, gaps=np.searchsorted(distinct, rungs, side="left"), distinct=distinct)
