"""The robustness report's plots: one line per perturbation across its strengths (0 = as taken), for image AUROC
and for the share of good parts rejected. Server-rendered SVG with the dashboard's frame and axes
(webapp.dashboard.plots), so the pages look and scale alike."""

from __future__ import annotations

from html import escape

from django.utils.safestring import SafeString

from webapp.dashboard.plots import Frame, _axes, _nice_ticks, _svg, _text

# One colour per perturbation (the registry's order): the ten "tableau" colours and black, told apart on white.
LINE_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#1d2328",
)  # fmt: skip
PLOT = Frame(width=520, height=280, left=50, right=150, top=14, bottom=40)
STEP_NAMES = ("as taken", "mild", "medium", "strong")


def _series(report: dict, key: str) -> dict[str, list[float | None]]:
    """perturbation -> [value as taken, value at each strength in order]."""
    base = report["baseline"][key]
    lines: dict[str, list[float | None]] = {}
    for row in report["conditions"]:
        lines.setdefault(row["perturbation"], [base]).append(row[key])
    return lines


def strength_plot(report: dict, *, key: str, title: str, css_class: str, percent: bool) -> SafeString:
    """Lines of `key` (a ConditionResult field) against the strength step, one per perturbation, with a legend."""
    lines = _series(report, key)
    steps = max((len(values) for values in lines.values()), default=1)
    values = [v for line in lines.values() for v in line if v is not None]
    if percent:
        lo, hi = 0.0, max(0.1, max(values, default=0.0) * 1.1)
    else:
        lo, hi = min(0.5, min(values, default=0.5)), 1.0
    frame = PLOT
    names = [STEP_NAMES[i] if i < len(STEP_NAMES) else f"step {i}" for i in range(steps)]
    x_ticks = [(frame.x(i, 0, steps - 1), name) for i, name in enumerate(names)]
    y_ticks = [(frame.y(v, lo, hi), f"{v:.0%}" if percent else f"{v:g}") for v in _nice_ticks(lo, hi, 4)]
    body = _axes(frame, x_ticks, y_ticks, "strength of the change", title)
    for index, (name, line) in enumerate(lines.items()):
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]
        points = [f"{frame.x(i, 0, steps - 1)},{frame.y(v, lo, hi)}" for i, v in enumerate(line) if v is not None]
        body.append(
            f'<polyline class="line" data-perturbation="{escape(name)}" points="{" ".join(points)}" fill="none" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        y = frame.y1 + 10 + 16 * index
        body.append(f'<rect x="{frame.x1 + 10}" y="{y - 8}" width="12" height="4" fill="{colour}"/>')
        body.append(_text(frame.x1 + 26, y - 2, name, anchor="start", css_class="legend"))
    return _svg(frame, css_class, f"{title} under each perturbation, as taken to strong", body)


def report_plots(report: dict) -> dict[str, SafeString]:
    return {
        "auroc": strength_plot(report, key="image_auroc", title="image AUROC", css_class="robustness-auroc",
                               percent=False),
        "false_alarms": strength_plot(report, key="good_rejected_rate", title="good parts rejected",
                                      css_class="robustness-false-alarms", percent=True),
        "recall": strength_plot(report, key="recall", title="defects caught (recall)", css_class="robustness-recall",
                                percent=True),
    }  # fmt: skip
