"""Patch features: the ONNX Runtime path computes what eager PyTorch computes, and follows the module's weights."""

import copy
import threading

import pytest
import torch

from ml.features import PatchFeatures


@pytest.fixture(scope="module")
def features() -> PatchFeatures:
    return PatchFeatures(pretrained=True).eval()


def eager(module: PatchFeatures, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.compute(images)


def test_onnx_runtime_gives_the_eager_features_at_any_batch_and_size(features):
    for shape in [(3, 3, 96, 96), (1, 3, 64, 128)]:
        images = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            fast = features(images)
        assert features.runtime.session is not None  # the runtime really ran
        torch.testing.assert_close(fast, eager(features, images), rtol=1e-4, atol=1e-4)
        assert fast.shape == (shape[0], features.channels, shape[2] // 8, shape[3] // 8)


def test_new_weights_rebuild_the_runtime(features):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    changed = copy.deepcopy(features)
    with torch.no_grad():
        changed(images)
    state = changed.state_dict()
    stem = next(name for name in state if name.endswith("conv_stem.weight"))
    state[stem] = state[stem] * 1.2
    changed.load_state_dict(state)
    with torch.no_grad():
        after = changed(images)
    torch.testing.assert_close(after, eager(changed, images), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(after, eager(features, images), atol=1e-2)


def test_gradients_and_forced_torch_use_eager_pytorch(features):
    images = torch.randn(1, 3, 64, 64, requires_grad=True)
    assert features(images).requires_grad  # ONNX Runtime would have cut the graph
    forced = copy.deepcopy(features)
    forced.engine = "torch"
    with torch.no_grad():
        forced(images.detach())
    assert forced.runtime.session is None
    with pytest.raises(ValueError, match="engine"):
        PatchFeatures(pretrained=False, engine="tensorrt")


def test_first_calls_of_several_models_at_once_all_build_their_runtime(features):
    # The threads of one web worker: two models' first predictions at the same moment (torch.onnx.export keeps
    # global state, so two exports at once used to fail one another).
    models = [copy.deepcopy(features) for _ in range(4)]
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    results, errors = [None] * len(models), []

    def first_call(index: int) -> None:
        try:
            with torch.no_grad():
                results[index] = models[index](images)
        except Exception as exc:  # collected: an exception in a thread would not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=first_call, args=(i,)) for i in range(len(models))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for model, result in zip(models, results, strict=True):
        # (a call made while another model exports runs eager PyTorch: the exporter's flag is process-wide)
        torch.testing.assert_close(result, eager(features, images), rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            model(images)
        assert model.runtime.session is not None
