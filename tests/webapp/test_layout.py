from webapp.images.intake.layout import PlannedImage, plan_layout


def test_mvtec_layout_under_a_root_folder():
    # given
    paths = [
        "screw/train/good/000.png",
        "screw/test/good/001.png",
        "screw/test/scratch_head/002.png",
        "screw/test/thread_top/003.png",
        "screw/ground_truth/scratch_head/002_mask.png",
        "screw/ground_truth/manipulated_front/009_mask.png",
        "screw/license.txt",
    ]
    # when
    plan = plan_layout(paths)
    # then
    by_path = {p.path: p for p in plan.images}
    assert plan.is_mvtec
    assert by_path["screw/train/good/000.png"] == PlannedImage("screw/train/good/000.png", "good", "train")
    assert by_path["screw/test/good/001.png"].split == "test"
    scratch = by_path["screw/test/scratch_head/002.png"]
    assert (scratch.label, scratch.split, scratch.defect_class) == ("defect", "test", "scratch_head")
    assert scratch.mask_path == "screw/ground_truth/scratch_head/002_mask.png"
    assert by_path["screw/test/thread_top/003.png"].mask_path is None
    assert by_path["screw/license.txt"].label is None
    assert plan.orphan_masks == ["screw/ground_truth/manipulated_front/009_mask.png"]
    assert not any(p.path.startswith("screw/ground_truth") for p in plan.images)


def test_flat_folder_is_unlabelled_with_automatic_splits():
    plan = plan_layout(["a.png", "b/c.jpg"])
    assert not plan.is_mvtec
    assert all(p.label is None and p.split is None for p in plan.images)
