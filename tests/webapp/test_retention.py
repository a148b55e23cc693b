"""Retention of routine predictions (webapp/inference/retention.py): expired API, trial and batch predictions go with
their files; test-split, reviewed and unfinished-batch ones stay; the periodic task runs from the real beat entry on
a real worker; owners see their project's disk use on the settings page."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from tests.conftest import REPO, _database_url, wait_for
from tests.webapp import test_s3_storage
from tests.webapp.conftest import make_user, png_bytes
from webapp.api.models import BatchItem, BatchJob, JobStatus
from webapp.inference.disk_use import ARTIFACTS, PREDICTIONS, project_disk_use
from webapp.inference.models import Prediction, Purpose
from webapp.inference.retention import BATCH_PREDICTION_EXPIRED, predictions_cleanup
from webapp.inference.services import predict_bytes
from webapp.projects.models import Membership, Role
from webapp.review.models import Reason, ReviewItem
from webapp.storage import stored_file_write

DAY = timedelta(days=1)
# A real S3 endpoint (moto's server) and a bucket as the default storage, as test_s3_storage has them.
s3_server = test_s3_storage.s3_server
bucket = test_s3_storage.bucket


def files_of(prediction: Prediction) -> list[str]:
    return [f.name for f in (prediction.anomaly_map, prediction.predicted_mask, prediction.input_file) if f]


def backdate(prediction: Prediction, age: timedelta) -> None:
    Prediction.objects.filter(id=prediction.id).update(created_at=timezone.now() - age)


def predicted(version, seed: int, purpose: str = Purpose.API, age: timedelta = timedelta(0)) -> Prediction:
    """A real prediction (maps, mask and kept input written by the predict path), made `age` ago."""
    prediction = predict_bytes(
        version=version, data=png_bytes(seed), purpose=purpose, name=f"part-{seed}.png"
    ).prediction
    backdate(prediction, age)
    return prediction


@pytest.fixture
def retention(settings):
    settings.PREDICTION_RETENTION = {
        "api": {"days": 7, "count": 0},
        "batch": {"days": 7, "count": 0},
        "trial": {"days": 30, "count": 0},
    }
    return settings.PREDICTION_RETENTION


def test_cleanup_deletes_exactly_the_expired_routine_predictions_with_their_files(trained_version, retention):
    version = trained_version
    old_api = predicted(version, 1, age=8 * DAY)
    fresh_api = predicted(version, 2, age=6 * DAY)
    old_trial = predicted(version, 3, Purpose.TRIAL, age=31 * DAY)
    fresh_trial = predicted(version, 4, Purpose.TRIAL, age=8 * DAY)  # trials are kept 30 days
    reviewed = predicted(version, 5, age=60 * DAY)
    ReviewItem.objects.create(project=version.project, prediction=reviewed, reason=Reason.BAND)
    # the same bytes sent twice: one input file under an old and a fresh row
    shared_old = predicted(version, 6, age=9 * DAY)
    shared_fresh = predicted(version, 6, age=1 * DAY)
    assert shared_old.input_file.name == shared_fresh.input_file.name
    # batch predictions: a finished job's expire (its item says so), a running job's are kept
    done_job = BatchJob.objects.create(project=version.project, model_version=version, status=JobStatus.SUCCEEDED)
    running_job = BatchJob.objects.create(project=version.project, model_version=version, status=JobStatus.RUNNING)
    done_batch = predicted(version, 7, Purpose.BATCH, age=8 * DAY)
    running_batch = predicted(version, 8, Purpose.BATCH, age=8 * DAY)
    done_item = BatchItem.objects.create(job=done_job, position=0, prediction=done_batch, boxes=[{"x0": 1}])
    BatchItem.objects.create(job=running_job, position=0, prediction=running_batch)
    # the version's own test-split predictions (made by training), older than every limit
    tests = list(Prediction.objects.filter(model_version=version, purpose=Purpose.TEST))
    assert tests and all(files_of(p) for p in tests)
    Prediction.objects.filter(purpose=Purpose.TEST).update(created_at=timezone.now() - 400 * DAY)

    expired = [old_api, old_trial, shared_old, done_batch]
    kept = [fresh_api, fresh_trial, reviewed, shared_fresh, running_batch, *tests]
    expired_files = {name for p in expired for name in files_of(p)} - set(files_of(shared_fresh))
    assert all(default_storage.exists(name) for name in expired_files)

    result = predictions_cleanup()

    assert result.rows == 4
    assert result.by_purpose == {Purpose.API: 2, Purpose.TRIAL: 1, Purpose.BATCH: 1}
    remaining = set(Prediction.objects.values_list("id", flat=True))
    assert remaining == {p.id for p in kept}
    assert not any(default_storage.exists(name) for name in expired_files)
    assert all(default_storage.exists(name) for p in kept for name in files_of(p))
    done_item.refresh_from_db()
    assert done_item.prediction is None and done_item.error == BATCH_PREDICTION_EXPIRED
    # a second run finds nothing more
    assert predictions_cleanup().rows == 0


def test_the_count_limit_keeps_the_newest_per_project(trained_version, retention):
    retention["api"] = {"days": 0, "count": 2}
    rows = [predicted(trained_version, seed, age=timedelta(hours=10 - seed)) for seed in range(5)]  # 0 is oldest
    result = predictions_cleanup()
    assert result.rows == 3
    assert set(Prediction.objects.filter(purpose=Purpose.API).values_list("id", flat=True)) == {rows[3].id, rows[4].id}
    assert not any(default_storage.exists(name) for p in rows[:3] for name in files_of(p))


def test_nothing_is_deleted_with_limits_off(trained_version, retention):
    retention["api"] = {"days": 0, "count": 0}
    old = predicted(trained_version, 1, age=1000 * DAY)
    assert predictions_cleanup().rows == 0
    assert Prediction.objects.filter(id=old.id).exists()


def test_the_beat_schedule_entry_runs_the_cleanup_on_a_real_worker(trained_version, celery_worker, broker, tmp_path):
    """Celery beat from the real schedule (its interval shortened through the setting) sends the task; the worker
    deletes the expired prediction and its files."""
    entry = settings.CELERY_BEAT_SCHEDULE["expire-routine-predictions"]
    assert entry["task"] == "inference.predictions_cleanup" and entry["schedule"] <= 600
    old = predicted(trained_version, 1, age=8 * DAY)  # the default retention: API predictions expire after 7 days
    fresh = predicted(trained_version, 2)
    names = files_of(old)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "KENSA_TEST_DATABASE_URL": _database_url(),
        "REDIS_URL": broker.url,
        "KENSA_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "KENSA_RETENTION_INTERVAL_S": "2",
    }
    log = (tmp_path / "beat.log").open("wb")
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "beat", "-l", "info", "-s", str(tmp_path / "schedule")],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: not Prediction.objects.filter(id=old.id).exists(), timeout=60, message="cleanup by beat")
        wait_for(lambda: not any(default_storage.exists(name) for name in names), timeout=20, message="files gone")
    finally:
        beat.terminate()
        beat.wait(20)
        log.close()
    assert Prediction.objects.filter(id=fresh.id).exists()
    assert "inference.predictions_cleanup" in celery_worker.log_text()


def test_owners_see_the_projects_disk_use_by_kind(client, owner, project):
    base = f"projects/{project.public_id}"
    stored_file_write(f"{base}/images/a.png", b"x" * 3000)
    stored_file_write(f"{base}/images/b.png", b"x" * 1000)
    stored_file_write(f"{base}/thumbs/a.jpg", b"x" * 200)
    stored_file_write(f"{base}/runs/r1/config.json", b"x" * 500)
    stored_file_write(f"{base}/runs/r1/predictions/api/p_map.png", b"x" * 70)
    stored_file_write(f"{base}/runs/r1/inputs/abc.png", b"x" * 30)
    use = {row.kind: (row.files, row.bytes) for row in project_disk_use(project=project)}
    assert use == {"Originals": (2, 4000), "Thumbnails": (1, 200), PREDICTIONS: (2, 100), ARTIFACTS: (1, 500)}

    client.force_login(owner)
    page = client.get(reverse("project_settings", args=[project.public_id])).content.decode()
    url = reverse("project_disk_use", args=[project.public_id])
    assert f'hx-get="{url}"' in page
    panel = client.get(url).content.decode()
    assert "Originals" in panel and "3.9\xa0KB" in panel and "Model artifacts" in panel
    assert "Total" in panel and "4.7\xa0KB" in panel  # 4,800 bytes


def test_disk_use_is_for_owners_only(client, project, outsider):
    url = reverse("project_disk_use", args=[project.public_id])
    viewer = make_user("vera")
    Membership.objects.create(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(url).status_code == 403
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    client.logout()
    assert client.get(url).status_code == 302  # to the login page


def test_on_s3_the_cleanup_deletes_the_objects_and_disk_use_counts_the_bucket(transactional_db, project, bucket):
    """The same service against a real S3 endpoint (moto's server, as in test_s3_storage): objects go only after
    the rows' transaction commits; disk use lists the bucket's keys under the project."""
    from webapp.dashboard.synthetic import scored_version_create

    version = scored_version_create(project=project, scores=[0.1, 0.9], labels=[False, True], with_maps=True)
    base = f"{version.artifact_prefix}/predictions/api"

    def stored_prediction(key: str, age: timedelta) -> Prediction:
        row = Prediction.objects.create(
            model_version=version, purpose=Purpose.API, raw_score=0.4, normalised_score=0.4, is_anomalous=False,
            anomaly_map=stored_file_write(f"{base}/{key}_map.png", b"m" * 100),
            predicted_mask=stored_file_write(f"{base}/{key}_mask.png", b"k" * 10),
            input_file=stored_file_write(f"{version.artifact_prefix}/inputs/{key}.png", b"i" * 1000),
        )  # fmt: skip
        backdate(row, age)
        return row

    old, fresh = stored_prediction("old", 8 * DAY), stored_prediction("fresh", DAY)
    before = {row.kind: row.files for row in project_disk_use(project=project)}
    assert before[PREDICTIONS] == 6

    assert predictions_cleanup().rows == 1

    prefix = f"projects/{project.public_id}/"
    keys = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=prefix).get("Contents", [])
    names = {item["Key"] for item in keys}
    assert not names & set(files_of(old)) and set(files_of(fresh)) <= names
    use = {row.kind: (row.files, row.bytes) for row in project_disk_use(project=project)}
    assert use[PREDICTIONS] == (3, 1110)


def test_an_input_sent_again_while_the_cleanup_deletes_it_is_written_back(transactional_db, project, monkeypatch):
    """Inputs are named by their bytes: a camera sending the same part again reuses the file of an expiring row.
    A new row that lands just after the delete gets its file back."""
    from webapp.dashboard.synthetic import scored_version_create
    from webapp.inference import retention

    version = scored_version_create(project=project, scores=[0.1], labels=[False])
    name = stored_file_write(f"{version.artifact_prefix}/inputs/same.png", b"the same part")
    old = Prediction.objects.create(
        model_version=version, purpose=Purpose.API, raw_score=0.1, normalised_score=0.1, is_anomalous=False,
        input_file=name,
    )  # fmt: skip
    backdate(old, 8 * DAY)
    sent_again = []
    delete = retention.stored_files_delete

    def delete_then_a_request_lands(names):
        delete(names)
        sent_again.append(
            Prediction.objects.create(
                model_version=version,
                purpose=Purpose.API,
                raw_score=0.1,
                normalised_score=0.1,
                is_anomalous=False,
                input_file=name,
            )  # fmt: skip
        )

    monkeypatch.setattr(retention, "stored_files_delete", delete_then_a_request_lands)
    assert predictions_cleanup().rows == 1
    assert sent_again and default_storage.exists(name)
    with default_storage.open(name) as handle:
        assert handle.read() == b"the same part"


def test_a_prediction_whose_reused_input_was_just_deleted_writes_it_again(trained_version, monkeypatch):
    """The other order: the predict path found the file, retention deleted it, then the row was inserted."""
    from webapp.inference import services

    first = predicted(trained_version, 1)
    name = first.input_file.name
    store = services._results_store

    def deleted_before_the_insert(**kwargs):
        default_storage.delete(kwargs["input_file"])
        return store(**kwargs)

    monkeypatch.setattr(services, "_results_store", deleted_before_the_insert)
    again = predicted(trained_version, 1)
    assert again.input_file.name == name and default_storage.exists(name)


@pytest.mark.django_db
def test_the_database_indexes_predictions_by_purpose_and_age_for_the_cleanup_sweep():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Prediction._meta.db_table)
    indexed = [c["columns"] for c in constraints.values() if c["index"]]
    assert ["purpose", "created_at"] in indexed
