"""How well a fitted model holds up when the line drifts: every test image perturbed (`ml.perturbations`) at a few
strengths, scored, and compared with the unperturbed figures at one fixed operating threshold.

Works with any family through the model contract (`predict`), and streams: one image is read, perturbed and
scored at a time, only scores are kept (plus a few small example pictures for the worst cases), so memory does
not grow with the test split. The threshold is the caller's: a model version's operating threshold, or one set
on validation images that this run does not score.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from ml import metrics
from ml.perturbations import PERTURBATIONS, Perturbation, perturb
from ml.types import DEFECT, GOOD, ProgressCallback, Sample, no_progress

EXAMPLE_SIDE = 256  # worst-case pictures are kept at most this many pixels on a side

# When a perturbation is worth a sentence of advice (compared with the unperturbed images at the same threshold):
FALSE_ALARM_FACTOR = 2.0  # good parts rejected at least doubled ...
FALSE_ALARM_MIN_RISE = 0.05  # ... and up by at least 5 points of the good parts (3 % -> 6 % of 30 parts is noise)
RECALL_DROP = 0.10  # defects caught down by 10 points
AUROC_DROP = 0.05  # image AUROC down by 0.05: no threshold separates good from defect as before

REMEDIES = {
    "position": "add training images with the part (and the camera's view) at varied positions and angles, or fix "
    "the part's place and the camera's mount (a jig, an end stop, a trigger)",
    "lighting": "add training images under varied light, or fix the lighting (an enclosure, a diffuse light, "
    "fixed camera exposure)",
    "background": "keep the background clear (a plain backdrop, a shield around the part), or add training "
    "images with the clutter the line has",
    "focus": "check the focus and the part's distance to the camera (a faster shutter for moving parts)",
    "noise": "give the camera more light, or lower its gain",
    "compression": "send the camera's images uncompressed (PNG) or at a higher JPEG quality",
}
GROUP_TITLES = {
    "position": "Position changes",
    "lighting": "Lighting changes",
    "background": "Background clutter",
    "focus": "Blur",
    "noise": "Sensor noise",
    "compression": "JPEG compression",
}


@dataclass
class ConditionResult:
    """The figures of one perturbation at one strength (perturbation "original": the unperturbed images).

    n_good / n_defect: images scored; n_skipped: defect images left out because the perturbation moved their whole
    defect out of the frame. good_rejected: good parts called defective at the threshold (false alarms)."""

    perturbation: str
    group: str
    strength: float
    description: str
    n_good: int
    n_defect: int
    image_auroc: float | None
    precision: float
    recall: float
    good_rejected: int
    good_rejected_rate: float
    defects_missed: int
    calls_changed: int  # images whose call differs from the unperturbed one
    n_skipped: int = 0

    @property
    def key(self) -> str:
        return f"{self.perturbation}@{self.strength:g}"


@dataclass
class WorstCase:
    """A perturbed image whose call went most wrong: a good part pushed over the threshold (or nearest to it), or a
    defect pushed under it. Pictures are small (EXAMPLE_SIDE): image H x W x 3 uint8, anomaly_map H x W float32
    (raw score units), mask H x W bool (the defect, moved with the image) or None."""

    perturbation: str
    strength: float
    description: str
    name: str
    label: int
    score_before: float
    score_after: float
    flipped: bool  # the call was right unperturbed and is wrong perturbed
    image: np.ndarray = field(repr=False)
    original: np.ndarray = field(repr=False)
    anomaly_map: np.ndarray = field(repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def harm(self) -> float:
        """How far the score moved toward the wrong call (raw units): up for a good part, down for a defect."""
        moved = self.score_after - self.score_before
        return moved if self.label == GOOD else -moved


@dataclass
class RobustnessReport:
    threshold: float
    baseline: ConditionResult
    conditions: list[ConditionResult]
    worst_cases: list[WorstCase]
    advice: list[str]
    n_images: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        """Everything but the example pictures, JSON-ready (NaN becomes None)."""
        return {
            "threshold": self.threshold,
            "baseline": asdict(self.baseline),
            "conditions": [asdict(c) for c in self.conditions],
            "worst_cases": [
                {k: v for k, v in asdict(w).items() if k not in ("image", "original", "anomaly_map", "mask")}
                for w in self.worst_cases
            ],
            "advice": list(self.advice),
            "n_images": self.n_images,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "seed": self.seed,
        }


def condition_from_dict(data: dict) -> ConditionResult:
    return ConditionResult(**data)


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _small(array: np.ndarray, *, nearest: bool = False) -> np.ndarray:
    """An image, map or mask shrunk to at most EXAMPLE_SIDE on a side (same kind of array back)."""
    height, width = array.shape[:2]
    factor = EXAMPLE_SIDE / max(height, width)
    if factor >= 1:
        return array.copy()
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    if array.dtype == bool:
        return np.asarray(Image.fromarray(array.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127
    if array.ndim == 2:
        resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(array.astype(np.float32), "F").resize(size, resample))
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR))


def resolve_perturbations(names: Iterable[str] | None) -> list[Perturbation]:
    """The perturbations called `names` (all of them for None), in the registry's order; ValueError for an
    unknown name."""
    if names is None:
        return list(PERTURBATIONS.values())
    wanted = [name.strip() for name in names if name.strip()]
    unknown = [name for name in wanted if name not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"unknown perturbation(s) {', '.join(unknown)}; expected some of {', '.join(PERTURBATIONS)}")
    return [p for name, p in PERTURBATIONS.items() if name in wanted]


def robustness_run(
    model,
    samples: Sequence[Sample],
    *,
    threshold: float,
    perturbations: Sequence[Perturbation] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    progress: ProgressCallback = no_progress,
) -> RobustnessReport:
    """Scores every sample unperturbed and under every perturbation at every strength; returns the report.

    model: a fitted family (anything with `predict(images, batch_size=)`). threshold: raw score at or above which
    an image is called defective. Each (image, perturbation) pair draws its random choices from (seed, image
    index, perturbation index), so a run is reproducible and the strengths of one pair differ only in degree.
    """
    perturbations = list(PERTURBATIONS.values()) if perturbations is None else list(perturbations)
    conditions: list[tuple[Perturbation | None, float]] = [(None, 0.0)]
    conditions += [(p, s) for p in perturbations for s in p.strengths]
    n = len(samples)
    if n == 0:
        raise ValueError("no test images to measure robustness on")
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    scores = np.full((len(conditions), n), np.nan)
    labels = np.zeros(n, dtype=int)
    worst: dict[str, WorstCase] = {}
    for index in range(n):
        sample = samples[index]
        labels[index] = DEFECT if sample.label == DEFECT else GOOD
        has_defect_pixels = sample.mask is not None and bool(np.any(sample.mask))
        pending: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        original_small = _small(sample.image)

        def score(batch, index=index, sample=sample, original_small=original_small) -> None:
            predictions = model.predict([image for _, image, _ in batch], batch_size=batch_size)
            for (row, image, mask), prediction in zip(batch, predictions, strict=True):
                scores[row, index] = float(prediction.score)
                if row == 0:
                    continue
                chosen, strength = conditions[row]
                candidate = _worst_candidate(
                    chosen, strength, sample, scores[0, index], float(prediction.score), threshold
                )
                current = worst.get(chosen.name)
                if candidate is not None and (current is None or _rank(candidate) > _rank(current)):
                    candidate.image = _small(image)
                    candidate.original = original_small
                    candidate.anomaly_map = _small(np.asarray(prediction.anomaly_map, dtype=np.float32))
                    candidate.mask = None if mask is None else _small(mask)
                    worst[chosen.name] = candidate

        for row, (chosen, strength) in enumerate(conditions):
            if chosen is None:
                pending.append((row, sample.image, sample.mask))
            else:
                pair_seed = np.random.SeedSequence([seed, index, list(PERTURBATIONS).index(chosen.name)])
                image, mask = perturb(sample.image, sample.mask, chosen.name, strength, seed=pair_seed)
                if has_defect_pixels and chosen.geometric and (mask is None or not mask.any()):
                    continue  # the defect left the frame: this image says nothing about this condition
                pending.append((row, image, mask))
            if len(pending) >= batch_size:
                score(pending)
                pending = []
        if pending:
            score(pending)
        progress(
            "robustness", (index + 1) / n, f"Scored {index + 1} of {n} test images under {len(conditions)} conditions"
        )

    baseline = condition_result(None, 0.0, labels, scores[0], scores[0], threshold)
    results = [
        condition_result(chosen, strength, labels, scores[row], scores[0], threshold)
        for row, (chosen, strength) in enumerate(conditions)
        if row > 0
    ]
    order = {p.name: i for i, p in enumerate(perturbations)}
    worst_cases = sorted(worst.values(), key=lambda w: order[w.perturbation])
    return RobustnessReport(
        threshold=float(threshold),
        baseline=baseline,
        conditions=results,
        worst_cases=worst_cases,
        advice=advice_sentences(baseline, results),
        n_images=n,
        seconds=time.perf_counter() - started,
        cpu_seconds=_cpu_seconds() - cpu_started,
        seed=seed,
    )


def _worst_candidate(chosen, strength, sample, before: float, after: float, threshold: float) -> WorstCase | None:
    label = DEFECT if sample.label == DEFECT else GOOD
    wrong_after = (after >= threshold) != (label == DEFECT)
    right_before = (before >= threshold) == (label == DEFECT)
    case = WorstCase(
        perturbation=chosen.name,
        strength=strength,
        description=chosen.describe(strength),
        name=sample.name,
        label=label,
        score_before=before,
        score_after=after,
        flipped=bool(wrong_after and right_before),
        image=np.zeros((0, 0, 3), np.uint8),
        original=np.zeros((0, 0, 3), np.uint8),
        anomaly_map=np.zeros((0, 0), np.float32),
    )
    return case if case.harm > 0 else None


def _rank(case: WorstCase) -> tuple[bool, float]:
    """Flipped calls first, then the largest move toward the wrong call."""
    return (case.flipped, case.harm)


def condition_result(
    chosen: Perturbation | None,
    strength: float,
    labels: np.ndarray,
    scores: np.ndarray,
    original_scores: np.ndarray,
    threshold: float,
) -> ConditionResult:
    """The figures of one condition from its scores (NaN: the image was skipped)."""
    scored = ~np.isnan(scores)
    y, s = labels[scored], scores[scored]
    counts = metrics.confusion(y, s, threshold)
    auroc = metrics.image_auroc(y, s) if len(y) else float("nan")
    n_good = int(np.sum(y == GOOD))
    changed = int(np.sum((s >= threshold) != (original_scores[scored] >= threshold)))
    return ConditionResult(
        perturbation="original" if chosen is None else chosen.name,
        group="original" if chosen is None else chosen.group,
        strength=float(strength),
        description="as taken" if chosen is None else chosen.describe(strength),
        n_good=n_good,
        n_defect=int(np.sum(y == DEFECT)),
        image_auroc=None if not np.isfinite(auroc) else float(auroc),
        precision=counts.precision,
        recall=counts.recall,
        good_rejected=counts.fp,
        good_rejected_rate=counts.fp / n_good if n_good else 0.0,
        defects_missed=counts.fn,
        calls_changed=changed,
        n_skipped=int(np.sum(~scored)),
    )


def _false_alarm_change(before: float, after: float) -> str:
    if before <= 0:
        return f"false alarms rise from none to {after:.0%} of good parts"
    ratio = after / before
    verb = "double" if ratio < 3 else "triple" if ratio < 4 else f"grow {ratio:.0f}-fold"
    return f"the false alarms {verb} ({before:.0%} → {after:.0%} of good parts rejected)"


def condition_problems(baseline: ConditionResult, result: ConditionResult) -> list[str]:
    """What got worse, as clauses, or [] when nothing passed the advice limits."""
    found = []
    rate, base_rate = result.good_rejected_rate, baseline.good_rejected_rate
    if rate >= FALSE_ALARM_FACTOR * base_rate and rate - base_rate >= FALSE_ALARM_MIN_RISE:
        found.append(_false_alarm_change(base_rate, rate))
    if baseline.n_defect and result.n_defect and baseline.recall - result.recall >= RECALL_DROP:
        found.append(f"more defects get through (recall {baseline.recall:.2f} → {result.recall:.2f})")
    if (
        baseline.image_auroc is not None
        and result.image_auroc is not None
        and baseline.image_auroc - result.image_auroc >= AUROC_DROP
    ):
        found.append(
            f"good and defective parts overlap more (image AUROC {baseline.image_auroc:.3f} → "
            f"{result.image_auroc:.3f}), which no threshold can fix"
        )
    return found


def advice_sentences(baseline: ConditionResult, conditions: Sequence[ConditionResult]) -> list[str]:
    """Plain sentences, one per perturbation that hurts at some strength (named at the mildest strength that
    does), with what to do; then one sentence listing what the model withstood at every strength tried."""
    sentences = []
    withstood = []
    names = list(dict.fromkeys(c.perturbation for c in conditions))
    for name in names:
        rows = sorted((c for c in conditions if c.perturbation == name), key=lambda c: c.strength)
        hurting = next(((row, found) for row in rows if (found := condition_problems(baseline, row))), None)
        if hurting is None:
            withstood.append(rows[-1].description)
            continue
        row, found = hurting
        clauses = found[0] if len(found) == 1 else ", ".join(found[:-1]) + " and " + found[-1]
        title = GROUP_TITLES.get(row.group, row.group.capitalize())
        remedy = REMEDIES.get(row.group, "add training images like these")
        sentences.append(f"{title} ({row.description}): {clauses}. {remedy[0].upper()}{remedy[1:]}.")
    if withstood:
        sentences.append("No change worth acting on, even at the strongest tried: " + "; ".join(withstood) + ".")
    return sentences


COLUMNS = ("condition", "good", "defect", "AUROC", "precision", "recall", "good rejected", "calls changed")


def format_robustness_table(report: RobustnessReport) -> str:
    """The report as an aligned text table (the original first), then the advice."""
    rows = [COLUMNS]
    for result in [report.baseline, *report.conditions]:
        auroc = "n/a" if result.image_auroc is None else f"{result.image_auroc:.3f}"
        name = "original" if result.perturbation == "original" else f"{result.perturbation}: {result.description}"
        rows.append(
            (
                name,
                str(result.n_good),
                str(result.n_defect),
                auroc,
                f"{result.precision:.3f}",
                f"{result.recall:.3f}",
                f"{result.good_rejected} ({result.good_rejected_rate:.0%})",
                str(result.calls_changed),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append(f"threshold {report.threshold:.6g}; {report.n_images} images; {report.seconds:.1f} s wall, "
                 f"{report.cpu_seconds:.1f} s CPU")  # fmt: skip
    lines.extend(f"- {sentence}" for sentence in report.advice)
    return "\n".join(lines)
