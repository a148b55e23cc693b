"""The robustness run: a model trained at one brightness loses AUROC when the light changes and the report says
so; the run streams (small batches, small examples), is reproducible, and its advice follows the figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml.__main__ import main
from ml.gaussian import GaussianBaseline
from ml.perturbations import PERTURBATIONS
from ml.registry import create_model
from ml.robustness import (
    EXAMPLE_SIDE,
    ConditionResult,
    advice_sentences,
    format_robustness_table,
    resolve_perturbations,
    robustness_run,
)
from ml.synthetic import make_dataset
from ml.thresholds import default_threshold
from ml.types import DEFECT, GOOD, Sample
from tests.ml.test_bench import synthetic_mvtec  # noqa: F401  (fixture)
from tests.ml.tiny_families import TINY_CONFIGS

SIZE = 96


def _samples(**kwargs) -> list[Sample]:
    return [
        Sample(image=p.image, label=DEFECT if p.defect else GOOD, mask=p.mask, name=f"{p.defect or 'good'}/{i}")
        for i, p in enumerate(make_dataset(size=SIZE, **kwargs))
    ]


@pytest.fixture(scope="module")
def lit_once():
    """A Gaussian baseline fitted on synthetic parts all lit alike (brightness within ±5 %), its threshold from
    separate validation parts, and test parts."""
    model = GaussianBaseline(image_size=SIZE, grid=12, reduced_channels=48, pretrained=True)
    model.fit([Sample(image=s.image) for s in _samples(n_good=16, n_defect=0, seed=1)])
    validation = _samples(n_good=6, n_defect=6, seed=3)
    scores = np.array([p.score for p in model.predict([s.image for s in validation])])
    threshold = default_threshold(scores, np.array([s.label for s in validation]))
    return model, threshold, _samples(n_good=10, n_defect=10, seed=2)


def test_strong_lighting_changes_cost_auroc_and_the_report_says_so(lit_once):
    # given a model that only ever saw one lighting
    model, threshold, test = lit_once
    # when the test parts are seen under other light
    report = robustness_run(model, test, threshold=threshold, perturbations=resolve_perturbations(["brightness"]))
    # then the strongest change separates good from defect worse than the unperturbed images
    strongest = [c for c in report.conditions if c.perturbation == "brightness"][-1]
    assert strongest.strength == max(PERTURBATIONS["brightness"].strengths)
    assert report.baseline.image_auroc >= 0.95
    assert strongest.image_auroc <= report.baseline.image_auroc - 0.05
    # and the advice names the lighting and what to do about it
    lighting = [s for s in report.advice if s.startswith("Lighting changes (brightness")]
    assert lighting and "varied light" in lighting[0]
    assert "brightness" in format_robustness_table(report)
    # and the worst case shown is a brightness example whose call went the wrong way
    (worst,) = report.worst_cases
    assert worst.perturbation == "brightness" and worst.harm > 0


class CountingSamples:
    """A lazy test split that counts how often each image is read (the run should read each once)."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples
        self.reads = [0] * len(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        self.reads[index] += 1
        return self.samples[index]


class BatchRecorder:
    """Wraps a fitted model and records the size of every batch it is asked to predict."""

    def __init__(self, model):
        self.model = model
        self.batches: list[int] = []

    def predict(self, images, *, batch_size: int = 8):
        self.batches.append(len(images))
        return self.model.predict(images, batch_size=batch_size)


@pytest.fixture(scope="module")
def tiny_model():
    model = create_model("gaussian", **TINY_CONFIGS["gaussian"])
    model.fit([Sample(image=s.image) for s in _samples(n_good=6, n_defect=0, seed=5)])
    return model


def test_run_streams_one_image_at_a_time_in_small_batches(tiny_model):
    # given a lazy split of 8 images
    samples = CountingSamples(_samples(n_good=4, n_defect=4, seed=6))
    recorder = BatchRecorder(tiny_model)
    chosen = resolve_perturbations(["shift", "noise", "clutter"])
    progress = []
    # when
    report = robustness_run(
        recorder, samples, threshold=0.0, perturbations=chosen, batch_size=4, progress=lambda *a: progress.append(a)
    )
    # then each image was read once, batches never exceeded the batch size, progress reached the end
    assert samples.reads == [1] * 8
    assert max(recorder.batches) <= 4
    assert progress[-1][1] == 1.0
    # and every condition has its row, with examples kept small and only one per perturbation
    assert len(report.conditions) == sum(len(p.strengths) for p in chosen)
    assert len(report.worst_cases) <= len(chosen)
    for case in report.worst_cases:
        assert max(case.image.shape[:2]) <= EXAMPLE_SIDE and case.anomaly_map.shape == case.image.shape[:2]
    assert report.to_dict()["conditions"][0]["perturbation"] == "shift"


def test_the_same_seed_gives_the_same_report(tiny_model):
    samples = _samples(n_good=3, n_defect=3, seed=7)
    chosen = resolve_perturbations(["rotation", "clutter"])
    first = robustness_run(tiny_model, samples, threshold=1.0, perturbations=chosen, seed=4).to_dict()
    again = robustness_run(tiny_model, samples, threshold=1.0, perturbations=chosen, seed=4).to_dict()
    for key in ("seconds", "cpu_seconds"):
        first.pop(key), again.pop(key)
    assert first == again


def test_unknown_perturbation_names_are_refused():
    with pytest.raises(ValueError, match="unknown perturbation\\(s\\) fog"):
        resolve_perturbations(["shift", "fog"])


def _row(name: str, group: str, strength: float, *, rejected: int, recall: float, auroc: float) -> ConditionResult:
    return ConditionResult(
        perturbation=name,
        group=group,
        strength=strength,
        description=PERTURBATIONS[name].describe(strength) if name in PERTURBATIONS else "as taken",
        n_good=50,
        n_defect=50,
        image_auroc=auroc,
        precision=0.9,
        recall=recall,
        good_rejected=rejected,
        good_rejected_rate=rejected / 50,
        defects_missed=round((1 - recall) * 50),
        calls_changed=0,
    )


def test_advice_names_the_mildest_strength_that_hurts_and_what_held_up():
    # given 3 of 50 good parts rejected as taken; brightness doubles that from ±20 %, noise changes nothing
    baseline = _row("original", "original", 0, rejected=3, recall=0.96, auroc=0.97)
    rows = [
        _row("brightness", "lighting", 0.1, rejected=4, recall=0.96, auroc=0.97),
        _row("brightness", "lighting", 0.2, rejected=7, recall=0.95, auroc=0.96),
        _row("brightness", "lighting", 0.4, rejected=20, recall=0.7, auroc=0.8),
        _row("noise", "noise", 4, rejected=3, recall=0.96, auroc=0.97),
        _row("noise", "noise", 16, rejected=4, recall=0.94, auroc=0.96),
    ]
    # when
    advice = advice_sentences(baseline, rows)
    # then
    assert advice[0] == (
        "Lighting changes (brightness ±20 %): the false alarms double (6% → 14% of good parts rejected). "
        "Add training images under varied light, or fix the lighting (an enclosure, a diffuse light, fixed camera "
        "exposure)."
    )
    assert advice[1] == "No change worth acting on, even at the strongest tried: noise of 16 grey levels."


def test_bench_cli_prints_the_robustness_table(synthetic_mvtec, tmp_path, capsys):  # noqa: F811
    # given a tiny MVTec-layout folder
    out = tmp_path / "robustness.json"
    # when
    code = main(
        ["bench", "--data", str(synthetic_mvtec), "--model", "gaussian", "--image-size", "64", "--set", "grid=4"]
        + ["--robustness", "--perturbations", "shift,brightness,clutter", "--quiet", "--json", str(out)]
    )
    # then the table has the original and a row per strength of each perturbation asked for, and the advice
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.splitlines()[0].split()[:4] == ["condition", "good", "defect", "AUROC"]
    assert "original" in printed and "brightness ±40 %" in printed and "clutter on 20 % of backdrop" in printed
    assert "blur" not in printed
    report = json.loads(out.read_text())
    # the threshold came from one half of test; the other half was scored
    assert report["n_validation"] + report["n_scored"] == 10
    assert report["baseline"]["n_good"] + report["baseline"]["n_defect"] == report["n_scored"]
    assert len(report["conditions"]) == 9 and report["advice"]


def test_bench_cli_refuses_an_unknown_perturbation(synthetic_mvtec):  # noqa: F811
    with pytest.raises(ValueError, match="fog"):
        main(["bench", "--data", str(synthetic_mvtec), "--robustness", "--perturbations", "fog", "--quiet"])
