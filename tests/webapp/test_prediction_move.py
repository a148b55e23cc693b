"""Predictions moved from webapp.training to webapp.inference by migration state only (training 0005, inference
0001, and the foreign keys of review 0002 and api 0003): a database migrated before the move keeps its rows, and
the new model reads them."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE_THE_MOVE = [
    ("training", "0004_run_device_description"),
    ("review", "0001_initial"),
    ("api", "0002_batch_job_heartbeat"),
]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()  # what is applied now
    return executor


def _unapply_the_move():
    """Back to where the move starts: inference unapplied (and everything after it), the rest at BEFORE_THE_MOVE."""
    return _migrate([("inference", None), *BEFORE_THE_MOVE])


@pytest.mark.django_db(transaction=True)
def test_a_prediction_stored_before_the_move_is_read_through_the_inference_model():
    # given: a database as it was before the move, with a prediction and a review item pointing at it
    executor = _unapply_the_move()
    try:
        old = executor.loader.project_state(BEFORE_THE_MOVE).apps
        assert "prediction" in {m._meta.model_name for m in old.get_app_config("training").get_models()}
        user = old.get_model("auth", "User").objects.create(username="before-the-move")
        project = old.get_model("projects", "Project").objects.create(name="Moved", created_by_id=user.id)
        version = old.get_model("training", "ModelVersion").objects.create(
            project=project, number=1, family="patchcore", artifact_prefix="projects/p/runs/r"
        )
        stored = old.get_model("training", "Prediction").objects.create(
            model_version=version,
            purpose="api",
            raw_score=3.25,
            normalised_score=0.75,
            is_anomalous=True,
            anomaly_map="projects/p/runs/r/predictions/api/a_map.png",
            input_name="part-17.png",
        )
        old.get_model("review", "ReviewItem").objects.create(project=project, prediction=stored, reason="band")
    finally:
        # when: migrated to the latest state (also run when the given step failed, so later tests get a database)
        executor = _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    # then: the same row, through the new model, its reverse accessors and the review item's foreign key
    from webapp.inference.models import Prediction
    from webapp.review.models import ReviewItem
    from webapp.training.models import ModelVersion

    assert Prediction._meta.db_table == "training_prediction"
    moved = Prediction.objects.get(id=stored.id)
    assert (moved.raw_score, moved.normalised_score, moved.is_anomalous) == (3.25, 0.75, True)
    assert (moved.purpose, moved.input_name) == ("api", "part-17.png")
    assert moved.anomaly_map.name == "projects/p/runs/r/predictions/api/a_map.png"
    assert list(ModelVersion.objects.get(id=version.id).predictions.all()) == [moved]
    assert ReviewItem.objects.get().prediction == moved
    assert not executor.migration_plan(executor.loader.graph.leaf_nodes())  # nothing left to apply


@pytest.mark.django_db(transaction=True)
def test_the_move_changes_no_table():
    # given
    executor = MigrationExecutor(connection)
    moves = [
        ("inference", "0001_initial"),
        ("review", "0002_prediction_in_inference"),
        ("api", "0003_prediction_in_inference"),
        ("training", "0005_prediction_to_inference"),
    ]

    for app, name in moves:
        # when
        migration = executor.loader.get_migration(app, name)
        state = executor.loader.project_state((app, name), at_end=False)
        with connection.schema_editor(collect_sql=True, atomic=False) as editor:
            migration.apply(state, editor, collect_sql=True)

        # then: state only, no SQL at all (the collected lines are only comments naming each operation)
        statements = [line for line in editor.collected_sql if not line.startswith("--")]
        assert statements == [], (app, name)
        assert "-- (no-op)" in editor.collected_sql
