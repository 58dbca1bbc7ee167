"""ResNet/ResNeXt model space: configs, presets, builders and analytic complexity.

This package knows nothing of the benchmarking harness in ``bench/``.
"""
from .complexity import Complexity, model_complexity
from .config import MODEL_FIELDS, ModelConfig
from .iso import match_bottleneck_width
from .registry import get_preset, list_presets, preset_fields
from .resnet import ResNet, build_model

__all__ = [
    "Complexity", "MODEL_FIELDS", "ModelConfig", "ResNet", "build_model", "get_preset",
    "list_presets", "match_bottleneck_width", "model_complexity", "preset_fields",
]
