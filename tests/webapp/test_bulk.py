"""Bulk changes to images: across all pages of a filter (with the count checked), label, split and defect class,
each undone back to exactly the previous values; the audit log records them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from webapp.audit.models import AuditAction, AuditEntry
from webapp.images import bulk
from webapp.images.models import Annotation, Image, Label, Split
from webapp.images.views import FILTER_MOVED
from webapp.projects.models import Role
from webapp.projects.services import defect_class_create


def make_images(project, owner, n: int, *, label: str = Label.UNLABELLED, split: str = Split.TRAIN, start: int = 0):
    """Image rows without files: bulk changes only touch rows."""
    return [
        Image.objects.create(
            project=project,
            sha256=f"{start + i:064x}",
            file=f"x/{start + i}.png",
            original_name=f"part-{start + i:03d}.png",
            format="PNG",
            mode="RGB",
            width=8,
            height=8,
            size_bytes=1,
            label=label,
            split=split,
            thumbnail_state="failed",
            uploaded_by=owner,
        )
        for i in range(n)
    ]


def state(project) -> dict[int, tuple]:
    return {
        i.id: (i.label, i.split, i.split_is_automatic)
        for i in Image.objects.filter(project=project).only("label", "split", "split_is_automatic")
    }


@pytest.mark.django_db
def test_filter_scope_changes_every_matching_image_on_all_pages_and_undo_restores_them(client, owner, project):
    # given 70 unlabelled (more than a page of 60), 5 good, 3 defect in test with a fixed split
    make_images(project, owner, 70)
    make_images(project, owner, 5, label=Label.GOOD, start=100)
    fixed = make_images(project, owner, 3, label=Label.DEFECT, split=Split.TEST, start=200)
    Image.objects.filter(id__in=[i.id for i in fixed]).update(split_is_automatic=False)
    before = state(project)
    client.force_login(owner)
    url = reverse("image_bulk", args=[project.public_id])
    # the grid offers "apply to all 70 matching this filter"
    grid = client.get(reverse("image_grid", args=[project.public_id]), {"label": "unlabelled"})
    assert "Apply to all 70 matching this filter" in grid.content.decode()
    # when every unlabelled image is marked defect through the filter
    response = client.post(
        url, {"action": "label_defect", "scope": "filter", "query": "label=unlabelled", "expected_count": "70"}
    )
    # then all 70 changed, on both pages, and nothing else did
    assert response.status_code == 302
    after = state(project)
    assert sum(1 for i in after if after[i][0] != before[i][0]) == 70
    assert Image.objects.filter(project=project, label=Label.DEFECT).count() == 73
    assert Image.objects.filter(project=project, label=Label.GOOD).count() == 5
    entry = AuditEntry.objects.get(project=project, action=AuditAction.LABEL)
    assert entry.before == {"label": {"unlabelled": 70}} and entry.after == {"label": "defect"}
    assert entry.user == owner and entry.target == "70 images"
    # and the grid offers the undo, which restores exactly the previous labels
    page = client.get(reverse("image_grid", args=[project.public_id]))
    assert page.context["undo"]["entry"] == entry.id
    client.post(reverse("image_bulk_undo", args=[project.public_id]), {"entry": entry.id})
    assert state(project) == before
    entry.refresh_from_db()
    assert entry.undone_at is not None
    assert AuditEntry.objects.filter(project=project, action=AuditAction.UNDO).count() == 1
    assert client.get(reverse("image_grid", args=[project.public_id])).context["undo"] is None


@pytest.mark.django_db
def test_filter_scope_is_refused_when_the_filter_matches_a_different_number(client, owner, project):
    make_images(project, owner, 4)
    client.force_login(owner)
    response = client.post(
        reverse("image_bulk", args=[project.public_id]),
        {"action": "label_good", "scope": "filter", "query": "", "expected_count": "3"},
        follow=True,
    )
    assert FILTER_MOVED.format(now=4, expected=3) in [str(m) for m in response.context["messages"]]
    assert not Image.objects.filter(project=project, label=Label.GOOD).exists()


@pytest.mark.django_db
def test_split_change_and_undo_restore_split_and_automatic_flag_exactly(owner, project):
    images = make_images(project, owner, 6)
    Image.objects.filter(id=images[0].id).update(split=Split.VALIDATION)
    Image.objects.filter(id=images[1].id).update(split=Split.TEST, split_is_automatic=False)
    before = state(project)
    result = bulk.images_split_change(project=project, images=[i.id for i in images], split=Split.TEST, user=owner)
    assert result.changed == 5  # images[1] was already a fixed test image
    assert set(Image.objects.filter(project=project).values_list("split", "split_is_automatic")) == {
        (Split.TEST, False)
    }
    # someone moves one image again before the undo: that later edit is kept
    Image.objects.filter(id=images[2].id).update(split=Split.VALIDATION)
    undo = bulk.bulk_change_undo(project=project, entry_id=result.entry.id, user=owner)
    assert undo.changed == 4 and sum(undo.skipped.values()) == 1
    after = state(project)
    expected = dict(before)
    expected[images[2].id] = (Label.UNLABELLED, Split.VALIDATION, False)
    assert after == expected
    with pytest.raises(Exception, match="undone already"):
        bulk.bulk_change_undo(project=project, entry_id=result.entry.id, user=owner)


@pytest.mark.django_db
def test_defect_class_change_moves_drawings_and_undo_moves_them_back(owner, project):
    scratch = defect_class_create(project=project, name="scratch")
    dent = defect_class_create(project=project, name="dent")
    crack = defect_class_create(project=project, name="crack")
    one, two, both, none = make_images(project, owner, 4, label=Label.DEFECT)
    Annotation.objects.create(image=one, defect_class=scratch, boxes=[[0, 0, 2, 2]])
    Annotation.objects.create(image=two, defect_class=dent, boxes=[[0, 0, 2, 2]])
    Annotation.objects.create(image=both, defect_class=scratch, boxes=[[0, 0, 2, 2]])
    Annotation.objects.create(image=both, defect_class=dent, boxes=[[1, 1, 3, 3]])
    classes_before = set(Annotation.objects.values_list("id", "defect_class_id"))
    versions_before = dict(Image.objects.values_list("id", "annotation_version"))
    # when
    result = bulk.images_defect_class_change(
        project=project, images=[one.id, two.id, both.id, none.id], defect_class_id=crack.id, user=owner
    )
    # then the single-class images moved, the two-class one and the one without drawings were left alone
    assert result.changed == 2
    assert result.skipped == {bulk.SKIP_SEVERAL_CLASSES: 1, bulk.SKIP_NO_DRAWINGS: 1}
    assert set(Annotation.objects.filter(image__in=[one, two]).values_list("defect_class_id", flat=True)) == {crack.id}
    assert Image.objects.get(id=one.id).annotation_version == versions_before[one.id] + 1  # stale editors refused
    assert result.entry.before == {"defect_class": {"scratch": 1, "dent": 1}}
    # and the undo puts each drawing back in its own class
    bulk.bulk_change_undo(project=project, entry_id=result.entry.id, user=owner)
    assert set(Annotation.objects.values_list("id", "defect_class_id")) == classes_before


@pytest.mark.django_db
def test_marking_good_leaves_images_with_drawings_as_defects(owner, project):
    scratch = defect_class_create(project=project, name="scratch")
    drawn, plain = make_images(project, owner, 2, label=Label.DEFECT)
    Annotation.objects.create(image=drawn, defect_class=scratch, boxes=[[0, 0, 2, 2]])
    result = bulk.images_label_change(project=project, images=[drawn.id, plain.id], label=Label.GOOD, user=owner)
    assert result.changed == 1 and result.skipped == {bulk.SKIP_HAS_DRAWINGS: 1}
    assert Image.objects.get(id=drawn.id).label == Label.DEFECT


@pytest.mark.django_db
def test_undo_is_only_for_the_person_who_made_the_change(client, owner, project, member_with):
    images = make_images(project, owner, 2)
    result = bulk.images_label_change(project=project, images=[i.id for i in images], label=Label.GOOD, user=owner)
    annotator = member_with(Role.ANNOTATOR)
    with pytest.raises(Exception, match=bulk.NOT_YOURS):
        bulk.bulk_change_undo(project=project, entry_id=result.entry.id, user=annotator)
    # and a viewer cannot post an undo at all
    client.force_login(member_with(Role.VIEWER))
    response = client.post(reverse("image_bulk_undo", args=[project.public_id]), {"entry": result.entry.id})
    assert response.status_code == 403
    assert set(Image.objects.filter(project=project).values_list("label", flat=True)) == {Label.GOOD}


@pytest.mark.django_db
def test_filter_scope_never_reaches_another_projects_images(client, owner, project, outsider):
    from webapp.projects.services import project_create

    other = project_create(name="Other", owner=outsider)
    make_images(other, outsider, 3, start=500)
    make_images(project, owner, 2)
    client.force_login(owner)
    client.post(
        reverse("image_bulk", args=[project.public_id]),
        {"action": "label_good", "scope": "filter", "query": "", "expected_count": "2"},
    )
    assert set(Image.objects.filter(project=other).values_list("label", flat=True)) == {Label.UNLABELLED}
    assert Image.objects.filter(project=project, label=Label.GOOD).count() == 2
