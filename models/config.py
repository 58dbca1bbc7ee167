"""The model space: one validated description of a ResNet/ResNeXt variant.

A :class:`ModelConfig` is pure data. It knows how its depth maps to stages and
what channel widths each stage has, so that the analytic complexity code
(:mod:`models.complexity`) and the ``nn.Module`` builder (:mod:`models.resnet`)
read the same plan and can never disagree about the architecture.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "cifar")
LAYOUTS = ("imagenet", "cifar")

# ImageNet depths -> blocks per stage (He et al. 2016, Table 1).
IMAGENET_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# Layers per block, used by the CIFAR depth formulas: basic 6n+2, bottleneck 9n+2.
_LAYERS_PER_BLOCK = {"basic": 2, "bottleneck": 3}

# Base stage widths ("planes", before the bottleneck expansion) per layout.
# CIFAR basic: 16/32/64 (He et al. 2016, sec. 4.2). CIFAR bottleneck: the
# ResNeXt-29 template, outputs 256/512/1024 = planes 64/128/256 x expansion 4.
_STAGE_PLANES = {
    ("imagenet", "basic"): (64, 128, 256, 512),
    ("imagenet", "bottleneck"): (64, 128, 256, 512),
    ("cifar", "basic"): (16, 32, 64),
    ("cifar", "bottleneck"): (64, 128, 256),
}
_STEM_WIDTH = {
    ("imagenet", "basic"): 64,
    ("imagenet", "bottleneck"): 64,
    ("cifar", "basic"): 16,
    ("cifar", "bottleneck"): 64,
}
EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclass(frozen=True)
class StagePlan:
    """What one stage of the network looks like."""

    index: int  # 1-based, as in torchvision's layer1..layer4
    blocks: int
    planes: int  # base width before expansion
    inner_width: int  # channels of the 3x3 (grouped) conv
    out_channels: int
    stride: int  # stride of the stage's first block
    groups: int


@dataclass(frozen=True)
class ModelConfig:
    """A point of the ResNet/ResNeXt model space.

    ``depth`` or ``blocks`` (explicit blocks per stage) picks the stage layout;
    ``cardinality`` is the number of groups of the 3x3 conv (1 = ResNet) and
    ``bottleneck_width`` the width per group (the ``d`` in 32x4d; 64 = ResNet).
    ``width_multiplier`` scales every stage's base width; the stem keeps its
    width unless ``stem_width`` sets it (as Wide ResNets do).
    """

    block: str = "bottleneck"
    depth: Optional[int] = None
    blocks: Optional[Tuple[int, ...]] = None
    cardinality: int = 1
    bottleneck_width: int = 64
    width_multiplier: float = 1.0
    stem: str = "imagenet"
    layout: Optional[str] = None  # defaults to the stem's value
    stem_width: Optional[int] = None
    num_classes: int = 1000
    input_size: int = 224
    in_channels: int = 3
    name: Optional[str] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.blocks is not None and not isinstance(self.blocks, tuple):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        if self.layout is None:
            object.__setattr__(self, "layout", self.stem)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        _choice("block", self.block, BLOCKS)
        _choice("stem", self.stem, STEMS)
        _choice("layout", self.layout, LAYOUTS)
        for name in ("cardinality", "bottleneck_width", "num_classes", "input_size", "in_channels"):
            _positive_int(name, getattr(self, name))
        if self.stem_width is not None:
            _positive_int("stem_width", self.stem_width)
        if isinstance(self.width_multiplier, bool) or not isinstance(self.width_multiplier, (int, float)) \
                or not self.width_multiplier > 0:
            raise ValueError(f"width_multiplier: expected a positive number, got {self.width_multiplier!r}")
        if self.depth is None and self.blocks is None:
            raise ValueError("depth: give either depth or blocks (blocks per stage)")
        if self.depth is not None and self.blocks is not None:
            raise ValueError("depth: give depth or blocks, not both")
        if self.blocks is not None:
            n_stages = len(_STAGE_PLANES[(self.layout, self.block)])
            if len(self.blocks) != n_stages or not all(
                isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in self.blocks
            ):
                raise ValueError(
                    f"blocks: expected {n_stages} positive integers for the {self.layout} layout, "
                    f"got {list(self.blocks)!r}"
                )
        else:
            _positive_int("depth", self.depth)
            self.stage_blocks()  # raises for an impossible depth
        if self.block == "basic":
            if self.cardinality != 1:
                raise ValueError(
                    f"cardinality: basic blocks have no grouped conv, so cardinality must be 1 "
                    f"(got {self.cardinality}); use block: bottleneck for ResNeXt"
                )
            if self.bottleneck_width != 64:
                raise ValueError(
                    f"bottleneck_width: basic blocks have no bottleneck, so it must be 64 "
                    f"(got {self.bottleneck_width}); use width_multiplier to widen them"
                )
        for stage in self.stages():
            if stage.planes < 1 or stage.inner_width < 1:
                raise ValueError(
                    f"width_multiplier: {self.width_multiplier} makes stage {stage.index} empty"
                )
            if stage.inner_width % self.cardinality:
                raise ValueError(
                    f"cardinality: stage {stage.index} has {stage.inner_width} channels in its 3x3 conv, "
                    f"not divisible by cardinality {self.cardinality}"
                )
        if self.input_size < self.total_stride():
            raise ValueError(
                f"input_size: {self.input_size} px is smaller than the network's total stride "
                f"{self.total_stride()}"
            )

    # ------------------------------------------------------------ architecture
    def stage_blocks(self) -> Tuple[int, ...]:
        """Blocks per stage, from ``blocks`` or the standard depth mapping."""
        if self.blocks is not None:
            return self.blocks
        depth = self.depth
        if self.layout == "imagenet":
            if depth not in IMAGENET_STAGES:
                raise ValueError(
                    f"depth: the imagenet layout supports depths {sorted(IMAGENET_STAGES)}, got {depth}; "
                    f"give blocks: [...] for other layouts"
                )
            block, stages = IMAGENET_STAGES[depth]
            if block != self.block:
                raise ValueError(
                    f"depth: ResNet-{depth} uses {block} blocks, not {self.block}; "
                    f"give blocks: [...] for a non-standard combination"
                )
            return stages
        per_block = _LAYERS_PER_BLOCK[self.block]
        n_layers = 3 * per_block  # three stages
        if (depth - 2) % n_layers or depth < n_layers + 2:
            form = "6n+2 (20, 32, 44, 56, 110, ...)" if self.block == "basic" else "9n+2 (29, 38, 47, ...)"
            raise ValueError(f"depth: cifar {self.block} networks need depth = {form}, got {depth}")
        n = (depth - 2) // n_layers
        return (n, n, n)

    @property
    def expansion(self) -> int:
        return EXPANSION[self.block]

    def resolved_stem_width(self) -> int:
        return self.stem_width if self.stem_width is not None else _STEM_WIDTH[(self.layout, self.block)]

    def stages(self) -> Tuple[StagePlan, ...]:
        base = _STAGE_PLANES[(self.layout, self.block)]
        plans = []
        for i, (planes0, n) in enumerate(zip(base, self.stage_blocks())):
            planes = int(round(planes0 * self.width_multiplier))
            if self.block == "bottleneck":
                # torchvision's rule: width = int(planes * d / 64) * groups
                inner = int(planes * (self.bottleneck_width / 64.0)) * self.cardinality
            else:
                inner = planes
            stride = 1 if i == 0 else 2
            plans.append(StagePlan(i + 1, n, planes, inner, planes * self.expansion, stride, self.cardinality))
        return tuple(plans)

    def stem_stride(self) -> int:
        return 4 if self.stem == "imagenet" else 1  # 7x7/2 conv + 3x3/2 max-pool

    def total_stride(self) -> int:
        return self.stem_stride() * 2 ** (len(self.stage_blocks()) - 1)

    @property
    def feature_dim(self) -> int:
        return self.stages()[-1].out_channels

    @property
    def total_depth(self) -> int:
        """Weighted layers: stem conv + convs in blocks + classifier."""
        return 2 + _LAYERS_PER_BLOCK[self.block] * sum(self.stage_blocks())

    def family(self) -> str:
        return "resnext" if self.cardinality > 1 else "resnet"

    def label(self) -> str:
        """A readable name: the preset name, or one derived from the fields."""
        if self.name:
            return self.name
        label = f"{self.family()}{self.total_depth}"
        if self.block == "bottleneck" and (self.cardinality > 1 or self.bottleneck_width != 64):
            label += f"_{self.cardinality}x{self.bottleneck_width}d"
        if self.width_multiplier != 1:
            label += f"_w{self.width_multiplier:g}"
        if self.stem == "cifar" and (self.layout == "imagenet" or self.total_depth in IMAGENET_STAGES):
            label += "_cifar"
        return label

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (validated again); the name is dropped."""
        changes.setdefault("name", None)
        if "depth" in changes and changes["depth"] is not None and "blocks" not in changes:
            changes["blocks"] = None
        if "blocks" in changes and changes["blocks"] is not None and "depth" not in changes:
            changes["depth"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["blocks"] = list(self.blocks) if self.blocks is not None else None
        return d


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
