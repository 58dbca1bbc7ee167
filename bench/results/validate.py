"""One rule set for every column of a result CSV, shared by every reader.

``report``, ``compare``, ``baseline`` and ``merge`` all read result files
through :func:`read_table` or :func:`check_lines`, so a value is accepted or
refused the same way everywhere: ``top1_acc`` 7.0, ``params`` -5, ``abc`` in a
number column, a literal ``nan`` or ``inf`` (the writer leaves a missing value
empty, never ``nan``), or two rows of one configuration are each a one-line
:class:`UserError` naming the file, the line and the column. The rules are
generated from the column registry (:data:`bench.results.schema.REGISTRY`),
where each sits beside its column's meaning and unit.

A last line without its newline that is not a whole row is a write cut short
(or a hand edit): it is left out and the reader gets a note saying so, as
``merge`` and the runner's resume do. A whole row (every field, a valid
status) that only lacks the newline is finished and is read.

:func:`read_table` is the one reader of result CSVs for analysis (report,
compare, baseline, the latency model behind ``--predict``).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

from bench.errors import UserError
from bench.results.files import CsvLines, Line, read_lines
from bench.results.schema import REGISTRY, TEXT, Rule

# Generated from the column registry: a column's rule is written once, beside its meaning and unit.
RULES: Dict[str, Rule] = {c.name: c.rule for c in REGISTRY}


def rule(column: str) -> Rule:
    """The column's rule; a column this version does not know (a newer file's) is read as text."""
    return RULES.get(column, TEXT)


@dataclass
class Table:
    """A result CSV read and checked: a pandas frame (numbers as floats, NaN when empty) and notes."""

    path: str
    frame: Any  # pandas.DataFrame; typed loosely so this module imports pandas only when reading
    line_numbers: List[int] = field(default_factory=list)  # each frame row's line in the file (header = 1)
    notes: List[str] = field(default_factory=list)  # things a reader should say (a cut last line)


def check_lines(path: str, header: Sequence[str], lines: Sequence[Line]) -> None:
    """Every value of ``lines`` against its column's rule, then no configuration twice; :class:`UserError`."""
    rules = [rule(name) for name in header]
    for line in lines:
        for name, r, text in zip(header, rules, line.fields):
            if text == "":
                continue
            try:
                r.check(text)
            except ValueError:
                raise UserError(f"{path}: line {line.number}, column {name}: expected {r.expected()}, "
                                f"got {text[:40]!r}") from None
    cols = {name: i for i, name in enumerate(header)}
    for line in lines:
        _check_accuracy_agrees(path, cols, line)
    _check_no_duplicates(path, header, lines)


def _check_accuracy_agrees(path: str, cols: Dict[str, int], line: Line) -> None:
    """``top1_acc``, ``top1_acc_seeds``, ``top1_correct_seeds`` and ``test_images`` tell one story.

    An accuracy is correct / test_images exactly; the seeds' accuracies are written to 4 decimals, so
    each column may differ from the counts by at most one image. ``compare`` tests the counts and
    shows ``top1_acc``: a file where they disagree (201 correct of 200, a hand-edited accuracy) would
    give a verdict about numbers that were never measured, so the row is refused.
    """
    def refuse(column: str, what: str) -> None:
        raise UserError(f"{path}: line {line.number}, column {column}: {what}; "
                        f"top1_acc, top1_acc_seeds, top1_correct_seeds and test_images disagree (an edited row?)")

    images, counts = line.get(cols, "test_images"), _numbers(line.get(cols, "top1_correct_seeds"))
    accuracies, mean = _numbers(line.get(cols, "top1_acc_seeds")), _numbers(line.get(cols, "top1_acc"))
    n = float(images) if images else None
    if counts and accuracies and len(counts) != len(accuracies):
        refuse("top1_correct_seeds", f"{len(counts)} seed(s), but top1_acc_seeds has {len(accuracies)}")
    if counts and n is not None:
        over = next((c for c in counts if c > n), None)
        if over is not None:
            refuse("top1_correct_seeds", f"{over:.0f} correct of {n:.0f} test images")
        for a, c in zip(accuracies, counts):
            if abs(a * n - c) > _ONE_IMAGE:
                refuse("top1_acc_seeds", f"{a:g} of {n:.0f} test images is {a * n:.1f} images, not {c:.0f} correct")
        if mean and abs(mean[0] * n - sum(counts) / len(counts)) > _ONE_IMAGE:
            refuse("top1_acc", f"{mean[0]:g} of {n:.0f} test images is {mean[0] * n:.1f} images, but the seeds' "
                               f"correct counts average {sum(counts) / len(counts):.1f}")
    elif mean and accuracies:  # no counts (an older file): the mean of the seeds, as written (4 decimals)
        tolerance, seed_mean = (1 / n if n else _SEED_ROUNDING), sum(accuracies) / len(accuracies)
        if abs(mean[0] - seed_mean) > tolerance + 1e-9:
            refuse("top1_acc", f"{mean[0]:g}, but the seeds' accuracies average {seed_mean:.4f}")


_ONE_IMAGE = 1 + 1e-6  # an image, plus the float error of acc * test_images
_SEED_ROUNDING = 1e-4  # top1_acc_seeds is written with 4 decimals


def _numbers(text: str) -> List[float]:
    """The numbers of a checked cell ('' -> [])."""
    return [float(part) for part in text.split(";")] if text else []


# The sidecar keys the readers walk (resume, merge, compare, report), when present. A sidecar is
# parsed as untrusted: `"cells": [1, 2]` must be a message, not a TypeError deep in a resume.
_SIDECAR_SHAPES = {"runs": list, "cells": dict, "grid": dict}


def sidecar_problem(data: Dict[str, Any]) -> str:
    """'' when a sidecar's structure is what its readers expect, else what is wrong (for a message)."""
    for key, kind in _SIDECAR_SHAPES.items():
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{key}: expected a {'list' if kind is list else 'mapping'}, got {type(value).__name__}"
    if not all(isinstance(cell, dict) for cell in (data.get("cells") or {}).values()):
        return "cells: expected a mapping of cell id to cell"
    grid_cells = (data.get("grid") or {}).get("cells")
    if grid_cells is not None and not (isinstance(grid_cells, list) and
                                       all(isinstance(c, dict) and "cell_id" in c for c in grid_cells)):
        return "grid.cells: expected a list of cells, each with a cell_id"
    return ""


def _check_no_duplicates(path: str, header: Sequence[str], lines: Sequence[Line]) -> None:
    """One run measures a configuration once: the same run, cell and batch twice is a copied row."""
    cols = {name: i for i, name in enumerate(header)}
    seen: Dict[Tuple[str, ...], int] = {}
    for line in lines:
        batch = line.get(cols, "requested_batch_size") or line.get(cols, "batch_size")
        key = (line.get(cols, "run_id"), line.get(cols, "cell_id"), _number_text(batch))
        if key in seen:
            raise UserError(f"{path}: lines {seen[key]} and {line.number} are the same row (run {key[0] or '-'}, "
                            f"cell {key[1]}, batch {key[2] or '-'}); remove the copy")
        seen[key] = line.number


def _number_text(text: str) -> str:
    try:
        value = float(text)
        return str(int(value)) if value == int(value) else str(value)
    except ValueError:
        return text


def tail_note(parsed: CsvLines) -> str:
    """'' for a file ending in a newline, else what was left out and why."""
    tail = parsed.partial_tail
    if not tail:
        return ""
    fields = len(next(csv.reader([tail.decode("utf-8", errors="replace")]), []))
    if fields >= len(parsed.header):  # a whole row lacking only its newline is read as finished (read_lines)
        return (f"the last line has no newline and is not a whole row ({fields} fields, or an open quote or a "
                f"status this harness does not write): left out")
    return (f"the last line is cut ({fields} of {len(parsed.header)} fields; a run was killed mid-write): "
            f"left out; resuming that run repairs the file")


def read_table(csv_path: str, required: Sequence[str] = ("cell_id", "status")) -> Table:
    """Read, check and type a result CSV; :class:`UserError` for a missing, malformed or out-of-range file."""
    import pandas as pd

    if os.path.isdir(csv_path):
        raise UserError(f"{csv_path}: is a directory; expected a result CSV")
    if not os.path.exists(csv_path):
        raise UserError(f"{csv_path}: no such results file")
    parsed = read_lines(csv_path, required=required)
    if parsed is None or not parsed.header:
        raise UserError(f"{csv_path}: empty results file")
    check_lines(csv_path, parsed.header, parsed.lines)
    records = [[text if text != "" else None for text in line.fields] for line in parsed.lines]
    frame = pd.DataFrame(records, columns=parsed.header, dtype=object)
    for name in parsed.header:
        if rule(name).numeric:
            frame[name] = pd.to_numeric(frame[name]).astype(float)
    note = tail_note(parsed)
    return Table(csv_path, frame, [line.number for line in parsed.lines], [f"{csv_path}: {note}"] if note else [])
