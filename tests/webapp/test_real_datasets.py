"""Slow tests on the real MVTec AD screw category in ../shared/datasets (evaluation data, never shipped)."""

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from tests.conftest import wait_for
from webapp.images.models import Annotation, Image, Label, Split, ThumbnailState
from webapp.projects.models import Project

SCREW = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mvtec_screw"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SCREW.is_dir(), reason="the shared MVTec screw dataset is not beside the checkout"),
]


def assert_screw_imported(project: Project) -> None:
    images = Image.objects.filter(project=project)
    assert images.count() == 464
    assert images.filter(label=Label.GOOD, split=Split.TRAIN).count() == 320
    assert images.filter(label=Label.GOOD, split=Split.TEST).count() == 41
    assert images.filter(label=Label.DEFECT, split=Split.TEST).count() == 103
    assert Annotation.objects.filter(image__project=project).exclude(mask="").count() == 103
    assert project.defect_classes.count() == 5


def test_screw_zip_upload_with_thumbnails(client, owner, project, celery_worker):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(SCREW.rglob("*")):
            if path.is_file():
                archive.write(path, f"mvtec_screw/{path.relative_to(SCREW)}")
    client.force_login(owner)
    response = client.post(
        reverse("image_upload", args=[project.public_id]),
        {"files": [SimpleUploadedFile("mvtec_screw.zip", buffer.getvalue())]},
    )
    assert response.status_code == 200
    assert_screw_imported(project)
    wait_for(
        lambda: not Image.objects.exclude(thumbnail_state=ThumbnailState.READY).exists(),
        timeout=300,
        message="464 thumbnails",
    )


def test_screw_import_folder_command(owner):
    call_command("import_folder", str(SCREW), project="Screw", owner="olivia")
    assert_screw_imported(Project.objects.get(name="Screw"))
