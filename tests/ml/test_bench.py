import json

import numpy as np
import pytest
from PIL import Image

from ml.__main__ import main
from ml.synthetic import make_dataset

REPORT_KEYS = {
    "image_auroc",
    "image_ap",
    "pixel_auroc",
    "aupro",
    "f1",
    "precision",
    "recall",
    "threshold",
    "precision_at_recall1",
    "fit_seconds",
    "infer_ms_per_image",
    "peak_rss_mb",
    "n_train",
    "n_test",
}


@pytest.fixture
def synthetic_mvtec(tmp_path):
    """A tiny MVTec-layout folder of synthetic parts: 8 good to train, 4 good and 6 defective to test."""
    root = tmp_path / "parts"
    for i, part in enumerate(make_dataset(n_good=8, n_defect=0, size=64, seed=11)):
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(part.image).save(root / "train" / "good" / f"{i:03d}.png")
    for i, part in enumerate(make_dataset(n_good=4, n_defect=6, size=64, seed=12)):
        kind = part.defect or "good"
        (root / "test" / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(part.image).save(root / "test" / kind / f"{i:03d}.png")
        if part.defect:
            (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            mask = (part.mask * 255).astype(np.uint8)
            Image.fromarray(mask).save(root / "ground_truth" / kind / f"{i:03d}_mask.png")
    return root


@pytest.mark.parametrize("family", ["patchcore", "gaussian"])
def test_bench_cli_writes_the_report(synthetic_mvtec, tmp_path, family, capsys):
    # given
    out = tmp_path / "report.json"
    extra = ["--set", "grid=4"] if family == "gaussian" else []

    # when
    code = main(
        ["bench", "--data", str(synthetic_mvtec), "--model", family, "--image-size", "64", "--quiet"]
        + ["--json", str(out), *extra]
    )

    # then
    report = json.loads(out.read_text())
    assert code == 0
    assert set(report) >= REPORT_KEYS
    assert report["n_train"] == 8 and report["n_test"] == 10
    assert 0 <= report["image_auroc"] <= 1
    assert report["mean_iou"] is None  # these families give maps, not outlines
    assert "image_auroc" in capsys.readouterr().out


def test_bench_reports_mask_iou_for_the_segmenter(synthetic_mvtec, tmp_path):
    # given: the supervised split trains on half the defects (with masks) and tests on the rest
    out = tmp_path / "report.json"
    # when
    main(
        ["bench", "--data", str(synthetic_mvtec), "--model", "unet", "--quiet", "--json", str(out)]
        + ["--set", "epochs=1", "--set", "num_threads=1"]
    )
    # then
    report = json.loads(out.read_text())
    assert report["n_iou_images"] == 3
    assert 0 <= report["mean_iou"] <= 1


def test_a_defect_image_without_drawn_pixels_is_left_out_of_the_pixel_metrics():
    # given: a map that finds the drawn defect exactly, and a defect image whose mask is empty, where the map lights
    # up a region the person did not draw (the defect is somewhere, nobody said where)
    from ml.bench import predict_test_set
    from ml.types import DEFECT, GOOD, Prediction, Sample

    drawn = np.zeros((16, 16), bool)
    drawn[4:8, 4:8] = True
    lit = np.zeros((16, 16), np.float32)
    lit[10:14, 10:14] = 5.0
    image = np.zeros((16, 16, 3), np.uint8)
    samples = [
        Sample(image, GOOD, np.zeros((16, 16), bool)),
        Sample(image, DEFECT, drawn),
        Sample(image, DEFECT, np.zeros((16, 16), bool)),
    ]
    maps = [np.zeros((16, 16), np.float32), drawn.astype(np.float32) * 5.0, lit]

    class Maps:
        def predict(self, images, *, batch_size):
            return [Prediction(float(m.max()), m) for m in maps[: len(images)]]

    # when
    tested = predict_test_set(Maps(), samples, batch_size=8)
    # then: the drawn defect is found perfectly; the undrawn one's lit pixels count neither way
    assert tested.pixels.n_regions == 1
    assert tested.pixels.pixel_auroc() == pytest.approx(1.0)
    assert tested.pixels.aupro() == pytest.approx(1.0, abs=1e-3)
