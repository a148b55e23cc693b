"""{% robustness_summary version as r %}: a version's robustness in one line, for pages that list versions (the
version comparison, the version dashboard) without their views knowing about robustness runs."""

from __future__ import annotations

from django import template

from webapp.robustness.selectors import RobustnessSummary, latest_run, robustness_summary

register = template.Library()


@register.simple_tag
def robustness_summary_of(version) -> RobustnessSummary | None:
    return robustness_summary(version=version)


@register.simple_tag
def robustness_latest_run(version):
    return latest_run(version=version)
