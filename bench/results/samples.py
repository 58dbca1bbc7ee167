"""Raw samples in a result cell: a ';'-separated list of numbers.

This is part of the file format (the runner writes it, analysis reads it), so
it lives with the schema rather than with the statistics that summarise it.
"""
from __future__ import annotations

import math
from typing import List, Sequence


def format_samples(samples: Sequence[float]) -> str:
    """Raw samples as a compact ';'-separated string (6 significant digits)."""
    return ";".join(f"{x:.6g}" for x in samples)


def parse_samples(text: object) -> List[float]:
    """The numbers of a ';'-separated sample cell; an empty or missing cell is no samples."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or text == "":
        return []
    return [float(x) for x in str(text).split(";") if x]
