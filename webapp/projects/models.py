"""Projects: one inspection task (a part, a camera view), its members and its defect classes."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ANNOTATOR = "annotator", "Annotator"
    REVIEWER = "reviewer", "Reviewer"
    VIEWER = "viewer", "Viewer"


class Project(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.project}"


colour_validator = RegexValidator(r"^#[0-9a-fA-F]{6}$", "Use a colour like #e4572e.")

# "good" is a label, and in the MVTec AD layout the folder of good images: a defect class of that name would come
# back from an MVTec export as good images (any case: the folders merge on Windows and macOS disks).
RESERVED_CLASS_NAMES = frozenset({"good"})
RESERVED_CLASS_NAME = (
    "“{name}” cannot name a defect class: good is the label of images without defects (and their folder in "
    "MVTec AD exports). Choose another name, such as “{name} defect”."
)


def class_name_is_reserved(name: str) -> bool:
    return name.strip().casefold() in RESERVED_CLASS_NAMES


class DefectClass(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="defect_classes")
    name = models.CharField(max_length=64)
    colour = models.CharField(max_length=7, validators=[colour_validator])

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="defect_class_name_unique")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if class_name_is_reserved(self.name):
            raise ValidationError({"name": RESERVED_CLASS_NAME.format(name=self.name.strip())})
