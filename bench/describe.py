"""``benchmark.py describe MODEL_OR_GRID``: per-stage architecture tables.

For a preset name, one table; for a grid file, one table per distinct model
of the grid (cells that differ only in measurement, training or weights
share a model). Each table lists the stem and every stage with its stride,
output resolution, channels, bottleneck width, groups and blocks, then the
feature dimension, the totals from :func:`models.model_complexity` and a note
on what a detection neck would take from the network.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

from models import ModelConfig, get_preset, list_presets
from models.registry import unknown_preset_message
from models.summary import ArchitectureSummary, architecture_summary

from bench.errors import UserError

_GRID_SUFFIXES = (".yaml", ".yml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODEL_OR_GRID",
                        help=f"a preset name (see 'benchmark.py presets') or a grid file ({'/'.join(_GRID_SUFFIXES)})")
    parser.add_argument("--input-size", type=int, default=None, metavar="N",
                        help="input height = width in px (default: each model's own input_size)")


def run(args: argparse.Namespace) -> int:
    for title, config in models_to_describe(args.target, args.input_size):
        print(format_architecture(architecture_summary(config), title))
        print()
    return 0


def models_to_describe(target: str, input_size: Optional[int] = None) -> List[Tuple[str, ModelConfig]]:
    """(title, config) pairs for a preset name or a grid file; ``UserError`` on bad input."""
    if input_size is not None and input_size < 1:
        raise UserError(f"--input-size: expected a positive integer, got {input_size}")
    if _is_grid(target):
        pairs = _grid_models(target)
    elif target in list_presets():
        pairs = [(target, get_preset(target))]
    else:
        raise UserError(unknown_preset_message(target) + " (or give a grid file ending in .yaml)")
    if input_size is not None:
        pairs = [(title, _with_input_size(config, input_size)) for title, config in pairs]
    return pairs


def _is_grid(target: str) -> bool:
    return target.endswith(_GRID_SUFFIXES) or os.path.isfile(target)


def _grid_models(path: str) -> List[Tuple[str, ModelConfig]]:
    from bench.grid import load_grid

    grid = load_grid(path, cuda_available=False)  # the device does not change the architecture
    seen: Dict[str, Tuple[ModelConfig, List[int]]] = {}
    for cell in grid.cells:
        # ModelConfig's equality ignores the name: cells of one model share a table.
        key = repr(sorted((k, v) for k, v in cell.model.to_dict().items() if k != "name"))
        seen.setdefault(key, (cell.model, []))[1].append(cell.index)
    out = []
    for config, cells in seen.values():
        which = f"cell {cells[0]}" if len(cells) == 1 else f"cells {', '.join(map(str, cells))}"
        out.append((f"{config.label()} ({grid.name}: {which})", config))
    return out


def _with_input_size(config: ModelConfig, size: int) -> ModelConfig:
    try:
        return dataclasses.replace(config, input_size=size)  # keeps the preset's name
    except ValueError as e:
        raise UserError(f"--input-size {size}: {config.label()}: {e}") from None


# ------------------------------------------------------------------- format
_HEADER = ("stage", "level", "stride", "output", "channels", "width", "groups", "blocks", "params", "MMACs")


def _cells(row) -> Sequence[str]:
    dash = "-"
    return (row.name, row.level, str(row.stride), f"{row.resolution}x{row.resolution}", str(row.channels),
            dash if row.width is None else str(row.width), dash if row.groups is None else str(row.groups),
            dash if row.blocks is None else str(row.blocks), f"{row.params:,d}", f"{row.macs / 1e6:,.2f}")


def format_architecture(summary: ArchitectureSummary, title: Optional[str] = None) -> str:
    """A plain-text table of ``summary`` with totals and the detection note."""
    body = [_HEADER] + [_cells(r) for r in summary.rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(_HEADER))]

    def fmt(line: Sequence[str]) -> str:
        # Names left-aligned, numbers right-aligned.
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))

    stages = summary.stages
    total = summary.total
    lines = [f"{title or summary.label} at {summary.input_size}x{summary.input_size} input", fmt(_HEADER),
             "  ".join("-" * w for w in widths)]
    lines += [fmt(_cells(r)) for r in summary.rows]
    lines += [
        f"stage channels {'-'.join(str(r.channels) for r in stages)}, strides "
        f"{'-'.join(str(r.stride) for r in stages)}, groups {stages[-1].groups}",
        f"feature dim {summary.feature_dim} -> classifier fc = Linear({summary.feature_dim}, {summary.num_classes}) "
        f"({summary.head_params:,d} params)",
        f"total: {total.params:,d} params, {total.macs:,d} MACs = {total.macs / 1e9:.3f} GMACs per image "
        f"(FLOPs = 2 x MACs)",
        f"detection: {summary.detection_note()}",
    ]
    return "\n".join(lines)
