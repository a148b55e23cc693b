"""The pure rule that decides whether a prediction goes to people: no database, so edges are easy to test."""

from __future__ import annotations

import random

BAND = "band"
AUDIT = "audit"


def review_reason(
    *, normalised_score: float, band_low: float, band_high: float, audit_percent: float, rng: random.Random
) -> str | None:
    """BAND when the score lies in [band_low, band_high] (edges included), else AUDIT for a random
    audit_percent share of the rest, else None. rng.random() is in [0, 1): 0 % never audits, 100 % always does."""
    if band_low <= normalised_score <= band_high:
        return BAND
    if rng.random() * 100 < audit_percent:
        return AUDIT
    return None
