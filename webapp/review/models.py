"""Human review: each project's policy for routing predictions to people, the routed items, and the audit trail
of every decision."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.images.models import Image, Split
from webapp.inference.models import Prediction
from webapp.projects.models import Project


class ReviewPolicy(models.Model):
    """Which trial, batch and API predictions go to people. Off until someone turns it on."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="review_policy")
    enabled = models.BooleanField(default=False)
    # Normalised scores (0.5 = the threshold) from band_low to band_high, both inclusive, are uncertain calls.
    band_low = models.FloatField(default=0.4)
    band_high = models.FloatField(default=0.6)
    audit_percent = models.FloatField(default=0)  # a random share of all predictions, whatever their score
    split = models.CharField(max_length=16, choices=Split.choices, default=Split.TRAIN)  # where decided items go
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"review policy of {self.project}"


class Reason(models.TextChoices):
    BAND = "band", "Uncertain score"
    AUDIT = "audit", "Random audit"


class ItemStatus(models.TextChoices):
    PENDING = "pending", "Waiting for review"
    DECIDED = "decided", "Decided"


class Decision(models.TextChoices):
    ACCEPT = "accept", "Model is right"
    GOOD = "good", "Good"
    DEFECT = "defect", "Defect"
    MASK = "mask", "Defect, mask edited"


class ReviewItem(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="review_items")
    prediction = models.OneToOneField(Prediction, on_delete=models.CASCADE, related_name="review_item")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    # A claim keeps two reviewers off the same item for a while; the decision itself is guarded separately.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    decision = models.CharField(max_length=16, choices=Decision.choices, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    image = models.ForeignKey(Image, on_delete=models.SET_NULL, null=True, blank=True, related_name="review_items")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["project", "status", "created_at"])]

    def __str__(self) -> str:
        return f"review item {self.id} ({self.status})"


class ReviewDecision(models.Model):
    """The audit trail: who decided what, when, and the state before and after."""

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    agrees_with_model = models.BooleanField()
    before = models.JSONField(default=dict)  # the model's call and score, the image's label if it was in the dataset
    after = models.JSONField(default=dict)  # the label and split given, the dataset image, whether a mask was kept
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.decision} on item {self.item_id}"
