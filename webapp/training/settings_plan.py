"""What PatchCore will choose from the project's data (ml.adaptive), said on the Train page before training, and what
a version chose, for its page (issue 21). The rule is pure and cheap: it needs the count and sizes of the good
training images, which the database knows without reading a pixel."""

from __future__ import annotations

from ml.adaptive import choose_settings, explain
from webapp.images.models import Image, Label, Split
from webapp.projects.models import Project

ADAPTIVE_FAMILIES = frozenset({"patchcore"})
# Enough image sizes for a median; a project of 100,000 images need not send them all.
SIZE_SAMPLE = 2000


def planned_settings_sentence(
    *, project: Project, family: str, image_size: int | None = None, rotations: int | None = None
) -> str:
    """The sentence for a run of `family` with the person's settings (None: the rule's); "" for families that do
    not choose their settings from the data, or when there is no good training image yet."""
    if family not in ADAPTIVE_FAMILIES:
        return ""
    goods = Image.objects.filter(project=project, split=Split.TRAIN, label=Label.GOOD)
    n_good = goods.count()
    if not n_good:
        return ""
    sides = sorted(min(w, h) for w, h in goods.order_by("id").values_list("width", "height")[:SIZE_SAMPLE])
    choice = choose_settings(
        n_good=n_good,
        short_side=sides[len(sides) // 2],
        rotation_invariant=None,  # known once the images are read, when training starts
        requested={"image_size": image_size, "rotations": rotations},
    )
    return choice.sentence


def chosen_settings_of(model) -> dict:
    """What a fitted model's rule chose (PatchCoreConfig.chosen), for the version's stored metrics; {} otherwise."""
    chosen = getattr(getattr(model, "config", None), "chosen", None)
    return dict(chosen) if chosen and explain(chosen) else {}
