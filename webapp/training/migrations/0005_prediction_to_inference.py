"""Predictions moved to webapp.inference (its 0001): training forgets the model by state only, after every foreign
key to it points at inference's, so the table and its rows stay."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0003_prediction_in_inference"),
        ("inference", "0001_initial"),
        ("review", "0002_prediction_in_inference"),
        ("training", "0004_run_device_description"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Prediction")],
            database_operations=[],
        ),
    ]
