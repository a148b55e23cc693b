import pytest

from ml.choice import choose_family


def test_enough_outlined_defects_choose_the_segmenter():
    choice = choose_family(n_good=30, n_defect=12, n_annotated_defects=10)
    assert choice.family == "unet"
    assert choice.ready


def test_good_images_only_choose_patchcore():
    choice = choose_family(n_good=30, n_defect=0, n_annotated_defects=0)
    assert choice.family == "patchcore"
    assert choice.missing == []
    assert "coreset" not in choice.reason.lower()
    assert choice.reason.count(". ") == 0  # one sentence


def test_few_good_images_say_how_many_to_add():
    choice = choose_family(n_good=2, n_defect=20, n_annotated_defects=20)
    assert choice.family == "patchcore"
    assert choice.missing == ["add at least 8 more good images"]


def test_annotated_cannot_exceed_defects():
    with pytest.raises(ValueError):
        choose_family(n_good=10, n_defect=1, n_annotated_defects=2)
