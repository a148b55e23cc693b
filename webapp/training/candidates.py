"""Which candidates a run trains and compares (issue 20), decided when the run is requested, so the run trains
what the Train page showed when the person clicked.

The candidates are ml.compare's: PatchCore with the settings ml.adaptive chooses from the good images and at a
coarser working size, the supervised family once enough defects are outlined, and the families the person ticks.
They are compared only where validation can judge them (it holds defect images); otherwise the label rule's choice
alone is trained, and the page says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ml.compare import BASELINE_FAMILY, Candidate, candidates_for

COMPARE_FAMILY = "compare"  # TrainingRun.family of a run that trains several candidates
# Wall seconds a comparison may spend fitting candidates; once spent, the candidates not started are skipped (the
# first, PatchCore's default, always runs). 15 minutes is what magnetic tile's candidates take on two CPU cores.
DEFAULT_BUDGET_MINUTES = 15
BUDGET_MINUTES = (5, 15, 30, 60, 120)

NO_VALIDATION_DEFECTS = (
    "Validation holds no defect images, so candidates cannot be compared on catching defects: Kensa trains the "
    "label rule's choice only. Put defect images in validation to compare candidates."
)
NO_VALIDATION = (
    "Validation holds no labelled images, so candidates cannot be compared: Kensa trains the label rule's choice "
    "only. Put good and defect images in validation to compare candidates."
)
COMPARES = (
    "Kensa trains {n} candidates, scores each on the {n_validation} validation images and keeps the best by the "
    "rule below, within a time budget of {budget} min."
)


@dataclass(frozen=True)
class CandidatePlan:
    """candidates: what a run trains (one: a plain run). note: why, for the page."""

    candidates: tuple[Candidate, ...]
    note: str
    budget_minutes: int

    @property
    def compares(self) -> bool:
        return len(self.candidates) > 1


def _with_settings(candidate: Candidate, *, image_size: int | None, backbone: str) -> Candidate:
    """The person's image size and backbone on a candidate of another family than PatchCore (PatchCore's
    candidates already carry the person's settings: ml.compare.patchcore_candidates)."""
    config = dict(candidate.config)
    if image_size and candidate.family != BASELINE_FAMILY:
        config["image_size"] = image_size
    if backbone:
        config["backbone"] = backbone
    return Candidate(candidate.family, config, candidate.label)


def candidate_plan(
    *,
    n_good: int,
    n_defect: int,
    n_outlined: int,
    n_validation: int,
    n_validation_defects: int,
    label_family: str = BASELINE_FAMILY,
    extra: tuple[str, ...] = (),
    image_size: int | None = None,
    rotations: int | None = None,
    backbone: str = "",
    short_side: int | None = None,
    budget_minutes: int = DEFAULT_BUDGET_MINUTES,
) -> CandidatePlan:
    """The candidates for these label counts (train split's good and outlined images; defects anywhere) and the
    person's settings: PatchCore's first candidate leaves to ml.adaptive what the person did not set (short_side:
    the good images' typical shorter side, which its size depends on), the second tries a coarser working size;
    an image size set by hand applies to every candidate (PatchCore's then collapse to one), rotations to
    PatchCore's. Raises ValueError for an unknown extra family."""
    every = candidates_for(
        n_good=n_good,
        n_defect=n_defect,
        n_annotated=n_outlined,
        extra=extra,
        short_side=short_side,
        patchcore_settings={"image_size": image_size, "rotations": rotations},
    )
    candidates: list[Candidate] = []
    for candidate in every:
        candidate = _with_settings(candidate, image_size=image_size, backbone=backbone)
        if all((c.family, c.config) != (candidate.family, candidate.config) for c in candidates):
            candidates.append(candidate)
    note = ""
    # The label rule picks where validation cannot: PatchCore's default, or the supervised family once enough
    # defects are outlined (candidates_for lists it right after PatchCore's sizes).
    supervised = [c for c in candidates if c.family != BASELINE_FAMILY and c.family not in extra]
    if label_family != BASELINE_FAMILY and not supervised:
        # The label rule asks for a supervised family that ml.compare does not offer here (its hybrid is not
        # installed): train the one the rule names, so outlining defects still trains a model that uses them.
        supervised = [
            Candidate(
                label_family,
                _with_settings(Candidate(label_family), image_size=image_size, backbone=backbone).config,
                label_family,
            )
        ]
        candidates.append(supervised[0])
    label_rule = supervised[0] if supervised else candidates[0]
    if n_validation == 0 and len(candidates) > 1:
        candidates, note = [label_rule], NO_VALIDATION
    elif n_validation_defects == 0 and len(candidates) > 1:
        # Ticked families are still trained, as asked; the label rule picks the winner among them.
        kept = [candidates[0], *supervised[:1], *(c for c in candidates if c.family in extra)]
        candidates = [c for i, c in enumerate(kept) if all(c is not k for k in kept[:i])]
        note = NO_VALIDATION_DEFECTS
    return CandidatePlan(candidates=tuple(candidates), note=note, budget_minutes=budget_minutes)


def candidates_to_config(candidates: tuple[Candidate, ...] | list[Candidate]) -> list[dict]:
    return [{"family": c.family, "config": c.config, "label": c.label} for c in candidates]


def candidates_from_config(rows: list[dict]) -> list[Candidate]:
    return [Candidate(row["family"], dict(row.get("config") or {}), row.get("label", "")) for row in rows]


def finite(value):
    """JSON-safe metrics: NaN and infinities become None (PostgreSQL's JSON refuses NaN), numpy numbers floats."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None
