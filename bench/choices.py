"""The allowed values of every setting and column that is a choice: one home for each list.

The grid (:mod:`bench.grid`), the training recipe (:mod:`bench.train.recipe`),
the numerics (:mod:`bench.measure.numerics`), the CSV rules
(:mod:`bench.results.schema`) and the docs (``docs/reference.md``, generated)
read their choices from here, so a precision added here is accepted, written,
validated and documented in one change.

This module sits at the floor beside :mod:`bench.checks` and :mod:`bench.errors`
and imports nothing, so every layer may use it. (``models/`` knows nothing of
``bench/``: :class:`models.ModelConfig` keeps its own block/stem lists, and
``tests/test_registry.py`` checks that they equal the ones here.)
"""
from __future__ import annotations

from typing import Dict, Tuple

PRECISIONS: Tuple[str, ...] = ("fp32", "bf16", "fp16")  # autocast dtype of a measurement (fp32: none)
TRAIN_PRECISIONS: Tuple[str, ...] = ("auto",) + PRECISIONS  # auto: bf16 on GPU and CPUs with native bf16
MEMORY_FORMATS: Tuple[str, ...] = ("contiguous", "channels_last")
DEVICES: Tuple[str, ...] = ("cpu", "cuda")  # what a row was measured on
DEVICE_SETTINGS: Tuple[str, ...] = ("auto",) + DEVICES  # what a grid may ask for
BLOCKS: Tuple[str, ...] = ("basic", "bottleneck")
STEMS: Tuple[str, ...] = ("imagenet", "cifar")
LAYOUTS: Tuple[str, ...] = ("imagenet", "cifar")
CPU_ALLOCATORS: Tuple[str, ...] = ("tuned", "system")
DATASETS: Tuple[str, ...] = ("cifar10", "synthetic")
OPTIMIZERS: Tuple[str, ...] = ("sgd", "adam")
SCHEDULES: Tuple[str, ...] = ("linear", "cosine", "constant")
STATUS_OK = "ok"
FAILED_STATUSES: Tuple[str, ...] = ("error", "oom", "timeout", "diverged")
STATUSES: Tuple[str, ...] = (STATUS_OK,) + FAILED_STATUSES

# What the docs' choice table lists: name -> (values, where it is used).
DOCUMENTED: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "precision": (PRECISIONS, "grid setting `precision`; columns `precision`, `train_precision`"),
    "train precision": (TRAIN_PRECISIONS, "recipe field `train.precision`"),
    "memory format": (MEMORY_FORMATS, "grid setting and column `memory_format`"),
    "device": (DEVICE_SETTINGS, "grid setting `device` (`auto`: cuda when available); column `device` without auto"),
    "block": (BLOCKS, "grid setting and column `block`"),
    "stem": (STEMS, "grid setting and column `stem`"),
    "layout": (LAYOUTS, "grid setting and column `layout`"),
    "CPU allocator": (CPU_ALLOCATORS, "grid setting `cpu_allocator`"),
    "dataset": (DATASETS, "recipe field `train.dataset`"),
    "optimizer": (OPTIMIZERS, "recipe field `train.optimizer`; column `optimizer`"),
    "schedule": (SCHEDULES, "recipe field `train.schedule`"),
    "status": (STATUSES, "column `status`"),
}


def markdown_table() -> str:
    """The docs' table of choices (``docs/reference.md``)."""
    lines = ["| choice | values | used by |", "|---|---|---|"]
    lines += [f"| {name} | {', '.join(f'`{v}`' for v in values)} | {where} |"
              for name, (values, where) in DOCUMENTED.items()]
    return "\n".join(lines)
