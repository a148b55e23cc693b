"""The dataset formats as pure functions: RLE by hand and round trip, COCO, Lookout for Vision and MVTec."""

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage

from webapp.annotations.formats import (
    ClassDrawing,
    DatasetClass,
    DatasetItem,
    FormatError,
    mask_from_png,
    member_for_reference,
    unique_names,
)
from webapp.annotations.formats.coco import (
    coco_read,
    coco_write,
    rle_decode,
    rle_encode,
    rle_string_decode,
    rle_string_encode,
)
from webapp.annotations.formats.lookout import distinct_colours, lookout_read, lookout_write
from webapp.annotations.formats.mvtec import mvtec_write
from webapp.images.intake.layout import plan_layout

TINY = np.array([[0, 1, 1], [0, 0, 1]], dtype=bool)  # 2 rows, 3 columns


def test_rle_of_a_tiny_mask_by_hand():
    # column by column: (0, 0), (1, 0), (1, 1) -> 0 0 1 0 1 1 -> runs 2 zeros, 1 one, 1 zero, 2 ones
    assert rle_encode(TINY) == {"size": [2, 3], "counts": [2, 1, 1, 2]}
    # compressed: 2, 1, 1 as they are, then 2 - counts[1] = 1; each fits one character (48 + value)
    assert rle_string_encode([2, 1, 1, 2]) == "2111"
    assert rle_string_decode("2111") == [2, 1, 1, 2]
    assert np.array_equal(rle_decode({"size": [2, 3], "counts": "2111"}), TINY)


def test_rle_of_a_mask_starting_with_foreground_starts_with_zero():
    mask = np.ones((2, 2), dtype=bool)
    assert rle_encode(mask)["counts"] == [0, 4]
    assert np.array_equal(rle_decode(rle_encode(mask)), mask)


def test_rle_round_trips_random_masks_and_compressed_strings():
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (7, 5), (64, 33), (300, 200)]:
        mask = rng.random(shape) > 0.7
        mask[: shape[0] // 2, : shape[1] // 3] = True  # long runs too, so differences go negative and large
        rle = rle_encode(mask)
        assert sum(rle["counts"]) == mask.size
        assert np.array_equal(rle_decode(rle), mask)
        text = rle_string_encode(rle["counts"])
        assert rle_string_decode(text) == rle["counts"]
        assert np.array_equal(rle_decode({"size": rle["size"], "counts": text}), mask)


def test_rle_with_wrong_size_is_refused():
    with pytest.raises(FormatError):
        rle_decode({"size": [2, 2], "counts": [1, 2]})


def _items():
    scratch = np.zeros((6, 8), bool)
    scratch[1:3, 2:5] = True
    dent = np.zeros((6, 8), bool)
    dent[4:6, 0:2] = True
    return [
        DatasetItem(
            "images/a.png",
            8,
            6,
            "defect",
            "test",
            [ClassDrawing("scratch", scratch, [[0, 0, 3, 2]]), ClassDrawing("dent", dent)],
        ),
        DatasetItem("images/b.png", 8, 6, "good", "train"),
        DatasetItem("images/c.png", 8, 6, "unlabelled", "validation"),
    ]


CLASSES = [DatasetClass("scratch", "#ff0000"), DatasetClass("dent", "#00ff00")]


def _by_path(items):
    return {i.path: i for i in items}


def test_coco_write_then_read_gives_the_same_items():
    document = json.loads(json.dumps(coco_write(_items(), CLASSES)))  # as it travels: through JSON
    items, classes = coco_read(document, ["images/a.png", "images/b.png", "images/c.png"])
    assert classes == CLASSES
    got, want = _by_path(items), _by_path(_items())
    for path, item in want.items():
        assert (got[path].label, got[path].split) == (item.label, item.split)
        assert {d.class_name: d.boxes for d in got[path].drawings} == {d.class_name: d.boxes for d in item.drawings}
        for drawing in item.drawings:
            back = next(d for d in got[path].drawings if d.class_name == drawing.class_name)
            back_mask = back.mask_for(width=item.width, height=item.height)
            assert (back_mask is None and drawing.mask is None) or np.array_equal(back_mask, drawing.mask)
    mask_annotation = next(a for a in document["annotations"] if "segmentation" in a)
    assert mask_annotation["bbox"] == [2, 1, 3, 2] and mask_annotation["iscrowd"] == 1


def test_coco_from_another_tool_polygons_boxes_and_no_kensa_keys():
    document = {
        "images": [
            {"id": 7, "file_name": "pics/x.jpg", "width": 10, "height": 10},
            {"id": 8, "file_name": "y.jpg", "width": 10, "height": 10},
        ],
        "categories": [{"id": 3, "name": "crack"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]],
                "bbox": [2, 2, 4, 4],
            },
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 2.4, 3]},
        ],
    }
    items, classes = coco_read(document, ["data/pics/x.jpg", "data/y.jpg"])
    x, y = _by_path(items)["data/pics/x.jpg"], _by_path(items)["data/y.jpg"]
    assert classes == [DatasetClass("crack", "")]
    assert x.label == "defect" and y.label == "unlabelled"
    (drawing,) = x.drawings
    assert drawing.boxes == [[0, 0, 2, 3]]
    mask = drawing.mask_for(width=10, height=10)
    assert mask[4, 4] and not mask[8, 8]


def test_lookout_write_then_read_gives_the_same_items():
    manifests, masks = lookout_write(_items(), CLASSES)
    assert set(manifests) == {"train.manifest", "test.manifest"}
    lines = [json.loads(line) for text in manifests.values() for line in text.splitlines()]
    first = next(line for line in lines if line["source-ref"] == "images/a.png")
    assert first["anomaly-label"] == 1 and first["anomaly-label-metadata"]["class-name"] == "anomaly"
    colour_map = first["anomaly-mask-ref-metadata"]["internal-color-map"]
    assert colour_map["1"] == {"class-name": "scratch", "hex-color": "#ff0000", "confidence": 0.0}
    assert colour_map["0"]["class-name"] == "BACKGROUND"
    paths = ["images/a.png", "images/b.png", "images/c.png", *masks]
    items = []
    for name, text in manifests.items():
        found, classes = lookout_read(name, text, paths, masks.__getitem__)
        items += found
    got = _by_path(items)
    assert got["images/a.png"].split == "test" and got["images/b.png"].split == "train"
    assert [got[p].label for p in ("images/a.png", "images/b.png", "images/c.png")] == ["defect", "good", "unlabelled"]
    a = got["images/a.png"]
    back = {d.class_name: d.mask_for(width=a.width, height=a.height) for d in a.drawings}
    for drawing in _items()[0].drawings:
        assert np.array_equal(back[drawing.class_name], drawing.mask)


def test_lookout_reads_s3_references_and_refuses_missing_files():
    line = {"source-ref": "s3://bucket/dataset/good/1.jpg", "anomaly-label": 0}
    items, _ = lookout_read("x.manifest", json.dumps(line), ["export/good/1.jpg"], None)
    assert items[0].path == "export/good/1.jpg" and items[0].label == "good" and items[0].split is None
    with pytest.raises(FormatError, match="not in the zip"):
        lookout_read("x.manifest", json.dumps(line), ["other.jpg"], None)


def test_lookout_colours_are_made_distinct():
    colours = distinct_colours([DatasetClass("a", "#123456"), DatasetClass("b", "#123456"), DatasetClass("c", "")])
    assert len(set(colours.values())) == 3 and colours["a"] == "#123456"


def test_mvtec_layout_is_read_back_by_the_intake_planner():
    paths, masks = mvtec_write([*_items(), DatasetItem("d.png", 8, 6, "defect", None)])
    assert paths == ["test/scratch/a.png", "train/good/b.png", "unlabelled/c.png", "train/defect/d.png"]
    assert list(masks) == ["ground_truth/scratch/a_mask.png"]
    plan = {p.path: p for p in plan_layout(paths + list(masks)).images}
    assert plan["test/scratch/a.png"].mask_path == "ground_truth/scratch/a_mask.png"
    assert (plan["train/good/b.png"].label, plan["unlabelled/c.png"].label) == ("good", None)
    assert np.array_equal(mask_from_png(masks["ground_truth/scratch/a_mask.png"]), _items()[0].drawings[0].mask)


def test_mask_from_png_reads_alpha_when_there_is_alpha():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgba[1, 1] = (255, 0, 0, 60)  # a faint anti-aliased edge stays out
    buffer = io.BytesIO()
    PILImage.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    assert mask_from_png(buffer.getvalue()).tolist() == [[True, False], [False, False]]


def test_unique_names_and_references():
    assert unique_names(["a.png", "A.jpg", "a.png", "b.png"]) == ["a.png", "A-2.jpg", "a-3.png", "b.png"]
    assert member_for_reference("s3://b/x/y/z.png", ["y/z.png", "q/z.png", "z.png"]) == "y/z.png"
    assert member_for_reference("nothing.png", ["a.png"]) is None
