"""Deterministic, balanced slices of a grid: ``--shard K/N`` runs the K-th of N.

Any scheduler can run the shards (a SLURM job array, a loop over machines):
each shard needs only the grid file and its K/N, and ``benchmark.py merge``
puts the outputs back together.

Cells are dealt out in the order of their ids (a hash of their settings), not
the grid's order. Grids are usually ordered by size, and a matrix whose inner
axis has N values would otherwise hand shard K every cell of the K-th value;
the hash order mixes large and small cells, and the round-robin deal keeps the
shard sizes within one cell of each other. The slice depends only on the set
of cells, so every shard of one sweep must use the same grid (and the same
``--quick``/``--device``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Sequence, TypeVar

from bench.errors import UserError

T = TypeVar("T")

_SPEC = re.compile(r"^\s*(-?\d+)\s*/\s*(-?\d+)\s*$")  # signed, so -1/2 gets the range message


@dataclass(frozen=True)
class Shard:
    index: int  # K, 1-based
    count: int  # N

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, cells: Sequence[T]) -> List[T]:
        """This shard's cells, in the grid's order."""
        order = sorted(range(len(cells)), key=lambda i: (cells[i].cell_id, i))
        mine = set(order[self.index - 1::self.count])
        return [c for i, c in enumerate(cells) if i in mine]


def parse_shard(spec: str) -> Shard:
    """``"K/N"`` with 1 <= K <= N; :class:`UserError` otherwise."""
    m = _SPEC.match(spec or "")
    if not m:
        raise UserError(f"--shard {spec}: expected K/N with whole numbers, e.g. --shard 2/8 (the 2nd of 8 slices)")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise UserError(f"--shard {spec}: N must be at least 1")
    if not 1 <= k <= n:
        raise UserError(f"--shard {spec}: K must be between 1 and N={n} (shards are numbered from 1; "
                        f"with a 0-based SLURM array use --shard $((SLURM_ARRAY_TASK_ID + 1))/{n})")
    return Shard(k, n)
