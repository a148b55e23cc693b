import numpy as np
import pytest

from ml.metrics import (
    PixelMetricStream,
    aupro,
    confusion,
    f1_best_threshold,
    image_auroc,
    image_average_precision,
    pixel_auroc,
    precision_at_full_recall,
    precision_recall_f1,
)


def brute_force_aupro(masks, maps, fpr_limit=0.3):
    """Independent AU-PRO: loop over every distinct threshold, count regions with explicit flood fill."""

    def regions(mask):
        seen = np.zeros_like(mask)
        found = []
        for y, x in zip(*np.nonzero(mask), strict=True):
            if seen[y, x]:
                continue
            stack, pixels = [(y, x)], []
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                pixels.append((cy, cx))
                for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
            found.append(pixels)
        return found

    all_regions = [(i, r) for i, m in enumerate(masks) for r in regions(m)]
    background = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        called = maps >= t
        fpr = (called & background).sum() / background.sum()
        pro = np.mean([np.mean([called[i][p] for p in r]) for i, r in all_regions])
        points.append((fpr, pro))
    area = 0.0
    for (f0, p0), (f1, p1) in zip(points[:-1], points[1:], strict=True):
        if f0 >= fpr_limit:
            break
        if f1 > fpr_limit:
            p1 = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)
            f1 = fpr_limit
        area += (f1 - f0) * (p0 + p1) / 2
    return area / fpr_limit


def test_aupro_matches_brute_force_on_a_tiny_case():
    # given: two 6x6 images, three regions of different sizes, scores with ties
    rng = np.random.default_rng(3)
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 1:3, 1:3] = True
    masks[0, 4, 4:6] = True
    masks[1, 0:4, 5] = True
    maps = np.round(rng.random((2, 6, 6)) + 0.6 * masks, 1)

    # when
    fast = aupro(masks, maps)

    # then
    assert fast == pytest.approx(brute_force_aupro(masks, maps), abs=1e-9)


def test_aupro_is_one_for_a_perfect_map_and_low_for_an_inverted_one():
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert aupro(masks, (~masks).astype(float)) == pytest.approx(0.0)


def test_image_metrics_on_a_known_ranking():
    # given: one defect (0.4) ranked below one good image (0.5)
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.5, 0.4, 0.9])

    # then
    assert image_auroc(labels, scores) == pytest.approx(5 / 6)
    assert 0 < image_average_precision(labels, scores) < 1
    assert precision_at_full_recall(labels, scores) == (pytest.approx(2 / 3), 0.4)
    threshold, f1 = f1_best_threshold(labels, scores)
    assert (threshold, f1) == (0.9, pytest.approx(2 / 3)) or (threshold, f1) == (0.4, pytest.approx(0.8))
    assert f1 == pytest.approx(0.8)
    assert precision_recall_f1(labels, scores, 0.4) == (pytest.approx(2 / 3), 1.0, pytest.approx(0.8))
    counts = confusion(labels, scores, 0.45)
    assert (counts.tp, counts.fp, counts.tn, counts.fn) == (1, 1, 2, 1)


def test_single_class_gives_nan_not_an_exception():
    assert np.isnan(image_auroc(np.zeros(3), np.arange(3)))
    assert np.isnan(precision_at_full_recall(np.zeros(3), np.arange(3))[0])


def test_pixel_auroc_subsamples_deterministically():
    # given
    rng = np.random.default_rng(0)
    masks = rng.random((4, 50, 50)) > 0.9
    maps = rng.random((4, 50, 50)) + masks

    # when
    full = pixel_auroc(masks, maps)
    sub_a = pixel_auroc(masks, maps, max_pixels=2000, seed=1)
    sub_b = pixel_auroc(masks, maps, max_pixels=2000, seed=1)

    # then
    assert sub_a == sub_b
    assert sub_a == pytest.approx(full, abs=0.05)


def _random_masks_and_maps(seed: int, *, quantum: float | None):
    rng = np.random.default_rng(seed)
    masks = np.zeros((5, 24, 32), bool)
    masks[1, 3:9, 4:12] = True
    masks[2, 10:12, 20:30] = True
    masks[2, 18:22, 2:5] = True
    masks[4, 0:24, 30:32] = True
    maps = rng.normal(size=masks.shape) + 2.0 * masks
    maps[3] += 5.0  # a later image far outside the first image's range: the grid must widen both ways
    maps[4] -= 7.0
    if quantum is not None:
        maps = np.round(maps / quantum) * quantum
    return masks, maps.astype(np.float32)


def test_streamed_pixel_metrics_equal_the_exact_ones_when_no_two_scores_share_a_bin():
    # given: scores on a grid of 1/64 (ties included), far coarser than the stream's bins
    masks, maps = _random_masks_and_maps(5, quantum=1 / 64)
    stream = PixelMetricStream()
    # when: images are added one at a time
    for mask, anomaly_map in zip(masks, maps, strict=True):
        stream.add(mask, anomaly_map)
    # then: the same numbers as the exact, sort-every-pixel metrics (and the brute-force AU-PRO)
    assert stream.pixel_auroc() == pytest.approx(pixel_auroc(masks, maps), abs=1e-12)
    assert stream.aupro() == pytest.approx(aupro(masks, maps), abs=1e-12)
    assert stream.aupro(fpr_limit=0.05) == pytest.approx(brute_force_aupro(masks, maps, fpr_limit=0.05), abs=1e-9)


def test_streamed_pixel_metrics_on_continuous_scores_are_within_a_bin_of_the_exact_ones():
    masks, maps = _random_masks_and_maps(6, quantum=None)
    stream = PixelMetricStream(bins=1 << 12)
    for mask, anomaly_map in zip(masks, maps, strict=True):
        stream.add(mask, anomaly_map)
    assert stream.pixel_auroc() == pytest.approx(pixel_auroc(masks, maps), abs=1e-3)
    assert stream.aupro() == pytest.approx(aupro(masks, maps), abs=1e-3)


def test_streamed_pixel_metrics_without_defects_or_background_are_nan():
    stream = PixelMetricStream()
    stream.add(np.zeros((4, 4), bool), np.ones((4, 4)))
    assert np.isnan(stream.pixel_auroc()) and np.isnan(stream.aupro())
    with pytest.raises(ValueError, match="differ in shape"):
        stream.add(np.zeros((4, 4), bool), np.ones((4, 5)))
