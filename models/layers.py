"""Layer inventory: the operators a variant's inference runs, with their shapes, counted from the config.

No model is built or run. The walk follows :mod:`models.complexity` (the
spatial sizes and MACs of every conv and the classifier come from its
``conv``/``linear``/``stem``/``_block`` arithmetic, and a test checks that the
inventory's MACs add up to :func:`models.model_complexity`) and lists what
torchvision's blocks execute in eval mode, in order::

    bottleneck: conv1x1 bn relu conv3x3(groups, stride) bn relu conv1x1 bn [conv1x1 bn] add relu
    basic:      conv3x3(stride) bn relu conv3x3 bn [conv1x1 bn] add relu

A :class:`Layer` is one operator's shape *per image*; its :attr:`Layer.shape`
string is the key a layer table (``bench.measure.layer_table``) is stored
under and the analysis (``bench.analysis.layer_predict``) parses back, so the
format below is a contract: ``KIND kK sS gG cIN>OUT hSIZE`` with ``SIZE`` the
operator's *input* spatial size. Batch, precision and memory format are not
part of the shape: they are columns of the table, given once per inventory.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, List, NamedTuple, Tuple

from .complexity import _out_size, conv, linear
from .config import ModelConfig

KINDS = ("conv", "bn", "relu", "add", "maxpool", "avgpool", "flatten", "linear")


class Layer(NamedTuple):
    """One operator: kind, kernel, stride, groups, channels in and out, input spatial size; MACs per image.

    (A named tuple: a dry run over a 10,000-sample space builds a few hundred thousand of them.)"""

    kind: str
    kernel: int
    stride: int
    groups: int
    c_in: int
    c_out: int
    size: int
    macs: int = 0
    shape: str = ""  # the table key, filled in by make_layer (computed once per distinct block)


def make_layer(kind: str, kernel: int, stride: int, groups: int, c_in: int, c_out: int, size: int,
               macs: int = 0) -> Layer:
    shape = f"{kind} k{kernel} s{stride} g{groups} c{c_in}>{c_out} h{size}"
    return Layer(kind, kernel, stride, groups, c_in, c_out, size, macs, shape)


class Group(NamedTuple):
    """The operators of one block (or the stem, or the head) with their counts; blocks shared by many
    variants are the same object, with the same ``id``, so a reader can cache per block."""

    id: int
    layers: Tuple[Tuple[Layer, int], ...]
    keys: Tuple[Tuple[str, int, int], ...]  # (shape, count, MACs per image): what the analysis reads


_group_ids = itertools.count()


@dataclass(frozen=True)
class Inventory:
    """The operators of one variant at one batch, precision and memory format, block by block."""

    groups: Tuple[Group, ...]
    batch: int
    precision: str
    memory_format: str

    @property
    def layers(self) -> Tuple[Tuple[Layer, int], ...]:
        """(layer, times it runs); a shape may be listed once per block it appears in."""
        return tuple(item for group in self.groups for item in group.layers)

    @property
    def n_layers(self) -> int:
        return sum(n for _, n in self.layers)

    @property
    def macs(self) -> int:
        """MACs per image (conv and linear), as :func:`models.model_complexity` counts them."""
        return sum(layer.macs * n for layer, n in self.layers)

    def shapes(self) -> Counter:
        """shape string -> how many times it runs."""
        counts: Counter = Counter()
        for layer, n in self.layers:
            counts[layer.shape] += n
        return counts


def _pointwise(kind: str, channels: int, size: int) -> Layer:
    return make_layer(kind, 1, 1, 1, channels, channels, size)


def _conv(size: int, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> Tuple[Layer, int]:
    cost, out = conv(size, c_in, c_out, kernel, stride, groups)
    return make_layer("conv", kernel, stride, groups, c_in, c_out, size, cost.macs), out


def _conv_bn(size: int, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
             relu: bool = True) -> Tuple[List[Layer], int]:
    layer, out = _conv(size, c_in, c_out, kernel, stride, groups)
    ops = [layer, _pointwise("bn", c_out, out)]
    if relu:
        ops.append(_pointwise("relu", c_out, out))
    return ops, out


@lru_cache(maxsize=1 << 16)
def block_layers(block: str, size: int, c_in: int, width: int, c_out: int, stride: int,
                 groups: int) -> Tuple[Tuple[Layer, ...], int]:
    """The operators of one block (the block :func:`models.complexity._block` costs) and its output size."""
    if block == "bottleneck":
        a, _ = _conv_bn(size, c_in, width, 1)
        b, out = _conv_bn(size, width, width, 3, stride, groups)
        c, _ = _conv_bn(out, width, c_out, 1, relu=False)
        ops = a + b + c
    else:
        a, out = _conv_bn(size, c_in, c_out, 3, stride)
        b, _ = _conv_bn(out, c_out, c_out, 3, relu=False)
        ops = a + b
    if stride != 1 or c_in != c_out:  # the projection shortcut, as complexity counts it
        ops += _conv_bn(size, c_in, c_out, 1, stride, relu=False)[0]
    return tuple(ops + [_pointwise("add", c_out, out), _pointwise("relu", c_out, out)]), out


def stem_layers(config: ModelConfig) -> Tuple[List[Layer], int]:
    width = config.resolved_stem_width()
    if config.stem == "imagenet":
        ops, size = _conv_bn(config.input_size, config.in_channels, width, 7, 2)
        pooled = _out_size(size, 3, 2, 1)
        return ops + [make_layer("maxpool", 3, 2, 1, width, width, size)], pooled
    return _conv_bn(config.input_size, config.in_channels, width, 3, 1)


@lru_cache(maxsize=1 << 15)
def _layer_groups(config: ModelConfig) -> Tuple[Group, ...]:
    ops, size = stem_layers(config)
    groups = [_group(tuple(ops))]
    c_in = config.resolved_stem_width()
    for plan in config.stages():
        group, size = _block_group(config.block, size, c_in, plan.inner_width, plan.out_channels, plan.stride,
                                   plan.groups)
        groups.append(group)
        if plan.blocks > 1:  # the repeated block is the same block each time: listed once, counted
            group, size = _block_group(config.block, size, plan.out_channels, plan.inner_width, plan.out_channels,
                                       1, plan.groups, plan.blocks - 1)
            groups.append(group)
        c_in = plan.out_channels
    fc = make_layer("linear", 1, 1, 1, c_in, config.num_classes, 1, linear(c_in, config.num_classes).macs)
    head = (make_layer("avgpool", size, 1, 1, c_in, c_in, size), make_layer("flatten", 1, 1, 1, c_in, c_in, 1), fc)
    return tuple(groups) + (_group(head),)


# Keyed by the block's numbers, not its operators: a design space's configs share a small vocabulary of
# blocks, and hashing a tuple of layers per config cost more than building the inventory.
@lru_cache(maxsize=1 << 16)
def _block_group(block: str, size: int, c_in: int, width: int, c_out: int, stride: int, groups: int,
                 times: int = 1) -> Tuple[Group, int]:
    ops, out = block_layers(block, size, c_in, width, c_out, stride, groups)
    return _group(ops, times), out


@lru_cache(maxsize=1 << 16)
def _group(ops: Tuple[Layer, ...], times: int = 1) -> Group:
    """A block's operators with the repeats inside it merged (a bottleneck runs its BN shape twice), each
    count multiplied by ``times`` (the block's repeats)."""
    items = tuple((layer, n * times) for layer, n in Counter(ops).items())
    return Group(next(_group_ids), items, tuple((layer.shape, n, layer.macs) for layer, n in items))


def inventory(config: ModelConfig, batch: int = 1, precision: str = "fp32",
              memory_format: str = "contiguous") -> Inventory:
    """The operators ``config``'s inference runs, each with the number of times it runs."""
    return Inventory(_layer_groups(config), batch, precision, memory_format)


@dataclass(frozen=True)
class Census:
    """Distinct shapes across several variants, and how many layers they cover."""

    shapes: Counter  # shape -> layers (over all variants) that have it
    variants: int

    @property
    def distinct(self) -> int:
        return len(self.shapes)

    @property
    def layers(self) -> int:
        return sum(self.shapes.values())

    def describe(self) -> str:
        return (f"{self.distinct} distinct shapes cover {self.layers} layers of {self.variants} variant(s) "
                f"({self.layers / max(self.distinct, 1):.1f} layers per shape)")


def census(configs: Iterable[ModelConfig]) -> Census:
    """Deduplicate the shapes of ``configs`` (each variant counted once, however often it is listed)."""
    shapes: Counter = Counter()
    unique = list(dict.fromkeys(configs))
    for config in unique:
        shapes.update(inventory(config).shapes())
    return Census(shapes, len(unique))


def distinct_layers(configs: Iterable[ModelConfig]) -> List[Layer]:
    """One :class:`Layer` per distinct shape of ``configs``, in first-seen order (what a table times)."""
    seen = {}
    for config in dict.fromkeys(configs):
        for layer, _ in inventory(config).layers:
            seen.setdefault(layer.shape, layer)
    return list(seen.values())
