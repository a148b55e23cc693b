"""Images (originals stored unchanged, identified by SHA-256 within a project) and their annotations."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from webapp.projects.models import DefectClass, Project


class Label(models.TextChoices):
    UNLABELLED = "unlabelled", "Unlabelled"
    GOOD = "good", "Good"
    DEFECT = "defect", "Defect"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VALIDATION = "validation", "Validation"
    TEST = "test", "Test"


class Source(models.TextChoices):
    UPLOAD = "upload", "Upload"
    IMPORT = "import", "Import"
    SAMPLE = "sample", "Sample"
    MANUAL = "manual", "Manual"
    MODEL = "model", "Model"
    REVIEW = "review", "Review"


class ThumbnailState(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class Image(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    sha256 = models.CharField(max_length=64)
    file = models.FileField(max_length=255)
    original_name = models.CharField(max_length=255)
    format = models.CharField(max_length=8)  # PNG, JPEG, BMP, TIFF
    mode = models.CharField(max_length=8)  # Pillow mode of the original: L, I;16, RGB, RGBA...
    width = models.PositiveIntegerField()  # after EXIF orientation
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    label = models.CharField(max_length=16, choices=Label.choices, default=Label.UNLABELLED)
    split = models.CharField(max_length=16, choices=Split.choices)
    # False once a person (or an import with its own splits) chose the split: rebalancing leaves it alone.
    split_is_automatic = models.BooleanField(default=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.UPLOAD)
    thumbnail = models.FileField(max_length=255, blank=True)
    thumbnail_state = models.CharField(max_length=16, choices=ThumbnailState.choices, default=ThumbnailState.PENDING)
    # When its thumbnail was last sent to a worker or started there (None: never sent), how many times a worker
    # started on it, and why it failed: the periodic check re-sends pending work that went quiet, up to a cap.
    thumbnail_queued_at = models.DateTimeField(null=True, blank=True)
    thumbnail_attempts = models.PositiveSmallIntegerField(default=0)
    thumbnail_error = models.CharField(max_length=400, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Grows with every save of the image's label or drawings (all classes together): an editor sends the version
    # it loaded, and a save from a stale tab finds a newer one and is refused.
    annotation_version = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["project", "sha256"], name="image_unique_in_project")]
        indexes = [
            models.Index(fields=["project", "label", "split"]),
            # The periodic thumbnail check looks for pending rows every 30 s: without it, a scan of every image.
            models.Index(fields=["thumbnail_state", "thumbnail_queued_at"], name="image_thumbnail_pending"),
        ]

    def __str__(self) -> str:
        return self.original_name


class Annotation(models.Model):
    """What a person, an import or an accepted model prediction says about one image for one defect class.

    mask: PNG at the image's full resolution, 0 or 255. boxes: JSON list of [x0, y0, x1, y1] in pixels,
    x1 and y1 exclusive. `version` grows with every save, so a stale editor cannot overwrite a newer one.
    """

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="annotations")
    # PROTECT: deleting a class that still has drawings must be a deliberate step, not a silent loss.
    defect_class = models.ForeignKey(DefectClass, on_delete=models.PROTECT, related_name="annotations")
    mask = models.FileField(max_length=255, blank=True)
    boxes = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "defect_class"], name="one_annotation_per_image_class"),
        ]

    def __str__(self) -> str:
        return f"{self.image} / {self.defect_class}"
