"""A review item's prediction is now webapp.inference's model: the same table, so state only (no constraint is
dropped and made again)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0001_initial"),
        ("review", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="reviewitem",
                    name="prediction",
                    field=models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="review_item",
                        to="inference.prediction",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
