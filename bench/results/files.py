"""Result files: the tidy CSV (one row per measured configuration) and its JSON sidecar.

Crash safety rests on three rules:

* one row is one line: text values never carry a line break (they are
  flattened to spaces), so a line-oriented reader can always tell whole rows
  from a fragment;
* a finished cell is appended with a single ``write`` of whole lines followed
  by ``fsync``, so a run killed at any moment leaves every finished cell on
  disk; a write cut short by the kill leaves at most the cell it was writing
  and :func:`repair_tail` removes that before a resumed run appends;
* anything that rewrites a file (replacing a retried cell, a merged output,
  the sidecar) writes a temporary file and renames it over the old one.

The folder may be shared with someone hostile, so no file is opened through
a symbolic link the harness did not make (``O_NOFOLLOW``; a temporary file
is created with ``O_EXCL``), a file is never truncated unless the harness
created it, and a lock is keyed on the output's real path.

The sidecar (``NAME.json`` beside ``NAME.csv``) holds the resolved grid, the
environment and the list of runs that wrote the file.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from bench.errors import UserError, one_line, os_error_text
from bench.results.schema import COLUMNS, FAILED_STATUSES, STATUS_OK

ROW_STATUSES = (STATUS_OK,) + tuple(FAILED_STATUSES)


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
    text = str(value)
    if "\n" in text or "\r" in text:  # keep one row per line (see the module docstring)
        text = " ".join(text.splitlines())
    return text


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
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), None)


# ------------------------------------------------------------ line-level reading
@dataclass
class Line:
    """One data line of a result CSV: the bytes as stored and the parsed fields."""

    number: int  # 1-based line number in the file (the header is line 1)
    raw: bytes  # including the trailing newline
    fields: List[str]

    def get(self, columns: Dict[str, int], name: str) -> str:
        i = columns.get(name)
        return self.fields[i] if i is not None and i < len(self.fields) else ""


@dataclass
class CsvLines:
    path: str
    header_raw: bytes
    header: List[str]
    lines: List[Line]
    partial_tail: bytes = b""  # bytes after the last newline (a write cut short)
    missing_newline: bool = False  # the last line is a whole row that only lacks its newline


    @property
    def index(self) -> Dict[str, int]:
        return {name: i for i, name in enumerate(self.header)}


def _parse_line(text: str) -> List[str]:
    return next(csv.reader([text]), [])


def read_lines(csv_path: str, required: Sequence[str] = ("run_id", "cell_id", "status")) -> Optional[CsvLines]:
    """The file split into whole lines; None when it does not exist or is empty.

    Raises :class:`UserError` for a file that is not a result CSV (no header
    with ``required`` columns, a line with the wrong number of fields).
    """
    if not os.path.exists(csv_path):
        return None
    try:
        with open(csv_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"{csv_path}: cannot read: {e}") from None
    if not data:
        return None
    cut = data.rfind(b"\n") + 1
    body, tail = data[:cut], data[cut:]
    raw_lines = body.splitlines(keepends=True)
    if not raw_lines:  # not even a whole header: an interrupted first write
        return CsvLines(csv_path, b"", [], [], partial_tail=tail)
    try:
        header = _parse_line(raw_lines[0].decode("utf-8-sig").rstrip("\r\n"))  # utf-8-sig: a BOM an editor added
    except UnicodeDecodeError:
        raise UserError(f"{csv_path}: not a result CSV (not UTF-8 text)") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)}; is this a result file of this tool?")
    lines = []
    for n, raw in enumerate(raw_lines[1:], start=2):
        try:
            fields = _parse_line(raw.decode("utf-8").rstrip("\r\n"))
        except (UnicodeDecodeError, csv.Error) as e:
            raise UserError(f"{csv_path}: line {n}: unreadable: {e}") from None
        if not fields:
            continue  # a blank line
        if len(fields) != len(header):
            raise UserError(f"{csv_path}: line {n}: expected {len(header)} fields, found {len(fields)}; "
                            f"the file was edited or is not a result file of this tool")
        lines.append(Line(n, raw, fields))
    whole = _whole_row(tail, header)
    if whole is not None:  # only the newline is missing: the row is finished (kept, newline supplied)
        lines.append(Line(len(raw_lines) + 1, tail + b"\n", whole))
        return CsvLines(csv_path, raw_lines[0], header, lines, missing_newline=True)
    return CsvLines(csv_path, raw_lines[0], header, lines, partial_tail=tail)


def _whole_row(tail: bytes, header: List[str]) -> Optional[List[str]]:
    """The fields of ``tail`` when it is a finished row lacking only its newline, else None.

    Finished means: it parses strictly (no open quote), has the header's number
    of fields and a status this harness writes. A write cut inside its last
    field would pass too; the writer puts the newline down in the same write as
    the row, so that takes a cut exactly at the end of a row's last value.
    """
    if not tail or not header or "status" not in header:
        return None
    try:
        fields = next(csv.reader([tail.decode("utf-8")], strict=True), [])
    except (UnicodeDecodeError, csv.Error):
        return None
    if len(fields) != len(header) or fields[header.index("status")] not in ROW_STATUSES:
        return None
    return fields


# --------------------------------------------------------------- repair on resume
@dataclass
class TailRepair:
    dropped_rows: int = 0  # whole rows removed with the fragment (the rest of a cut write)
    dropped_bytes: int = 0

    def __bool__(self) -> bool:
        return self.dropped_bytes > 0


def repair_tail(csv_path: str) -> TailRepair:
    """Cut a write that a kill interrupted off the end of ``csv_path``.

    A file that does not end in a newline was killed while appending a cell.
    The fragment goes, and so do the whole lines the same write had already
    put down (the rest of that cell): they are the trailing lines sharing the
    fragment's run and cell id. When the fragment is too short to show its
    ids, the last cell in the file may be the cut one, so it goes too: being
    measured again costs time, while a cell with rows missing would be taken
    as done. The file is only truncated, never rewritten: every byte before
    the cut stays as it was.
    """
    if not os.path.exists(csv_path):
        return TailRepair()
    parsed = read_lines(csv_path)
    if parsed is not None and parsed.missing_newline:
        _append_bytes(csv_path, b"\n")  # a whole last row: keep it, and start the next append on a new line
        return TailRepair()
    if parsed is None or not parsed.partial_tail:
        return TailRepair()
    dropped = cut_write_rows(parsed)
    keep = os.path.getsize(csv_path) - len(parsed.partial_tail)
    keep -= sum(len(line.raw) for line in parsed.lines[len(parsed.lines) - dropped:])
    if not parsed.header:
        keep = 0
    size = os.path.getsize(csv_path)
    fd = open_no_follow(csv_path, os.O_WRONLY)
    try:
        os.ftruncate(fd, keep)
        os.fsync(fd)
    finally:
        os.close(fd)
    return TailRepair(dropped, size - keep)


def cut_write_rows(parsed: CsvLines) -> int:
    """How many whole rows at the end of ``parsed`` belong to the write its fragment was cut from."""
    if not parsed.partial_tail or not parsed.header or not parsed.lines:
        return 0
    cols = parsed.index
    ids = _fragment_ids(parsed.partial_tail, cols)
    if ids is None:
        last = parsed.lines[-1]
        ids = (last.get(cols, "run_id"), last.get(cols, "cell_id"))
    count = 0
    for line in reversed(parsed.lines):
        if (line.get(cols, "run_id"), line.get(cols, "cell_id")) != ids:
            break
        count += 1
    return count


def _fragment_ids(fragment: bytes, cols: Dict[str, int]) -> Optional[Tuple[str, str]]:
    """(run_id, cell_id) of a cut line, when both fields are complete in it."""
    try:
        fields = _parse_line(fragment.decode("utf-8", errors="replace"))
    except csv.Error:
        return None
    need = max(cols.get("run_id", 0), cols.get("cell_id", 0))
    if len(fields) <= need + 1:  # the last field of a fragment may itself be cut
        return None
    return fields[cols["run_id"]], fields[cols["cell_id"]]


# ----------------------------------------------------------------- resume state
@dataclass
class CellRecord:
    """What a result file holds for one cell: the rows of its latest attempt."""

    cell_id: str
    run_id: str
    statuses: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.statuses) and all(s == STATUS_OK for s in self.statuses)

    @property
    def failed(self) -> bool:
        return not self.ok


def scan_cells(csv_path: str) -> Dict[str, CellRecord]:
    """Cell id -> :class:`CellRecord`, in file order; empty for a missing file.

    Reads only what resuming needs, with the csv module (no pandas), so a
    resume against thousands of rows costs milliseconds.
    """
    parsed = read_lines(csv_path)
    if parsed is None or not parsed.header:
        return {}
    cols = parsed.index
    records: Dict[str, CellRecord] = {}
    for line in parsed.lines:
        cell_id, run_id = line.get(cols, "cell_id"), line.get(cols, "run_id")
        rec = records.get(cell_id)
        if rec is None or rec.run_id != run_id:  # a later attempt supersedes an earlier one
            rec = records[cell_id] = CellRecord(cell_id, run_id)
        rec.statuses.append(line.get(cols, "status") or "error")
    return records


# ---------------------------------------------------------------------- writing
class ResultWriter:
    """Appends rows to a result CSV, whole cells at a time, durably."""

    def __init__(self, csv_path: str, columns: Sequence[str] = COLUMNS) -> None:
        self.path = csv_path
        self.columns = list(columns)
        header = read_header(csv_path)
        if header is not None and header != self.columns:
            if not set(header) <= set(self.columns) or not set(RESULT_IDENTITY) <= set(header):
                raise UserError(f"{csv_path}: existing file has different columns than this version writes "
                                f"and is not an older result file of this harness; choose another --out")
            upgrade_header(csv_path, self.columns)
        self._needs_header = header is None

    def append(self, rows: List[Dict[str, Any]]) -> None:
        """Append ``rows`` (one cell) with one write and an fsync; ``[]`` writes just the header if needed."""
        if not rows and not self._needs_header:
            return
        text = rows_to_csv_text(rows, self.columns, header=self._needs_header)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        fd = open_no_follow(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            before = os.fstat(fd).st_size  # we hold the output's lock: nobody else appends
            data = text.encode("utf-8")
            if before and os.pread(fd, 1, before - 1) != b"\n":  # a whole last row without its newline
                data = b"\n" + data
            written = 0
            try:
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError:
                # A full disk takes part of the write: cut it off, or the rows already down (whole
                # lines, possibly) would pass for a finished cell with rows missing.
                try:
                    os.ftruncate(fd, before)
                except OSError:
                    pass  # a kill-like cut: repair_tail removes it on resume
                raise
        finally:
            os.close(fd)
        self._needs_header = False

    def replace_cell(self, cell_id: str, rows: List[Dict[str, Any]]) -> None:
        """Swap the rows of ``cell_id`` for ``rows`` (a retried cell), atomically.

        The other lines are copied byte for byte; the new rows go at the end.
        A kill at any point leaves either the old file or the new one.
        """
        parsed = read_lines(self.path)
        if parsed is None or not parsed.header:
            self.append(rows)
            return
        cols = parsed.index
        kept = [line.raw for line in parsed.lines if line.get(cols, "cell_id") != cell_id]
        new = rows_to_csv_text(rows, self.columns).encode("utf-8")
        write_bytes_atomic(self.path, b"".join([parsed.header_raw, *kept, new]))
        self._needs_header = False


# Columns every version of the result format has written: a file without them is not an older
# result file of this harness, and is never rewritten.
RESULT_IDENTITY = ("run_id", "cell_id", "variant", "device", "status", "params", "macs")


def upgrade_header(csv_path: str, columns: Sequence[str]) -> None:
    """Rewrite a file written by an older version (its columns a subset of ``columns``) in today's columns.

    Resuming a run across a release that added columns must not need a new --out: every value is kept
    under its name and the new columns stay empty. The caller holds the output's lock; the rewrite is
    atomic, so a kill leaves the old file or the new one.
    """
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        body = list(reader)
    for number, values in enumerate(body, start=2):
        if len(values) != len(header):
            raise UserError(f"{csv_path}: line {number} has {len(values)} fields where its header has "
                            f"{len(header)}; cannot add this version's new columns (choose another --out)")
    rows = [dict(zip(header, values)) for values in body]
    write_bytes_atomic(csv_path, rows_to_csv_text(rows, columns, header=True).encode("utf-8"))


def open_no_follow(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link in the last component (one line, not a followed link)."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        if e.errno == errno.ELOOP and os.path.islink(path):
            raise OSError(errno.ELOOP, "is a symbolic link; refusing to follow it", path) from None
        raise


def _append_bytes(path: str, data: bytes) -> None:
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename."""
    write_files_atomic({path: data})


def write_files_atomic(files: Dict[str, bytes]) -> None:
    """Replace each path with its bytes; a failure while writing (a full disk) changes none of them.

    Every new copy is written and fsync'd to a temporary file beside its path
    (created with ``O_EXCL``, so no planted link is followed) before the
    first rename, which needs no space. A rename replaces a link at ``path``,
    never the file it points to.
    """
    staged: List[Tuple[str, str]] = []
    try:
        for path, data in files.items():
            staged.append((_stage(path, data), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        raise


def _stage(path: str, data: bytes) -> str:
    """A fsync'd temporary copy of ``data`` beside ``path``, with the mode ``path`` has (or 0o644)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        mode = os.lstat(path).st_mode & 0o777 if os.path.isfile(path) and not os.path.islink(path) else 0o644
        os.chmod(tmp, mode)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def json_bytes(data: Dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8")


def write_json_atomic(path: str, data: Dict[str, Any]) -> None:
    write_bytes_atomic(path, json_bytes(data))


def check_writable(path: str, what: str = "--out") -> None:
    """Refuse, before any work, an output that cannot be written: one line naming the path and the OS error.

    Creates and removes a one-byte probe file in the output's folder (or, when
    that does not exist yet, in the nearest folder above it, where it would be
    created), which catches a read-only filesystem, a missing permission, a
    full disk and pseudo-filesystems such as /proc. Nothing is left behind.
    """
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{what} {path}: is a folder; expected a file path")
    existing = parent
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{what} {path}: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=existing)
        try:
            os.write(fd, b"x")  # an empty file fits on a full disk; one byte does not
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot write in {existing}: {os_error_text(e)}") from None


def check_folder_writable(folder: str, what: str) -> None:
    """:func:`check_writable` for a folder that files will be written into."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"{what} {folder}: is not a folder")
    check_writable(os.path.join(folder, ".probe"), what)


_LOCK_CONTENT = re.compile(rb"(\d{1,10}\n)?")


def lock_path(csv_path: str) -> str:
    """The hidden lock file of a result CSV: ``.NAME.csv.lock`` beside the file it really is.

    Keyed on the real path, so a run writing through a symbolic link to another run's output takes
    that output's lock (and is refused while the other writes) instead of a lock of its own.
    """
    root, name = os.path.split(os.path.realpath(csv_path))
    return os.path.join(root, f".{name}.lock")


class OutputLock:
    """An exclusive lock on a result CSV while it is written (released even on SIGKILL).

    Every writer of a result file takes it: the runner for the length of a
    run, ``merge`` and ``baseline`` while they replace their output. Two runs
    appending to one CSV would each take the other's cells as missing, and a
    merge replacing a file under a running job would drop the job's rows; the
    second writer is refused instead. The lock is a hidden file beside the CSV
    (the CSV itself is replaced on retries, which would drop a lock held on it).

    The lock file is opened without following a link, and one that is not a
    plain file of this harness (a link, a hard link, anything but a pid) is
    refused rather than written: a planted ``.NAME.csv.lock`` must not cost
    the file it points to.
    """

    def __init__(self, csv_path: str) -> None:
        self.csv_path = csv_path
        self.path = lock_path(csv_path)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: run unguarded
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = self._open()
        except OSError as e:
            raise UserError(f"{self.csv_path}: cannot create the lock file {self.path}: {os_error_text(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"{self.csv_path}: another run is writing this output right now (a run, merge or "
                            f"baseline holds {os.path.basename(self.path)}); wait for it or write elsewhere") from None
        try:  # the pid is a courtesy for whoever looks; the flock is what guards. _open checked it holds one.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd

    def _open(self) -> int:
        """The lock file's descriptor: created here, or an existing one that is this harness's lock file."""
        try:
            return open_no_follow(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            pass
        fd = open_no_follow(self.path, os.O_RDWR)
        info = os.fstat(fd)
        content = os.pread(fd, 64, 0)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or not _LOCK_CONTENT.fullmatch(content):
            os.close(fd)
            raise OSError(errno.EEXIST, "exists and is not a lock file of this harness (a hard link or other data); "
                                        "left untouched: remove it if it is stale", self.path)
        return fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------- reading
def read_sidecar(csv_path: str) -> Optional[Dict[str, Any]]:
    path = sidecar_path(csv_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8-sig") as f:  # a BOM an editor added is not part of the JSON
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a 5000-digit int
        raise UserError(f"{path}: unreadable sidecar: {one_line(e, 200)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: unreadable sidecar: expected a JSON object")
    from bench.results.validate import sidecar_problem  # validate reads files through this module

    problem = sidecar_problem(data)
    if problem:
        raise UserError(f"{path}: unreadable sidecar: {problem}")
    return data
