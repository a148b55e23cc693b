"""Reads for the annotation editor: the classes with this image's drawings, and where to go next."""

from __future__ import annotations

from django.urls import reverse

from webapp.images.models import Annotation, Image, Label


def editor_layers(*, image: Image) -> list[dict]:
    """Every class of the project, in key order (1-9), with this image's mask URL (versioned) and boxes."""
    annotations = {a.defect_class_id: a for a in Annotation.objects.filter(image=image)}
    layers = []
    for key, defect_class in enumerate(image.project.defect_classes.order_by("id"), start=1):
        annotation = annotations.get(defect_class.id)
        mask_url = ""
        if annotation and annotation.mask:
            mask_url = reverse("annotation_mask", args=[image.project.public_id, annotation.id])
            mask_url += f"?v={annotation.version}"
        layers.append(
            {
                "id": defect_class.id,
                "key": key,
                "name": defect_class.name,
                "colour": defect_class.colour,
                "maskUrl": mask_url,
                "boxes": annotation.boxes if annotation else [],
                "source": annotation.source if annotation else "",
                "author": annotation.author.username if annotation and annotation.author else "",
            }
        )
    return layers


def editor_neighbours(*, image: Image) -> dict[str, Image | None]:
    """Previous and next in the grid's order (newest first), and the next unlabelled one (wrapping round)."""
    images = Image.objects.filter(project_id=image.project_id)
    unlabelled = images.filter(label=Label.UNLABELLED).exclude(id=image.id)
    return {
        "previous": images.filter(id__gt=image.id).order_by("id").first(),
        "next": images.filter(id__lt=image.id).order_by("-id").first(),
        "next_unlabelled": unlabelled.filter(id__lt=image.id).order_by("-id").first()
        or unlabelled.order_by("-id").first(),
        "position": images.filter(id__gte=image.id).count(),
        "total": images.count(),
        "unlabelled_left": unlabelled.count(),
    }
