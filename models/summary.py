"""Per-stage architecture summary of a :class:`ModelConfig`, computed without building it.

For the stem and each stage: the stride of its output relative to the input,
the output resolution at the config's ``input_size``, output channels, the
bottleneck width (channels of the inner 3x3 conv), groups (cardinality),
blocks, and the stage's own params and MACs. This is what one needs to put a
detection neck (an FPN over C2..C5) on the network, or to see where the
compute goes. Resolutions come from the same conv arithmetic as
:mod:`models.complexity`, so the two cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from .complexity import Complexity, model_complexity, stage_costs, stem
from .config import ModelConfig

# What detection necks (FPN, as in Lin et al. 2017) usually consume:
# C2..C5, i.e. strides 4, 8, 16 and 32.
FPN_STRIDES = (4, 8, 16, 32)
# Below this many pixels per side a feature map carries little spatial layout.
MIN_USEFUL_RESOLUTION = 4


@dataclass(frozen=True)
class StageRow:
    name: str  # "stem", or torchvision's module name "layer1".."layer4"
    level: str  # FPN naming: C<k> for an output at stride 2^k
    stride: int  # output stride relative to the input
    resolution: int  # output height = width at the config's input size, px
    channels: int  # output channels
    width: Optional[int]  # channels of the 3x3 conv (bottleneck width x groups); None for the stem
    groups: Optional[int]  # groups of the 3x3 conv; None for the stem
    blocks: Optional[int]  # residual blocks; None for the stem
    params: int
    macs: int  # per image


@dataclass(frozen=True)
class ArchitectureSummary:
    label: str
    input_size: int
    rows: Tuple[StageRow, ...]  # the stem first, then one per stage
    feature_dim: int  # channels entering the classifier
    num_classes: int
    head_params: int
    total: Complexity

    @property
    def stages(self) -> Tuple[StageRow, ...]:
        return self.rows[1:]

    def detection_note(self) -> str:
        """Whether and how the stages feed a detection neck, in one paragraph."""
        return detection_note(self)


def _level(stride: int) -> str:
    return f"C{stride.bit_length() - 1}" if stride & (stride - 1) == 0 else "-"


def architecture_summary(config: ModelConfig) -> ArchitectureSummary:
    """The per-stage summary of ``config`` at its ``input_size``."""
    stem_cost, stage_list, head = stage_costs(config)
    stem_resolution = stem(config)[1]
    stride = config.stem_stride()
    rows: List[StageRow] = [StageRow("stem", _level(stride), stride, stem_resolution, config.resolved_stem_width(),
                                     None, None, None, stem_cost.params, stem_cost.macs)]
    for plan, cost in zip(config.stages(), stage_list):
        stride *= plan.stride
        rows.append(StageRow(f"layer{plan.index}", _level(stride), stride, cost.output_size, plan.out_channels,
                             plan.inner_width, plan.groups, plan.blocks, cost.cost.params, cost.cost.macs))
    return ArchitectureSummary(config.label(), config.input_size, tuple(rows), config.feature_dim,
                               config.num_classes, head.params, model_complexity(config))


def detection_note(summary: ArchitectureSummary) -> str:
    """Which stages an FPN would take (channels, strides), and what limits the use for detection."""
    by_stride = {row.stride: row for row in summary.stages}
    taps = [by_stride[s] for s in FPN_STRIDES if s in by_stride]
    if not taps:
        deepest = summary.stages[-1]
        return (f"Not a detection backbone as built: its deepest stage has stride {deepest.stride} "
                f"(an FPN takes C2..C5 at strides 4-32); use an ImageNet-layout model or add stride-2 stages.")
    levels = "/".join(r.level for r in taps)
    note = (f"FPN inputs {levels} = {', '.join(r.name for r in taps)}: channels "
            f"{'-'.join(str(r.channels) for r in taps)} at stride{'s' if len(taps) > 1 else ''} "
            f"{'-'.join(str(r.stride) for r in taps)} "
            f"(in_channels_list={[r.channels for r in taps]}).")
    missing = [s for s in FPN_STRIDES if s not in by_stride]
    if missing:
        note += f" No stage at stride {', '.join(map(str, missing))}: the neck must add those levels itself."
    coarse = [r for r in taps if r.resolution < MIN_USEFUL_RESOLUTION]
    if coarse:
        levels = ", ".join(f"{r.level} is {r.resolution}x{r.resolution}" for r in coarse)
        note += (f" At {summary.input_size} px input, {levels}: "
                 f"too coarse to localise objects; detection inputs are typically 512-1333 px.")
    grouped = {r.groups for r in taps if r.groups}
    if any(g > 1 for g in grouped):
        note += (f" The 3x3 convs are grouped ({'/'.join(map(str, sorted(grouped)))} groups): the neck sees the same "
                 f"interface as a ResNet's, but grouped convs do less work per byte moved and often run slower "
                 f"per MAC (compare achieved_gflop_s in a benchmark run).")
    return note
