import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.webapp.conftest import png_bytes
from webapp.images.intake.ingest import uploads_ingest
from webapp.images.models import Image, Label, Split


@pytest.fixture
def images(project, owner):
    uploads_ingest(
        project=project, user=owner, uploads=[SimpleUploadedFile(f"{i}.png", png_bytes(i)) for i in range(4)]
    )
    return list(Image.objects.filter(project=project).order_by("id"))


@pytest.mark.django_db
def test_upload_view_reports_each_file(client, owner, project):
    client.force_login(owner)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train/good/z.png", png_bytes(9))
    response = client.post(
        reverse("image_upload", args=[project.public_id]),
        {
            "files": [
                SimpleUploadedFile("a.png", png_bytes(1)),
                SimpleUploadedFile("bad.png", b"nope"),
                SimpleUploadedFile("set.zip", archive.getvalue()),
            ]
        },
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-added="2"' in html and 'data-rejected="1"' in html
    assert "not an image Kensa can read" in html
    assert Image.objects.get(original_name="z.png").label == Label.GOOD


@pytest.mark.django_db
def test_bulk_actions_label_move_and_delete(client, owner, project, images):
    client.force_login(owner)
    url = reverse("image_bulk", args=[project.public_id])
    ids = [images[0].id, images[1].id]
    client.post(url, {"action": "label_defect", "image_ids": ids})
    assert set(Image.objects.filter(id__in=ids).values_list("label", flat=True)) == {Label.DEFECT}
    client.post(url, {"action": "split_test", "image_ids": ids})
    moved = Image.objects.filter(id__in=ids)
    assert set(moved.values_list("split", flat=True)) == {Split.TEST}
    assert not any(moved.values_list("split_is_automatic", flat=True))
    client.post(url, {"action": "delete", "image_ids": [images[2].id]})
    assert not Image.objects.filter(id=images[2].id).exists()


@pytest.mark.django_db
def test_bulk_actions_cannot_touch_another_projects_images(client, owner, project, images, outsider):
    from webapp.projects.services import project_create

    other = project_create(name="Other", owner=outsider)
    uploads_ingest(project=other, user=outsider, uploads=[SimpleUploadedFile("x.png", png_bytes(50))])
    foreign = Image.objects.get(project=other)
    client.force_login(owner)
    client.post(reverse("image_bulk", args=[project.public_id]), {"action": "delete", "image_ids": [foreign.id]})
    assert Image.objects.filter(id=foreign.id).exists()


@pytest.mark.django_db
def test_grid_filters_and_pagination(client, owner, project, images):
    client.force_login(owner)
    Image.objects.filter(id=images[0].id).update(label=Label.GOOD)
    url = reverse("image_grid", args=[project.public_id])
    assert client.get(url, {"label": "good"}).context["page"].paginator.count == 1
    assert client.get(url, {"label": "unlabelled"}).context["page"].paginator.count == 3
    assert client.get(url, {"has_mask": "yes"}).context["page"].paginator.count == 0
    partial = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="grid")
    assert "<html" not in partial.content.decode() and 'id="grid-body"' in partial.content.decode()


@pytest.mark.django_db
def test_image_detail_sets_label_and_split(client, owner, project, images):
    client.force_login(owner)
    image = images[0]
    url = reverse("image_detail", args=[project.public_id, image.public_id])
    assert client.get(url).status_code == 200
    client.post(url, {"label": "good", "split": "validation"})
    image.refresh_from_db()
    assert (image.label, image.split, image.split_is_automatic) == ("good", "validation", False)


@pytest.mark.django_db
def test_originals_are_served_as_images_only(client, owner, project, images):
    client.force_login(owner)
    response = client.get(reverse("image_original", args=[project.public_id, images[0].public_id]))
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == png_bytes(0)
    # no thumbnail yet (no worker ran): a clear 404 rather than a broken file
    missing = client.get(reverse("image_thumbnail", args=[project.public_id, images[0].public_id]))
    assert missing.status_code == 404


@pytest.mark.django_db
def test_sample_project(client, owner):
    client.force_login(owner)
    response = client.post(reverse("sample_create"))
    assert response.status_code == 302
    from webapp.projects.models import Project

    project = Project.objects.get()
    assert project.images.filter(label=Label.GOOD).count() == 80
    assert project.images.filter(label=Label.DEFECT).count() == 30
    assert project.images.filter(annotations__isnull=False).distinct().count() == 30
    assert sorted(project.defect_classes.values_list("name", flat=True)) == ["dent", "scratch", "stain"]
    # stratified automatic splits: both labels in every split
    for split in Split.values:
        for label in (Label.GOOD, Label.DEFECT):
            assert project.images.filter(split=split, label=label).exists()
