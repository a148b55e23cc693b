"""Automatic stratified train / validation / test assignment.

Each label (good, defect, unlabelled) is spread over the splits in the target ratios on its own, so the test
split sees both kinds of part. A new image goes to the split that is furthest below its share for that label,
so earlier assignments never move (the test split stays comparable across model versions).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

from webapp.audit.models import AuditAction
from webapp.audit.services import audit_record
from webapp.images.models import Image, Split

TARGET_SHARES = {Split.TRAIN: 0.70, Split.VALIDATION: 0.15, Split.TEST: 0.15}


class SplitAssigner:
    """Assigns splits for a batch of new images of one project, counting what it assigns as it goes."""

    def __init__(self, counts: Counter[tuple[str, str]]):
        self.counts = counts  # (label, split) -> number of images

    @classmethod
    def for_project(cls, project_id: int) -> SplitAssigner:
        rows = Image.objects.filter(project_id=project_id).values_list("label", "split")
        return cls(Counter(rows))

    def assign(self, label: str) -> str:
        total = sum(self.counts[(label, split)] for split in TARGET_SHARES) + 1
        # Largest shortfall against the target wins; ties go to the earlier split (train first).
        split = max(TARGET_SHARES, key=lambda s: TARGET_SHARES[s] * total - self.counts[(label, s)])
        self.counts[(label, split)] += 1
        return split

    def record(self, label: str, split: str) -> None:
        self.counts[(label, split)] += 1


def splits_rebalance(*, project_id: int, user=None) -> int:
    """Reassigns every automatically split image of the project from scratch; returns how many moved."""
    images = list(Image.objects.filter(project_id=project_id).order_by("sha256"))
    fixed = Counter((i.label, i.split) for i in images if not i.split_is_automatic)
    assigner = SplitAssigner(fixed)
    moved = []
    for image in images:
        if not image.split_is_automatic:
            continue
        split = assigner.assign(image.label)
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
