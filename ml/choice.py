"""Which model family to train, from what the user has labelled, explained in plain words."""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_GOOD = 10  # below this even PatchCore's picture of a good part is too thin to trust
MIN_ANNOTATED_FOR_SEGMENTER = 10  # outlined defects needed before a supervised segmenter beats PatchCore


@dataclass(frozen=True)
class FamilyChoice:
    """family: a registry name. reason: one sentence for a quality engineer. missing: what to add, one per item."""

    family: str
    reason: str
    missing: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.missing


def _images(n: int) -> str:
    return f"{n} more good image" + ("" if n == 1 else "s")


def choose_family(*, n_good: int, n_defect: int, n_annotated_defects: int) -> FamilyChoice:
    """Supervised U-Net when at least 10 outlined defects and 10 good images exist; otherwise PatchCore.

    `n_annotated_defects` counts defect images with a mask or box; it cannot exceed `n_defect`.
    """
    if min(n_good, n_defect, n_annotated_defects) < 0 or n_annotated_defects > n_defect:
        raise ValueError("counts must be non-negative and annotated defects cannot exceed defect images")
    missing = [f"add at least {_images(MIN_GOOD - n_good)}"] if n_good < MIN_GOOD else []
    if n_annotated_defects >= MIN_ANNOTATED_FOR_SEGMENTER and n_good >= MIN_GOOD:
        return FamilyChoice(
            family="unet",
            reason=(
                f"You outlined {n_annotated_defects} defects, enough to teach the model what your defects look like, "
                "so it learns from both good parts and the marked defects."
            ),
            missing=missing,
        )
    return FamilyChoice(
        family="patchcore",
        reason=(
            f"With fewer than {MIN_ANNOTATED_FOR_SEGMENTER} outlined defects the model learns what good parts look "
            "like and flags anything that differs, and your defect images are used to check it and set the threshold."
        ),
        missing=missing,
    )
