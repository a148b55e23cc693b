"""Model bundles: the standalone runner, in a virtualenv holding only onnxruntime, numpy and Pillow, scores images as
Kensa's own predict() does (within 1e-4) for every family, and refuses a bundle whose files were altered."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml import bundle_runner, registry
from ml.bundle import MAP_PNG, BundleInfo, bundle_write, preprocessing_spec
from ml.images import read_image
from ml.synthetic import make_dataset
from ml.thresholds import calibrate
from ml.types import DEFECT, GOOD, Sample

ROOT = Path(__file__).resolve().parents[2]
RUNNER_PACKAGES = ("onnxruntime", "numpy", "pillow")
TOLERANCE = 1e-4

# Small models that still separate the synthetic parts; the U-Net works at most 96 px, so the 120 px test image
# goes through the runner's downscaling path.
FAMILIES = {
    "patchcore": {"image_size": 64, "coreset_ratio": 0.2, "min_bank_size": 16, "search_chunk": 100},
    "gaussian": {"image_size": 64, "grid": 4, "reduced_channels": 16, "pretrained": False},
    "unet": {"image_size": 64, "epochs": 2, "batch_size": 4, "pos_weight": 3.0, "max_side": 96},
    "unet-resized": {"image_size": 64, "epochs": 1, "batch_size": 4, "native": False},
    "autoencoder": {"image_size": 32, "epochs": 2, "batch_size": 8},
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on the shared two-core box spin against other processes
    yield
    torch.set_num_threads(previous)


def _pins() -> list[str]:
    """The runner's packages at the versions requirements.txt pins (what Kensa itself was checked with)."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name.lower() in RUNNER_PACKAGES:
            pins[name.lower()] = f"{name}=={version}"
    return [pins.get(name, name) for name in RUNNER_PACKAGES]


def _distribution_files(names: tuple[str, ...]) -> set[Path]:
    """Installed files of these distributions and everything they require (for the offline fallback)."""
    seen, files, queue = set(), set(), list(names)
    while queue:
        name = queue.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        files |= {Path(distribution.locate_file(f)) for f in distribution.files or []}
        for requirement in distribution.requires or []:
            if "extra ==" not in requirement:
                queue.append(requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip())
    return files


@pytest.fixture(scope="module")
def clean_python(tmp_path_factory) -> Path:
    """A fresh virtualenv with only onnxruntime, numpy and Pillow (and what they require).

    pip installs the pinned versions (from PyPI, or this machine's configured local index); without a reachable
    index, the same distributions are copied from this interpreter's site-packages instead, nothing else."""
    folder = tmp_path_factory.mktemp("runner-venv")
    python = folder / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *_pins()],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if install.returncode != 0:
        site = Path(
            subprocess.check_output(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
            ).strip()
        )  # noqa: E501
        for source in _distribution_files(RUNNER_PACKAGES):
            for prefix in map(Path, sys.path):
                if prefix.is_dir() and source.is_relative_to(prefix) and "site-packages" in prefix.parts:
                    target = site / source.relative_to(prefix)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if source.is_file() and not target.exists():
                        target.write_bytes(source.read_bytes())
                        target.chmod(source.stat().st_mode)
                    break
    probe = "import onnxruntime, numpy, PIL\nfor name in ('torch', 'django', 'timm', 'ml'):\n    try:\n        __import__(name)\n    except ImportError:\n        continue\n    raise SystemExit(name + ' is importable')"  # noqa: E501
    subprocess.run([str(python), "-I", "-c", probe], check=True, cwd=folder, timeout=120)
    return python


def _sample(part) -> Sample:
    if part.defect is None:
        return Sample(image=part.image, label=GOOD)
    return Sample(image=part.image, label=DEFECT, mask=part.mask)


@pytest.fixture(scope="module")
def parts():
    """(training samples, validation samples, test images written as files): colour, grey and odd-sized images."""
    train = [_sample(p) for p in make_dataset(n_good=12, n_defect=8, size=64, seed=11)]
    validation = [_sample(p) for p in make_dataset(n_good=4, n_defect=2, size=64, seed=12)]
    tests = make_dataset(n_good=2, n_defect=2, size=64, seed=13)
    pictures = [Image.fromarray(p.image) for p in tests]
    pictures.append(Image.fromarray(make_dataset(n_good=0, n_defect=1, size=120, seed=14)[0].image[..., 0]))  # grey
    pictures.append(Image.fromarray(make_dataset(n_good=1, n_defect=0, size=80, seed=15)[0].image[:70]))  # not square
    return train, validation, pictures


def _fitted(family: str, train: list[Sample]):
    config = dict(FAMILIES[family])
    model = registry.create_model(family.split("-")[0], **config)
    model.fit(train if model.family == "unet" else [s for s in train if s.label == GOOD])
    return model


def _run(python: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return subprocess.run([str(python), "-I", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=300)  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILIES))
def test_runner_in_a_clean_virtualenv_scores_as_kensa_does(family, parts, clean_python, tmp_path):
    # given: a fitted, calibrated model, its bundle unpacked, and images as files
    train, validation, pictures = parts
    model = _fitted(family, train)
    calibration = calibrate(np.array([p.score for p in model.predict([s.image for s in validation])]),
                            np.array([s.label for s in validation]))  # fmt: skip
    info = BundleInfo(name="kensa-test-v1", version={"number": 1}, created_at="2026-01-01T00:00:00+00:00",
                      metrics={"image_auroc": 0.9}, class_names=("dent", "scratch"))  # fmt: skip
    bundle_write(model, tmp_path / "bundle.zip", calibration=calibration, info=info)
    with zipfile.ZipFile(tmp_path / "bundle.zip") as archive:
        archive.extractall(tmp_path / "unpacked")
    images = tmp_path / "images"
    images.mkdir()
    for index, picture in enumerate(pictures):
        picture.save(images / f"part_{index}.png")
    files = sorted(images.glob("*.png"))

    # when: the runner shipped in the bundle scores the folder
    done = _run(clean_python, tmp_path / "unpacked/kensa-test-v1/kensa_runner.py", images, "--out", "out.json",
                "--maps", "maps", cwd=tmp_path)  # fmt: skip

    # then: the same scores, normalised scores, calls and maps as Kensa's predict on the same files
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [r["image"] for r in results] == [str(f) for f in files]
    expected = model.predict([read_image(f) for f in files])
    raw = np.array([p.score for p in expected])
    np.testing.assert_allclose([r["score"] for r in results], raw, rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose([r["normalised_score"] for r in results], calibration.normalise(raw), atol=TOLERANCE)
    assert [r["call"] for r in results] == ["defect" if s >= calibration.threshold else "good" for s in raw]
    for result, prediction in zip(results, expected, strict=True):
        runner_map = np.asarray(Image.open(tmp_path / result["anomaly_map"]), dtype=float)
        z = (prediction.anomaly_map.astype(np.float64) - calibration.threshold) / calibration.scale
        kensa_map = np.clip(128 + np.floor(MAP_PNG["gain"] * np.arcsinh(z)), 0, 255)
        assert runner_map.shape == prediction.anomaly_map.shape
        assert np.abs(runner_map - kensa_map).max() <= 1  # 8-bit rounding of values equal within 1e-4


def test_the_runner_refuses_an_altered_bundle_and_reads_the_zip_itself(parts, clean_python, tmp_path):
    # given: a Gaussian bundle, and a copy of it whose threshold was edited
    train, validation, pictures = parts
    model = _fitted("gaussian", train)
    calibration = calibrate(np.array([p.score for p in model.predict([s.image for s in validation])]),
                            np.array([s.label for s in validation]))  # fmt: skip
    info = BundleInfo(name="kensa-test-v2", version={"number": 2}, created_at="2026-01-01T00:00:00+00:00")
    bundle_write(model, tmp_path / "bundle.zip", calibration=calibration, info=info)
    pictures[0].save(tmp_path / "part.png")
    with zipfile.ZipFile(tmp_path / "bundle.zip") as archive:
        archive.extractall(tmp_path / "unpacked")
    folder = tmp_path / "unpacked/kensa-test-v2"
    scoring = json.loads((folder / "scoring.json").read_text())
    (folder / "scoring.json").write_text(json.dumps({**scoring, "threshold": 0.0}))

    # when
    from_zip = _run(clean_python, folder / "kensa_runner.py", "--bundle", tmp_path / "bundle.zip", "part.png",
                    cwd=tmp_path)  # fmt: skip
    altered = _run(clean_python, folder / "kensa_runner.py", "part.png", cwd=tmp_path)
    verify = _run(clean_python, folder / "kensa_runner.py", "--verify", "--bundle", tmp_path / "bundle.zip",
                  cwd=tmp_path)  # fmt: skip

    # then: the zip is scored as is; the edited copy is refused, naming the file
    assert from_zip.returncode == 0, from_zip.stderr
    result = json.loads(from_zip.stdout)["results"][0]
    assert result["score"] == pytest.approx(model.predict([read_image(tmp_path / "part.png")])[0].score, rel=1e-4)
    assert altered.returncode == 2
    assert "scoring.json does not match its SHA-256 in manifest.json" in altered.stderr
    assert verify.returncode == 0 and "model.onnx" in json.loads(verify.stdout)["verified"]


def test_manifest_lists_every_file_with_its_checksum(parts, tmp_path):
    # given
    train, validation, _ = parts
    model = _fitted("gaussian", train)
    calibration = calibrate(np.array([p.score for p in model.predict([s.image for s in validation])]),
                            np.array([s.label for s in validation]))  # fmt: skip
    info = BundleInfo(name="kensa-x-v3", version={"number": 3, "id": "abc"}, created_at="2026-02-03T04:05:06+00:00",
                      metrics={"image_auroc": 0.91, "f1": 0.8}, class_names=("dent",))  # fmt: skip

    # when
    bundle_write(model, tmp_path / "b.zip", calibration=calibration, info=info)

    # then
    with zipfile.ZipFile(tmp_path / "b.zip") as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("kensa-x-v3/manifest.json"))
        contents = {name: archive.read(f"kensa-x-v3/{name}") for name in manifest["files"]}
    assert names == {f"kensa-x-v3/{name}" for name in [*manifest["files"], "manifest.json"]}
    assert set(manifest["files"]) == {"model.onnx", "preprocessing.json", "scoring.json", "classes.json",
                                      "kensa_runner.py", "README.txt"}  # fmt: skip
    for name, data in contents.items():
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert manifest["family"] == "gaussian" and manifest["version"] == {"number": 3, "id": "abc"}
    assert manifest["metrics"] == {"image_auroc": 0.91, "f1": 0.8}
    assert manifest["created_at"] == "2026-02-03T04:05:06+00:00"
    assert json.loads(contents["classes.json"]) == {"defect_classes": ["dent"]}
    scoring = json.loads(contents["scoring.json"])
    assert scoring["threshold"] == calibration.threshold
    assert scoring["normalisation"]["scale"] == calibration.scale
    assert json.loads(contents["preprocessing.json"]) == preprocessing_spec(model)
    assert contents["kensa_runner.py"] == Path(bundle_runner.__file__).read_bytes()


def test_the_runner_imports_nothing_but_onnxruntime_numpy_and_pillow():
    # given
    import ast

    tree = ast.parse(Path(bundle_runner.__file__).read_text())

    # when
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}  # fmt: skip

    # then
    assert imported - set(sys.stdlib_module_names) == {"numpy", "PIL", "onnxruntime"}
