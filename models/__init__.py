"""ResNet/ResNeXt model space: configs, presets, builders and analytic complexity.

This package knows nothing of the benchmarking harness in ``bench/``.
"""
from .complexity import Complexity, model_complexity
from .config import MODEL_FIELDS, ModelConfig
from .iso import match_bottleneck_width
from .registry import get_preset, list_presets, preset_fields

# The builder imports torch (seconds to load); configs, presets and analytic counts do not,
# so a --dry-run over a large design space never loads it.
_LAZY = {"ResNet", "build_model"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import resnet
        return getattr(resnet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Complexity", "MODEL_FIELDS", "ModelConfig", "ResNet", "build_model", "get_preset",
    "list_presets", "match_bottleneck_width", "model_complexity", "preset_fields",
]
