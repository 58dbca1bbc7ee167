"""Exact complexity of a built model: fvcore counts, cross-checked analytically.

Convention (pycls's, which torchvision's published GMACs match): one
multiply-add = 1 MAC, counted for conv and linear layers, the classifier's bias
adds included; BatchNorm, pooling, ReLU and residual adds are not counted.
``flops = 2 * macs``. Activations are output elements of conv and linear
layers (fvcore's ``ActivationCountAnalysis``).

fvcore's defaults differ from that convention (it also counts BatchNorm and
adaptive pooling, and its linear count leaves the bias out), so the handles
are set explicitly below. Any op fvcore does not know that is not on the
list of ops known to carry no MACs is an error, never silently dropped.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List

import torch
from torch import nn

from models import ModelConfig, model_complexity

# Ops that fvcore has no handle for and that carry no MACs in our convention.
NO_MAC_OPS = frozenset({"aten::add", "aten::add_", "aten::max_pool2d", "aten::relu", "aten::relu_"})
# Ops fvcore counts by default that our convention does not.
DISABLED_OPS = ("aten::batch_norm", "aten::adaptive_avg_pool2d")


class ComplexityError(RuntimeError):
    """The counted complexity cannot be trusted (an uncounted op, or counts that disagree)."""


@dataclass(frozen=True)
class ComplexityCounts:
    params: int
    macs: int
    activations: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def as_row(self) -> Dict[str, int]:
        return {"params": self.params, "macs": self.macs, "flops": self.flops, "activations": self.activations}


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


def count_with_fvcore(model: nn.Module, input_size: int, in_channels: int = 3) -> ComplexityCounts:
    """Params, MACs and activations of ``model`` for one image, by tracing it with fvcore."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import scripts a function: a torch.jit deprecation warning
        from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, in_channels, input_size, input_size, device=device)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and torch.jit deprecation warnings
            flops = FlopCountAnalysis(model, x)
            # A handle of None only marks an op as ignored when fvcore has no
            # handle for it; BatchNorm and pooling have default handles, so
            # they are replaced by one that counts nothing.
            flops.set_op_handle(**{op: _no_macs for op in DISABLED_OPS}, **{"aten::linear": _linear_with_bias})
            _quiet(flops)
            macs = int(flops.total())
            unknown = set(flops.unsupported_ops()) - NO_MAC_OPS
            acts = ActivationCountAnalysis(model, x)
            _quiet(acts)
            activations = int(acts.total())
    finally:
        model.train(was_training)
    if unknown:
        raise ComplexityError(f"fvcore does not count op(s) {', '.join(sorted(unknown))}; MACs would be "
                              f"understated")
    params = sum(p.numel() for p in model.parameters())
    return ComplexityCounts(params, macs, activations)


def _quiet(analysis) -> None:
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")


def analytic_counts(config: ModelConfig) -> ComplexityCounts:
    """The same counts computed from the config alone (no model built; fast)."""
    c = model_complexity(config)
    return ComplexityCounts(c.params, c.macs, c.acts)


def measure_complexity(model: nn.Module, config: ModelConfig) -> ComplexityCounts:
    """fvcore's counts, checked against the independent analytic count.

    A disagreement means one of the two is wrong about the architecture, so it
    is an error rather than a number to print.
    """
    measured = count_with_fvcore(model, config.input_size, config.in_channels)
    expected = analytic_counts(config)
    if measured != expected:
        raise ComplexityError(f"fvcore counts {measured} disagree with the analytic count {expected}")
    return measured
