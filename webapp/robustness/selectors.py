"""Reads for the robustness pages: a version's latest run, its report as table rows, and a one-line summary
for the version comparison."""

from __future__ import annotations

from dataclasses import dataclass

from ml.robustness import condition_from_dict, condition_problems
from webapp.robustness.models import RobustnessRun, RobustnessStatus
from webapp.training.models import ModelVersion


def latest_run(*, version: ModelVersion) -> RobustnessRun | None:
    return RobustnessRun.objects.filter(model_version=version).order_by("-created_at", "-id").first()


def latest_report_run(*, version: ModelVersion) -> RobustnessRun | None:
    """The newest run that has a report (a newer run may still be going, or have failed)."""
    runs = RobustnessRun.objects.filter(model_version=version, status=RobustnessStatus.SUCCEEDED)
    return runs.order_by("-finished_at", "-id").first()


@dataclass(frozen=True)
class TableRow:
    perturbation: str
    description: str
    first_of_perturbation: bool
    n_good: int
    n_defect: int
    image_auroc: float | None
    auroc_change: float | None
    precision: float
    recall: float
    good_rejected: int
    good_rejected_rate: float
    defects_missed: int
    calls_changed: int
    n_skipped: int
    problems: tuple[str, ...]  # what crossed the advice limits (ml.robustness), empty when it held up


def table_rows(report: dict) -> list[TableRow]:
    """The original first, then every perturbation at each strength, with what got worse."""
    baseline = condition_from_dict(report["baseline"])
    rows = []
    previous = None
    for data in [report["baseline"], *report["conditions"]]:
        result = condition_from_dict(data)
        change = None
        if result.image_auroc is not None and baseline.image_auroc is not None:
            change = result.image_auroc - baseline.image_auroc
        is_original = result.perturbation == "original"
        rows.append(
            TableRow(
                perturbation=result.perturbation,
                description=result.description,
                first_of_perturbation=result.perturbation != previous,
                n_good=result.n_good,
                n_defect=result.n_defect,
                image_auroc=result.image_auroc,
                auroc_change=None if is_original else change,
                precision=result.precision,
                recall=result.recall,
                good_rejected=result.good_rejected,
                good_rejected_rate=result.good_rejected_rate,
                defects_missed=result.defects_missed,
                calls_changed=result.calls_changed,
                n_skipped=result.n_skipped,
                problems=() if is_original else tuple(condition_problems(baseline, result)),
            )
        )
        previous = result.perturbation
    return rows


@dataclass(frozen=True)
class RobustnessSummary:
    """What the version comparison shows: the worst condition for AUROC and for false alarms, and how many
    perturbations call for action."""

    run: RobustnessRun
    baseline_auroc: float | None
    worst_auroc: float | None
    worst_auroc_condition: str
    baseline_rejected_rate: float
    worst_rejected_rate: float
    worst_rejected_condition: str
    n_advised: int  # perturbations the advice asks to act on
    n_perturbations: int


def robustness_summary(*, version: ModelVersion) -> RobustnessSummary | None:
    run = latest_report_run(version=version)
    if run is None or not run.report.get("conditions"):
        return None
    report = run.report
    conditions = report["conditions"]
    with_auroc = [c for c in conditions if c["image_auroc"] is not None]
    worst_auroc = min(with_auroc, key=lambda c: c["image_auroc"], default=None)
    worst_rejected = max(conditions, key=lambda c: c["good_rejected_rate"])
    baseline = condition_from_dict(report["baseline"])
    advised = {c["perturbation"] for c in conditions if condition_problems(baseline, condition_from_dict(c))}
    return RobustnessSummary(
        run=run,
        baseline_auroc=baseline.image_auroc,
        worst_auroc=None if worst_auroc is None else worst_auroc["image_auroc"],
        worst_auroc_condition="" if worst_auroc is None else worst_auroc["description"],
        baseline_rejected_rate=baseline.good_rejected_rate,
        worst_rejected_rate=worst_rejected["good_rejected_rate"],
        worst_rejected_condition=worst_rejected["description"],
        n_advised=len(advised),
        n_perturbations=len({c["perturbation"] for c in conditions}),
    )
