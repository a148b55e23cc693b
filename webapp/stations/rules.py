"""Rules that turn a prediction into OK / NG / REVIEW. Pure functions, no database, so every edge is easy to test.

The rules of a station are a JSON object (every key optional):

    {
      "review_band": [0.4, 0.6],     # normalised scores in [low, high] (0.5 = the version's threshold) -> REVIEW;
                                     # null: no band (the project's review policy band is not used implicitly)
      "pixels_per_mm": 12.5,         # image scale, needed by min_area_mm2
      "regions": [                   # a specification per defect class ("*" = any class)
        {"class": "*", "min_area_px": 40, "max_count": 0},
        {"class": "scratch", "min_area_mm2": 0.5, "max_count": 2}
      ]
    }

Decision: a score in the review band is REVIEW. Otherwise a score below the threshold is OK. A score at or above
it is NG when there are no region rules; with region rules, only regions at least as large as their class's minimum
count, and the image is NG when some class has more such regions than its max_count (default 0), else OK (the
anomaly is below the specification).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BAD_BAND = "The review band needs 0 ≤ low ≤ high ≤ 1 (0.5 is the threshold)."
BAD_SCALE = "pixels_per_mm must be a positive number."
NEEDS_SCALE = "A rule with min_area_mm2 needs pixels_per_mm (the image scale)."
BAD_RULE = "Each region rule needs a class (or *), and non-negative min_area_px / min_area_mm2 / max_count."
ANY_CLASS = "*"


@dataclass(frozen=True)
class Region:
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive
    area_px: int
    defect_class: str = "defect"


@dataclass
class Decision:
    verdict: str  # "ok" | "ng" | "review"
    reasons: list[str] = field(default_factory=list)
    counted: list[Region] = field(default_factory=list)  # regions that met their class's minimum area


def rules_validate(rules: dict) -> dict:
    """The rules, checked and normalised; raises ValueError with a message for people."""
    if not isinstance(rules, dict):
        raise ValueError("Rules must be a JSON object.")
    clean: dict = {}
    band = rules.get("review_band")
    if band is not None:
        try:
            low, high = (float(v) for v in band)
        except (TypeError, ValueError):
            raise ValueError(BAD_BAND) from None
        if not 0 <= low <= high <= 1:
            raise ValueError(BAD_BAND)
        clean["review_band"] = [low, high]
    scale = rules.get("pixels_per_mm")
    if scale is not None:
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise ValueError(BAD_SCALE) from None
        if scale <= 0:
            raise ValueError(BAD_SCALE)
        clean["pixels_per_mm"] = scale
    regions = []
    for rule in rules.get("regions") or []:
        if not isinstance(rule, dict) or not str(rule.get("class", "")).strip():
            raise ValueError(BAD_RULE)
        item: dict = {"class": str(rule["class"]).strip()}
        for name, kind in (("min_area_px", float), ("min_area_mm2", float), ("max_count", int)):
            if rule.get(name) is None:
                continue
            try:
                value = kind(rule[name])
            except (TypeError, ValueError):
                raise ValueError(BAD_RULE) from None
            if value < 0:
                raise ValueError(BAD_RULE)
            item[name] = value
        if "min_area_mm2" in item and "pixels_per_mm" not in clean:
            raise ValueError(NEEDS_SCALE)
        regions.append(item)
    if regions:
        clean["regions"] = regions
    return clean


def region_area_mm2(region: Region, pixels_per_mm: float | None) -> float | None:
    return None if not pixels_per_mm else region.area_px / (pixels_per_mm * pixels_per_mm)


def _rule_for(defect_class: str, rules: list[dict]) -> dict | None:
    """The class's own rule, else the catch-all one."""
    for rule in rules:
        if rule["class"] == defect_class:
            return rule
    for rule in rules:
        if rule["class"] == ANY_CLASS:
            return rule
    return None


def _minimum_px(rule: dict, pixels_per_mm: float | None) -> float:
    minimum = float(rule.get("min_area_px", 0))
    if "min_area_mm2" in rule and pixels_per_mm:
        minimum = max(minimum, rule["min_area_mm2"] * pixels_per_mm * pixels_per_mm)
    return minimum


def decide(*, normalised_score: float, regions: list[Region], rules: dict) -> Decision:
    """The verdict for one image from its normalised score (0.5 = threshold) and its defect regions."""
    band = rules.get("review_band")
    if band is not None and band[0] <= normalised_score <= band[1]:
        return Decision("review", [f"score {normalised_score:.3f} in the review band {band[0]:g}–{band[1]:g}"])
    if normalised_score < 0.5:
        return Decision("ok", [f"score {normalised_score:.3f} below the threshold"])
    region_rules = rules.get("regions") or []
    if not region_rules:
        return Decision("ng", [f"score {normalised_score:.3f} at or above the threshold"], list(regions))
    scale = rules.get("pixels_per_mm")
    counted: list[Region] = []
    per_class: dict[str, int] = {}
    for region in regions:
        rule = _rule_for(region.defect_class, region_rules)
        if rule is None or region.area_px < _minimum_px(rule, scale):
            continue
        counted.append(region)
        per_class[region.defect_class] = per_class.get(region.defect_class, 0) + 1
    reasons = []
    for defect_class, count in sorted(per_class.items()):
        allowed = int(_rule_for(defect_class, region_rules).get("max_count", 0))
        if count > allowed:
            reasons.append(f"{count} {defect_class} region(s) over the minimum area (at most {allowed} allowed)")
    if reasons:
        return Decision("ng", reasons, counted)
    return Decision("ok", ["anomalous score, but no region breaks the specification"], counted)
