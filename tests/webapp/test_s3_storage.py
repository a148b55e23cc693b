"""Media on S3 (KENSA_STORAGE=s3), against a real S3 endpoint: moto's server in its own process on a loopback port,
which django-storages and boto3 talk to over HTTP just as they would to MinIO or AWS (no in-process mocking).

A fleet of web processes and workers on several machines shares media only through the bucket, so every path
that touches a file is run here with the bucket as the default storage, and nothing may land in MEDIA_ROOT."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from django.apps import apps
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import models
from django.test import override_settings
from django.urls import reverse
from PIL import Image as PILImage

from ml.synthetic import make_image
from tests.conftest import REPO, free_port
from tests.webapp.conftest import encode, png_bytes
from webapp.images.models import Annotation, Image, ThumbnailState
from webapp.images.services import image_thumbnail_make
from webapp.projects.services import defect_class_create
from webapp.settings import s3_storage
from webapp.storage import stored_file_write, stored_files_delete, stored_folder_delete

pytestmark = pytest.mark.integration

REGION = "us-east-1"
KEY_ID, SECRET = "kensa-test-key", "kensa-test-secret"  # moto accepts any credentials


class MotoS3Server:
    """`moto.server` (an S3 API over HTTP) on a free 127.0.0.1 port, in a process of its own."""

    def __init__(self, logfile: Path):
        self.port = free_port()
        self.logfile = logfile
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name=REGION,
            config=Config(retries={"max_attempts": 1}),
        )

    def start(self, timeout: float = 30) -> None:
        self.log = self.logfile.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited early:\n{self.logfile.read_text()[-4000:]}")
            try:
                self.client().list_buckets()
                return
            except BotoCoreError:  # not listening yet
                time.sleep(0.1)
        raise RuntimeError(f"moto server not ready in {timeout}s:\n{self.logfile.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@dataclass
class Bucket:
    """The test's bucket, read with a plain boto3 client (never through the app's storage)."""

    name: str
    client: object
    storage: dict  # the STORAGES["default"] entry the app is running with

    def keys(self, prefix: str = "") -> set[str]:
        keys = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            keys.update(item["Key"] for item in page.get("Contents", []))
        return keys

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[MotoS3Server]:
    server = MotoS3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server) -> Iterator[Bucket]:
    """A new bucket, and Django's default storage pointed at it (as KENSA_STORAGE=s3 would) for this test."""
    name = f"kensa-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    storage = s3_storage(
        bucket=name, endpoint_url=s3_server.endpoint_url, access_key=KEY_ID, secret_key=SECRET, region=REGION
    )
    # The setting_changed signal empties Django's storage cache: default_storage, and every FileField that uses
    # it (none names a storage of its own), now resolve to the S3 backend.
    with override_settings(STORAGES={**settings.STORAGES, "default": storage}):
        assert default_storage.bucket_name == name
        file_fields = [f for m in apps.get_models() for f in m._meta.fields if isinstance(f, models.FileField)]
        assert len(file_fields) >= 6 and all(f.storage.bucket_name == name for f in file_fields)
        yield Bucket(name=name, client=client, storage=storage)


def media_root_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def streamed(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def mask_png(mask: np.ndarray) -> bytes:
    """The annotation editor's canvas: an RGBA PNG whose alpha says where the mask is."""
    pixels = np.zeros((*mask.shape, 4), np.uint8)
    pixels[mask] = (255, 0, 0, 255)
    return encode(pixels, "PNG")


def rect_mask(image: Image, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((image.height, image.width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def upload(client, project, files: dict[str, bytes]):
    response = client.post(
        reverse("image_upload", args=[project.public_id]),
        {"files": [SimpleUploadedFile(name, data) for name, data in files.items()]},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert f'data-added="{len(files)}"' in response.content.decode()
    return {image.original_name: image for image in Image.objects.filter(project=project)}


def save_mask(client, project, image: Image, version: int, class_id: int, mask: np.ndarray):
    return client.post(
        reverse("annotation_save", args=[project.public_id, image.public_id]),
        {
            "version": version,
            "label": "defect",
            "class_ids": str(class_id),
            f"boxes_{class_id}": json.dumps([]),
            f"mask_{class_id}": SimpleUploadedFile("mask.png", mask_png(mask), "image/png"),
        },
    )


@pytest.mark.django_db
def test_uploads_and_thumbnails_are_stored_in_the_bucket_and_served_from_it(client, owner, project, bucket):
    # given three images uploaded through the upload view
    files = {
        "a.png": png_bytes(1, size=300),
        "b.png": png_bytes(2, mode="I;16"),
        "c.jpg": encode(make_image(3, size=80).image, "JPEG", quality=90),
    }
    client.force_login(owner)
    images = upload(client, project, files)
    # then the originals are in the bucket byte for byte, under the names the rows hold
    assert bucket.keys() == {image.file.name for image in images.values()}
    for name, image in images.items():
        assert image.file.name.startswith(f"projects/{project.public_id}/images/")
        assert bucket.read(image.file.name) == files[name]

    # when thumbnails are made (what the worker's task calls)
    for image in images.values():
        image_thumbnail_make(image=image)
    # then they are in the bucket too
    thumbnails = {}
    for name, image in images.items():
        image.refresh_from_db()
        assert image.thumbnail_state == ThumbnailState.READY
        assert image.thumbnail.name in bucket.keys(f"projects/{project.public_id}/thumbs/")
        thumbnails[name] = bucket.read(image.thumbnail.name)
        with PILImage.open(io.BytesIO(thumbnails[name])) as picture:
            assert picture.format == "JPEG" and max(picture.size) <= 256

    # and the views serve exactly the stored bytes
    for name, image in images.items():
        original = client.get(reverse("image_original", args=[project.public_id, image.public_id]))
        assert original.status_code == 200
        assert original["Content-Type"] == ("image/jpeg" if name.endswith(".jpg") else "image/png")
        assert streamed(original) == files[name]
        thumbnail = client.get(reverse("image_thumbnail", args=[project.public_id, image.public_id]))
        assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/jpeg"
        assert streamed(thumbnail) == thumbnails[name]
    # and an object missing from the bucket is a 404, not a server error
    gone = images["a.png"]
    bucket.client.delete_object(Bucket=bucket.name, Key=gone.file.name)
    assert client.get(reverse("image_original", args=[project.public_id, gone.public_id])).status_code == 404
    assert media_root_files() == []


@pytest.mark.django_db
def test_annotation_masks_are_saved_to_the_bucket_served_and_replaced(
    client, owner, project, bucket, django_capture_on_commit_callbacks
):
    # given an uploaded image and a defect class
    client.force_login(owner)
    image = upload(client, project, {"part.png": png_bytes(5, size=64)})["part.png"]
    scratch = defect_class_create(project=project, name="scratch", colour="#ff0000")

    # when a person draws a mask in the editor and saves
    first = save_mask(client, project, image, 0, scratch.id, rect_mask(image, 3, 4, 20, 30))
    # then the mask is a PNG in the bucket
    assert first.status_code == 200, first.content
    annotation = Annotation.objects.get(image=image)
    masks = bucket.keys(f"projects/{project.public_id}/masks/")
    assert masks == {annotation.mask.name}
    stored = bucket.read(annotation.mask.name)
    with PILImage.open(io.BytesIO(stored)) as picture:
        assert np.array_equal(np.asarray(picture) == 255, rect_mask(image, 3, 4, 20, 30))
    # and the mask view serves those bytes
    served = client.get(reverse("annotation_mask", args=[project.public_id, annotation.id]))
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert streamed(served) == stored

    # when the mask is redrawn, the new version replaces the old object once the save has committed
    with django_capture_on_commit_callbacks(execute=True):
        second = save_mask(client, project, image, 1, scratch.id, rect_mask(image, 40, 40, 60, 60))
    assert second.status_code == 200, second.content
    annotation.refresh_from_db()
    assert annotation.mask.name != next(iter(masks))
    assert bucket.keys(f"projects/{project.public_id}/masks/") == {annotation.mask.name}
    assert media_root_files() == []


@pytest.mark.django_db
def test_deleting_images_and_the_project_removes_their_objects(
    client, owner, project, bucket, django_capture_on_commit_callbacks
):
    # given three uploaded images with thumbnails, one of them with a mask
    client.force_login(owner)
    images = upload(client, project, {f"{i}.png": png_bytes(10 + i) for i in range(3)})
    for image in images.values():
        image_thumbnail_make(image=image)
    doomed = Image.objects.get(id=images["0.png"].id)
    scratch = defect_class_create(project=project, name="scratch", colour="#ff0000")
    assert save_mask(client, project, doomed, 0, scratch.id, rect_mask(doomed, 1, 1, 9, 9)).status_code == 200
    mask_name = Annotation.objects.get(image=doomed).mask.name
    doomed_names = {doomed.file.name, doomed.thumbnail.name, mask_name}
    assert doomed_names <= bucket.keys() and len(bucket.keys()) == 7  # 3 originals, 3 thumbnails, 1 mask

    # when one image is deleted through the grid's bulk action
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("image_bulk", args=[project.public_id]), {"action": "delete", "image_ids": [doomed.id]})
    # then its original, thumbnail and mask are gone from the bucket, and the others are still there
    assert not Image.objects.filter(id=doomed.id).exists()
    assert bucket.keys().isdisjoint(doomed_names) and len(bucket.keys()) == 4

    # when the project is deleted
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("project_delete", args=[project.public_id]), {"confirm_name": project.name})
    assert response.status_code == 302
    # then nothing of it is left in the bucket
    assert bucket.keys() == set()
    assert media_root_files() == []


def test_training_and_prediction_read_and_write_the_bucket(client, transactional_db, owner, bucket):
    from webapp.inference.services import predict_bytes
    from webapp.projects.services import project_delete
    from webapp.samples import sample_project_create
    from webapp.training import services
    from webapp.training.execution import training_run_execute
    from webapp.training.models import ModelVersion, RunStatus

    # given a small sample project stored in the bucket
    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=96)
    prefix = f"projects/{project.public_id}"
    assert len(bucket.keys(f"{prefix}/images/")) == 39 and len(bucket.keys(f"{prefix}/masks/")) == 9

    # when a model is trained (originals and masks read from the bucket, artifacts written to it)
    run = services.training_run_request(project=project, requested_by=owner, family="gaussian", image_size=128)
    assert services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    version = ModelVersion.objects.get(run=run)
    # then the model's files are in the bucket under the run's folder
    assert version.artifact_prefix == f"{prefix}/runs/{run.public_id}"
    assert bucket.keys(f"{version.artifact_prefix}/model/") == {
        f"{version.artifact_prefix}/model/{name}" for name in version.artifact_files
    }
    assert "config.json" in version.artifact_files

    # when an image is predicted
    data = png_bytes(99, size=96, defect="scratch")
    result = predict_bytes(version=version, data=data, purpose="trial", name="probe.png")
    prediction = result.prediction
    # then its input, anomaly map and predicted mask are in the bucket
    predicted = {prediction.input_file.name, prediction.anomaly_map.name, prediction.predicted_mask.name}
    assert all(predicted) and predicted <= bucket.keys(version.artifact_prefix)
    assert bucket.read(prediction.input_file.name) == data
    assert prediction.input_name == "probe.png" and np.isfinite(prediction.raw_score)
    # and the dashboard serves the input and draws the heatmap from them
    client.force_login(owner)
    served = client.get(reverse("prediction_input", args=[project.public_id, prediction.id]))
    assert served.status_code == 200 and streamed(served) == data
    heatmap = client.get(reverse("prediction_heatmap", args=[project.public_id, prediction.id]))
    assert heatmap.status_code == 200 and heatmap.content.startswith(b"\x89PNG")

    # when the project is deleted, every object under it goes (transactional_db: on_commit runs at once)
    project_delete(project=project)
    assert bucket.keys() == set()
    assert media_root_files() == []


def test_deleting_stored_files_during_an_outage_logs_and_does_not_raise(bucket, caplog):
    """Deletions run after a commit (the rows are already gone): an unreachable endpoint must not turn the
    request into an error, nor the cleanup of a failed run hide why it failed."""
    # given the storage pointed at an S3 endpoint nobody listens on
    options = {**bucket.storage["OPTIONS"], "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    options["client_config"] = Config(retries={"max_attempts": 1}, connect_timeout=2)
    with override_settings(STORAGES={**settings.STORAGES, "default": {**bucket.storage, "OPTIONS": options}}):
        # when files and a folder are deleted
        stored_files_delete(["projects/x/images/a.png"])
        stored_folder_delete("projects/x")
    # then each failure is logged
    assert "could not delete stored file projects/x/images/a.png" in caplog.text
    assert "could not delete stored folder projects/x" in caplog.text
    with pytest.raises(ValueError):
        stored_folder_delete("/")  # never the whole bucket


def test_a_process_configured_by_the_environment_uses_the_bucket(s3_server, bucket, tmp_path):
    """What a worker on another machine runs: webapp.settings itself, configured by KENSA_STORAGE=s3 and the
    KENSA_S3_* variables, reading a file the test process wrote and writing one it then reads."""
    name = stored_file_write("projects/shared/images/from-web.png", b"written by the web process")
    script = (
        "import django, json; django.setup();"
        "from django.conf import settings;"
        "from webapp.storage import stored_file_read, stored_file_write;"
        "print(json.dumps({'storage': settings.STORAGES['default'],"
        f" 'read': stored_file_read({name!r}).decode(),"
        " 'wrote': stored_file_write('projects/shared/images/from-worker.png', b'written by a worker')}))"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KENSA_", "DJANGO_", "AWS_")) and key != "DATABASE_URL"
    }
    env.update(
        DJANGO_SETTINGS_MODULE="webapp.settings",
        KENSA_SECRET_KEY="test-only-secret-key",
        KENSA_MEDIA_ROOT=str(tmp_path / "worker-media"),
        KENSA_DATA_DIR=str(tmp_path / "worker-data"),
        KENSA_STORAGE="s3",
        KENSA_S3_BUCKET=bucket.name,
        KENSA_S3_ENDPOINT_URL=s3_server.endpoint_url,
        KENSA_S3_ACCESS_KEY_ID=KEY_ID,
        KENSA_S3_SECRET_ACCESS_KEY=SECRET,
        KENSA_S3_REGION=REGION,
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["storage"] == bucket.storage
    assert answer["read"] == "written by the web process"
    assert bucket.read(answer["wrote"]) == b"written by a worker"
    assert not (tmp_path / "worker-media").exists()


def test_s3_without_a_bucket_stops_start_up():
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KENSA_", "DJANGO_"))}
    env.update(KENSA_SECRET_KEY="test-only-secret-key", KENSA_STORAGE="s3")
    done = subprocess.run(
        [sys.executable, "-c", "import webapp.settings"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "KENSA_STORAGE=s3 needs KENSA_S3_BUCKET" in done.stderr
