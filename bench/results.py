"""Result files: the tidy CSV (one row per measured configuration) and its JSON sidecar.

Rows are appended a cell at a time, each append a single write of whole lines
followed by fsync, so a run killed at any moment leaves a valid CSV holding
every finished cell. The sidecar (``NAME.json`` beside ``NAME.csv``) holds the
resolved grid, the environment and the training recipe, and is replaced
atomically (write to a temporary file, then rename).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Sequence

from .errors import UserError
from .schema import COLUMNS


def sidecar_path(csv_path: str) -> str:
    root, _ = os.path.splitext(csv_path)
    return root + ".json"


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return repr(value)
    return str(value)


def rows_to_csv_text(rows: Iterable[Dict[str, Any]], columns: Sequence[str] = COLUMNS, header: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        unknown = set(row) - set(columns)
        if unknown:
            raise ValueError(f"row has columns not in the schema: {sorted(unknown)}")
        writer.writerow([format_value(row.get(c)) for c in columns])
    return buf.getvalue()


def read_header(csv_path: str) -> Optional[List[str]]:
    if not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0:
        return None
    with open(csv_path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), None)


class ResultWriter:
    """Appends rows to a result CSV, whole cells at a time, durably."""

    def __init__(self, csv_path: str, columns: Sequence[str] = COLUMNS) -> None:
        self.path = csv_path
        self.columns = list(columns)
        header = read_header(csv_path)
        if header is not None and header != self.columns:
            raise UserError(f"{csv_path}: existing file has different columns than this version writes; "
                            f"choose another --out")
        self._needs_header = header is None

    def append(self, rows: List[Dict[str, Any]]) -> None:
        if not rows and not self._needs_header:
            return
        text = rows_to_csv_text(rows, self.columns, header=self._needs_header)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = text.encode("utf-8")
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        self._needs_header = False


def write_json_atomic(path: str, data: Dict[str, Any]) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_sidecar(csv_path: str) -> Optional[Dict[str, Any]]:
    path = sidecar_path(csv_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable sidecar: {e}") from None


def read_results(csv_path: str, required: Sequence[str] = ("cell_id", "status")):
    """A result CSV as a pandas DataFrame; :class:`UserError` for a missing or malformed file."""
    import pandas as pd

    if not os.path.exists(csv_path):
        raise UserError(f"{csv_path}: no such results file")
    try:
        df = pd.read_csv(csv_path, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise UserError(f"{csv_path}: empty results file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"{csv_path}: not a readable CSV: {' '.join(str(e).split())}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)}; is this a result file of this tool?")
    return df
