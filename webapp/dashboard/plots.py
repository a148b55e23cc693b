"""Small server-rendered SVG plots: a score histogram with the threshold line, PR and ROC curves with the
operating point. Inline SVG, so one htmx swap redraws numbers and plots together; no JavaScript chart library.

Every plot is drawn in a fixed viewBox (scaled by CSS); `Frame` maps data to that box, and tests use it to know
where a value must land.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
from django.utils.safestring import SafeString, mark_safe

GOOD_COLOUR = "#2f855a"
DEFECT_COLOUR = "#c53030"
THRESHOLD_COLOUR = "#1d2328"
CURVE_COLOUR = "#2b6cb0"
GRID_COLOUR = "#e2e8f0"


@dataclass(frozen=True)
class Frame:
    """The plotting area inside a width x height viewBox, and linear maps from data to it (y grows upwards)."""

    width: int = 480
    height: int = 240
    left: int = 46
    right: int = 14
    top: int = 14
    bottom: int = 40

    def x(self, value: float, lo: float, hi: float) -> float:
        span = (hi - lo) or 1.0
        return round(self.left + (value - lo) / span * (self.width - self.left - self.right), 2)

    def y(self, value: float, lo: float, hi: float) -> float:
        span = (hi - lo) or 1.0
        return round(self.height - self.bottom - (value - lo) / span * (self.height - self.top - self.bottom), 2)

    @property
    def x0(self) -> float:
        return float(self.left)

    @property
    def x1(self) -> float:
        return float(self.width - self.right)

    @property
    def y0(self) -> float:
        return float(self.height - self.bottom)

    @property
    def y1(self) -> float:
        return float(self.top)


HISTOGRAM = Frame()
CURVE = Frame(width=300, height=280, left=46, right=14, top=14, bottom=40)


def number(value: float) -> str:
    """A tick label: three significant digits, no exponent for everyday sizes."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else "–"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}"
    return f"{value:.2e}"


def _svg(frame: Frame, css_class: str, label: str, body: list[str]) -> SafeString:
    return mark_safe(
        f'<svg class="plot {css_class}" viewBox="0 0 {frame.width} {frame.height}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "middle", css_class: str = "tick", extra: str = "") -> str:
    return f'<text x="{x}" y="{y}" text-anchor="{anchor}" class="{css_class}"{extra}>{escape(text)}</text>'


def _axes(frame: Frame, x_ticks: list[tuple[float, str]], y_ticks: list[tuple[float, str]], x_title: str, y_title: str):
    parts = [f'<rect x="{frame.x0}" y="{frame.y1}" width="{frame.x1 - frame.x0}" height="{frame.y0 - frame.y1}" '
             f'fill="#fff" stroke="{GRID_COLOUR}"/>']  # fmt: skip
    for x, label in x_ticks:
        parts.append(f'<line x1="{x}" x2="{x}" y1="{frame.y0}" y2="{frame.y0 + 4}" stroke="#718096"/>')
        parts.append(_text(x, frame.y0 + 15, label))
    for y, label in y_ticks:
        parts.append(f'<line x1="{frame.x0}" x2="{frame.x1}" y1="{y}" y2="{y}" stroke="{GRID_COLOUR}"/>')
        parts.append(_text(frame.x0 - 5, y + 4, label, anchor="end"))
    parts.append(_text((frame.x0 + frame.x1) / 2, frame.height - 6, x_title, css_class="axis-title"))
    mid = (frame.y0 + frame.y1) / 2
    parts.append(_text(12, mid, y_title, css_class="axis-title", extra=f' transform="rotate(-90 12 {mid})"'))
    return parts


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        return [lo]
    raw_step = span / count
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step) + 1)]


def threshold_line(frame: Frame, threshold: float, lo: float, hi: float, *, css_class: str = "threshold") -> str:
    x = frame.x(min(max(threshold, lo), hi), lo, hi)
    return (
        f'<line class="{css_class}" data-threshold="{threshold!r}" x1="{x}" x2="{x}" y1="{frame.y1}" '
        f'y2="{frame.y0}" stroke="{THRESHOLD_COLOUR}" stroke-width="2"/>'
    )


def score_histogram(
    *,
    good: np.ndarray,
    defect: np.ndarray,
    threshold: float,
    lo: float,
    hi: float,
    bins: int = 40,
    saved_threshold: float | None = None,
    frame: Frame = HISTOGRAM,
    log_axis: bool = False,
) -> SafeString:
    """Good and defect raw scores as two outlined histograms, each as a share of its own class (so a handful of
    defects stays visible beside many good parts), with the threshold as a solid line and the saved operating
    threshold, when different, as a dashed one. `log_axis` draws log10 of the scores (all positive, spread over
    decades: a U-Net's 1e-6 .. 0.999), so the operating region near 0 is not a single pixel."""
    if log_axis:
        return _log_histogram(good=good, defect=defect, threshold=threshold, bins=bins,
                              saved_threshold=saved_threshold, frame=frame)  # fmt: skip
    return _histogram(good=good, defect=defect, threshold=threshold, lo=lo, hi=hi, bins=bins,
                      saved_threshold=saved_threshold, frame=frame)  # fmt: skip


def wants_log_axis(scores: np.ndarray) -> bool:
    """Positive scores whose typical value is under 1% of the largest: on a linear axis they all sit at 0."""
    return bool(len(scores) and scores.min() > 0 and np.median(scores) < 0.01 * scores.max())


def _log_histogram(*, good, defect, threshold, bins, saved_threshold, frame) -> SafeString:
    every = np.concatenate([good, defect])
    floor = float(every[every > 0].min()) / 10 if (every > 0).any() else 1e-12

    def log(value):
        return np.log10(np.maximum(value, floor))

    lo, hi = float(log(every).min()), float(log(every).max())
    pad = (hi - lo) * 0.03 or 1.0
    svg = _histogram(good=log(good), defect=log(defect), threshold=float(log(threshold)), lo=lo - pad, hi=hi + pad,
                     bins=bins, saved_threshold=None if saved_threshold is None else float(log(saved_threshold)),
                     frame=frame, decades=True)  # fmt: skip
    # The threshold line carries the raw threshold, not its logarithm.
    return mark_safe(svg.replace(f'data-threshold="{float(log(threshold))!r}"', f'data-threshold="{threshold!r}"'))


def _histogram(*, good, defect, threshold, lo, hi, bins, saved_threshold, frame, decades: bool = False) -> SafeString:
    edges = np.linspace(lo, hi, bins + 1)
    shares = []
    for values in (good, defect):
        counts, _ = np.histogram(np.clip(values, lo, hi), bins=edges)
        shares.append(counts / max(1, len(values)))
    top = max(0.05, float(max(s.max(initial=0) for s in shares)) * 1.1)
    if decades:
        step = max(1, math.ceil((hi - lo) / 6))
        x_ticks = [(frame.x(k, lo, hi), number(10.0**k)) for k in range(math.ceil(lo), math.floor(hi) + 1, step)]
    else:
        x_ticks = [(frame.x(v, lo, hi), number(v)) for v in _nice_ticks(lo, hi)]
    y_ticks = [(frame.y(v, 0, top), f"{v:.0%}") for v in _nice_ticks(0, top, 4)]
    x_title = "raw anomaly score (log scale)" if decades else "raw anomaly score"
    body = _axes(frame, x_ticks, y_ticks, x_title, "share of class")
    # Called-defective side shaded, so "right of the line = rejected" reads at a glance.
    tx = frame.x(min(max(threshold, lo), hi), lo, hi)
    body.append(f'<rect class="reject-zone" x="{tx}" y="{frame.y1}" width="{frame.x1 - tx}" '
                f'height="{frame.y0 - frame.y1}" fill="{DEFECT_COLOUR}" fill-opacity="0.06"/>')  # fmt: skip
    for share, colour, name in ((shares[0], GOOD_COLOUR, "good"), (shares[1], DEFECT_COLOUR, "defect")):
        if not share.any():
            continue
        points = [f"{frame.x(edges[0], lo, hi)},{frame.y0}"]
        for i, value in enumerate(share):
            y = frame.y(value, 0, top)
            points.append(f"{frame.x(edges[i], lo, hi)},{y}")
            points.append(f"{frame.x(edges[i + 1], lo, hi)},{y}")
        points.append(f"{frame.x(edges[-1], lo, hi)},{frame.y0}")
        body.append(f'<polygon class="bars {name}" points="{" ".join(points)}" fill="{colour}" fill-opacity="0.25" '
                    f'stroke="{colour}" stroke-width="1.5"/>')  # fmt: skip
    if saved_threshold is not None and saved_threshold != threshold and lo <= saved_threshold <= hi:
        x = frame.x(saved_threshold, lo, hi)
        body.append(f'<line class="saved-threshold" x1="{x}" x2="{x}" y1="{frame.y1}" y2="{frame.y0}" '
                    f'stroke="{THRESHOLD_COLOUR}" stroke-dasharray="4 3" stroke-opacity="0.6"/>')  # fmt: skip
    body.append(threshold_line(frame, threshold, lo, hi))
    body.append(_legend(frame, [("good", GOOD_COLOUR), ("defect", DEFECT_COLOUR)]))
    shown = number(10.0**threshold) if decades else number(threshold)
    return _svg(frame, "histogram", f"Histogram of good and defect scores, threshold {shown}", body)


def _legend(frame: Frame, entries: list[tuple[str, str]]) -> str:
    parts, x = [], frame.x0 + 8
    for name, colour in entries:
        parts.append(f'<rect x="{x}" y="{frame.y1 + 6}" width="10" height="10" fill="{colour}" fill-opacity="0.5"/>')
        parts.append(_text(x + 14, frame.y1 + 15, name, anchor="start", css_class="legend"))
        x += 24 + 7 * len(name)
    return "".join(parts)


def _curve(
    *,
    points: Sequence[tuple[float, float]],
    point: tuple[float, float],
    css_class: str,
    x_title: str,
    y_title: str,
    label: str,
    diagonal: bool,
    frame: Frame = CURVE,
) -> SafeString:
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    body = _axes(
        frame,
        [(frame.x(v, 0, 1), f"{v:g}") for v in ticks],
        [(frame.y(v, 0, 1), f"{v:g}") for v in ticks],
        x_title,
        y_title,
    )
    if diagonal:
        body.append(f'<line x1="{frame.x0}" y1="{frame.y0}" x2="{frame.x1}" y2="{frame.y1}" stroke="#a0aec0" '
                    f'stroke-dasharray="3 3"/>')  # fmt: skip
    path = " ".join(f"{frame.x(x, 0, 1)},{frame.y(y, 0, 1)}" for x, y in points)
    body.append(f'<polyline class="curve" points="{path}" fill="none" stroke="{CURVE_COLOUR}" stroke-width="2"/>')
    cx, cy = frame.x(point[0], 0, 1), frame.y(point[1], 0, 1)
    body.append(f'<circle class="operating-point" cx="{cx}" cy="{cy}" r="5" fill="{THRESHOLD_COLOUR}" '
                f'stroke="#fff" stroke-width="1.5"/>')  # fmt: skip
    return _svg(frame, css_class, label, body)


def pr_curve(*, points: Sequence[tuple[float, float]], recall: float, precision: float) -> SafeString:
    return _curve(
        points=points,
        point=(recall, precision),
        css_class="pr-curve",
        x_title="recall (defects caught)",
        y_title="precision",
        label=f"Precision-recall curve; at the threshold recall {recall:.3f}, precision {precision:.3f}",
        diagonal=False,
    )


def roc_curve(*, points: Sequence[tuple[float, float]], false_positive_rate: float, recall: float) -> SafeString:
    return _curve(
        points=points,
        point=(false_positive_rate, recall),
        css_class="roc-curve",
        x_title="false alarm rate (good parts rejected)",
        y_title="recall",
        label=f"ROC curve; at the threshold false alarm rate {false_positive_rate:.3f}, recall {recall:.3f}",
        diagonal=True,
    )
