"""{% heat_legend %}: the heatmap's colour scale beside a heatmap toggle, drawn from the overlay's own colours."""

from __future__ import annotations

from django import template

from webapp.dashboard.overlays import legend_stops

register = template.Library()


@register.inclusion_tag("dashboard/_heat_legend.html")
def heat_legend() -> dict:
    gradient = ", ".join(f"{colour} {percent}%" for percent, colour in legend_stops())
    return {"gradient": f"linear-gradient(to right, {gradient})"}
