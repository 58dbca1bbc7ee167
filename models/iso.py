"""Iso-complexity: the bottleneck width that keeps cost fixed as cardinality varies.

ResNeXt's Table 2 varies cardinality C and width per group d of the conv2
template block (256 -> C*d -> C*d -> 256) at ~70k parameters; the same search
over a whole network lets a grid say "vary cardinality at equal MACs".
"""
from __future__ import annotations

from typing import Callable, Iterable

from .complexity import Complexity, bottleneck_block, model_complexity
from .config import ModelConfig

METRICS = ("params", "macs")


def match_width(cost: Callable[[int], float], target: float, candidates: Iterable[int] = range(1, 513)) -> int:
    """The candidate width whose cost is nearest ``target`` (the smaller on a tie)."""
    best, best_gap = None, None
    for width in candidates:
        gap = abs(cost(width) - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = width, gap
    if best is None:
        raise ValueError("match_width: no candidate widths")
    return best


def template_block_cost(cardinality: int, width: int, channels: int = 256, size: int = 56) -> Complexity:
    """The conv2-stage template block of ResNeXt Table 2 (conv weights + BN)."""
    cost, _ = bottleneck_block(size, channels, cardinality * width, channels, 1, cardinality)
    return cost


def match_template_width(cardinality: int, metric: str = "params", reference_width: int = 64) -> int:
    """Table 2: the d for cardinality C matching the C=1, d=``reference_width`` block."""
    _check_metric(metric)
    target = getattr(template_block_cost(1, reference_width), metric)
    return match_width(lambda d: getattr(template_block_cost(cardinality, d), metric), target)


def match_bottleneck_width(config: ModelConfig, target: float, metric: str = "macs") -> int:
    """The ``bottleneck_width`` for ``config``'s cardinality whose whole-model cost is nearest ``target``."""
    _check_metric(metric)
    if config.block != "bottleneck":
        raise ValueError("bottleneck_width: auto matching needs block: bottleneck")

    def cost(width: int) -> float:
        try:
            return getattr(model_complexity(config.replace(bottleneck_width=width)), metric)
        except ValueError:  # e.g. a width whose channels don't divide by the groups
            return float("inf")

    return match_width(cost, target)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
