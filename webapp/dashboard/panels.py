"""What the threshold panel and the compare page show for one version at one threshold, assembled from the
scored test images (numbers, presets, plots)."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.safestring import SafeString

from ml.thresholds import normalise
from webapp.dashboard import plots
from webapp.dashboard.operating_points import (
    OperatingPoint,
    Preset,
    ScoredImages,
    ThresholdLadder,
    curves,
    operating_point,
    presets,
    score_range,
    threshold_ladder,
)
from webapp.training.models import ModelVersion


@dataclass(frozen=True)
class ThresholdPanel:
    threshold: float
    normalised: float | None  # on the stored maps' scale: the calibrated threshold reads 0.5
    point: OperatingPoint
    presets: list[Preset]
    lo: float
    hi: float
    ladder: ThresholdLadder  # the slider's positions
    position: int  # the slider's position for `threshold`
    histogram: SafeString
    pr_curve: SafeString | None
    roc_curve: SafeString | None
    is_saved: bool  # the threshold is the version's operating threshold now


def calibrated_threshold(version: ModelVersion) -> float | None:
    value = version.calibration.get("threshold")
    return None if value is None else float(value)


def normalised_equivalent(version: ModelVersion, threshold: float) -> float | None:
    calibration = version.calibration
    if "threshold" not in calibration or not calibration.get("scale"):
        return None
    return float(normalise(threshold, threshold=float(calibration["threshold"]), scale=float(calibration["scale"])))


def version_ladder(*, version: ModelVersion, scored: ScoredImages) -> ThresholdLadder:
    """The slider's positions for a version: its scored images' cuts and its saved and calibrated thresholds."""
    return threshold_ladder(scored, version.threshold, calibrated_threshold(version))


def threshold_panel(
    *, version: ModelVersion, scored: ScoredImages, threshold: float, target_precision: float | None = None
) -> ThresholdPanel:
    point = operating_point(scored, threshold)
    lo, hi = score_range(scored, version.threshold, calibrated_threshold(version))
    drawn = curves(scored)
    ladder = version_ladder(version=version, scored=scored)
    return ThresholdPanel(
        threshold=threshold,
        normalised=normalised_equivalent(version, threshold),
        point=point,
        presets=presets(scored, target_precision=target_precision),
        lo=lo,
        hi=hi,
        ladder=ladder,
        position=ladder.position_of(threshold),
        histogram=plots.score_histogram(
            good=scored.scores[~scored.labels],
            defect=scored.scores[scored.labels],
            threshold=threshold,
            lo=lo,
            hi=hi,
            saved_threshold=version.threshold,
            log_axis=plots.wants_log_axis(scored.scores),
        ),
        pr_curve=plots.pr_curve(points=drawn.pr, recall=point.recall, precision=point.precision) if drawn else None,
        roc_curve=plots.roc_curve(points=drawn.roc, false_positive_rate=point.false_positive_rate, recall=point.recall)
        if drawn
        else None,
        is_saved=threshold == version.threshold,
    )
