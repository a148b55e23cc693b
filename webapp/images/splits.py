"""Automatic stratified train / validation / test assignment.

Each label (good, defect, unlabelled) is spread over the splits in the target ratios on its own, so the test
split sees both kinds of part. A new image goes to the split that is furthest below its share for that label,
so earlier assignments never move (the test split stays comparable across model versions). Defect images whose
classes are known (an import's folders, drawn annotations) are spread per class the same way, so validation holds
defects of every class that has three images or more, and can judge a model on each (issue 20).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

from webapp.audit.models import AuditAction
from webapp.audit.services import audit_record
from webapp.images.models import Annotation, Image, Split

TARGET_SHARES = {Split.TRAIN: 0.70, Split.VALIDATION: 0.15, Split.TEST: 0.15}


# A defect class's first images go one to each split, in this order, before the shares apply: with the shares
# alone, a class of three would put two in train, one in validation and none in test.
SPREAD_FIRST = (Split.TRAIN, Split.TEST, Split.VALIDATION)


def _class_split(counts: Counter, stratum: Hashable) -> str:
    """The split for the next defect image of `stratum` (its classes): every split once, then the shares."""
    for split in SPREAD_FIRST:
        if not counts[(stratum, split)]:
            return split
    return _shortfall_split(counts, stratum)


def _shortfall_split(counts: Counter, stratum: Hashable) -> str:
    total = sum(counts[(stratum, split)] for split in TARGET_SHARES) + 1
    # Largest shortfall against the target wins; ties go to the earlier split (train first).
    return max(TARGET_SHARES, key=lambda s: TARGET_SHARES[s] * total - counts[(stratum, s)])


class SplitAssigner:
    """Assigns splits for a batch of new images of one project, counting what it assigns as it goes."""

    def __init__(self, counts: Counter[tuple[str, str]], class_counts: Counter | None = None):
        self.counts = counts  # (label, split) -> number of images
        self.class_counts = class_counts if class_counts is not None else Counter()  # (class name, split) -> defects

    @classmethod
    def for_project(cls, project_id: int) -> SplitAssigner:
        rows = Image.objects.filter(project_id=project_id).values_list("label", "split")
        classes = Annotation.objects.filter(image__project_id=project_id, image__label="defect")
        class_rows = classes.values_list("defect_class__name", "image__split")
        return cls(Counter(rows), Counter(class_rows))

    def assign(self, label: str) -> str:
        split = _shortfall_split(self.counts, label)
        self.counts[(label, split)] += 1
        return split

    def assign_defect(self, defect_class: str) -> str:
        """A defect image of a known class: spread within its class, so every class reaches validation."""
        split = _class_split(self.class_counts, defect_class)
        self.record("defect", split, defect_class=defect_class)
        return split

    def record(self, label: str, split: str, *, defect_class: str = "") -> None:
        self.counts[(label, split)] += 1
        if defect_class:
            self.class_counts[(defect_class, split)] += 1


def _image_strata(project_id: int) -> dict[int, tuple[str, ...]]:
    """Image id -> the sorted names of its drawn defect classes (defect images with drawings only)."""
    classes: dict[int, set[str]] = defaultdict(set)
    drawn = Annotation.objects.filter(image__project_id=project_id, image__label="defect")
    for image_id, name in drawn.values_list("image_id", "defect_class__name"):
        classes[image_id].add(name)
    return {image_id: tuple(sorted(names)) for image_id, names in classes.items()}


def splits_rebalance(*, project_id: int, user=None) -> int:
    """Reassigns every automatically split image of the project from scratch; returns how many moved. Defect
    images are spread per combination of drawn classes, so validation gets defects of every class there are
    enough of (three or more)."""
    images = list(Image.objects.filter(project_id=project_id).order_by("sha256"))
    strata = _image_strata(project_id)

    def stratum(image: Image) -> Hashable:
        return (image.label, *strata.get(image.id, ())) if image.label == "defect" else image.label

    fixed = Counter((stratum(i), i.split) for i in images if not i.split_is_automatic)
    moved = []
    for image in images:
        if not image.split_is_automatic:
            continue
        key = stratum(image)
        split = _class_split(fixed, key) if isinstance(key, tuple) and len(key) > 1 else _shortfall_split(fixed, key)
        fixed[(key, split)] += 1
        if split != image.split:
            image.split = split
            moved.append(image)
    Image.objects.bulk_update(moved, ["split"], batch_size=500)
    if moved:
        audit_record(
            project=project_id,
            user=user,
            action=AuditAction.SPLITS_REBALANCE,
            target=f"{len(moved)} images",
            after={"split": dict(Counter(image.split for image in moved))},
        )
    return len(moved)


def stratified_pick(
    images: Sequence[Image], *, strata: dict[int, Hashable], share: float, rng: random.Random
) -> list[Image]:
    """About `share` of every stratum (image id -> its stratum, e.g. label and defect classes), picked by `rng`
    from the stratum in the given order: at least one of a stratum of two or more, never a whole stratum, so
    every kind of image stays on both sides."""
    groups: dict[Hashable, list[Image]] = defaultdict(list)
    for image in images:
        groups[strata[image.id]].append(image)
    chosen: list[Image] = []
    for key in sorted(groups, key=repr):  # a fixed order, so one seed always picks the same images
        group = groups[key]
        if len(group) < 2:
            continue
        count = min(len(group) - 1, max(1, round(share * len(group))))
        chosen += rng.sample(group, count)
    return chosen
