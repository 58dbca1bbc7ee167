"""Per-stage architecture summary and the describe subcommand, checked against real forward passes."""
import os

import pytest
import torch
import torchvision

from bench.cli import main
from bench.run.rows import architecture_columns
from models import ModelConfig, build_model, get_preset
from models.summary import architecture_summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _observed(model, input_size):
    """Output shape of the stem and every layerN in a real forward pass."""
    shapes = {}
    names = ["maxpool"] + [f"layer{i}" for i in range(1, 5) if hasattr(model, f"layer{i}")]
    hooks = [getattr(model, n).register_forward_hook(
        lambda _m, _i, out, n=n: shapes.__setitem__("stem" if n == "maxpool" else n, tuple(out.shape[1:])))
        for n in names]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, input_size, input_size))
    for h in hooks:
        h.remove()
    return shapes


CONFIGS = [
    get_preset("resnext50_32x4d", input_size=64),
    pytest.param(get_preset("resnext50_32x4d", num_classes=10, input_size=32), marks=pytest.mark.slow),
    get_preset("resnet18", input_size=67),  # odd size: resolutions are not input / stride
    get_preset("resnet20"),
    pytest.param(get_preset("resnext29_32x4d", input_size=36), marks=pytest.mark.slow),
    ModelConfig(block="bottleneck", blocks=(1, 2, 1, 1), cardinality=4, bottleneck_width=8, width_multiplier=0.5,
                stem_width=24, input_size=48, num_classes=7),
]


def _id(config):
    return f"{config.label()}@{config.input_size}"


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_summary_matches_the_built_model(config):
    summary = architecture_summary(config)
    model = build_model(config)
    observed = _observed(model, config.input_size)
    assert [r.name for r in summary.rows] == list(observed)
    for row in summary.rows:
        channels, height, width = observed[row.name]
        assert (row.channels, row.resolution, row.resolution) == (channels, height, width), row.name
        assert height == -(-config.input_size // row.stride)  # ceil(input / stride) with 'same' padding
        if row.name == "stem":
            own = [model.conv1, model.bn1]
        else:
            stage = getattr(model, row.name)
            own = [stage]
            assert row.blocks == len(stage)
            conv = stage[0].conv2  # the 3x3 conv of the first block
            assert (row.width, row.groups) == (conv.out_channels, conv.groups)
        assert row.params == sum(p.numel() for m in own for p in m.parameters()), row.name
    assert summary.feature_dim == model.fc.in_features
    assert summary.total.params == sum(p.numel() for p in model.parameters())
    assert summary.head_params == sum(p.numel() for p in model.fc.parameters())
    # The same numbers the result CSV's architecture columns carry.
    cols = architecture_columns(config)
    assert cols["stage_channels"] == "-".join(str(r.channels) for r in summary.stages)
    assert cols["stage_strides"] == "-".join(str(r.stride) for r in summary.stages)
    assert (cols["feature_dim"], cols["groups"]) == (summary.feature_dim, summary.stages[0].groups)


def test_resnext50_stages_agree_with_torchvisions_own_network():
    # An independent reference: torchvision's model, not ours.
    theirs = _observed(torchvision.models.resnext50_32x4d(), 64)
    summary = architecture_summary(get_preset("resnext50_32x4d", input_size=64))
    assert {r.name: (r.channels, r.resolution, r.resolution) for r in summary.rows} == theirs


def _describe(capsys, *argv):
    code = main(["describe", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _table(out):
    """stage name -> the row's cells, from the printed table."""
    return {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("stem", "layer1", "layer2", "layer3", "layer4")}


def test_describe_resnext50_shows_the_articles_numbers(capsys):
    code, out, err = _describe(capsys, "resnext50_32x4d")
    assert code == 0 and err == ""
    rows = _table(out)
    # columns: stage level stride output channels width groups blocks params MMACs
    assert [rows[f"layer{i}"][4] for i in range(1, 5)] == ["256", "512", "1024", "2048"]
    assert [rows[f"layer{i}"][2] for i in range(1, 5)] == ["4", "8", "16", "32"]
    assert [rows[f"layer{i}"][6] for i in range(1, 5)] == ["32"] * 4
    assert [rows[f"layer{i}"][5] for i in range(1, 5)] == ["128", "256", "512", "1024"]
    assert [rows[f"layer{i}"][3] for i in range(1, 5)] == ["56x56", "28x28", "14x14", "7x7"]
    assert "stage channels 256-512-1024-2048, strides 4-8-16-32, groups 32" in out
    assert "feature dim 2048 -> classifier fc = Linear(2048, 1000)" in out
    # torchvision's own count for these weights
    num_params = torchvision.models.ResNeXt50_32X4D_Weights.DEFAULT.meta["num_params"]
    assert f"total: {num_params:,d} params" in out
    assert "in_channels_list=[256, 512, 1024, 2048]" in out


def test_describe_input_size_changes_resolutions_not_channels(capsys):
    code, out, _ = _describe(capsys, "resnext50_32x4d", "--input-size", "32")
    assert code == 0
    rows = _table(out)
    assert [rows[f"layer{i}"][3] for i in range(1, 5)] == ["8x8", "4x4", "2x2", "1x1"]
    assert "C5 is 1x1: too coarse" in out


def test_describe_cifar_model_says_it_lacks_fpn_levels(capsys):
    code, out, _ = _describe(capsys, "resnet20")
    assert code == 0
    assert "No stage at stride 8, 16, 32" in out


def test_describe_grid_prints_one_table_per_distinct_model(capsys):
    code, out, _ = _describe(capsys, os.path.join(ROOT, "grids", "seed-article.yaml"))
    assert code == 0
    titles = [line for line in out.splitlines() if " at 32x32 input" in line]
    assert titles == ["resnext50_32x4d (seed-article: cells 0, 1) at 32x32 input",
                      "resnet50 (seed-article: cells 2, 3) at 32x32 input"]
    assert out.count("feature dim 2048 -> classifier fc = Linear(2048, 10)") == 2


@pytest.mark.parametrize("argv, expected", [
    (["resnext50_32x"], "error: unknown preset 'resnext50_32x'; did you mean resnext50_32x4d"),
    (["resnet50", "--input-size", "16"], "error: --input-size 16: resnet50: input_size: 16 px is smaller"),
    (["resnet50", "--input-size", "0"], "error: --input-size: expected a positive integer, got 0"),
    (["missing-grid.yaml"], "error: missing-grid.yaml: no such grid file"),
])
def test_describe_bad_input_is_one_line(capsys, argv, expected):
    code, out, err = _describe(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(expected) and err.count("\n") == 1


def test_torchvisions_fpn_backbone_sees_the_same_features_as_on_torchvisions_model():
    # BackboneWithFPN runs the model's children in registration order; with
    # the describe output's channels it must give torchvision's features.
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    torch.manual_seed(0)
    theirs = torchvision.models.resnet18().eval()
    with torch.no_grad():
        theirs.bn1.weight.uniform_(-1, 1)  # negative scales: the stem's op order matters
    ours = build_model(get_preset("resnet18")).eval()
    ours.load_state_dict(theirs.state_dict())
    channels = [r.channels for r in architecture_summary(get_preset("resnet18")).stages]
    layers = {f"layer{i}": str(i - 1) for i in range(1, 5)}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(1)
        a = BackboneWithFPN(theirs, layers, channels, 32).eval()(x)
        torch.manual_seed(1)
        b = BackboneWithFPN(ours, layers, channels, 32).eval()(x)
    assert list(a) == list(b) == ["0", "1", "2", "3", "pool"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
