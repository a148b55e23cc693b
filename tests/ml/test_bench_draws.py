"""`--train-limit N` reports the mean and spread over seeded draws (ml.bench_draws, issue 21)."""

import json

import numpy as np
import pytest
from PIL import Image

from ml.__main__ import main
from ml.bench_draws import DEFAULT_DRAWS, draws_for, format_spread
from ml.synthetic import make_dataset


def test_draws_default_to_five_for_a_training_subset_and_one_for_the_whole_set():
    assert draws_for(20, None) == DEFAULT_DRAWS == 5
    assert draws_for(None, None) == 1
    assert draws_for(20, 2) == 2
    with pytest.raises(ValueError, match="at least 1"):
        draws_for(20, 0)


@pytest.fixture
def parts_folder(tmp_path):
    """An MVTec-layout folder: 8 good synthetic parts to train, 4 good and 4 defective to test."""
    root = tmp_path / "parts"
    for i, part in enumerate(make_dataset(n_good=8, n_defect=0, size=48, seed=5)):
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(part.image).save(root / "train" / "good" / f"{i:03d}.png")
    for i, part in enumerate(make_dataset(n_good=4, n_defect=4, size=48, seed=6)):
        kind = part.defect or "good"
        (root / "test" / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(part.image).save(root / "test" / kind / f"{i:03d}.png")
        if part.defect:
            (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray((part.mask * 255).astype(np.uint8)).save(root / "ground_truth" / kind / f"{i:03d}_mask.png")
    return root


def test_train_limit_reports_mean_and_spread_over_seeded_draws(parts_folder, tmp_path, capsys):
    # given: a tiny Gaussian baseline (seconds), 4 of the 8 training images per draw
    out = tmp_path / "report.json"
    tiny = ["--set", "grid=4", "--set", "reduced_channels=8", "--set", "pretrained=false"]

    # when
    code = main(
        ["bench", "--data", str(parts_folder), "--model", "gaussian", "--image-size", "64", "--train-limit", "4"]
        + ["--draws", "3", "--seed", "7", "--quiet", "--json", str(out), *tiny]
    )

    # then: one run per seed, each on its own draw, and the top-level figure is their mean
    report = json.loads(out.read_text())
    assert code == 0
    assert report["seed"] == [7, 8, 9] and report["n_draws"] == 3
    runs = report["draws"]
    assert [run["seed"] for run in runs] == [7, 8, 9]
    assert all(run["n_train"] == 4 for run in runs)
    aurocs = [run["image_auroc"] for run in runs]
    assert report["image_auroc"] == pytest.approx(np.mean(aurocs))
    assert report["spread"]["image_auroc"]["sd"] == pytest.approx(np.std(aurocs, ddof=1))
    assert report["spread"]["image_auroc"]["values"] == aurocs
    printed = capsys.readouterr().out
    assert "over 3 draws (seeds 7, 8, 9)" in printed
    assert format_spread(report).splitlines()[1].startswith("image_auroc")
