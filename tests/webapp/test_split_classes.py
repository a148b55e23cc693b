"""Automatic splits give validation defects of every class (issue 20): a comparison judged on validation must see
each kind of defect, and the test split must keep each kind to measure it."""

from collections import Counter

import pytest

from webapp.images.models import Annotation, Image, Label, Split
from webapp.images.splits import splits_rebalance
from webapp.samples import sample_project_create


def class_splits(project) -> Counter:
    """(class name, split) -> defect images."""
    rows = Annotation.objects.filter(image__project=project, image__label=Label.DEFECT)
    return Counter(rows.values_list("defect_class__name", "image__split"))


@pytest.mark.django_db
def test_an_import_with_classes_puts_every_class_in_every_split(owner):
    # given / when: 30 good parts and 9 defects, three of each class, all split by Kensa
    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=32)
    # then each class has one defect in each split (a label-only split put 6 in train, 2 in validation, 1 in test)
    counts = class_splits(project)
    for name in ("scratch", "dent", "stain"):
        assert {split: counts[(name, split)] for split in Split} == {"train": 1, "validation": 1, "test": 1}
    goods = Counter(Image.objects.filter(project=project, label=Label.GOOD).values_list("split", flat=True))
    assert goods == {"train": 21, "validation": 5, "test": 4}


@pytest.mark.django_db
def test_rebalance_spreads_each_class_and_follows_the_shares_beyond_three(owner):
    # given 20 defects per class, all piled into train by hand, then handed back to Kensa
    project = sample_project_create(owner=owner, n_good=12, n_defect=60, size=32)
    Image.objects.filter(project=project).update(split=Split.TRAIN, split_is_automatic=True)
    # when
    moved = splits_rebalance(project_id=project.id)
    # then every class reaches validation and test, about 70 / 15 / 15 each
    counts = class_splits(project)
    assert moved > 0
    for name in ("scratch", "dent", "stain"):
        per_split = {split: counts[(name, split)] for split in Split}
        assert sum(per_split.values()) == 20
        assert per_split[Split.VALIDATION] >= 3 and per_split[Split.TEST] >= 3 and per_split[Split.TRAIN] >= 13


@pytest.mark.django_db
def test_a_class_with_fewer_than_three_defects_stays_out_of_validation(owner):
    # given two defects of one class: one must teach (train) and one measure (test) before validation gets one
    project = sample_project_create(owner=owner, n_good=10, n_defect=2, size=32)
    counts = class_splits(project)
    assert counts[("scratch", Split.TRAIN)] == 1 and counts[("dent", Split.TRAIN)] == 1
    assert not counts[("scratch", Split.VALIDATION)]
