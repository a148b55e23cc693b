"""Train and compare (issue 20): a run trains the candidates the labels allow, keeps each as a version, activates
the winner ml.compare's rule picks, and the Train, run and Model pages show the leaderboard. Tiny families
(tests/ml/tiny_families.py) on tiny synthetic images keep these fast."""

import html
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.urls import reverse

from ml.adaptive import choose_settings
from ml.compare import RULE, alternative_size
from tests.conftest import wait_for
from tests.ml.tiny_families import TINY_CONFIGS
from webapp.images.models import Image, Label, Split
from webapp.samples import sample_project_create
from webapp.training import services
from webapp.training.candidates import COMPARE_FAMILY, NO_VALIDATION_DEFECTS
from webapp.training.comparison import CANDIDATE_TIMES, candidate_clock
from webapp.training.execution import (
    SELF_CALIBRATED,
    run_files_discard,
    self_calibration_scores,
    training_run_execute,
)
from webapp.training.models import ModelVersion, RunStatus, TrainingRun

SMALL = {"n_good": 24, "n_defect": 9, "size": 48}
# Two tiny PatchCores (the rule compares PatchCore settings on validation AP, ties to the faster fit), and a
# Gaussian whose grid cannot divide its feature map: it fails, and the others go on.
TINY_CANDIDATES = [
    {"family": "patchcore", "config": {**TINY_CONFIGS["patchcore"], "image_size": 32}, "label": "PatchCore 32 px"},
    {"family": "patchcore", "config": {**TINY_CONFIGS["patchcore"], "image_size": 64}, "label": "PatchCore 64 px"},
    {"family": "gaussian", "config": {**TINY_CONFIGS["gaussian"], "grid": 3}, "label": "gaussian"},
]


def tiny_comparison(project, owner) -> TrainingRun:
    """An automatic request (a comparison: validation holds defects), its candidates made tiny."""
    with transaction.atomic():  # the run is sent to the workers once this commits: with its tiny candidates
        run = services.training_run_request(project=project, requested_by=owner)
        assert run.family == COMPARE_FAMILY
        TrainingRun.objects.filter(id=run.id).update(config={**run.config, "candidates": TINY_CANDIDATES})
    run.refresh_from_db()
    return run


@pytest.mark.django_db
def test_an_automatic_request_plans_the_data_chosen_patchcore_and_a_coarser_one_within_the_budget(owner, client):
    # given a project whose validation split holds defects
    project = sample_project_create(owner=owner, **SMALL)
    n_good = Image.objects.filter(project=project, split=Split.TRAIN, label=Label.GOOD).count()
    chosen = choose_settings(n_good=n_good, short_side=SMALL["size"], rotation_invariant=None)
    # when
    run = services.training_run_request(project=project, requested_by=owner, budget_minutes=5)
    # then the first candidate is PatchCore with the settings ml.adaptive chooses from these images (left to the
    # fit), the second the same at a coarser working size, within the chosen budget
    assert run.family == COMPARE_FAMILY
    first, second = run.config["candidates"]
    assert (first["config"], first["label"]) == ({}, f"PatchCore {chosen.image_size} px (chosen from the data)")
    assert second["config"] == {"image_size": alternative_size(chosen.image_size)}
    assert run.config["budget_seconds"] == 300
    assert "Kensa trains 2 candidates" in run.reason and "budget of 5 min" in run.reason
    # and the Train page says what the first candidate will choose, as it does when one model is trained
    client.force_login(owner)
    page = html.unescape(client.get(reverse("train", args=[project.public_id])).content.decode())
    assert f'id="planned-settings">{chosen.sentence}' in page and first["label"] in page


@pytest.mark.django_db
def test_a_chosen_size_or_family_trains_one_model_and_ticked_families_join_the_comparison(owner):
    project = sample_project_create(owner=owner, **SMALL)
    sized = services.training_run_request(project=project, requested_by=owner, image_size=128)
    assert (sized.family, sized.config) == ("patchcore", {"image_size": 128})
    chosen = services.training_run_request(project=project, requested_by=owner, family="gaussian")
    assert chosen.family == "gaussian"
    ticked = services.training_run_request(project=project, requested_by=owner, compare_families=["gaussian"])
    assert [c["family"] for c in ticked.config["candidates"]] == ["patchcore", "patchcore", "gaussian"]


@pytest.mark.django_db
def test_rotations_set_by_hand_apply_to_every_patchcore_candidate_of_a_comparison(owner):
    project = sample_project_create(owner=owner, **SMALL)
    run = services.training_run_request(project=project, requested_by=owner, rotations=4)
    assert run.family == COMPARE_FAMILY
    assert [c["config"].get("rotations") for c in run.config["candidates"]] == [4, 4]


@pytest.mark.django_db
def test_large_images_tile_the_data_chosen_patchcore_and_the_coarser_one_sees_them_whole(owner):
    # given images recorded as 2448 x 2048 (automatic tiling starts at three times the working size)
    project = sample_project_create(owner=owner, **SMALL)
    Image.objects.filter(project=project).update(width=2448, height=2048)
    # when
    automatic = services.training_run_request(project=project, requested_by=owner)
    off = services.training_run_request(project=project, requested_by=owner, tiling=0)
    # then
    tiles = [c["config"].get("tile_working_size") for c in automatic.config["candidates"]]
    assert tiles[0] and tiles[1] is None
    assert [c["config"].get("tile_working_size") for c in off.config["candidates"]] == [None, None]


@pytest.mark.django_db
def test_without_validation_defects_the_label_rule_decides_and_the_page_says_so(client, owner):
    # given validation holding good images only
    project = sample_project_create(owner=owner, **SMALL)
    Image.objects.filter(project=project, split=Split.VALIDATION, label=Label.DEFECT).update(split=Split.TEST)
    # when
    run = services.training_run_request(project=project, requested_by=owner)
    # then one model is trained, the label rule's, and the Train page explains why before anyone clicks
    assert (run.family, run.config) == ("patchcore", {})
    assert NO_VALIDATION_DEFECTS in run.reason
    client.force_login(owner)
    page = html.unescape(client.get(reverse("train", args=[project.public_id])).content.decode())
    assert NO_VALIDATION_DEFECTS in page


def test_a_comparison_keeps_every_candidate_as_a_version_and_activates_the_winner(transactional_db, owner, client):
    # given
    project = sample_project_create(owner=owner, **SMALL)
    run = tiny_comparison(project, owner)
    assert services.training_run_claim(run_id=run.id)
    # when
    training_run_execute(run_id=run.id)
    # then the run succeeded with one version per fitted candidate, the winner linked to the run and active
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    versions = list(ModelVersion.objects.filter(project=project).order_by("number"))
    assert [v.family for v in versions] == ["patchcore", "patchcore"]
    winner = ModelVersion.objects.get(run=run)
    assert winner.is_active and [v for v in versions if v.is_active] == [winner]
    n_test = Image.objects.filter(project=project, split=Split.TEST).exclude(label=Label.UNLABELLED).count()
    for version in versions:
        assert version.predictions.count() == n_test == version.metrics["n_test"]
        assert version.metrics["image_auroc"] is not None
        for name in version.artifact_files:
            assert default_storage.exists(f"{version.artifact_prefix}/model/{name}")
    # and every version carries the same leaderboard: validation metrics, fit time, errors, why the winner won
    board = winner.metrics["comparison"]
    assert board == versions[0].metrics["comparison"] == versions[1].metrics["comparison"]
    assert board["rule"].startswith(RULE.split("{")[0]) and board["why"]
    rows = {row["label"]: row for row in board["candidates"]}
    assert set(rows) == {"PatchCore 32 px", "PatchCore 64 px", "gaussian"}
    assert rows["gaussian"]["error"].startswith("failed:") and rows["gaussian"]["version"] is None
    assert [row["label"] for row in board["candidates"] if row["winner"]] == [winner.metrics["candidate"]]
    for label in ("PatchCore 32 px", "PatchCore 64 px"):
        assert rows[label]["validation"]["image_ap"] is not None and rows[label]["fit_seconds"] > 0
    assert {rows[label]["version"] for label in ("PatchCore 32 px", "PatchCore 64 px")} == {1, 2}
    # and the run's clock: when each fitted candidate began, when fitting ended, and which one failed
    times = run.config[CANDIDATE_TIMES]
    assert times["started"]["0"] <= times["started"]["1"] <= times["end"] and times["failed"] == [2]
    assert [row["state"] for row in candidate_clock(run)] == ["done", "done", "failed"]
    # and each version's test figures per defect class (the sample project draws three)
    assert set(winner.metrics["per_class"]) == {"scratch", "dent", "stain"}
    assert all(row["n"] >= 1 and 0 <= row["f1"] <= 1 for row in winner.metrics["per_class"].values())
    # and the run, Train and Model pages show it
    client.force_login(owner)
    for url in (
        reverse("run_detail", args=[project.public_id, run.public_id]),
        reverse("train", args=[project.public_id]),
        reverse("version_detail", args=[project.public_id, versions[0].public_id]),
    ):
        page = html.unescape(client.get(url).content.decode())
        assert 'id="leaderboard"' in page and "PatchCore 64 px" in page and board["why"] in page, url
    model_page = html.unescape(client.get(url).content.decode())  # the Model page, last
    assert 'id="per-class"' in model_page
    # and what the candidate chose from the data (the settings its config left to ml.adaptive)
    chosen = versions[0].metrics["chosen_settings"]
    assert chosen["chosen"] and f"Settings chosen from the data: {chosen['sentence']}" in model_page
    # when the run's files are discarded (a run reaped at its very end), every candidate goes with them
    run_files_discard(run)
    assert not ModelVersion.objects.filter(project=project).exists()
    assert not (Path(settings.DATA_DIR) / "work" / f"run-{run.public_id}").exists()


@pytest.mark.integration
def test_a_comparison_runs_on_the_worker(owner, celery_worker):
    # given a comparison request whose candidates are tiny, sent to a real worker
    project = sample_project_create(owner=owner, **SMALL)
    run = tiny_comparison(project, owner)
    # when the worker runs it
    done = wait_for(
        lambda: (r := TrainingRun.objects.get(id=run.id)).status not in (RunStatus.QUEUED, RunStatus.RUNNING) and r,
        timeout=180,
        message=f"the run to end; worker log:\n{celery_worker.log_text()[-3000:]}",
    )
    # then
    assert done.status == RunStatus.SUCCEEDED, done.error
    assert ModelVersion.objects.filter(project=project).count() == 2
    assert ModelVersion.objects.get(run=done).is_active


def test_an_empty_validation_split_costs_patchcore_no_training_image(transactional_db, owner):
    # given an MVTec-like project: nothing in validation (tiny PatchCore settings)
    project = sample_project_create(owner=owner, **SMALL)
    Image.objects.filter(project=project, split=Split.VALIDATION).update(split=Split.TEST)
    with transaction.atomic():
        run = services.training_run_request(project=project, requested_by=owner)
        TrainingRun.objects.filter(id=run.id).update(config=TINY_CONFIGS["patchcore"])
    assert services.training_run_claim(run_id=run.id)
    # when
    training_run_execute(run_id=run.id)
    # then every good training image trained it, and its threshold came from them, each without its own patches
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    version = ModelVersion.objects.get(run=run)
    n_good = Image.objects.filter(project=project, split=Split.TRAIN, label=Label.GOOD).count()
    assert (version.metrics["n_fit"], version.metrics["n_validation"]) == (n_good, 0)
    assert version.metrics["note"] == SELF_CALIBRATED
    # a threshold above the good training images' ordinary scores (they sit in the bank: near zero), so the good
    # test images are mostly called good
    good_test = version.predictions.filter(image__label=Label.GOOD)
    assert version.calibration["threshold"] > 0
    assert good_test.filter(is_anomalous=False).count() >= good_test.count() / 2


def test_self_calibration_leaves_out_the_rarest_training_images():
    # the threshold rule was made for ~20 validation images, whose highest sits near the 95th percentile
    kept = self_calibration_scores(np.arange(100.0)[::-1])
    assert len(kept) == 95 and kept.max() == 94.0
    assert list(self_calibration_scores(np.array([3.0]))) == [3.0]
