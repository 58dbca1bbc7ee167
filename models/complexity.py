"""Analytic complexity, pycls style: counted from the config, no model built.

Conventions (the same as :mod:`bench.measure.counts` measures on a real model):

* ``macs``: one multiply-add = 1, for conv and linear layers, the classifier's
  bias adds included (pycls's convention); BatchNorm, pooling and ReLU are
  not counted. FLOPs, where reported, are ``2 * macs``.
* ``params``: every learnable parameter (conv weights, BN scale and shift,
  classifier weight and bias).
* ``acts``: output elements of conv and linear layers (fvcore's
  ``ActivationCountAnalysis`` convention).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List, Tuple

from .config import ModelConfig


@dataclass(frozen=True)
class Complexity:
    params: int = 0
    macs: int = 0
    acts: int = 0

    def __add__(self, other: "Complexity") -> "Complexity":
        return Complexity(self.params + other.params, self.macs + other.macs, self.acts + other.acts)

    def __mul__(self, times: int) -> "Complexity":
        return Complexity(self.params * times, self.macs * times, self.acts * times)


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def conv(size: int, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> Tuple[Complexity, int]:
    """A bias-free conv with 'same' padding; returns its cost and output size."""
    out = _out_size(size, kernel, stride, kernel // 2)
    weights = kernel * kernel * c_in * c_out // groups
    return Complexity(weights, weights * out * out, c_out * out * out), out


def batchnorm(channels: int) -> Complexity:
    return Complexity(params=2 * channels)


def linear(c_in: int, c_out: int) -> Complexity:
    return Complexity(c_in * c_out + c_out, c_in * c_out + c_out, c_out)


# A design space asks for a small vocabulary of blocks across thousands of configs: count each once.
@lru_cache(maxsize=1 << 16)
def bottleneck_block(size: int, c_in: int, width: int, c_out: int, stride: int, groups: int) -> Tuple[Complexity, int]:
    """torchvision's ``Bottleneck`` (stride on the 3x3), projection shortcut if needed."""
    c1, _ = conv(size, c_in, width, 1)
    c2, out = conv(size, width, width, 3, stride, groups)
    c3, _ = conv(out, width, c_out, 1)
    total = c1 + c2 + c3 + batchnorm(width) + batchnorm(width) + batchnorm(c_out)
    if stride != 1 or c_in != c_out:
        proj, _ = conv(size, c_in, c_out, 1, stride)
        total = total + proj + batchnorm(c_out)
    return total, out


@lru_cache(maxsize=1 << 16)
def basic_block(size: int, c_in: int, c_out: int, stride: int) -> Tuple[Complexity, int]:
    c1, out = conv(size, c_in, c_out, 3, stride)
    c2, _ = conv(out, c_out, c_out, 3)
    total = c1 + c2 + batchnorm(c_out) + batchnorm(c_out)
    if stride != 1 or c_in != c_out:
        proj, _ = conv(size, c_in, c_out, 1, stride)
        total = total + proj + batchnorm(c_out)
    return total, out


@dataclass(frozen=True)
class StageComplexity:
    index: int
    output_size: int
    cost: Complexity


def stem(config: ModelConfig) -> Tuple[Complexity, int]:
    width = config.resolved_stem_width()
    if config.stem == "imagenet":
        cost, size = conv(config.input_size, config.in_channels, width, 7, 2)
        size = _out_size(size, 3, 2, 1)  # max-pool: no MACs counted
    else:
        cost, size = conv(config.input_size, config.in_channels, width, 3, 1)
    return cost + batchnorm(width), size


def stage_costs(config: ModelConfig) -> Tuple[Complexity, List[StageComplexity], Complexity]:
    """Stem cost, per-stage costs and head cost."""
    stem_cost, size = stem(config)
    c_in = config.resolved_stem_width()
    stages = []
    for plan in config.stages():
        total, size = _block(config, plan, size, c_in, plan.stride)
        if plan.blocks > 1:
            # every block after the first is the same block (stride 1, c_in = c_out): count it once
            repeat, size = _block(config, plan, size, plan.out_channels, 1)
            total = total + repeat * (plan.blocks - 1)
        c_in = plan.out_channels
        stages.append(StageComplexity(plan.index, size, total))
    return stem_cost, stages, linear(c_in, config.num_classes)


def _block(config: ModelConfig, plan, size: int, c_in: int, stride: int) -> Tuple[Complexity, int]:
    if config.block == "bottleneck":
        return bottleneck_block(size, c_in, plan.inner_width, plan.out_channels, stride, plan.groups)
    return basic_block(size, c_in, plan.out_channels, stride)


# A design space's dry run asks for the same configs' counts while sampling and again while
# listing them (ModelConfig is frozen and hashable; Complexity is immutable).
@lru_cache(maxsize=1 << 15)
def model_complexity(config: ModelConfig) -> Complexity:
    """Total params, MACs and activations of the whole network at ``config.input_size``."""
    stem_cost, stages, head = stage_costs(config)
    total = stem_cost + head
    for stage in stages:
        total = total + stage.cost
    return total
