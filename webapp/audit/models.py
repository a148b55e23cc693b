"""The project-wide audit log: one row per change a person (or the system) made to a project's data or model."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.projects.models import Project


class AuditAction(models.TextChoices):
    LABEL = "label", "Label changed"
    SPLIT = "split", "Split changed"
    DEFECT_CLASS = "defect_class", "Defect class changed"
    IMAGES_DELETE = "images_delete", "Images deleted"
    SPLITS_REBALANCE = "splits_rebalance", "Splits rebalanced"
    ANNOTATION = "annotation", "Annotation saved"
    REVIEW = "review", "Review decision"
    THRESHOLD = "threshold", "Threshold saved"
    MEMBER_SET = "member_set", "Member added or role changed"
    MEMBER_REMOVE = "member_remove", "Member removed"
    VERSION_ACTIVATE = "version_activate", "Model version activated"
    UNDO = "undo", "Change undone"


class AuditEntry(models.Model):
    """Who did what, when, with the state before and after. `changes` holds the per-object previous values of a
    bulk change (what an undo restores); `undone_at` is set once it has been undone."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="audit_entries")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    target = models.CharField(max_length=255)  # what was changed, in words: "12 images", "version 3", "bob"
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "action", "created_at"])]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.target}"
