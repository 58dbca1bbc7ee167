"""Exact complexity: fvcore counts vs published numbers, vs the analytic count, and unknown ops."""
import json
import os

import pytest
import torch
from torch import nn

from bench.measure.counts import ComplexityError, analytic_counts, count_with_fvcore, measure_complexity
from models import ModelConfig, build_model, get_preset, list_presets

GOLDEN = json.load(open(os.path.join(os.path.dirname(__file__), "golden", "complexity.json")))
FAST = {"resnet18", "resnet50", "resnext50_32x4d", "resnet56", "resnet110", "resnet20", "resnext29_32x4d",
        "resnet18_cifar"}


def _params(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _params(list_presets()))
def test_fvcore_equals_analytic_equals_golden(name):
    cfg = get_preset(name)
    counts = measure_complexity(build_model(cfg), cfg)  # raises if fvcore and the analytic count disagree
    assert {"params": counts.params, "macs": counts.macs, "activations": counts.activations} == GOLDEN["exact"][name]


@pytest.mark.parametrize("name", [n for n, v in GOLDEN["published"].items() if "gmacs" in v])
def test_published_torchvision_gmacs_to_three_decimals(name):
    # Analytic path (checked equal to fvcore above), so all ten presets run by default.
    assert round(analytic_counts(get_preset(name)).macs / 1e9, 3) == GOLDEN["published"][name]["gmacs"]


@pytest.mark.parametrize("name", [n for n, v in GOLDEN["published"].items() if "macs" in v])
def test_published_pycls_exact_macs(name):
    assert analytic_counts(get_preset(name)).macs == GOLDEN["published"][name]["macs"]


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d"])
def test_published_fvcore_activations(name):
    cfg = get_preset(name)
    assert count_with_fvcore(build_model(cfg), 224).activations == GOLDEN["published"][name]["activations"]


def test_flops_are_twice_macs_and_bn_pool_not_counted():
    cfg = get_preset("resnet20")
    counts = measure_complexity(build_model(cfg), cfg)
    assert counts.flops == 2 * counts.macs
    # Hand count of the classifier: 64*10 weights + 10 bias adds; removing it changes MACs by exactly that.
    no_fc = build_model(cfg)
    no_fc.fc = nn.Identity()
    assert counts.macs - count_with_fvcore(no_fc, 32).macs == 64 * 10 + 10


@pytest.mark.parametrize("fields", [
    dict(block="bottleneck", depth=29, stem="cifar", cardinality=4, bottleneck_width=24, input_size=40),
    dict(block="basic", blocks=[1, 2, 1, 1], stem="imagenet", width_multiplier=0.5, input_size=97, num_classes=7),
    dict(block="bottleneck", blocks=[1, 1, 1], stem="cifar", cardinality=8, bottleneck_width=3, stem_width=24,
         input_size=33),
])
def test_analytic_count_agrees_with_fvcore_on_odd_configs(fields):
    cfg = ModelConfig(**fields)
    assert count_with_fvcore(build_model(cfg), cfg.input_size) == analytic_counts(cfg)


class _Unknown(nn.Module):
    """A model whose work happens in an op fvcore has no handle for."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        return torch.cdist(x.flatten(1)[:, :8], self.w)


def test_unknown_op_that_matters_is_an_error_not_a_silent_zero():
    with pytest.raises(ComplexityError, match="cdist"):
        count_with_fvcore(_Unknown(), 4, in_channels=1)


def test_disagreement_between_counts_is_an_error():
    cfg = get_preset("resnet20")
    model = build_model(cfg)
    model.fc = nn.Linear(64, 11)  # the model no longer matches its config
    with pytest.raises(ComplexityError, match="disagree"):
        measure_complexity(model, cfg)


def test_disabled_handles_match_the_op_names_this_torch_emits():
    # If torch renamed these ops, overriding the handles would silently do nothing.
    from fvcore.nn import FlopCountAnalysis

    from bench.measure.counts import DISABLED_OPS

    model = build_model(get_preset("resnet20")).eval()
    default = FlopCountAnalysis(model, torch.zeros(1, 3, 32, 32))
    default.unsupported_ops_warnings(False)
    counted = default.by_operator()
    for op in DISABLED_OPS:
        assert counted[op.split("::")[1]] > 0, op
    # and with the harness's handles they contribute nothing
    assert count_with_fvcore(model, 32).macs == default.total() - sum(counted[o.split("::")[1]] for o in DISABLED_OPS) \
        + 10  # the classifier's bias adds, which fvcore's default linear handle leaves out
