"""Exact complexity of a built model: an independent count, cross-checked analytically.

Convention (pycls's, which torchvision's published GMACs match): one
multiply-add = 1 MAC, counted for conv and linear layers, the classifier's
bias adds included; BatchNorm, pooling, ReLU and residual adds are not counted.
``flops = 2 * macs``. Activations are output elements of conv and linear
layers (fvcore's ``ActivationCountAnalysis`` convention).

The independent counter is fvcore where it imports, as the design names it,
and otherwise torch's own ``FlopCounterMode``, so a machine without fvcore
(the GPU machine's Python has none) still counts every cell. Either way its
counts must equal the analytic ones from the config
(:func:`models.model_complexity`), and the ``counters`` column names the pair
that agreed.

fvcore's defaults differ from that convention (it also counts BatchNorm and
adaptive pooling, and its linear count leaves the bias out), so the handles
are set explicitly below. ``FlopCounterMode`` counts only conv and matmul
FLOPs, without bias adds: MACs are its FLOPs / 2 plus one add per output of
each ``addmm`` (a linear layer with a bias). With either counter, an op it
does not count that is not on the list of ops known to carry no MACs is an
error, never silently dropped.
"""
from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode  # FlopCounterMode's own base: public enough

from models import ModelConfig, model_complexity

# Ops that fvcore has no handle for and that carry no MACs in our convention.
NO_MAC_OPS = frozenset({"aten::add", "aten::add_", "aten::max_pool2d", "aten::relu", "aten::relu_"})
# Ops fvcore counts by default that our convention does not.
DISABLED_OPS = ("aten::batch_norm", "aten::adaptive_avg_pool2d")
# The same for FlopCounterMode, named as the dispatcher sees them (below autograd, after the
# composite ops decompose: adaptive average pooling to 1x1 is a mean, a linear layer t + addmm).
NO_MAC_DISPATCH_OPS = frozenset({
    "add", "add_", "relu", "relu_", "max_pool2d", "max_pool2d_with_indices", "mean", "adaptive_avg_pool2d",
    "_adaptive_avg_pool2d", "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "cudnn_batch_norm", "view", "_unsafe_view", "reshape", "flatten", "t", "empty", "detach", "clone",
})
FVCORE, FLOP_COUNTER = "fvcore", "flop_counter"


class ComplexityError(RuntimeError):
    """The counted complexity cannot be trusted (an uncounted op, or counts that disagree)."""


@dataclass(frozen=True)
class ComplexityCounts:
    params: int
    macs: int
    activations: int
    # Which counters produced (and agreed on) these numbers; not part of the numbers' equality.
    counters: str = field(default="", compare=False)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def as_row(self) -> Dict[str, Any]:
        return {"params": self.params, "macs": self.macs, "flops": self.flops, "activations": self.activations,
                "counters": self.counters or None}


def _shape(value: Any):
    from fvcore.nn.jit_handles import get_shape
    return get_shape(value)


def _linear_with_bias(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of aten::linear: in x out per row, plus one add per output if it has a bias."""
    x_shape, w_shape = _shape(inputs[0]), _shape(inputs[1])
    rows = 1
    for d in x_shape[:-1]:
        rows *= d
    macs = rows * w_shape[0] * w_shape[1]
    has_bias = len(inputs) > 2 and _shape(inputs[2]) is not None
    if has_bias:
        macs += rows * w_shape[0]
    return macs


def _no_macs(inputs: List[Any], outputs: List[Any]) -> int:
    return 0


def _import_fvcore() -> Optional[Tuple[Any, Any]]:
    """fvcore's two analyses, or None where fvcore (or one of its own dependencies) does not import."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore's import scripts a function: a torch.jit deprecation warning
            from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis
    except ImportError:
        return None
    return FlopCountAnalysis, ActivationCountAnalysis


def count_with_fvcore(model: nn.Module, input_size: int, in_channels: int = 3) -> ComplexityCounts:
    """Params, MACs and activations of ``model`` for one image, by tracing it with fvcore."""
    analyses = _import_fvcore()
    if analyses is None:
        raise ComplexityError("fvcore is not installed; count_independently falls back to FlopCounterMode")
    flop_count_analysis, activation_count_analysis = analyses
    logging.getLogger("fvcore").setLevel(logging.ERROR)

    def count(x: torch.Tensor) -> Tuple[int, int, set]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and torch.jit deprecation warnings
            flops = flop_count_analysis(model, x)
            # A handle of None only marks an op as ignored when fvcore has no
            # handle for it; BatchNorm and pooling have default handles, so
            # they are replaced by one that counts nothing.
            flops.set_op_handle(**{op: _no_macs for op in DISABLED_OPS}, **{"aten::linear": _linear_with_bias})
            _quiet(flops)
            macs = int(flops.total())
            unknown = set(flops.unsupported_ops()) - NO_MAC_OPS
            acts = activation_count_analysis(model, x)
            _quiet(acts)
            return macs, int(acts.total()), unknown

    macs, activations, unknown = _in_eval(model, input_size, in_channels, count)
    if unknown:
        raise ComplexityError(f"fvcore does not count op(s) {', '.join(sorted(unknown))}; MACs would be "
                              f"understated")
    return ComplexityCounts(_params(model), macs, activations, counters=FVCORE)


def _quiet(analysis) -> None:
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")


def count_with_flop_counter(model: nn.Module, input_size: int, in_channels: int = 3) -> ComplexityCounts:
    """Params, MACs and activations of ``model`` for one image, from one forward under ``FlopCounterMode``.

    A dispatch mode of our own runs inside it and sees the same ops: it
    lists the ops the flop counter leaves out (each must be a known no-MAC
    op), adds the linear layers' bias adds, and counts activations as the
    output elements of the ops the flop counter counts (conv and matmul).
    """
    # The CUDA wheels warn once at import when triton is absent (a CPU-only machine): not our concern.
    logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    census = _OpCensus(frozenset(flop_registry))

    def count(x: torch.Tensor) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter, census:
            model(x)
        return int(counter.get_total_flops())

    flops = _in_eval(model, input_size, in_channels, count)
    unknown = {op for op in census.uncounted if op not in NO_MAC_DISPATCH_OPS}
    if unknown:
        raise ComplexityError(f"FlopCounterMode does not count op(s) {', '.join(sorted(unknown))}; MACs would be "
                              f"understated")
    if flops % 2:
        raise ComplexityError(f"FlopCounterMode counted an odd number of FLOPs ({flops}); MACs are FLOPs / 2")
    return ComplexityCounts(_params(model), flops // 2 + census.bias_adds, census.activations,
                            counters=FLOP_COUNTER)


class _OpCensus(TorchDispatchMode):
    """What one forward dispatches: counted ops' outputs, addmm's bias adds, and the ops not counted."""

    def __init__(self, counted: frozenset) -> None:
        super().__init__()
        self.counted = counted
        self.activations = 0
        self.bias_adds = 0
        self.uncounted: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if packet in self.counted:
            self.activations += sum(t.numel() for t in _tensors(out))
            if packet is torch.ops.aten.addmm:
                self.bias_adds += out.numel()  # addmm(bias, x, w.t()): one add per output element
        else:
            self.uncounted[packet.__name__] += 1
        return out


def _tensors(value: Any) -> List[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _in_eval(model: nn.Module, input_size: int, in_channels: int, count: Callable[[torch.Tensor], Any]) -> Any:
    """``count`` on one all-zero image, the model in eval mode (BatchNorm statistics untouched), then restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        return count(torch.zeros(1, in_channels, input_size, input_size, device=device))
    finally:
        model.train(was_training)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_independently(model: nn.Module, input_size: int, in_channels: int = 3) -> ComplexityCounts:
    """fvcore's counts where fvcore imports, else FlopCounterMode's (``counters`` says which)."""
    if _import_fvcore() is not None:
        return count_with_fvcore(model, input_size, in_channels)
    return count_with_flop_counter(model, input_size, in_channels)


def analytic_counts(config: ModelConfig) -> ComplexityCounts:
    """The same counts computed from the config alone (no model built; fast)."""
    c = model_complexity(config)
    return ComplexityCounts(c.params, c.macs, c.acts, counters="analytic")


def measure_complexity(model: nn.Module, config: ModelConfig) -> ComplexityCounts:
    """The independent counts, checked against the analytic count.

    A disagreement means one of the two is wrong about the architecture, so it
    is an error rather than a number to print.
    """
    measured = count_independently(model, config.input_size, config.in_channels)
    expected = analytic_counts(config)
    if measured != expected:
        raise ComplexityError(f"{measured.counters} counts {measured} disagree with the analytic count {expected}")
    return ComplexityCounts(measured.params, measured.macs, measured.activations,
                            counters=f"analytic+{measured.counters}")
