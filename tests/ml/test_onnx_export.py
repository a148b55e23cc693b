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
    return [Sample(image=p.image) for p in make_dataset(n_good=6, n_defect=3, size=SIZE, seed=5)]


@pytest.mark.parametrize(
    "model",
    [
        PatchCore(image_size=SIZE, coreset_ratio=0.2, search_chunk=100, pretrained=True),
        GaussianBaseline(image_size=SIZE, grid=4, reduced_channels=16, pretrained=False),
    ],
    ids=["patchcore", "gaussian"],
)
def test_onnx_gives_the_same_scores_and_maps(model, samples, tmp_path):
    # given
    model.fit(samples[:6])
    batch = model._batch([s.image for s in samples])
    with torch.no_grad():
        scores, maps = model(batch)

    # when
    path = export_onnx(model, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_scores, onnx_maps = session.run(["scores", "maps"], {"images": batch.numpy()})

    # then: same scores within 1e-4 on a batch size other than the traced one; maps within 1e-4 relative (backbone
    # convolutions differ by ~1e-5 between runtimes, and map values reach tens)
    assert onnx_scores.shape == (len(samples),)
    np.testing.assert_allclose(onnx_scores, scores.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_maps, maps.numpy(), atol=1e-4, rtol=1e-4)


def test_family_without_export_is_refused():
    with pytest.raises(NotImplementedError):
        export_onnx(torch.nn.Linear(1, 1), "unused.onnx")
