"""A batch item's prediction is now webapp.inference's model: the same table, so state only (no constraint is
dropped and made again)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0002_batch_job_heartbeat"),
        ("inference", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="batchitem",
                    name="prediction",
                    field=models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="batch_item",
                        to="inference.prediction",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
