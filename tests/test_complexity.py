"""Exact complexity: each independent counter vs published numbers, vs the analytic count, and unknown ops.

Every count runs with each of the two independent counters: fvcore (skipped where it is not installed)
and torch's FlopCounterMode with fvcore made unimportable, as on the GPU machine's Python.
"""
import json
import os
import sys

import pytest
import torch
from torch import nn

from bench.measure.counts import (ComplexityError, analytic_counts, count_independently, count_with_flop_counter,
                                  count_with_fvcore, measure_complexity)
from models import ModelConfig, build_model, get_preset, list_presets

GOLDEN = json.load(open(os.path.join(os.path.dirname(__file__), "golden", "complexity.json")))
FAST = {"resnet18", "resnet50", "resnext50_32x4d", "resnet56", "resnet110", "resnet20", "resnext29_32x4d",
        "resnet18_cifar"}
COUNTERS = ("fvcore", "flop_counter")


def _params(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


def hide_fvcore(monkeypatch) -> None:
    """Make every ``import fvcore...`` fail for this test, as where fvcore is not installed."""
    for name in [m for m in sys.modules if m == "fvcore" or m.startswith("fvcore.")] + ["fvcore", "fvcore.nn"]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture(params=COUNTERS)
def counter(request, monkeypatch):
    """The counter measure_complexity will use: fvcore where installed, FlopCounterMode with fvcore hidden."""
    if request.param == "fvcore":
        pytest.importorskip("fvcore")
    else:
        hide_fvcore(monkeypatch)
    return request.param


@pytest.mark.parametrize("name", _params(list_presets()))
def test_independent_count_equals_analytic_equals_golden(name, counter):
    cfg = get_preset(name)
    counts = measure_complexity(build_model(cfg), cfg)  # raises if the two counts disagree
    assert {"params": counts.params, "macs": counts.macs, "activations": counts.activations} == GOLDEN["exact"][name]
    assert counts.counters == f"analytic+{counter}"
    assert counts.as_row()["counters"] == f"analytic+{counter}"


def test_without_fvcore_the_flop_counter_counts_and_the_row_says_so(monkeypatch):
    hide_fvcore(monkeypatch)
    with pytest.raises(ComplexityError, match="not installed"):
        count_with_fvcore(build_model(get_preset("resnet20")), 32)
    counts = count_independently(build_model(get_preset("resnet20")), 32)
    assert counts.counters == "flop_counter"
    assert counts == analytic_counts(get_preset("resnet20"))


@pytest.mark.parametrize("name", [n for n, v in GOLDEN["published"].items() if "gmacs" in v])
def test_published_torchvision_gmacs_to_three_decimals(name):
    # Analytic path (checked equal to both counters above), so all ten presets run by default.
    assert round(analytic_counts(get_preset(name)).macs / 1e9, 3) == GOLDEN["published"][name]["gmacs"]


@pytest.mark.parametrize("name", [n for n, v in GOLDEN["published"].items() if "macs" in v])
def test_published_pycls_exact_macs(name):
    assert analytic_counts(get_preset(name)).macs == GOLDEN["published"][name]["macs"]


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d"])
def test_published_fvcore_activations(name, counter):
    cfg = get_preset(name)
    assert count_independently(build_model(cfg), 224).activations == GOLDEN["published"][name]["activations"]


def test_flops_are_twice_macs_and_bn_pool_not_counted(counter):
    cfg = get_preset("resnet20")
    counts = measure_complexity(build_model(cfg), cfg)
    assert counts.flops == 2 * counts.macs
    # Hand count of the classifier: 64*10 weights + 10 bias adds; removing it changes MACs by exactly that.
    no_fc = build_model(cfg)
    no_fc.fc = nn.Identity()
    assert counts.macs - count_independently(no_fc, 32).macs == 64 * 10 + 10


def test_flop_counter_macs_are_half_its_flops_plus_the_classifier_bias_adds():
    # FlopCounterMode alone leaves the bias adds out: our count is its FLOPs / 2 + one add per class.
    from torch.utils.flop_counter import FlopCounterMode

    cfg = get_preset("resnet20")
    model = build_model(cfg).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, 32, 32))
    assert count_with_flop_counter(model, 32).macs == fc.get_total_flops() // 2 + cfg.num_classes


@pytest.mark.parametrize("fields", [
    dict(block="bottleneck", depth=29, stem="cifar", cardinality=4, bottleneck_width=24, input_size=40),
    dict(block="basic", blocks=[1, 2, 1, 1], stem="imagenet", width_multiplier=0.5, input_size=97, num_classes=7),
    dict(block="bottleneck", blocks=[1, 1, 1], stem="cifar", cardinality=8, bottleneck_width=3, stem_width=24,
         input_size=33),
])
def test_analytic_count_agrees_with_each_counter_on_odd_configs(fields, counter):
    cfg = ModelConfig(**fields)
    assert count_independently(build_model(cfg), cfg.input_size) == analytic_counts(cfg)


class _Unknown(nn.Module):
    """A model whose work happens in an op neither counter has a formula for."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        return torch.cdist(x.flatten(1)[:, :8], self.w)


def test_unknown_op_that_matters_is_an_error_not_a_silent_zero(counter):
    with pytest.raises(ComplexityError, match="cdist"):
        count_independently(_Unknown(), 4, in_channels=1)


def test_disagreement_between_counts_is_an_error(counter):
    cfg = get_preset("resnet20")
    model = build_model(cfg)
    model.fc = nn.Linear(64, 11)  # the model no longer matches its config
    with pytest.raises(ComplexityError, match=f"{counter} counts .* disagree"):
        measure_complexity(model, cfg)


def test_counting_leaves_the_model_in_its_mode_and_its_batchnorm_statistics_untouched(counter):
    model = build_model(get_preset("resnet20")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_independently(model, 32)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_disabled_handles_match_the_op_names_this_torch_emits():
    # If torch renamed these ops, overriding the handles would silently do nothing.
    pytest.importorskip("fvcore")
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
