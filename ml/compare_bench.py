"""`python -m ml bench --model compare`: the app's candidate comparison on an MVTec-layout folder.

Split: training gets the good training images plus `supervised_fraction` of each defect type's test images (with
masks, as a user who outlined half the defects); a validation split is carved out of that training pool (a third
of each defect type's training defects and VALIDATION_GOOD_SHARE of the good ones, seeded), the comparison picks
its winner on it, and every candidate is then reported on the untouched test images with `bench`'s usual keys.
With `boxed_defects` N, training gets N defects given boxes instead (drawn in turn from each defect type, seeded)
and the test keeps all the others; `variant` changes every image (VARIANTS) to mimic a less tidy line.
"""

from __future__ import annotations

import copy
import hashlib
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml.bench import BenchOptions, _log, cpu_seconds, evaluate_fitted
from ml.compare import Comparison, candidates_for, compare_candidates, format_leaderboard, typical_short_side_of
from ml.data import LazySamples, load_mvtec, supervised_split
from ml.detections import box_mask, boxes_from_mask
from ml.images import read_mask
from ml.perturbations import perturb
from ml.types import DEFECT, Sample

VALIDATION_DEFECT_SHARE = 1 / 3
VALIDATION_GOOD_SHARE = 0.1
# The practitioner's conditions (issue 20, after the model selection study): the part off centre (a random crop
# resized back), random brightness and contrast, random coloured clutter on the background; (perturbation, strength)
# pairs of ml.perturbations, applied to every image, each with its own seed.
VARIANTS: dict[str, tuple[tuple[str, float], ...]] = {
    "original": (),
    "shift": (("crop", 0.2),),
    "lighting": (("brightness", 0.2), ("contrast", 0.2)),
    "clutter": (("clutter", 0.1),),
}


class PreparedSamples(Sequence[Sample]):
    """LazySamples seen through a variant (every image perturbed, seeded per image) and, for the images in
    `boxed`, with their outlines replaced by boxes (Sample.boxes; the mask becomes the filled boxes), as a user
    who only draws boxes would give them; with `classes` (several defect types), each defect's drawing also comes as
    a class map of its type, as the app gives an MVTec upload's folders. Keeps LazySamples' records / labels / kinds
    / subset for bench."""

    def __init__(
        self,
        base: LazySamples,
        *,
        variant: str = "original",
        boxed: frozenset[Path] = frozenset(),
        classes: tuple[str, ...] = (),
    ):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        self.base, self.variant, self.boxed, self.classes = base, variant, boxed, classes

    @property
    def records(self):
        return self.base.records

    @property
    def labels(self) -> np.ndarray:
        return self.base.labels

    @property
    def kinds(self) -> list[str]:
        return self.base.kinds

    def __len__(self) -> int:
        return len(self.base)

    def image_sizes(self, indices) -> list[tuple[int, int]]:
        return self.base.image_sizes(indices)  # every variant keeps the image's size

    def subset(self, indices) -> PreparedSamples:
        return PreparedSamples(self.base.subset(indices), variant=self.variant, boxed=self.boxed, classes=self.classes)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        sample = self.base[index]
        record = self.base.records[index]
        image, mask = sample.image, sample.mask
        seed = zlib.crc32(str(record.image_path).encode())
        for step, (name, strength) in enumerate(VARIANTS[self.variant]):
            image, mask = perturb(image, mask, name, strength, seed=seed + step)
        boxes = None
        if record.image_path in self.boxed and mask is not None:
            boxes = boxes_from_mask(mask, label=record.kind)
            mask = box_mask(boxes, mask.shape)
        if self.classes and record.kind in self.classes and mask is not None and mask.any():
            # As the app gives them: each defect type a class, its drawing a class map (webapp.training.datasets).
            class_mask = mask.astype(np.int32) * (self.classes.index(record.kind) + 1)
            return Sample(image, sample.label, mask, sample.name, boxes=boxes, class_mask=class_mask,
                          classes=self.classes)  # fmt: skip
        return Sample(image, sample.label, mask, sample.name, boxes=boxes)


def boxed_split(dataset, *, n_boxed: int, seed: int) -> tuple[LazySamples, LazySamples, frozenset[Path]]:
    """(training pool, test, boxed paths): every good training image plus `n_boxed` defect images drawn in turn
    from each defect type (seeded), for training; the good test images and the other defects for testing."""
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[int]] = {}
    for index, kind in enumerate(dataset.test.kinds):
        if kind != "good":
            by_kind.setdefault(kind, []).append(index)
    queues = {kind: [indices[i] for i in rng.permutation(len(indices))] for kind, indices in sorted(by_kind.items())}
    chosen: list[int] = []
    while len(chosen) < n_boxed and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < n_boxed:
                chosen.append(queue.pop(0))
    rest = [i for i in range(len(dataset.test)) if i not in set(chosen)]
    boxed = frozenset(dataset.test.records[i].image_path for i in chosen)
    return dataset.train + dataset.test.subset(sorted(chosen)), dataset.test.subset(rest), boxed


def validation_split(pool: LazySamples, *, seed: int) -> tuple[LazySamples, LazySamples]:
    """(fit, validation) from a training pool: per kind, a seeded share goes to validation (at least one defect of
    each defect kind that has two or more)."""
    rng = np.random.default_rng(seed + 1)
    fit, validation = [], []
    by_kind: dict[str, list[int]] = {}
    for index, kind in enumerate(pool.kinds):
        by_kind.setdefault(kind, []).append(index)
    for kind in sorted(by_kind):
        indices = [by_kind[kind][i] for i in rng.permutation(len(by_kind[kind]))]
        share = VALIDATION_GOOD_SHARE if kind == "good" else VALIDATION_DEFECT_SHARE
        cut = int(round(len(indices) * share))
        if kind != "good" and len(indices) >= 2:
            cut = max(cut, 1)
        validation += indices[:cut]
        fit += indices[cut:]
    return pool.subset(sorted(fit)), pool.subset(sorted(validation))


def app_order(part: LazySamples, *, goods_first: bool) -> LazySamples:
    """`part` in the order the app reads a split (webapp.training.execution.training_data): by the files' SHA-256,
    and for training the good images before the outlined defects (defects without drawn pixels left out).
    PatchCore's fit draws its patches and coreset per batch, so the order alone moves its figures by about a draw's
    spread: this order lets the bench repeat the app's run."""
    digests = [hashlib.sha256(record.image_path.read_bytes()).hexdigest() for record in part.records]
    labels = part.labels

    def key(index: int) -> tuple:
        return (int(labels[index] == DEFECT) if goods_first else 0, digests[index])

    def kept(index: int) -> bool:  # the app trains on outlined defects only, and an empty mask outlines nothing
        record = part.records[index]
        if not goods_first or labels[index] != DEFECT:
            return True
        return bool(record.mask_path and read_mask(record.mask_path).any())

    return part.subset(sorted(filter(kept, range(len(part))), key=key))


def run_compare_bench(options: BenchOptions) -> dict:
    """The winner's report (bench's keys at the top level) plus `winner`, `candidates` (one report per candidate,
    each with its `validation` metrics and `label`), `rule`, `why` and `leaderboard`."""
    dataset = load_mvtec(options.data, train_limit=options.train_limit, seed=options.seed)
    boxed: frozenset[Path] = frozenset()
    if options.boxed_defects:
        pool, test, boxed = boxed_split(dataset, n_boxed=options.boxed_defects, seed=options.seed)
    else:
        pool, test = supervised_split(dataset, fraction=options.supervised_fraction, seed=options.seed)
    train, validation = validation_split(pool, seed=options.seed)
    if options.order == "content":
        train = app_order(train, goods_first=True)
        validation, test = app_order(validation, goods_first=False), app_order(test, goods_first=False)
    elif options.order != "name":
        raise ValueError(f"unknown order {options.order!r}; expected name or content")
    # Several defect types are several classes, as the app makes them of an MVTec upload (one per folder).
    kinds = tuple(sorted({kind for kind in dataset.test.kinds if kind != "good"}))
    classes = kinds if len(kinds) > 1 else ()
    train, validation, test = (
        PreparedSamples(part, variant=options.variant, boxed=boxed, classes=classes)
        for part in (train, validation, test)
    )
    labels = train.labels
    n_defect = int(np.sum(labels == DEFECT))
    n_boxed = sum(1 for record in train.records if record.image_path in boxed)
    candidates = candidates_for(
        n_good=int(np.sum(labels != DEFECT)),
        n_defect=n_defect,
        n_annotated=n_defect - n_boxed,
        n_boxed=n_boxed,
        short_side=typical_short_side_of(train),  # as the app plans from its database: the same candidates
    )
    extra = dict(options.config or {})
    extra.pop("seed", None)
    for candidate in candidates:
        candidate.config = {**candidate.config, **extra, "seed": options.seed}
        if options.image_size is not None and candidate.family != "patchcore":
            candidate.config["image_size"] = options.image_size

    def progress(stage: str, fraction: float, message: str) -> None:
        _log(options, f"  [{stage} {fraction:5.1%}] {message}")

    _log(options, f"comparing {len(candidates)} candidates: {len(train)} training, {len(validation)} validation")
    started, cpu_started = time.perf_counter(), cpu_seconds()
    comparison = compare_candidates(train, validation, candidates, progress=progress)
    compare_seconds, compare_cpu_seconds = time.perf_counter() - started, cpu_seconds() - cpu_started
    reports = []
    for result in comparison.results:
        if not result.ok:
            reports.append({"label": result.candidate.label, "model": result.candidate.family, "error": result.error})
            continue
        candidate_options = copy.copy(options)
        candidate_options.model = result.candidate.family
        report = evaluate_fitted(
            result.model,
            train,
            test,
            candidate_options,
            fit_seconds=result.fit_seconds,
            fit_cpu_seconds=result.fit_cpu_seconds,
        )
        report.update(label=result.candidate.label, validation=result.metrics, error="")
        reports.append(report)
    winner_report = next(r for r, res in zip(reports, comparison.results, strict=True) if res is comparison.winner)
    summary = {
        **winner_report,
        "model": "compare",
        "winner": comparison.winner.candidate.family,
        "winner_label": comparison.winner.candidate.label,
        "rule": comparison.rule,
        "why": comparison.why,
        "candidates": reports,
        "compare_seconds": compare_seconds,
        "compare_cpu_seconds": compare_cpu_seconds,
        "n_validation": len(validation),
        "n_boxed_defects": n_boxed,
        "variant": options.variant,
        "leaderboard": format_leaderboard(comparison),
        "test_leaderboard": format_test_leaderboard(comparison, reports),
    }
    return summary


TEST_COLUMNS = ("image_auroc", "image_ap", "aupro", "mean_iou", "precision_at_recall1")


def format_test_leaderboard(comparison: Comparison, reports: list[dict]) -> str:
    """The candidates' figures on the test images (what the comparison never saw), the winner marked."""
    rows = [f"  {'candidate (test)':<40}" + "".join(f"{c:>22}" for c in TEST_COLUMNS)]
    for result, report in zip(comparison.results, reports, strict=True):
        mark = "*" if result is comparison.winner else " "
        cells = []
        for column in TEST_COLUMNS:
            value = report.get(column)
            cells.append(f"{'n/a' if value is None or value != value else f'{value:.4f}':>22}")
        rows.append(f"{mark} {result.candidate.label:<40}" + "".join(cells))
    return "\n".join(rows)
