"""The Train page says before training what the splits mean and fixes an empty validation split: a stratified,
seeded, undoable move of test images into validation; and it says where the outlined defects are."""

from __future__ import annotations

import re
from collections import Counter
from html import escape

import pytest
from django.urls import reverse

from tests.webapp.conftest import make_user
from webapp.audit.models import AuditAction, AuditEntry
from webapp.images.models import Image, Label, Split
from webapp.projects.models import Membership, Role
from webapp.samples import sample_project_create
from webapp.training import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def mvtec_like(owner):
    """Like an MVTec import: good images in train, good and every defect in test, nothing in validation."""
    project = sample_project_create(owner=owner, n_good=40, n_defect=30, size=64)
    images = Image.objects.filter(project=project)
    images.filter(label=Label.DEFECT).update(split=Split.TEST, split_is_automatic=False)
    images.filter(label=Label.GOOD, split=Split.VALIDATION).update(split=Split.TEST, split_is_automatic=False)
    return project


def kinds(project, split: str) -> Counter:
    """(label, defect classes) -> count of the split's images."""
    images = Image.objects.filter(project=project, split=split).prefetch_related("annotations__defect_class")
    return Counter((i.label, tuple(sorted(a.defect_class.name for a in i.annotations.all()))) for i in images)


def split_row(page: str, split: str) -> list[str]:
    row = re.search(rf'<tr id="split-{split}">(.*?)</tr>', page, re.S).group(1)
    return re.findall(r"<td[^>]*>([^<]*)</td>", row)


def test_the_train_page_says_what_the_splits_mean_and_what_an_empty_validation_costs(client, owner, mvtec_like):
    client.force_login(owner)
    page = client.get(reverse("train", args=[mvtec_like.public_id])).text
    test = kinds(mvtec_like, Split.TEST)
    good_test = sum(n for (label, _), n in test.items() if label == Label.GOOD)
    # per split: good, defect, outlined defects, unlabelled, and what it is for
    assert split_row(page, "validation")[:4] == ["0", "0", "0", "0"]
    assert split_row(page, "test")[:3] == [str(good_test), "30", "30"]
    assert (
        escape(services.SPLIT_PURPOSES[Split.VALIDATION]) in page
        and escape(services.SPLIT_PURPOSES[Split.TEST]) in page
    )
    # before training: what the empty validation split will do, and the way to fix it
    n_train_good = Image.objects.filter(project=mvtec_like, split=Split.TRAIN, label=Label.GOOD).count()
    # (PatchCore sets its threshold from its own training images, each without its own patches: none is lost)
    assert escape(services.EMPTY_VALIDATION_SELF_CALIBRATED) in page and n_train_good == 28
    assert 'id="fill-validation"' in page
    # the outlines are all in test: the page says so instead of only "fewer than 10 outlined defects"
    assert "You have 30 outlined defects, all in test." in page
    assert "now it has 0." in page


def test_moving_a_share_of_test_into_validation_is_stratified_seeded_and_undoable(client, owner, mvtec_like):
    client.force_login(owner)
    before = {i.id: (i.split, i.split_is_automatic) for i in Image.objects.filter(project=mvtec_like)}
    test_before = kinds(mvtec_like, Split.TEST)
    # when the owner presses the button
    response = client.post(reverse("validation_fill", args=[mvtec_like.public_id]), follow=True)
    # then about a third of every kind (label and defect class) moved, and each kind stays in test too
    validation = kinds(mvtec_like, Split.VALIDATION)
    assert set(validation) == set(test_before)
    for kind, n in test_before.items():
        assert validation[kind] == min(n - 1, max(1, round(n / 3))), kind
    moved = Image.objects.filter(project=mvtec_like, split=Split.VALIDATION)
    good, defect = moved.filter(label=Label.GOOD).count(), moved.filter(label=Label.DEFECT).count()
    assert f"Moved {good + defect} test images into validation ({good} good, {defect} defect: " in response.text
    assert "(seed 0)" in response.text
    assert not moved.filter(split_is_automatic=True).exists()  # a person's choice now: rebalancing leaves them
    # and it is a split change in the audit log, which the page shows with its undo
    entry = AuditEntry.objects.get(project=mvtec_like, action=AuditAction.SPLIT)
    assert entry.user == owner and entry.before == {"split": {"test": good + defect}}
    assert services.EMPTY_VALIDATION_SELF_CALIBRATED.split(".")[0] not in response.text
    assert 'id="undo-split-change"' in response.text
    # the pick is seeded: the same images on the same data
    picked = set(moved.values_list("id", flat=True))
    response = client.post(reverse("split_change_undo", args=[mvtec_like.public_id, entry.id]), follow=True)
    assert services.MOVE_UNDONE.format(n=good + defect) in response.text
    assert {i.id: (i.split, i.split_is_automatic) for i in Image.objects.filter(project=mvtec_like)} == before
    again = services.validation_split_fill(project=mvtec_like, user=owner)
    assert set(Image.objects.filter(project=mvtec_like, split=Split.VALIDATION).values_list("id", flat=True)) == picked
    assert again.good == good and again.defect == defect
    # undoing twice says so
    response = client.post(reverse("split_change_undo", args=[mvtec_like.public_id, entry.id]), follow=True)
    assert "This change was undone already." in response.text


def test_undo_leaves_images_moved_again_since(owner, mvtec_like):
    fill = services.validation_split_fill(project=mvtec_like, user=owner)
    moved = list(Image.objects.filter(project=mvtec_like, split=Split.VALIDATION))
    Image.objects.filter(id=moved[0].id).update(split=Split.TRAIN)
    message = services.split_change_undo(project=mvtec_like, entry_id=fill.entry.id, user=owner)
    assert message == services.MOVE_UNDONE.format(n=len(moved) - 1) + services.MOVE_UNDONE_PARTLY.format(kept=1)
    assert Image.objects.get(id=moved[0].id).split == Split.TRAIN


def test_a_viewer_cannot_move_splits(client, mvtec_like):
    viewer = make_user("vera")
    Membership.objects.create(project=mvtec_like, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    page = client.get(reverse("train", args=[mvtec_like.public_id])).text
    assert 'id="fill-validation"' not in page
    assert client.post(reverse("validation_fill", args=[mvtec_like.public_id])).status_code == 403
    assert not Image.objects.filter(project=mvtec_like, split=Split.VALIDATION).exists()
