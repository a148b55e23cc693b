import numpy as np
import onnxruntime
import pytest
import torch

from ml.gaussian import GaussianBaseline
from ml.onnx_export import export_onnx
from ml.patchcore import PatchCore
from ml.synthetic import make_dataset
from ml.types import Sample

SIZE = 64


@pytest.fixture(scope="module")
def samples():
    """6 good training parts, then 3 good and 3 defective held-out parts."""
    train = make_dataset(n_good=6, n_defect=0, size=SIZE, seed=5)
    return [Sample(image=p.image) for p in train + make_dataset(n_good=3, n_defect=3, size=SIZE, seed=6)]


@pytest.mark.parametrize(
    "model",
    [
        PatchCore(image_size=SIZE, coreset_ratio=0.2, min_bank_size=16, search_chunk=100, pretrained=True),
        PatchCore(image_size=SIZE, coreset_ratio=0.2, min_bank_size=16, pretrained=True, search_precision="float32"),
        GaussianBaseline(image_size=SIZE, grid=4, reduced_channels=16, pretrained=False),
    ],
    ids=["patchcore", "patchcore-float32", "gaussian"],
)
def test_onnx_gives_the_same_scores_and_maps(model, samples, tmp_path):
    # given: what predict() computes, the onnxruntime graph with the family's rewrite (PatchCore's int8 search)
    model.fit(samples[:6])
    batch = model._batch([s.image for s in samples[6:]])
    with torch.no_grad():
        scores, maps = model.runtime.run(model, batch)

    # when
    path = export_onnx(model, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_scores, onnx_maps = session.run(["scores", "maps"], {"images": batch.numpy()})

    # then: same scores and maps within 1e-4 (relative, or absolute near zero) on held-out images and a batch size
    # other than the traced one; backbone convolutions differ by ~1e-5 per feature between the two runtimes
    assert onnx_scores.shape == (6,)
    np.testing.assert_allclose(onnx_scores, scores.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(onnx_maps, maps.numpy(), rtol=1e-4, atol=1e-4)


def test_family_without_export_is_refused():
    with pytest.raises(NotImplementedError):
        export_onnx(torch.nn.Linear(1, 1), "unused.onnx")
