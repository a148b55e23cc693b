"""Running a module's own computation in ONNX Runtime on a CPU, exported from its current weights on first use.

On our 2-core test machine onnxruntime ran the lite0 backbone about 3x faster than eager PyTorch (depthwise
convolutions are PyTorch's weak spot there) and PatchCore's whole forward pass about 2x faster, with the same
numbers within 1e-4. Nothing is written to disk: the graph lives in memory beside the module.
"""

from __future__ import annotations

import functools
import io
import threading
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

ENGINES = ("auto", "onnxruntime", "torch")
OPSET = 17

# torch.onnx.export keeps its state in globals, so two exports at once (two models' first predictions in the
# threads of one web worker) break each other: graphs are built one at a time in the process.
_EXPORT_LOCK = threading.Lock()


@functools.cache  # asked on every forward call
def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def checked_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


def runtime_applies(engine: str, images: torch.Tensor) -> bool:
    """Whether `images` may go through onnxruntime: CPU tensors without gradients, outside any export or trace."""
    if checked_engine(engine) == "torch" or images.device.type != "cpu" or images.requires_grad:
        return False
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return False
    return engine == "onnxruntime" or onnxruntime_available()


class RuntimeGraph:
    """One module method (images -> tensor or tuple of tensors) as an onnxruntime session, built on first `run`.

    The graph holds the tensors it was exported with: GraphOwner resets it when weights are loaded or the module
    is moved or cast, and the owner itself calls `reset()` when it refits its buffers. `dynamic` names the input
    axes that may vary between calls (batch always does).
    """

    def __init__(
        self,
        method: str,
        outputs: Sequence[str],
        *,
        dynamic: Sequence[int] = (0,),
        rewrite: Callable[[bytes], bytes] | None = None,
    ):
        self.method = method
        self.outputs = tuple(outputs)
        self.dynamic = tuple(dynamic)
        self.rewrite = rewrite  # applied to the exported ONNX model before the session loads it
        self.session = None

    def reset(self) -> None:
        self.session = None

    def run(self, module: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        session = self.session or self._build(module, images)
        array = np.ascontiguousarray(images.detach().float().numpy())
        return [torch.from_numpy(output) for output in session.run(None, {"images": array})]

    def _build(self, module: nn.Module, images: torch.Tensor):
        import onnxruntime

        with _EXPORT_LOCK:
            if self.session is not None:
                return self.session
            buffer = io.BytesIO()
            example = torch.zeros(min(2, len(images)), *images.shape[1:])
            axes = {0: "batch", 2: "height", 3: "width"}
            dynamic = {"images": {axis: axes[axis] for axis in self.dynamic}}
            dynamic |= {name: {0: "batch"} for name in self.outputs}
            # The exporter traces in eval mode, then sets the wrapper's mode back recursively, which would put
            # every submodule in the wrapper's mode (say, a frozen backbone's batch norms into training): each
            # submodule's own mode is restored instead.
            modes = {submodule: submodule.training for submodule in module.modules()}
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")  # tracer warnings about shapes read in Python are expected
                    torch.onnx.export(
                        _Method(module, self.method), (example,), buffer, dynamo=False, input_names=["images"],
                        output_names=list(self.outputs), dynamic_axes=dynamic, opset_version=OPSET,
                    )  # fmt: skip
            finally:
                for submodule, training in modes.items():
                    submodule.training = training
            model = buffer.getvalue() if self.rewrite is None else self.rewrite(buffer.getvalue())
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            return self.session

    def __getstate__(self) -> dict:
        # Sessions do not pickle (deepcopy, multiprocessing); a copy builds its own.
        return {**self.__dict__, "session": None}


class _Method(nn.Module):
    """Exports `module.<method>`; the module's own forward may choose the runtime path and must not be traced."""

    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, images: torch.Tensor):
        return getattr(self.module, self.method)(images)


class GraphOwner(nn.Module):
    """A module with RuntimeGraph attributes, reset whenever its tensors change under them: load_state_dict (for
    this module and any GraphOwner inside it) and .to() / .float() / ... (which reach every submodule)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_post_hook(_reset_graphs_after_load)

    def reset_graphs(self) -> None:
        for value in vars(self).values():
            if isinstance(value, RuntimeGraph):
                value.reset()

    def _apply(self, fn, recurse=True):
        self.reset_graphs()
        return super()._apply(fn, recurse)


def _reset_graphs_after_load(module: GraphOwner, incompatible_keys) -> None:
    module.reset_graphs()


def forward_with(graph: RuntimeGraph, module: nn.Module, images: torch.Tensor, *, engine: str):
    """`module(images)`, through `graph` (an export of module.forward) when onnxruntime applies."""
    if runtime_applies(engine, images):
        return tuple(graph.run(module, images))
    return module(images)
