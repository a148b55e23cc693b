"""The per-image predictions of a model version, wherever they come from (test split, trial, API, batch, stations).

Stored here, not in webapp.training, so that running a model needs nothing of training: training depends on
inference (its evaluation stores test-split predictions), never the other way round. The table keeps the name it had
under training (the rows were moved by state only, see migrations/0001_initial.py)."""

from __future__ import annotations

from django.db import models

from webapp.images.models import Image


class Purpose(models.TextChoices):
    TEST = "test", "Test split"
    TRIAL = "trial", "Trial"
    API = "api", "API"
    BATCH = "batch", "Batch"
    STATION = "station", "Station"  # kept per station by the runner (KENSA_STATION_KEEP_IMAGES), not by retention


class Prediction(models.Model):
    """A model version's output on one image. Maps are PNGs: the anomaly map as threshold-relative bytes (128 is
    the version's threshold at prediction time; see webapp.inference.predictions.anomaly_map_png), the mask as
    0/255."""

    # By name: a model version is training's row, and importing its module here would tie inference to training.
    model_version = models.ForeignKey("training.ModelVersion", on_delete=models.CASCADE, related_name="predictions")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, null=True, blank=True, related_name="predictions")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    raw_score = models.FloatField()
    normalised_score = models.FloatField()
    is_anomalous = models.BooleanField()
    anomaly_map = models.FileField(max_length=255, blank=True)
    predicted_mask = models.FileField(max_length=255, blank=True)
    # For images sent for prediction that are not (yet) in the dataset: the original bytes and file name.
    input_file = models.FileField(max_length=255, blank=True)
    input_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "training_prediction"
        indexes = [
            models.Index(fields=["model_version", "purpose", "raw_score"], name="training_pr_model_v_c816f6_idx"),
            # Retention's sweep (every routine purpose, older than a cutoff) and the newest-first pages.
            models.Index(fields=["purpose", "created_at"], name="prediction_purpose_created"),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} prediction {self.raw_score:.4g} by {self.model_version_id}"
