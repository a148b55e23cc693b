import numpy as np
import pytest

from ml.thresholds import Calibration, calibrate, default_threshold, normalise


def test_threshold_with_defects_separates_them_halfway():
    # given
    scores = np.array([1.0, 1.2, 1.1, 3.0, 3.5])
    labels = np.array([0, 0, 0, 1, 1])

    # when
    threshold = default_threshold(scores, labels)

    # then
    assert threshold == pytest.approx((1.2 + 3.0) / 2)


def test_threshold_without_defects_calls_no_good_image_defective():
    scores = np.array([1.0, 1.2, 1.1, 1.3, 0.9])
    threshold = default_threshold(scores, np.zeros(5))
    assert threshold > scores.max()
    assert threshold < scores.max() + 0.1


def test_normalise_maps_threshold_to_half_and_is_monotone():
    raw = np.linspace(-5, 5, 101)
    values = normalise(raw, threshold=1.0, scale=0.5)
    assert normalise(1.0, threshold=1.0, scale=0.5) == pytest.approx(0.5)
    assert np.all(np.diff(values) > 0) or np.all(np.diff(values) >= 0)
    assert values.min() >= 0 and values.max() <= 1


def test_calibration_round_trips_and_never_has_zero_scale():
    calibration = calibrate(np.array([2.0, 2.0, 2.0]), np.zeros(3))
    assert calibration.scale > 0
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    assert calibration.normalise(calibration.threshold) == pytest.approx(0.5)
