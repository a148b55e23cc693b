"""A run that trains several candidates (issue 20): fit each on the train split, score it on validation, keep
every fitted one as a model version (threshold from its own validation scores, metrics on the test split), and
activate the winner ml.compare's rule picks. The leaderboard is stored in each version's metrics["comparison"]."""

from __future__ import annotations

import time

import numpy as np
from django.conf import settings
from django.db import transaction

from ml.compare import CandidateResult, Comparison, compare_candidates
from ml.devices import device_description
from ml.thresholds import calibrate
from webapp.training import services
from webapp.training.artifacts import artifact_prefix, artifact_upload
from webapp.training.candidates import candidates_from_config, finite
from webapp.training.datasets import ProjectSamples
from webapp.training.eta import EVALUATION_STAGES
from webapp.training.evaluation import evaluate_and_store
from webapp.training.models import ModelVersion, TrainingRun
from webapp.training.settings_plan import chosen_settings_of

NO_VALIDATION = (
    "The validation split has no labelled images any more, so the candidates cannot be compared. Put good and "
    "defect images in validation, or choose one family in the advanced settings."
)
NOTHING_FITTED = "No candidate could be trained: {reasons}"
# run.config key: {"started": {position: time.time() it began}, "end": when fitting was over, "failed": [positions
# that failed]}: the run page's per-candidate clock (candidate_clock) while the run goes on, beside the budget.
CANDIDATE_TIMES = "candidate_times"


def candidate_clock(run: TrainingRun, *, now: float | None = None) -> list[dict]:
    """One row per planned candidate for the run page: label, state ("done": fitted and scored on validation,
    "running", "waiting", "failed", or "not started": the budget was spent) and seconds (taken, or so far)."""
    times = run.config.get(CANDIDATE_TIMES) or {}
    planned = run.config.get("candidates") or []
    now = time.time() if now is None else now
    end = times.get("end")
    starts = {int(key): value for key, value in (times.get("started") or {}).items()}
    failed = set(times.get("failed") or ())
    rows = []
    for position, candidate in enumerate(planned):
        label = candidate.get("label") or candidate.get("family", "")
        started = starts.get(position)
        if position in failed or started is None:
            state = "failed" if position in failed else "not started" if end is not None else "waiting"
            rows.append({"label": label, "state": state, "seconds": None})
            continue
        later = [value for key, value in starts.items() if key > position]
        finished = min(later) if later else end
        state = "done" if finished is not None else "running"
        rows.append({"label": label, "state": state, "seconds": max(0.0, (finished or now) - started)})
    return rows


def _candidate_of(message: str, labels: list[str], fraction: float) -> int:
    """Which candidate a progress message of ml.compare is about: its message starts with the label (the fraction
    alone would name the next candidate at the end of one)."""
    for position, label in enumerate(labels):
        if message.startswith(f"{label}:"):
            return position
    return min(len(labels) - 1, int(fraction * len(labels)))


def candidate_prefix(run: TrainingRun, position: int) -> str:
    """Storage folder of the run's `position`-th candidate: under the run's folder, so discarding the run's
    folder discards every candidate (webapp.training.execution.run_files_discard)."""
    return f"{artifact_prefix(run)}/candidates/{position}"


def _row(result: CandidateResult, *, comparison: Comparison, version: ModelVersion | None) -> dict:
    return finite(
        {
            "label": result.candidate.label,
            "family": result.candidate.family,
            "config": result.candidate.config,
            "validation": result.metrics,
            "fit_seconds": result.fit_seconds,
            "fit_cpu_seconds": result.fit_cpu_seconds,
            "error": result.error,
            "winner": result is comparison.winner,
            "version": version.number if version else None,
            "version_id": str(version.public_id) if version else None,
        }
    )


def leaderboard(
    *, run: TrainingRun, comparison: Comparison, versions: dict[int, ModelVersion], budget_seconds: float | None
) -> dict:
    """What the Train, run and Model pages show: one row per candidate in the order tried."""
    return {
        "run": str(run.public_id),
        "rule": comparison.rule,
        "why": comparison.why,
        "winner": comparison.winner.candidate.label,
        "validation_has_defects": comparison.validation_has_defects,
        "budget_seconds": budget_seconds,
        "candidates": [
            _row(result, comparison=comparison, version=versions.get(position))
            for position, result in enumerate(comparison.results)
        ],
    }


def comparison_train_and_evaluate(
    run: TrainingRun,
    workdir,
    *,
    fit: ProjectSamples,
    validation: ProjectSamples,
    test: ProjectSamples,
    note: str,
    progress,
) -> ModelVersion:
    """Trains and compares the run's candidates; returns the winner's version (activated). `progress` is the
    run's webapp.training.execution.Progress; its errors (UserFacingError) are execution's."""
    from webapp.training.execution import FIT_SHARE, UserFacingError

    if not len(validation):
        raise UserFacingError(NO_VALIDATION)
    candidates = candidates_from_config(run.config.get("candidates") or [])
    budget = run.config.get("budget_seconds")
    devices: list[str] = []
    fit_part = progress.part(1, FIT_SHARE)
    labels = [candidate.label for candidate in candidates]
    times: dict = {"started": {}, "end": None, "failed": []}

    def record_times() -> None:
        run.config = {**run.config, CANDIDATE_TIMES: {**times, "started": dict(times["started"])}}
        TrainingRun.objects.filter(id=run.id).update(config=run.config)

    def fitting(stage: str, fraction: float, message: str) -> None:
        # ml.compare reports the fraction over all candidates; the message says which one and its own stage.
        position = _candidate_of(message, labels, fraction)
        if stage == "candidate" and fraction < 1.0 and str(position) not in times["started"]:
            times["started"][str(position)] = time.time()
            record_times()
        fit_part(stage, fraction, f"Candidate {position + 1} of {len(candidates)} · {message}")

    try:
        comparison = compare_candidates(
            fit, validation, candidates, budget_seconds=budget, progress=fitting, device=settings.KENSA_DEVICE
        )
    except RuntimeError as exc:  # every candidate failed; each one's reason is in the message
        raise UserFacingError(NOTHING_FITTED.format(reasons=str(exc))[:2000]) from None
    times["end"] = time.time()
    times["failed"] = [n for n, r in enumerate(comparison.results) if r.error and r.error.startswith("failed")]
    record_times()
    fitted = [(position, r) for position, r in enumerate(comparison.results) if r.ok]
    for _, result in fitted:
        devices.append(device_description(result.model.device))
    TrainingRun.objects.filter(id=run.id).update(device=", ".join(dict.fromkeys(devices))[:100])

    versions: dict[int, ModelVersion] = {}
    evaluated: dict[int, dict] = {}
    for done, (position, result) in enumerate(fitted):
        share = (99 - FIT_SHARE) / len(fitted)
        evaluation_progress = progress.part(FIT_SHARE + done * share, FIT_SHARE + (done + 1) * share, EVALUATION_STAGES)
        calibration = calibrate(np.array(result.validation_scores), validation.labels)
        evaluation_progress("validation", 1.0, f"{result.candidate.label}: threshold from validation")
        model_dir = workdir / f"candidate-{position}"
        result.model.save(model_dir)
        prefix = candidate_prefix(run, position)
        files = artifact_upload(model_dir, prefix)
        with transaction.atomic():
            latest = ModelVersion.objects.filter(project=run.project).order_by("-number").first()
            versions[position] = ModelVersion.objects.create(
                project=run.project,
                # A run points at one version (OneToOne): its winner. The others name the run in their metrics.
                run=run if result is comparison.winner else None,
                number=latest.number + 1 if latest else 1,
                family=result.candidate.family,
                artifact_prefix=prefix,
                artifact_files=files,
                calibration=calibration.to_dict(),
            )
        evaluated[position] = evaluate_and_store(
            model=result.model,
            version=versions[position],
            samples=test,
            calibration=calibration,
            progress=evaluation_progress,
        )
    board = leaderboard(run=run, comparison=comparison, versions=versions, budget_seconds=budget)
    for position, version in versions.items():
        metrics = evaluated[position]
        metrics.update(
            {
                "n_fit": len(fit),
                "n_validation": len(validation),
                "n_test": len(test),
                "note": note,
                "candidate": comparison.results[position].candidate.label,
                "comparison": board,
                # issue 21: what the candidate chose from the data (the version page says it)
                "chosen_settings": chosen_settings_of(comparison.results[position].model),
            }
        )
        ModelVersion.objects.filter(id=version.id).update(metrics=finite(metrics))
    winner = next(versions[p] for p, r in fitted if r is comparison.winner)
    services.model_version_activate(version=winner)
    return winner
