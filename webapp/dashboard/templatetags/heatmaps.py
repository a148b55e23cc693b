"""{% heat_legend %}: the heatmap's colour scale beside a heatmap toggle, drawn from the overlay's own colours as
an SVG gradient (the pages' Content-Security-Policy allows no style attributes)."""

from __future__ import annotations

import itertools

from django import template

from webapp.dashboard.overlays import legend_stops

register = template.Library()
_ids = itertools.count()


@register.inclusion_tag("dashboard/_heat_legend.html")
def heat_legend() -> dict:
    return {"stops": legend_stops(), "uid": next(_ids)}  # a gradient id of its own per legend on the page
