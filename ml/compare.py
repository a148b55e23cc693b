"""Train the candidate models the labels allow and let the user's own validation images pick the winner.

You cannot know which model fits a production line until it is trained on that line's images, so a run fits
every candidate (PatchCore always, at the working sizes that move its accuracy; the supervised hybrid once enough
defects are outlined or boxed; families the user ticks), scores each on validation and keeps the one the stated
rule picks. The rule never lets a family beat PatchCore on a margin the validation set cannot resolve: PatchCore
is the safe default, because it needs no defect labels and cannot over-fit drawn ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ml import adaptive, metrics
from ml.choice import MIN_ANNOTATED_FOR_SEGMENTER, choose_family
from ml.registry import FAMILIES, create_model
from ml.segmentation_scores import mean_defect_iou
from ml.thresholds import default_threshold
from ml.types import DEFECT, AnomalyModel, Prediction, ProgressCallback, Sample, no_progress

BASELINE_FAMILY = "patchcore"
SUPERVISED_FAMILY = "hybrid"
# PatchCore's working size moves its accuracy more than any other setting (magnetic tile, all images, top-10 score:
# 0.936 at 256 px, 0.950 at 192, 0.959 at 160, 0.947 at 128; screw wants 320 px), so beside the size ml.adaptive
# chooses from the good images, a coarser one is tried on validation: this share of it, on the rule's size grid
# (defects large against the part are then seen whole).
ALTERNATIVE_SIZE_SHARE = 2 / 3
# The smallest alternative: below ml.adaptive's own floor (128 px), since images that small are better seen near
# their own resolution than enlarged, and the backbone's stride-8 grid still has 8 x 8 patches.
ALTERNATIVE_MIN_SIZE = 64
# Outlined or boxed defects the supervised family needs before it is worth its training time.
MIN_LABELLED_FOR_SUPERVISED = MIN_ANNOTATED_FOR_SEGMENTER
# Validation image AP differences below this are ties, won by the candidate listed first (PatchCore's default
# first): fit times are too noisy on shared machines to break ties with.
TIE = 0.002
# A family other than PatchCore must beat the best PatchCore by more than this validation AP (and by at least
# half a defect's worth of AP on small sets, where one image moves AP by about 1 / defects): uncertain -> PatchCore.
MIN_MARGIN = 0.005
RULE = (
    "Highest image average precision on the validation images (ties within {tie} go to the candidate listed "
    "first); a family other than PatchCore wins only if it beats the best PatchCore setting by more than the "
    "validation set can resolve (here {margin:.3f}), so the winner is never worse than PatchCore on validation."
)
NO_DEFECT_RULE = (
    "Validation has no defect images, so the candidates cannot be compared on catching defects: the label rule "
    "chooses the family ({reason})"
)


@dataclass
class Candidate:
    """family: a registry name. config: its constructor kwargs. label: what the leaderboard shows."""

    family: str
    config: dict = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.family


@dataclass
class CandidateResult:
    """One candidate after fitting and validation. metrics (on validation): image_auroc, image_ap, f1, precision,
    recall (at the validation threshold), threshold, and pixel_auroc / aupro / mean_iou where validation has masks.
    model is None when fitting failed or the time budget ran out (error says which). validation_scores: the raw
    image scores of the validation images, in order (for the caller's threshold calibration)."""

    candidate: Candidate
    model: AnomalyModel | None
    metrics: dict
    fit_seconds: float
    error: str = ""
    validation_scores: list[float] = field(default_factory=list)
    predict_seconds: float = 0.0
    fit_cpu_seconds: float = 0.0  # CPU seconds of this process (all threads) while fitting

    @property
    def ok(self) -> bool:
        return self.model is not None and not self.error


@dataclass
class Comparison:
    """results: every candidate in the order tried. rule: one sentence for the page. why: one for the winner."""

    results: list[CandidateResult]
    winner: CandidateResult
    rule: str
    why: str
    validation_has_defects: bool = True

    def leaderboard(self) -> str:
        """An aligned text table of the results (the winner marked), for the command line."""
        return format_leaderboard(self)


def alternative_size(chosen: int) -> int | None:
    """The coarser PatchCore working size tried beside `chosen` (ALTERNATIVE_SIZE_SHARE of it, on ml.adaptive's
    size grid, at least ALTERNATIVE_MIN_SIZE); None where that is `chosen` itself."""
    size = int(chosen * ALTERNATIVE_SIZE_SHARE) // adaptive.SIZE_STEP * adaptive.SIZE_STEP
    size = max(ALTERNATIVE_MIN_SIZE, size)
    return size if size < chosen else None


def typical_short_side_of(samples: Sequence[Sample]) -> int | None:
    """The good images' typical shorter side (ml.adaptive.short_side_of), as PatchCore's fit reads it: what
    candidates_for needs to plan the data-chosen size and its alternative before fitting."""
    labels = _labels(samples)
    return adaptive.short_side_of(samples, [index for index, label in enumerate(labels) if label != DEFECT])


def patchcore_candidates(
    *, n_good: int, short_side: int | None = None, settings: Mapping[str, object] | None = None
) -> list[Candidate]:
    """PatchCore's candidates: first the settings ml.adaptive chooses from the good images (config left to the
    rule, so the fit applies it with what only the pixels tell, such as whether parts appear at any angle), then
    the same at a coarser working size. `settings`: what the person set (image_size, rotations, ...), kept in
    every candidate; a working size set by hand leaves one candidate. short_side: the good images' typical shorter
    side in px (ml.adaptive.typical_short_side), which the rule's size depends on; None when not known."""
    asked = {key: value for key, value in (settings or {}).items() if value is not None}
    choice = adaptive.choose_settings(n_good=n_good, short_side=short_side, requested=asked)
    if "image_size" in asked:
        return [Candidate(BASELINE_FAMILY, asked, f"PatchCore {choice.image_size} px")]
    if short_side is None:  # the fit chooses from the images themselves; the size is not known before
        label = "PatchCore (settings chosen from the data)"
    else:
        label = f"PatchCore {choice.image_size} px (chosen from the data)"
    candidates = [Candidate(BASELINE_FAMILY, asked, label)]
    if (size := alternative_size(choice.image_size)) is not None:
        candidates.append(Candidate(BASELINE_FAMILY, {**asked, "image_size": size}, f"PatchCore {size} px"))
    return candidates


def candidates_for(
    *,
    n_good: int,
    n_defect: int,
    n_annotated: int,
    n_boxed: int = 0,
    extra: Sequence[str] = (),
    short_side: int | None = None,
    patchcore_settings: Mapping[str, object] | None = None,
) -> list[Candidate]:
    """The candidates the labels allow, the data-chosen PatchCore first (the fallback; patchcore_candidates).

    n_annotated: defect images outlined with a mask; n_boxed: defect images with boxes only. `extra`: family names
    the user ticked (each at its defaults; unknown names raise ValueError). short_side, patchcore_settings: see
    patchcore_candidates.
    """
    if min(n_good, n_defect, n_annotated, n_boxed) < 0:
        raise ValueError("counts must be non-negative")
    candidates = patchcore_candidates(n_good=n_good, short_side=short_side, settings=patchcore_settings)
    labelled = n_annotated + n_boxed
    if SUPERVISED_FAMILY in FAMILIES and labelled >= MIN_LABELLED_FOR_SUPERVISED and n_good > 0:
        candidates.append(Candidate(SUPERVISED_FAMILY, {}, "Hybrid (PatchCore prior + trained head)"))
    for family in extra:
        if family not in FAMILIES:
            raise ValueError(f"unknown model family {family!r}; expected one of {sorted(FAMILIES)}")
        if not any(c.family == family for c in candidates):
            candidates.append(Candidate(family, {}, family))
    return candidates


class _CallerStopped(Exception):
    """Wraps an exception raised by the caller's progress callback (a cancel), so it is not taken for a failed fit."""


def compare_candidates(
    train: Sequence[Sample],
    validation: Sequence[Sample],
    candidates: Sequence[Candidate],
    *,
    budget_seconds: float | None = None,
    progress: ProgressCallback = no_progress,
    device: str | None = None,
) -> Comparison:
    """Fits every candidate on `train`, scores it on `validation` and picks the winner by RULE.

    A candidate that fails is recorded with its error and the others go on; once `budget_seconds` (wall) have
    passed, the remaining candidates are skipped (the first one always runs). Progress: stage "candidate", the
    fraction over all candidates, the message naming the candidate; an exception raised by `progress` propagates.
    Raises RuntimeError when no candidate could be fitted.
    """
    if not candidates:
        raise ValueError("no candidates to compare")
    if not validation:
        raise ValueError("no validation images to compare the candidates on")
    started = time.perf_counter()
    results: list[CandidateResult] = []
    for position, candidate in enumerate(candidates):
        elapsed = time.perf_counter() - started
        if position > 0 and budget_seconds is not None and elapsed >= budget_seconds:
            skipped = f"skipped: the time budget of {budget_seconds:.0f} s was spent ({elapsed:.0f} s)"
            results.append(CandidateResult(candidate, None, {}, 0.0, error=skipped))
            continue
        donors = [r.model for r in results if r.ok and r.candidate.family == BASELINE_FAMILY]
        results.append(
            _try_candidate(candidate, train, validation, position, len(candidates), progress, device, donors)
        )
    fitted = [result for result in results if result.ok]
    if not fitted:
        reasons = "; ".join(f"{r.candidate.label}: {r.error}" for r in results)
        raise RuntimeError(f"no candidate could be trained ({reasons})")
    progress("candidate", 1.0, "compared")
    return _pick_winner(results, train, validation)


def _try_candidate(
    candidate: Candidate,
    train: Sequence[Sample],
    validation: Sequence[Sample],
    position: int,
    count: int,
    progress: ProgressCallback,
    device: str | None,
    donors: Sequence[AnomalyModel] = (),
) -> CandidateResult:
    def inner(stage: str, fraction: float, message: str) -> None:
        try:
            progress("candidate", (position + min(max(fraction, 0.0), 1.0)) / count, f"{candidate.label}: {message}")
        except Exception as error:
            raise _CallerStopped() from error

    config = dict(candidate.config)
    if device is not None:
        config["device"] = device
    fit_started, cpu_started = time.perf_counter(), time.process_time()
    try:
        model = create_model(candidate.family, **config)
        # A family built on PatchCore (the hybrid) reuses a PatchCore fitted here on the same images.
        adopt = getattr(model, "adopt_prior", None)
        if adopt is not None:
            any(adopt(donor) for donor in donors)
        inner("fit", 0.0, "training")
        model.fit(train, progress=inner)
        fit_seconds, fit_cpu_seconds = time.perf_counter() - fit_started, time.process_time() - cpu_started
        inner("validate", 1.0, "scoring validation images")
        predict_started = time.perf_counter()
        validation_result, validation_scores = score_validation(model, validation)
        predict_seconds = time.perf_counter() - predict_started
    except _CallerStopped as stop:
        raise stop.__cause__ from None
    except Exception as error:  # one candidate failing must not lose the others (the error is shown per row)
        return CandidateResult(candidate, None, {}, time.perf_counter() - fit_started, error=f"failed: {error}")
    return CandidateResult(
        candidate,
        model,
        validation_result,
        fit_seconds,
        validation_scores=validation_scores,
        predict_seconds=predict_seconds,
        fit_cpu_seconds=fit_cpu_seconds,
    )


def predict_samples(model: AnomalyModel, samples: Sequence[Sample], *, batch_size: int = 8) -> list[Prediction]:
    """The model's predictions for `samples`, read a batch at a time (a lazy sequence stays lazy)."""
    predictions: list[Prediction] = []
    for start in range(0, len(samples), batch_size):
        images = [samples[i].image for i in range(start, min(start + batch_size, len(samples)))]
        predictions.extend(model.predict(images, batch_size=batch_size))
    return predictions


def _labels(samples: Sequence[Sample]) -> np.ndarray:
    labels = getattr(samples, "labels", None)  # LazySamples know labels without reading images
    return np.asarray(labels if labels is not None else [s.label for s in samples], dtype=int)


def score_validation(
    model: AnomalyModel, samples: Sequence[Sample], *, batch_size: int = 8
) -> tuple[dict, list[float]]:
    """(metrics, image scores) of `model` on `samples`, predicted a batch at a time; maps are streamed into the
    pixel metrics, so memory does not grow with the validation set.

    Metrics: image_auroc, image_ap (threshold-free); f1 / precision / recall at `default_threshold` chosen on these
    same images (what the app would set, so optimistic); pixel_auroc / aupro where defects have masks, mean_iou
    where the family also returns masks.
    """
    labels = _labels(samples)
    scores = np.zeros(len(labels))
    pixels = metrics.PixelMetricStream()
    ious: list[float] = []
    for start in range(0, len(labels), batch_size):
        batch = [samples[i] for i in range(start, min(start + batch_size, len(labels)))]
        predictions = model.predict([s.image for s in batch], batch_size=batch_size)
        for offset, (sample, prediction) in enumerate(zip(batch, predictions, strict=True)):
            scores[start + offset] = prediction.score
            truth = sample.mask if sample.mask is not None and sample.label == DEFECT else None
            pixels.add(
                truth if truth is not None else np.zeros(prediction.anomaly_map.shape, bool), prediction.anomaly_map
            )
            if prediction.mask is not None and truth is not None and truth.any():
                ious.append(mean_defect_iou([truth], [prediction.mask]))
    result: dict = {
        "image_auroc": metrics.image_auroc(labels, scores),
        "image_ap": metrics.image_average_precision(labels, scores),
        "n_validation": len(labels),
        "n_validation_defects": int(labels.sum()),
    }
    threshold = default_threshold(scores, labels)
    counts = metrics.confusion(labels, scores, threshold)
    result.update(threshold=threshold, f1=counts.f1, precision=counts.precision, recall=counts.recall)
    if pixels.n_regions:
        result.update(pixel_auroc=pixels.pixel_auroc(), aupro=pixels.aupro())
    if ious:
        result["mean_iou"] = float(np.mean(ious))
    return result, scores.tolist()


def _key(result: CandidateResult) -> tuple[float, float]:
    ap, auroc = result.metrics.get("image_ap", math.nan), result.metrics.get("image_auroc", math.nan)
    return (-1.0 if math.isnan(ap) else ap, -1.0 if math.isnan(auroc) else auroc)


def _best(results: list[CandidateResult]) -> CandidateResult:
    """Highest AP; within TIE of it, the highest AUROC among them within TIE, then the first listed."""
    top_ap = max(_key(r)[0] for r in results)
    close = [r for r in results if _key(r)[0] >= top_ap - TIE]
    top_auroc = max(_key(r)[1] for r in close)
    close = [r for r in close if _key(r)[1] >= top_auroc - TIE]
    return close[0]


def margin_for(n_defects: int) -> float:
    """The validation AP a challenger must gain over PatchCore: half a defect image's worth, at least MIN_MARGIN."""
    return max(MIN_MARGIN, 0.5 / max(n_defects, 1))


def _pick_winner(results: list[CandidateResult], train: Sequence[Sample], validation: Sequence[Sample]) -> Comparison:
    fitted = [r for r in results if r.ok]
    n_defects = int(_labels(validation).sum())
    margin = margin_for(n_defects)
    rule = RULE.format(tie=TIE, margin=margin)
    baselines = [r for r in fitted if r.candidate.family == BASELINE_FAMILY]
    if n_defects == 0:
        return _label_rule_winner(results, fitted, baselines, train)
    if not baselines:
        winner = _best(fitted)
        why = f"{winner.candidate.label} has the highest validation AP ({_ap(winner)}); PatchCore could not be trained."
        return Comparison(results, winner, rule, why)
    baseline = _best(baselines)
    challengers = [r for r in fitted if r.candidate.family != BASELINE_FAMILY]
    challenger = _best(challengers) if challengers else None
    if challenger is not None and _key(challenger)[0] > _key(baseline)[0] + margin:
        why = (
            f"{challenger.candidate.label} reached validation AP {_ap(challenger)} against {_ap(baseline)} for "
            f"{baseline.candidate.label}, more than the {margin:.3f} the validation set can resolve."
        )
        return Comparison(results, challenger, rule, why)
    others = [r for r in baselines if r is not baseline]
    why = f"{baseline.candidate.label} has validation AP {_ap(baseline)}"
    if others:
        why += ", the best PatchCore setting (" + ", ".join(f"{r.candidate.label} {_ap(r)}" for r in others) + ")"
    if challenger is not None:
        why += f"; {challenger.candidate.label} ({_ap(challenger)}) did not beat it by more than {margin:.3f}"
    return Comparison(results, baseline, rule, why + ".")


def _label_rule_winner(
    results: list[CandidateResult],
    fitted: list[CandidateResult],
    baselines: list[CandidateResult],
    train: Sequence[Sample],
) -> Comparison:
    labels = _labels(train)
    n_annotated = sum(1 for i in np.flatnonzero(labels == DEFECT) if _has_mask(train[int(i)]))
    choice = choose_family(
        n_good=int((labels != DEFECT).sum()), n_defect=int(labels.sum()), n_annotated_defects=n_annotated
    )
    family = SUPERVISED_FAMILY if choice.family != BASELINE_FAMILY and SUPERVISED_FAMILY in FAMILIES else choice.family
    chosen = [r for r in fitted if r.candidate.family == family] or baselines or fitted
    winner = chosen[0]
    rule = NO_DEFECT_RULE.format(reason=choice.reason)
    why = f"{winner.candidate.label} is the label rule's choice; add defect images to validation to compare candidates."
    return Comparison(results, winner, rule, why, validation_has_defects=False)


def _has_mask(sample: Sample) -> bool:
    return sample.mask is not None and bool(np.any(sample.mask))


def _ap(result: CandidateResult) -> str:
    value = result.metrics.get("image_ap", math.nan)
    return "n/a" if math.isnan(value) else f"{value:.3f}"


LEADERBOARD_COLUMNS = ("image_ap", "image_auroc", "f1", "aupro", "mean_iou")


def format_leaderboard(comparison: Comparison) -> str:
    """One row per candidate: label, validation metrics, fit seconds, and the winner marked with '*'."""
    header = f"  {'candidate':<40}" + "".join(f"{c:>12}" for c in LEADERBOARD_COLUMNS) + f"{'fit s':>10}"
    rows = [header]
    for result in comparison.results:
        mark = "*" if result is comparison.winner else " "
        cells = []
        for column in LEADERBOARD_COLUMNS:
            value = result.metrics.get(column)
            cells.append(f"{'n/a' if value is None or math.isnan(value) else f'{value:.4f}':>12}")
        row = f"{mark} {result.candidate.label:<40}" + "".join(cells) + f"{result.fit_seconds:>10.1f}"
        if result.error:
            row += f"  ({result.error})"
        rows.append(row)
    rows += [f"rule: {comparison.rule}", f"why:  {comparison.why}"]
    return "\n".join(rows)
