"""With a real redis-server and a real Celery worker process."""

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from tests.conftest import wait_for
from tests.webapp.conftest import png_bytes
from webapp.images.models import Image, ThumbnailState

pytestmark = pytest.mark.integration


def test_thumbnails_are_made_by_the_worker(client, owner, project, celery_worker):
    # given
    client.force_login(owner)
    files = [SimpleUploadedFile(f"{i}.png", png_bytes(i, size=300, mode=m)) for i, m in enumerate(["RGB", "L", "I;16"])]
    # when
    client.post(reverse("image_upload", args=[project.public_id]), {"files": files})
    # then
    wait_for(
        lambda: not Image.objects.filter(thumbnail_state=ThumbnailState.PENDING).exists(),
        message=f"thumbnails; worker log:\n{celery_worker.log_text()[-2000:]}",
    )
    for image in Image.objects.all():
        assert image.thumbnail_state == ThumbnailState.READY
        with default_storage.open(image.thumbnail.name) as handle:
            thumbnail = PILImage.open(handle)
            assert thumbnail.format == "JPEG" and max(thumbnail.size) == 256
    response = client.get(reverse("image_thumbnail", args=[project.public_id, image.public_id]))
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"


def test_five_hundred_images_in_one_upload(client, owner, project, celery_worker):
    # given 500 distinct small images posted in a single request
    files = [SimpleUploadedFile(f"part_{i:03d}.png", png_bytes(i, size=32)) for i in range(500)]
    client.force_login(owner)
    # when
    response = client.post(reverse("image_upload", args=[project.public_id]), {"files": files})
    # then
    assert response.status_code == 200
    assert response.context["report"].added == 500
    assert Image.objects.filter(project=project).count() == 500
    wait_for(
        lambda: Image.objects.filter(thumbnail_state=ThumbnailState.READY).count() == 500,
        timeout=120,
        message="500 thumbnails",
    )
