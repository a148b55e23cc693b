"""What PatchCore will choose from the project's data (ml.adaptive), said on the Train page before training, and what
a version chose, for its page (issue 21). The rule is pure and cheap: it needs the count and sizes of the good
training images, which the database knows without reading a pixel."""

from __future__ import annotations

from dataclasses import dataclass

from ml.adaptive import choose_settings, explain, typical_short_side
from webapp.images.models import Image, Label, Split
from webapp.projects.models import Project

ADAPTIVE_FAMILIES = frozenset({"patchcore"})


@dataclass(frozen=True)
class GoodImageFacts:
    """What the rule reads from the good training images: how many, and their typical shorter side (px)."""

    n_good: int
    short_side: int | None


def good_image_facts(project: Project) -> GoodImageFacts:
    goods = Image.objects.filter(project=project, split=Split.TRAIN, label=Label.GOOD)
    # Every good image's size (two numbers a row), as the fit reads them (ml.adaptive.short_side_of): a sample's
    # percentile could plan another working size than the one trained.
    sizes = goods.values_list("width", "height")
    return GoodImageFacts(n_good=goods.count(), short_side=typical_short_side(sizes))


def planned_settings_sentence(
    *, project: Project, family: str, image_size: int | None = None, rotations: int | None = None
) -> str:
    """The sentence for a run of `family` with the person's settings (None: the rule's); "" for families that do
    not choose their settings from the data, or when there is no good training image yet."""
    if family not in ADAPTIVE_FAMILIES:
        return ""
    facts = good_image_facts(project)
    if not facts.n_good:
        return ""
    choice = choose_settings(
        n_good=facts.n_good,
        short_side=facts.short_side,
        rotation_invariant=None,  # known once the images are read, when training starts
        requested={"image_size": image_size, "rotations": rotations},
    )
    return choice.sentence


def chosen_settings_of(model) -> dict:
    """What a fitted model's rule chose (PatchCoreConfig.chosen), for the version's stored metrics; {} otherwise."""
    chosen = getattr(getattr(model, "config", None), "chosen", None)
    return dict(chosen) if chosen and explain(chosen) else {}
