"""The model space: torchvision compatibility, published parameter counts, validation, iso-complexity."""
import json
import os

import pytest
import torch
import torchvision

from models import ModelConfig, build_model, get_preset, list_presets, match_bottleneck_width, model_complexity
from models.iso import match_template_width, template_block_cost

GOLDEN = json.load(open(os.path.join(os.path.dirname(__file__), "golden", "complexity.json")))
IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
            "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]
FAST_IMAGENET = ["resnet18", "resnet50", "resnext50_32x4d"]
CIFAR = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18_cifar", "resnext29_8x64d",
         "resnext29_16x64d", "resnext29_32x4d"]


def _slow_unless(name, fast):
    return name if name in fast else pytest.param(name, marks=pytest.mark.slow)


def test_registry_lists_every_issue_preset():
    assert set(IMAGENET + CIFAR) <= set(list_presets())


@pytest.mark.parametrize("name", [_slow_unless(n, FAST_IMAGENET) for n in IMAGENET])
def test_imagenet_preset_is_structurally_torchvision(name):
    ours = build_model(get_preset(name)).state_dict()
    theirs = getattr(torchvision.models, name)().state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_torchvision_weights_load_into_preset():
    tv = torchvision.models.resnext50_32x4d()
    ours = build_model(get_preset("resnext50_32x4d"))
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    ours.eval(), tv.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_params_match_torchvision_published(name):
    # Analytic count here (no model built), so all ten stay in the default run;
    # the built-model count is checked against it in test_complexity.
    published = GOLDEN["published"][name]["params"]
    assert model_complexity(get_preset(name)).params == published
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    assert meta["num_params"] == published


@pytest.mark.parametrize("name,params", [("resnet56", 855_770), ("resnet110", 1_730_714)])
def test_cifar_resnet_params_match_pycls(name, params):
    model = build_model(get_preset(name))
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("name,millions", [("resnext29_8x64d", 34.4), ("resnext29_16x64d", 68.1)])
def test_resnext29_params_match_paper_table7(name, millions):
    # The paper's figures round the conv + fc weights; BatchNorm adds 0.06-0.10M
    # more (16x64d: 68.155M in all, 68.055M without BN).
    model = build_model(get_preset(name))
    total = sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    assert total == model_complexity(get_preset(name)).params
    assert round((total - bn) / 1e6, 1) == millions


@pytest.mark.parametrize("name", ["resnet20", "resnet18_cifar", "resnext29_32x4d"])
def test_cifar_forward_shapes(name):
    model = build_model(get_preset(name)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_cifar_layouts():
    r56 = get_preset("resnet56")
    assert r56.stage_blocks() == (9, 9, 9)
    assert [s.out_channels for s in r56.stages()] == [16, 32, 64]
    x29 = get_preset("resnext29_8x64d")
    assert x29.stage_blocks() == (3, 3, 3)
    assert [s.out_channels for s in x29.stages()] == [256, 512, 1024]
    assert [s.inner_width for s in x29.stages()] == [512, 1024, 2048]
    assert x29.resolved_stem_width() == 64
    r18c = get_preset("resnet18_cifar")
    assert r18c.stem == "cifar" and r18c.stage_blocks() == (2, 2, 2, 2)
    assert isinstance(build_model(r18c).maxpool, torch.nn.Identity)


def test_depth_maps_the_standard_way():
    assert ModelConfig(block="bottleneck", depth=101).stage_blocks() == (3, 4, 23, 3)
    assert ModelConfig(block="basic", depth=110, stem="cifar").stage_blocks() == (18, 18, 18)
    assert ModelConfig(block="bottleneck", depth=38, stem="cifar").stage_blocks() == (4, 4, 4)
    assert ModelConfig(block="basic", blocks=[1, 1, 1, 1]).total_depth == 10


def test_width_multiplier_scales_stages_not_stem():
    wide = ModelConfig(block="basic", depth=20, stem="cifar", width_multiplier=2)
    assert [s.out_channels for s in wide.stages()] == [32, 64, 128]
    assert wide.resolved_stem_width() == 16


@pytest.mark.parametrize("fields,field", [
    (dict(block="basic", depth=18, cardinality=4), "cardinality"),
    (dict(block="basic", depth=18, bottleneck_width=32), "bottleneck_width"),
    (dict(block="bottleneck", depth=51), "depth"),
    (dict(block="basic", depth=21, stem="cifar"), "depth"),
    (dict(block="bottleneck", depth=30, stem="cifar"), "depth"),
    (dict(block="basic", depth=50), "depth"),
    (dict(block="bottleneck", depth=50, cardinality=0), "cardinality"),
    (dict(block="bottleneck", depth=50, bottleneck_width=-4), "bottleneck_width"),
    (dict(block="bottleneck", depth=50, width_multiplier=0), "width_multiplier"),
    (dict(block="bottleneck", depth=50, width_multiplier=0.001), "width_multiplier"),
    (dict(block="bottle", depth=50), "block"),
    (dict(block="bottleneck", depth=50, stem="tiny"), "stem"),
    (dict(block="bottleneck", blocks=[3, 4, 6]), "blocks"),
    (dict(block="bottleneck", blocks=[3, 0, 6, 3]), "blocks"),
    (dict(block="bottleneck"), "depth"),
    (dict(block="bottleneck", depth=50, num_classes=0), "num_classes"),
    (dict(block="bottleneck", depth=50, input_size=16), "input_size"),
])
def test_impossible_models_raise_value_error_naming_the_field(fields, field):
    with pytest.raises(ValueError) as info:
        ModelConfig(**fields)
    assert str(info.value).startswith(field + ":")


def test_resnext_table2_reproduced():
    # Xie et al. 2017, Table 2: cardinality vs width at ~70k params for the conv2 template.
    widths = {c: match_template_width(c) for c in (1, 2, 4, 8, 32)}
    assert widths == {1: 64, 2: 40, 4: 24, 8: 14, 32: 4}
    for c, d in widths.items():
        assert abs(template_block_cost(c, d).params - 70_000) < 2_500


def test_match_bottleneck_width_matches_whole_model_macs():
    ref = model_complexity(get_preset("resnext29_8x64d")).macs
    base = get_preset("resnext29_8x64d")
    for cardinality in (1, 2, 4, 16):
        cfg = base.replace(cardinality=cardinality)
        width = match_bottleneck_width(cfg, ref, "macs")
        got = model_complexity(cfg.replace(bottleneck_width=width)).macs
        worse = [model_complexity(cfg.replace(bottleneck_width=w)).macs for w in (width - 1, width + 1)]
        assert all(abs(got - ref) <= abs(m - ref) for m in worse)
        assert abs(got / ref - 1) < 0.05


def test_labels_are_readable_and_distinct():
    assert get_preset("resnext50_32x4d").label() == "resnext50_32x4d"
    cfg = ModelConfig(block="bottleneck", depth=29, stem="cifar", cardinality=4, bottleneck_width=24, num_classes=10,
                      input_size=32)
    assert cfg.label() == "resnext29_4x24d"
    assert ModelConfig(block="basic", depth=18, stem="cifar", layout="imagenet", input_size=32).label() == \
        "resnet18_cifar"
    # overriding only the task keeps the preset's name; changing the architecture drops it
    assert get_preset("resnet50", num_classes=10).label() == "resnet50"
    assert get_preset("resnet50", cardinality=2, bottleneck_width=40).label() == "resnext50_2x40d"
