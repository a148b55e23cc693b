"""Boxes from masks and maps (ml.detections) and box AP at IoU 0.5 (ml.metrics), on hand-made boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.detections import box_iou, box_mask, boxes_from_mask, detections_from_map
from ml.metrics import box_average_precision
from ml.segmentation_scores import per_class_scores
from ml.types import Box, Detection


def test_box_iou_of_hand_made_boxes():
    assert box_iou(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0
    assert box_iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou(Box(0, 0, 10, 10), Box(10, 0, 20, 10)) == 0.0  # touching edges share no pixel


def test_box_ap_ranks_detections_by_confidence_and_matches_each_drawn_box_once():
    truths = [[Box(0, 0, 10, 10), Box(20, 20, 30, 30)], []]
    detections = [
        [Detection(Box(0, 0, 10, 10), 0.9), Detection(Box(1, 1, 10, 10), 0.8), Detection(Box(20, 21, 30, 30), 0.6)],
        [Detection(Box(0, 0, 5, 5), 0.7)],  # on a good image: a false positive
    ]
    # Ranked: TP (0.9), duplicate of the first box -> FP (0.8), FP (0.7), TP (0.6).
    # Precision 1, 1/2, 1/3, 1/2 at recall 1/2, 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 1/2.
    assert box_average_precision(truths, detections) == pytest.approx(0.75)


def test_box_ap_needs_half_overlap_and_by_class_the_right_label():
    truths = [[Box(0, 0, 10, 10, "scratch")]]
    assert box_average_precision(truths, [[Detection(Box(0, 0, 10, 4, "scratch"), 0.9)]]) == 0.0  # IoU 0.4
    assert box_average_precision(truths, [[Detection(Box(0, 0, 10, 6, "scratch"), 0.9)]]) == 1.0  # IoU 0.6
    wrong_class = [[Detection(Box(0, 0, 10, 10, "dent"), 0.9)]]
    assert box_average_precision(truths, wrong_class) == 1.0
    assert box_average_precision(truths, wrong_class, by_class=True) == 0.0
    assert math.isnan(box_average_precision([[]], [[Detection(Box(0, 0, 1, 1), 0.5)]]))


def test_boxes_from_a_mask_and_back():
    mask = np.zeros((20, 30), bool)
    mask[2:5, 3:9] = True
    mask[10:18, 20:22] = True
    boxes = boxes_from_mask(mask, label="dent")
    assert boxes == [Box(3, 2, 9, 5, "dent"), Box(20, 10, 22, 18, "dent")]
    np.testing.assert_array_equal(box_mask(boxes, mask.shape), mask)


def test_detections_from_a_map_carry_box_class_and_confidence():
    values = np.zeros((20, 20), np.float32)
    values[2:6, 2:8] = 0.7
    values[4, 4] = 0.95
    values[12:16, 10:18] = 0.6
    values[0, 19] = 0.99  # one hot pixel: below min_pixels, not a detection
    class_mask = np.zeros((20, 20), int)
    class_mask[2:6, 2:8] = 2
    class_mask[12:16, 10:18] = 1
    class_mask[12, 10] = 2  # a minority pixel does not change the region's class

    found = detections_from_map(values, 0.5, class_mask=class_mask, classes=("scratch", "dent"))

    assert [(d.box, d.confidence) for d in found] == [
        (Box(2, 2, 8, 6, "dent"), pytest.approx(0.95)),
        (Box(10, 12, 18, 16, "scratch"), pytest.approx(0.6)),
    ]
    assert found[0].to_dict() == {"box": [2, 2, 8, 6], "label": "dent", "confidence": pytest.approx(0.95)}
    squashed = detections_from_map(values * 10, 5.0, confidence=lambda peak: peak / 10)
    assert [d.confidence for d in squashed] == pytest.approx([0.95, 0.6])


def test_per_class_scores_of_hand_made_class_masks():
    truth_a = np.zeros((4, 4), int)
    truth_a[0, :2] = 1  # class 1 ("scratch"), two pixels
    truth_b = np.zeros((4, 4), int)
    truth_b[3, 3] = 2  # class 2 ("dent")
    predicted_a = np.zeros((4, 4), int)
    predicted_a[0, 0] = 1  # half the scratch
    predicted_b = np.zeros((4, 4), int)
    predicted_b[3, 3] = 1  # the dent called a scratch

    scores = per_class_scores([truth_a, truth_b, None], [predicted_a, predicted_b, None], ("scratch", "dent"))

    assert scores["scratch"] == {"f1": pytest.approx(2 / 3), "precision": 0.5, "recall": 1.0, "mean_iou": 0.5,
                                 "n_images": 1}  # fmt: skip
    assert scores["dent"]["recall"] == 0.0 and scores["dent"]["mean_iou"] == 0.0 and scores["dent"]["n_images"] == 1
