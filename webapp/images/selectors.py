"""Reads about images."""

from __future__ import annotations

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from webapp.images.models import Annotation, Image, Label, Split, ThumbnailState
from webapp.projects.models import Project


def image_list(
    *, project: Project, label: str = "", split: str = "", has_mask: str = "", defect_class: str = ""
) -> QuerySet[Image]:
    """The project's images, filtered. has_mask: "yes" / "no" / "" (any). defect_class: a class id or ""."""
    with_mask = Annotation.objects.filter(image=OuterRef("pk")).exclude(mask="")
    images = Image.objects.filter(project=project).annotate(has_mask=Exists(with_mask))
    if label in Label.values:
        images = images.filter(label=label)
    if split in Split.values:
        images = images.filter(split=split)
    if has_mask == "yes":
        images = images.filter(has_mask=True)
    elif has_mask == "no":
        images = images.filter(has_mask=False)
    if defect_class.isdigit():
        images = images.filter(annotations__defect_class_id=int(defect_class)).distinct()
    return images.order_by("-created_at", "-id")


def project_image_stats(*, project: Project) -> dict:
    """Counts by label and split, masks, and pending thumbnails, for the project page."""
    images = Image.objects.filter(project=project)
    by_label_split = {
        (row["label"], row["split"]): row["n"] for row in images.values("label", "split").annotate(n=Count("id"))
    }
    table = [
        {"split": split, "counts": [by_label_split.get((label, split), 0) for label in Label.values]}
        for split in Split.values
    ]
    return {
        "total": images.count(),
        "labels": Label.labels,
        "table": table,
        "by_label": {label: sum(by_label_split.get((label, s), 0) for s in Split.values) for label in Label.values},
        "with_mask": images.filter(Q(annotations__isnull=False) & ~Q(annotations__mask="")).distinct().count(),
        "thumbnails_pending": images.filter(thumbnail_state=ThumbnailState.PENDING).count(),
    }
