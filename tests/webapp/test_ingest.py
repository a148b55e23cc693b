import io
import zipfile

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from ml.synthetic import make_image
from tests.webapp.conftest import encode, png_bytes
from webapp.images.intake.ingest import ADDED, DUPLICATE, REJECTED, folder_ingest, uploads_ingest
from webapp.images.models import Annotation, Image, Label, Split
from webapp.images.services import annotation_mask_png


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def mvtec_zip(root: str = "part") -> tuple[bytes, dict]:
    """A small archive in MVTec AD layout: 6 train good, 2 test good, 3 defects (2 with masks)."""
    buffer = io.BytesIO()
    masks = {}
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(6):
            archive.writestr(f"{root}/train/good/{i:03d}.png", png_bytes(i))
        for i in range(2):
            archive.writestr(f"{root}/test/good/{i:03d}.png", png_bytes(100 + i))
        for i, kind in enumerate(["scratch", "scratch", "dent"]):
            part = make_image(200 + i, size=64, defect=kind)
            archive.writestr(f"{root}/test/{kind}/{i:03d}.png", encode(part.image, "PNG"))
            if i < 2:
                archive.writestr(f"{root}/ground_truth/{kind}/{i:03d}_mask.png", annotation_mask_png(part.mask))
                masks[f"{kind}/{i:03d}"] = part.mask
        archive.writestr(f"{root}/readme.txt", b"not an image")
    return buffer.getvalue(), masks


@pytest.mark.django_db
def test_files_are_stored_unchanged_and_deduplicated(project, owner):
    # given two distinct images, one sent twice
    first, second = png_bytes(1), png_bytes(2, mode="L")
    # when
    report = uploads_ingest(
        project=project,
        user=owner,
        uploads=[upload("a.png", first), upload("b.png", second), upload("a-again.png", first)],
    )
    # then
    assert [r.status for r in report.results] == [ADDED, ADDED, DUPLICATE]
    assert "same content as a.png" in report.results[2].message
    stored = Image.objects.get(original_name="a.png")
    assert default_storage.open(stored.file.name).read() == first
    assert stored.file.name.endswith(f"{stored.sha256}.png")
    assert (stored.width, stored.height, stored.label) == (64, 64, Label.UNLABELLED)
    assert Image.objects.filter(project=project).count() == 2


@pytest.mark.django_db
def test_one_bad_file_never_sinks_the_batch(project, owner):
    # given a mix of good and bad files
    good = png_bytes(5)
    truncated = encode(np.random.default_rng(1).integers(0, 255, (80, 80, 3), dtype=np.uint8), "PNG")[:300]
    uploads = [
        upload("good.png", good),
        upload("empty.png", b""),
        upload("text.png", b"just text"),
        upload("half.png", truncated),
        upload("page.html", b"<html><script>alert(1)</script></html>"),
    ]
    # when
    report = uploads_ingest(project=project, user=owner, uploads=uploads)
    # then
    statuses = {r.name: r.status for r in report.results}
    assert statuses == {
        "good.png": ADDED,
        "empty.png": REJECTED,
        "text.png": REJECTED,
        "half.png": REJECTED,
        "page.html": REJECTED,
    }
    assert all(r.message for r in report.results if r.status == REJECTED)
    assert list(Image.objects.values_list("original_name", flat=True)) == ["good.png"]
    stored_files = default_storage.listdir(f"projects/{project.public_id}/images")[1]
    assert len(stored_files) == 1


@pytest.mark.django_db
def test_mvtec_zip_brings_labels_splits_classes_and_masks(project, owner):
    # given
    data, masks = mvtec_zip()
    # when
    report = uploads_ingest(project=project, user=owner, uploads=[upload("part.zip", data)])
    # then
    assert report.added == 11
    assert [r.name for r in report.results if r.status == REJECTED] == ["part.zip:part/readme.txt"]
    images = Image.objects.filter(project=project)
    assert images.filter(label=Label.GOOD, split=Split.TRAIN).count() == 6
    assert images.filter(label=Label.GOOD, split=Split.TEST).count() == 2
    assert images.filter(label=Label.DEFECT, split=Split.TEST).count() == 3
    assert not images.filter(split_is_automatic=True).exists()
    assert sorted(project.defect_classes.values_list("name", flat=True)) == ["dent", "scratch"]
    annotations = Annotation.objects.filter(image__project=project).select_related("image", "defect_class")
    assert annotations.count() == 2
    for annotation in annotations:
        stored = np.asarray(PILImage.open(default_storage.open(annotation.mask.name)))
        key = f"{annotation.defect_class.name}/{annotation.image.original_name[:3]}"
        assert set(np.unique(stored)) <= {0, 255}
        assert np.array_equal(stored == 255, masks[key])
        assert annotation.source == "import" and annotation.author == owner


@pytest.mark.django_db
def test_mask_of_the_wrong_size_is_ignored_with_a_note(project, owner):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("test/crack/000.png", png_bytes(1))
        archive.writestr("ground_truth/crack/000_mask.png", annotation_mask_png(np.ones((10, 10), bool)))
    report = uploads_ingest(project=project, user=owner, uploads=[upload("x.zip", buffer.getvalue())])
    assert report.added == 1
    assert "mask is 10x10 while the image is 64x64" in report.results[0].message
    assert not Annotation.objects.exists()


@pytest.mark.django_db
def test_path_escapes_in_a_zip_write_nothing_outside(project, owner, tmp_path, settings):
    # given
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../outside.png", png_bytes(1))
        archive.writestr("inside.png", png_bytes(2))
    # when
    report = uploads_ingest(project=project, user=owner, uploads=[upload("x.zip", buffer.getvalue())])
    # then
    assert {r.name.split(":")[1]: r.status for r in report.results} == {
        "../../outside.png": REJECTED,
        "inside.png": ADDED,
    }
    assert not list(tmp_path.parent.rglob("outside.png"))
    assert all("outside" not in name for name in Image.objects.values_list("file", flat=True))


@pytest.mark.django_db
def test_automatic_splits_are_stratified_per_label(project, owner):
    # given 40 images, 20 labelled good by their folder
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(20):
            archive.writestr(f"loose/{i}.png", png_bytes(i))
    uploads_ingest(project=project, user=owner, uploads=[upload("loose.zip", buffer.getvalue())])
    # then 70 / 15 / 15 within one image
    counts = {s: Image.objects.filter(split=s).count() for s in Split.values}
    assert counts == {"train": 14, "validation": 3, "test": 3}


@pytest.mark.django_db
def test_server_folder_import_skips_links(project, owner, tmp_path):
    root = tmp_path / "dataset"
    (root / "train" / "good").mkdir(parents=True)
    (root / "train" / "good" / "a.png").write_bytes(png_bytes(1))
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(2))
    (root / "train" / "good" / "link.png").symlink_to(secret)
    report = folder_ingest(project=project, user=owner, root=root)
    assert [r.name for r in report.results] == ["train/good/a.png"]
    assert Image.objects.get().label == Label.GOOD
