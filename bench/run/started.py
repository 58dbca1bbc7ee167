"""The "started cell X" mark: how a run killed outright (the OOM killer) still tells which cell did it.

A cell measured in the runner's own process can take the process down with
it: the kernel's OOM killer sends SIGKILL, which no handler sees, so no row is
written and every resume would run that cell first and die again. Before each
such cell the runner writes ``.NAME.csv.started`` (durably: fsync'd) naming
the cell, and removes it once the cell's rows are on disk or the run stops in
an orderly way. A mark found at the next start therefore names a cell that
was running when its process died. The mark and its temporary file are
created afresh (``O_EXCL``, no link followed), so a link planted under
either name costs nothing but the link.

The mark also holds the kernel's OOM-kill counter (``oom_kill`` in
``/proc/vmstat``, which counts every OOM kill, cgroup limits included) and
the boot id. If the counter rose on the same boot, the OOM killer acted and
the cell is recorded as ``oom``; if it did not, something else killed the run
(a SIGKILL, a crash) and the cell is recorded as ``error``; without a counter
to read, ``oom`` is the likely cause and is recorded as "probably".
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Optional, Tuple

ISOLATE_HINT = "use --isolate for risky grids"


def mark_path(csv_path: str) -> str:
    root, name = os.path.split(os.path.realpath(csv_path))
    return os.path.join(root, f".{name}.started")


def oom_kill_count() -> Optional[int]:
    """The kernel's count of OOM kills since boot (None where /proc/vmstat has none)."""
    try:
        with open("/proc/vmstat", encoding="ascii") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def boot_id() -> Optional[str]:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Mark:
    cell_id: str
    run_id: str = ""
    oom_kills: Optional[int] = None
    boot: Optional[str] = None

    def verdict(self) -> Tuple[str, str]:
        """(status, error text) for the cell this mark names, the run having died while running it."""
        now = oom_kill_count()
        if self.oom_kills is not None and now is not None and self.boot and self.boot == boot_id():
            if now > self.oom_kills:
                return "oom", f"killed while running by the kernel's OOM killer (out of memory); {ISOLATE_HINT}"
            return "error", (f"the run died while running this cell (SIGKILL or a crash, not the OOM killer); "
                             f"{ISOLATE_HINT}")
        return "oom", f"killed while running (probably out of memory); {ISOLATE_HINT}"


def write(csv_path: str, cell_id: str, run_id: str = "") -> None:
    """Durably record that ``cell_id`` is starting (replacing any earlier mark)."""
    data = json.dumps({"cell_id": cell_id, "run_id": run_id, "pid": os.getpid(), "oom_kills": oom_kill_count(),
                       "boot_id": boot_id(), "time": time.time()})
    path = mark_path(csv_path)
    tmp = path + ".tmp"
    _unlink(tmp)  # a leftover of a kill, or a planted link: removing a link never touches its target
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)  # ours, new
    try:
        os.write(fd, (data + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read(csv_path: str) -> Optional[Mark]:
    """The mark a killed run left; None when there is none (or it is unreadable: then no cell is known)."""
    path = mark_path(csv_path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # a planted link is no mark of ours
        with os.fdopen(fd, encoding="utf-8") as f:
            data = json.load(f)
        kills = data.get("oom_kills")
        return Mark(str(data["cell_id"]), str(data.get("run_id") or ""),
                    kills if isinstance(kills, int) else None, data.get("boot_id"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        clear(csv_path)  # cut short by the kill itself: it names no cell
        return None


def clear(csv_path: str) -> None:
    for path in (mark_path(csv_path), mark_path(csv_path) + ".tmp"):
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:  # missing, or best effort: a stale mark costs one misrecorded cell, not the run
        pass
