"""Named presets: each one line of model arguments, listable by name.

ImageNet presets are structurally identical to torchvision's models of the
same name; CIFAR presets follow He et al. 2016 (ResNet-20..110) and Xie et
al. 2017 (ResNeXt-29).
"""
from __future__ import annotations

import difflib
from typing import Dict, List

from .config import ModelConfig

_PRESETS: Dict[str, dict] = {}


def register(name: str, **fields) -> None:
    """Add a preset; ``fields`` are :class:`ModelConfig` arguments."""
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    ModelConfig(name=name, **fields)  # validate at registration time
    _PRESETS[name] = dict(fields)


_IMAGENET = dict(stem="imagenet", num_classes=1000, input_size=224)
_CIFAR = dict(stem="cifar", num_classes=10, input_size=32)

# ImageNet (torchvision)
register("resnet18", block="basic", depth=18, **_IMAGENET)
register("resnet34", block="basic", depth=34, **_IMAGENET)
register("resnet50", block="bottleneck", depth=50, **_IMAGENET)
register("resnet101", block="bottleneck", depth=101, **_IMAGENET)
register("resnet152", block="bottleneck", depth=152, **_IMAGENET)
register("resnext50_32x4d", block="bottleneck", depth=50, cardinality=32, bottleneck_width=4, **_IMAGENET)
register("resnext101_32x8d", block="bottleneck", depth=101, cardinality=32, bottleneck_width=8, **_IMAGENET)
register("resnext101_64x4d", block="bottleneck", depth=101, cardinality=64, bottleneck_width=4, **_IMAGENET)
register("wide_resnet50_2", block="bottleneck", depth=50, bottleneck_width=128, **_IMAGENET)
register("wide_resnet101_2", block="bottleneck", depth=101, bottleneck_width=128, **_IMAGENET)

# CIFAR (3x3 stem, no max-pool)
for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", block="basic", depth=_depth, **_CIFAR)
register("resnet18_cifar", block="basic", depth=18, layout="imagenet", **_CIFAR)
register("resnext29_8x64d", block="bottleneck", depth=29, cardinality=8, bottleneck_width=64, **_CIFAR)
register("resnext29_16x64d", block="bottleneck", depth=29, cardinality=16, bottleneck_width=64, **_CIFAR)
register("resnext29_32x4d", block="bottleneck", depth=29, cardinality=32, bottleneck_width=4, **_CIFAR)


def list_presets() -> List[str]:
    return list(_PRESETS)


def preset_fields(name: str) -> dict:
    """The preset's model arguments (a copy); ``KeyError`` with suggestions if unknown."""
    if name not in _PRESETS:
        raise KeyError(unknown_preset_message(name))
    return dict(_PRESETS[name])


# Overrides that change only the task, not the architecture: the name stays.
_TASK_FIELDS = {"num_classes", "input_size", "in_channels"}


def get_preset(name: str, **overrides) -> ModelConfig:
    """The preset as a :class:`ModelConfig`.

    Overriding an architecture field (depth, cardinality, ...) makes a new
    variant, so the preset's name is dropped and a derived label is used.
    """
    fields = preset_fields(name)
    changed = {k for k, v in overrides.items() if fields.get(k, _MISSING) != v}
    fields.update(overrides)
    keeps_name = changed <= _TASK_FIELDS
    return ModelConfig(name=name if keeps_name else None, **fields)


_MISSING = object()


def unknown_preset_message(name: str) -> str:
    close = difflib.get_close_matches(str(name), _PRESETS, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known presets: {', '.join(_PRESETS)}"
    return f"unknown preset {name!r}{hint}"
