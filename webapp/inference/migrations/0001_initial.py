"""Predictions move from webapp.training to webapp.inference by state only: the table (training_prediction), its
rows, index and constraints stay as they are. training's 0005 drops its old state after this one."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("images", "0001_initial"),
        ("training", "0004_run_device_description"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Prediction",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"),
                        ),
                        (
                            "purpose",
                            models.CharField(
                                choices=[("test", "Test split"), ("trial", "Trial"), ("api", "API"), ("batch", "Batch")],
                                max_length=16,
                            ),
                        ),
                        ("raw_score", models.FloatField()),
                        ("normalised_score", models.FloatField()),
                        ("is_anomalous", models.BooleanField()),
                        ("anomaly_map", models.FileField(blank=True, max_length=255, upload_to="")),
                        ("predicted_mask", models.FileField(blank=True, max_length=255, upload_to="")),
                        ("input_file", models.FileField(blank=True, max_length=255, upload_to="")),
                        ("input_name", models.CharField(blank=True, max_length=255)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "image",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="predictions",
                                to="images.image",
                            ),
                        ),
                        (
                            "model_version",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="predictions",
                                to="training.modelversion",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "training_prediction",
                        "indexes": [
                            models.Index(
                                fields=["model_version", "purpose", "raw_score"], name="training_pr_model_v_c816f6_idx"
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
