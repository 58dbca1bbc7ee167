"""The layer inventory: hand-made configs whose operators are known, dedup across variants, and the real model."""
from collections import Counter

import pytest
import torch
from torch import nn

from models import ModelConfig, build_model, get_preset, model_complexity
from models.layers import census, distinct_layers, inventory

# A CIFAR basic ResNet with one block per stage (ResNet-8): every operator listed by hand.
RESNET8 = ModelConfig(block="basic", stem="cifar", blocks=(1, 1, 1), num_classes=10, input_size=32)


def test_a_resnet8_inventory_lists_each_operator_with_its_shape_and_how_often_it_runs():
    expected = Counter({
        # stem
        "conv k3 s1 g1 c3>16 h32": 1, "bn k1 s1 g1 c16>16 h32": 3, "relu k1 s1 g1 c16>16 h32": 3,
        # stage 1: two 3x3 convs, identity shortcut
        "conv k3 s1 g1 c16>16 h32": 2, "add k1 s1 g1 c16>16 h32": 1,
        # stage 2: stride on the first 3x3, projection shortcut (1x1, stride 2, its own BN)
        "conv k3 s2 g1 c16>32 h32": 1, "conv k3 s1 g1 c32>32 h16": 1, "conv k1 s2 g1 c16>32 h32": 1,
        "bn k1 s1 g1 c32>32 h16": 3, "relu k1 s1 g1 c32>32 h16": 2, "add k1 s1 g1 c32>32 h16": 1,
        # stage 3
        "conv k3 s2 g1 c32>64 h16": 1, "conv k3 s1 g1 c64>64 h8": 1, "conv k1 s2 g1 c32>64 h16": 1,
        "bn k1 s1 g1 c64>64 h8": 3, "relu k1 s1 g1 c64>64 h8": 2, "add k1 s1 g1 c64>64 h8": 1,
        # head
        "avgpool k8 s1 g1 c64>64 h8": 1, "flatten k1 s1 g1 c64>64 h1": 1, "linear k1 s1 g1 c64>10 h1": 1,
    })
    inv = inventory(RESNET8)
    assert inv.shapes() == expected
    assert inv.n_layers == 3 + 7 + 9 + 9 + 3


def test_a_conv_layer_carries_its_macs_per_image():
    conv = next(layer for layer, _ in inventory(RESNET8).layers if layer.shape == "conv k3 s1 g1 c16>16 h32")
    assert conv.macs == 3 * 3 * 16 * 16 * 32 * 32


def test_a_grouped_bottleneck_lists_its_groups_and_repeats_a_stage_block_with_a_count():
    config = ModelConfig(block="bottleneck", stem="cifar", blocks=(3, 1, 1), cardinality=4, bottleneck_width=4,
                         num_classes=10, input_size=32)
    counts = inventory(config).shapes()
    # stage 1: inner width int(64 * 4 / 64) * 4 = 16, two repeated blocks after the first
    assert counts["conv k3 s1 g4 c16>16 h32"] == 3
    assert counts["conv k1 s1 g1 c256>16 h32"] == 2  # only the repeats read the stage's 256 channels
    assert counts["conv k1 s1 g1 c64>16 h32"] == 1  # the first block reads the stem's 64


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "resnext29_32x4d", "resnet18_cifar"])
def test_the_inventory_macs_add_up_to_the_analytic_count(name):
    config = get_preset(name)
    assert inventory(config).macs == model_complexity(config).macs


def test_the_census_deduplicates_shapes_and_counts_a_variant_listed_twice_once():
    other = RESNET8.replace(num_classes=100)  # the same network but its classifier
    alone = census([RESNET8])
    both = census([RESNET8, other, RESNET8])
    assert both.variants == 2
    assert both.distinct == alone.distinct + 1
    assert both.layers == 2 * alone.layers
    assert both.shapes["conv k3 s1 g1 c16>16 h32"] == 2 * 2
    assert len(distinct_layers([RESNET8, other])) == both.distinct
    assert "distinct shapes cover" in both.describe()


def hooked_shapes(config: ModelConfig) -> Counter:
    """What the built model runs, read by forward hooks on its leaf modules (residual adds are not modules)."""
    model = build_model(config).eval()
    seen: Counter = Counter()

    def hook(module, inputs, _output):
        x = inputs[0]
        h = x.shape[-1] if x.dim() == 4 else 1
        if isinstance(module, nn.Conv2d):
            k, s = module.kernel_size[0], module.stride[0]
            seen[f"conv k{k} s{s} g{module.groups} c{module.in_channels}>{module.out_channels} h{h}"] += 1
        elif isinstance(module, (nn.BatchNorm2d, nn.ReLU)):
            kind = "bn" if isinstance(module, nn.BatchNorm2d) else "relu"
            seen[f"{kind} k1 s1 g1 c{x.shape[1]}>{x.shape[1]} h{h}"] += 1
        elif isinstance(module, nn.MaxPool2d):
            seen[f"maxpool k3 s2 g1 c{x.shape[1]}>{x.shape[1]} h{h}"] += 1
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            seen[f"avgpool k{h} s1 g1 c{x.shape[1]}>{x.shape[1]} h{h}"] += 1
        elif isinstance(module, nn.Linear):
            seen[f"linear k1 s1 g1 c{module.in_features}>{module.out_features} h1"] += 1

    for m in model.modules():
        if not list(m.children()):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(1, 3, config.input_size, config.input_size))
    return seen


@pytest.mark.parametrize("name, size", [("resnet20", 32), ("resnext29_32x4d", 32), ("resnet18", 64),
                                        ("resnet50", 64)])
def test_the_inventory_matches_what_forward_hooks_see_in_the_built_model(name, size):
    config = get_preset(name).replace(input_size=size)
    expected = inventory(config).shapes()
    adds = sum(n for shape, n in expected.items() if shape.startswith("add"))
    for shape in [s for s in expected if s.startswith(("add", "flatten"))]:
        del expected[shape]
    assert hooked_shapes(config) == expected
    assert adds == sum(config.stage_blocks())  # one residual add per block
