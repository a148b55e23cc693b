"""PatchCore's tiling is a visible Train setting: automatic for large images (from the smallest outlined box),
off or a working size when asked, stored in the run's config (issue 16)."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from webapp.images.models import Annotation, Image, Label
from webapp.projects.models import DefectClass
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.models import TrainingRun

SMALL = {"n_good": 30, "n_defect": 9, "size": 96}


def _as_camera_frames(project, width=2448, height=2048):
    """Records the project's images as 5 MP frames (the service reads sizes from the rows, not the pixels)."""
    Image.objects.filter(project=project).update(width=width, height=height)


@pytest.mark.django_db
def test_train_page_offers_tiling(client, owner):
    project = sample_project_create(owner=owner, **SMALL)
    client.force_login(owner)
    page = client.get(reverse("train", args=[project.public_id])).content.decode()
    assert 'name="tiling"' in page
    assert "Tiles, image brought to 2048 px" in page and "Off: whole image resized" in page


@pytest.mark.django_db
def test_small_images_are_not_tiled_and_large_ones_are_automatically(owner):
    # given: 96 px images, then the same project's images recorded as 2448 x 2048 frames
    small = sample_project_create(owner=owner, **SMALL)
    large = sample_project_create(owner=owner, **SMALL)
    _as_camera_frames(large)
    # when
    small_run = services.training_run_request(project=small, requested_by=owner, family="patchcore")
    large_run = services.training_run_request(project=large, requested_by=owner, family="patchcore")
    # then
    assert "tile_working_size" not in small_run.config
    assert large_run.config["tile_working_size"] == 1024


@pytest.mark.django_db
def test_the_smallest_outlined_box_sets_the_working_scale(owner):
    # given: large frames and a 24 px box: half scale keeps it 12 px, so the working size must be at least 1224
    project = sample_project_create(owner=owner, **SMALL)
    _as_camera_frames(project)
    defect = Image.objects.filter(project=project, label=Label.DEFECT).first()
    Annotation.objects.filter(image__project=project).update(boxes=[])  # only this box counts
    Annotation.objects.create(
        image=defect, defect_class=DefectClass.objects.filter(project=project).first(), boxes=[[100, 100, 124, 140]]
    )
    # when
    run = services.training_run_request(project=project, requested_by=owner, family="patchcore")
    # then
    assert run.config["tile_working_size"] == 1536


@pytest.mark.django_db
def test_tiling_off_or_a_size_when_asked_and_a_bad_value_is_refused(client, owner):
    project = sample_project_create(owner=owner, **SMALL)
    _as_camera_frames(project)
    client.force_login(owner)
    client.post(reverse("train", args=[project.public_id]), {"family": "patchcore", "tiling": "0"})
    client.post(reverse("train", args=[project.public_id]), {"family": "patchcore", "tiling": "2048"})
    configs = [run.config for run in TrainingRun.objects.filter(project=project).order_by("id")]
    assert "tile_working_size" not in configs[0]
    assert configs[1]["tile_working_size"] == 2048
    with pytest.raises(ValidationError, match="Tiling must be one of 0, 1024, 1536, 2048, 4096"):
        services.training_run_request(project=project, requested_by=owner, family="patchcore", tiling=999)
