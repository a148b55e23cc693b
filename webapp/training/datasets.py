"""The project's images as `ml` samples: originals read from storage one at a time, masks merged per image."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image as PILImage

from ml.images import to_rgb
from ml.types import DEFECT, GOOD, Box, Sample
from webapp.images.intake.decoding import open_oriented, to_display_rgb
from webapp.images.models import Annotation, Image, Label
from webapp.projects.models import DefectClass
from webapp.storage import stored_file_read

# With no validation images, this share of the good training images is held out to set the threshold: few, because
# every good image taken from an unsupervised family's training costs accuracy (measured on MVTec screw: 320 -> 272
# training images lowered image AUROC from 0.975 to about 0.9), while a threshold needs only a handful of good scores.
HOLDOUT_SHARE = 0.10
MIN_HOLDOUT = 3
MAX_HOLDOUT = 20
MIN_LEFT_TO_FIT = 5


def holdout_size(n_good: int) -> int:
    """How many of `n_good` good training images an empty validation split costs (0: too few to spare any)."""
    count = min(MAX_HOLDOUT, max(MIN_HOLDOUT, round(HOLDOUT_SHARE * n_good)))
    return count if n_good - count >= MIN_LEFT_TO_FIT else 0


def image_array(image: Image) -> np.ndarray:
    """H x W x 3 uint8 RGB as a person sees the image (EXIF orientation applied, 16-bit scaled)."""
    return to_rgb(np.asarray(to_display_rgb(open_oriented(stored_file_read(image.file.name)))))


def annotation_union_mask(annotations: Sequence[Annotation], height: int, width: int) -> np.ndarray | None:
    """All defect pixels of an image: masks OR'ed with boxes drawn as filled rectangles. None when nothing drawn."""
    mask = np.zeros((height, width), dtype=bool)
    drawn = False
    for annotation in annotations:
        if annotation.mask:
            with PILImage.open(io.BytesIO(stored_file_read(annotation.mask.name))) as picture:
                layer = np.asarray(picture.convert("L")) > 127
            if layer.shape == mask.shape:
                mask |= layer
                drawn = True
        for x0, y0, x1, y1 in annotation.boxes or []:
            mask[max(0, int(y0)) : max(0, int(y1)), max(0, int(x0)) : max(0, int(x1))] = True
            drawn = True
    return mask if drawn else None


def annotation_class_mask(
    annotations: Sequence[Annotation], height: int, width: int, class_index: dict[int, int]
) -> np.ndarray | None:
    """H x W int32: 0 good, k for the defect class class_index[defect_class_id] (1-based), from each class's mask
    and boxes (a later class wins where two overlap). None when nothing is drawn."""
    labels = np.zeros((height, width), dtype=np.int32)
    drawn = False
    for annotation in sorted(annotations, key=lambda a: class_index.get(a.defect_class_id, 0)):
        layer = annotation_union_mask([annotation], height, width)
        if layer is not None and annotation.defect_class_id in class_index:
            labels[layer] = class_index[annotation.defect_class_id]
            drawn = True
    return labels if drawn else None


class ProjectSamples(Sequence[Sample]):
    """A lazy sequence of samples: nothing is read until an item is asked for, so memory stays flat.

    Each sample carries the union mask, and where the project has several defect classes a class map over the
    project's classes (ordered by id, so every sample of a run names them alike); boxed-only drawings also come as
    boxes (ml.types.Sample: families that learn from boxes use them as boxes)."""

    def __init__(self, images: Sequence[Image]):
        self.images = list(images)
        ids = [i.id for i in self.images]
        self._annotations: dict[int, list[Annotation]] = {}
        for annotation in Annotation.objects.filter(image_id__in=ids).select_related("defect_class"):
            self._annotations.setdefault(annotation.image_id, []).append(annotation)
        classes: list[tuple[int, str]] = []
        if self.images:
            project_classes = DefectClass.objects.filter(project_id=self.images[0].project_id).order_by("id")
            classes = list(project_classes.values_list("id", "name"))
        self.classes = tuple(name for _, name in classes)
        self._class_index = {class_id: k for k, (class_id, _) in enumerate(classes, start=1)}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        image = self.images[index]
        pixels = image_array(image)
        annotations = self._annotations.get(image.id, [])
        mask = annotation_union_mask(annotations, *pixels.shape[:2])
        label = DEFECT if image.label == Label.DEFECT else GOOD
        class_mask = None
        if len(self.classes) > 1 and mask is not None:
            class_mask = annotation_class_mask(annotations, *pixels.shape[:2], self._class_index)
        boxes = None
        if annotations and not any(a.mask for a in annotations):
            boxes = [
                Box(int(x0), int(y0), int(x1), int(y1), a.defect_class.name)
                for a in annotations
                for x0, y0, x1, y1 in a.boxes or []
            ] or None
        return Sample(
            image=pixels,
            label=label,
            mask=mask,
            name=image.original_name,
            boxes=boxes,
            class_mask=class_mask,
            classes=self.classes if class_mask is not None else (),
        )

    def image_sizes(self, indices: Sequence[int]) -> list[tuple[int, int]]:
        """(width, height) of the images at `indices`, from the database (nothing read from storage)."""
        return [(self.images[i].width, self.images[i].height) for i in indices]

    def has_mask(self, index: int) -> bool:
        annotations = self._annotations.get(self.images[index].id, [])
        return any(a.mask or a.boxes for a in annotations)

    @property
    def labels(self) -> np.ndarray:
        return np.array([DEFECT if i.label == Label.DEFECT else GOOD for i in self.images], dtype=int)
