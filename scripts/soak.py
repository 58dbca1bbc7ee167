"""Soak test of the no-loss guarantees (issue 22): kills, a full disk, a symlinked output, a concurrent merge.

    python scripts/soak.py [--kills 50] [--seed 0] [--dir DIR]

A 200-cell synthetic grid (resnet20 cells whose measurement is a stand-in
that sleeps a few milliseconds and returns a well-formed ``ok`` row, so the
runner, the writer, the started mark, resume and the locks are the real
code and only the measuring is not) is run into one output while this
script:

* SIGKILLs the run ``--kills`` times at random moments (in a cell, between
  cells, in a write), each followed by a resume (``--retry-failed``, so the
  cell a kill interrupted, recorded as ``error``, runs again);
* fills the disk under the output mid-run (a small tmpfs; needs root, else
  skipped and said so): the run must stop with exit 2 and a ``failed`` sidecar;
* starts a second run whose ``--out`` is a symbolic link to the output while
  the first writes it: it must be refused (exit 2);
* merges the output while a run appends to it (``benchmark.py merge``, real
  CLI), and tries to merge into it: the first gives every cell once, the
  second is refused.

It then checks that every grid cell is in the file exactly once and ``ok``,
that no finished row seen after any kill changed by a byte, and that the
sidecar's statuses are true (the last run ``finished``, none ``running``),
prints the counts and exits 0 (1 when a check fails). Not part of the test
suite; about 5 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CELL_S = 0.02  # the stand-in's time per cell: kills land in cells as well as in writes
WIDTHS = [round(0.25 + 0.05 * i, 2) for i in range(25)]
REPEATS = list(range(2, 10))  # 25 x 8 = 200 cells


def soak_grid():
    from bench.grid import expand_grid

    raw = {"name": "soak", "defaults": {"preset": "resnet20", "device": "cpu", "speed": True, "train_step": False,
                                        "batch_sizes": [1], "warmup": 0},
           "matrix": {"width_multiplier": WIDTHS, "repeats": REPEATS}}
    return expand_grid(raw, "soak.yaml")


def worker(out: str) -> int:
    """One run of the soak grid into ``out`` (the real runner; a stand-in measurement)."""
    from bench.errors import UserError
    from bench.run.executors import SerialExecutor
    from bench.run.rows import cell_columns
    from bench.run.runner import run_grid

    def measure(cell):
        time.sleep(CELL_S)
        row = cell_columns(cell, "soak-cpu")
        row.update(status="ok", batch_size=1, requested_batch_size=1, latency_ms_median=1.0 + cell.index / 1000)
        return [row]

    try:  # quick=True skips the start-up time estimate (a training probe): the cells here take no time
        run_grid(soak_grid(), out, executor=SerialExecutor(measure), progress=False, command=["soak"], quick=True,
                 retry_failed=True, log=lambda m: print(m, file=sys.stderr))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------- driver
class Soak:
    def __init__(self, folder: str, seed: int) -> None:
        self.folder = folder
        self.out = os.path.join(folder, "soak.csv")
        self.rng = random.Random(seed)
        self.finished_rows: Set[bytes] = set()  # every ok row seen after a kill, as its bytes
        self.counts: Dict[str, int] = collections.Counter()
        self.failures: List[str] = []

    def start(self, out: str = "") -> subprocess.Popen:
        return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", out or self.out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def rows(self) -> int:
        try:
            with open(self.out, "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    def wait_for_rows(self, proc: subprocess.Popen, more: int) -> bool:
        """Wait until the run has written ``more`` rows beyond what the file holds now; False if it ended."""
        target = self.rows() + more
        while proc.poll() is None:
            if self.rows() >= target and os.path.exists(self.mark()):
                return True
            time.sleep(0.003)
        return False

    def mark(self) -> str:
        return os.path.join(self.folder, ".soak.csv.started")

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)
            print(f"FAILED: {what}", file=sys.stderr)

    def snapshot(self) -> None:
        """Record the finished rows now on disk (a cut write's rows are not finished)."""
        from bench.results.files import cut_write_rows, read_lines

        parsed = read_lines(self.out)
        if parsed is None or not parsed.header:
            return
        lines = parsed.lines[:len(parsed.lines) - cut_write_rows(parsed)]
        status = parsed.index["status"]
        self.finished_rows.update(ln.raw for ln in lines if ln.fields[status] == "ok")
        self.counts["cut writes seen"] += bool(parsed.partial_tail)

    def kill_once(self) -> bool:
        """Start a run, SIGKILL it at a random moment; False when the run finished first."""
        proc = self.start()
        self.counts["runs"] += 1
        alive = self.wait_for_rows(proc, self.rng.randint(0, 3))
        if alive:
            time.sleep(self.rng.uniform(0, CELL_S * 1.5))
        if proc.poll() is not None:
            proc.stderr.read()
            self.check(proc.returncode == 0, f"a run ended with {proc.returncode} before its kill")
            return False
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.read()
        self.counts["SIGKILLs"] += 1
        self.snapshot()
        return True

    def during_a_run(self, action) -> None:
        """Run ``action(run)`` while a run is writing the output, then kill that run."""
        proc = self.start()
        self.counts["runs"] += 1
        if self.wait_for_rows(proc, 1):
            action(proc)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            self.counts["SIGKILLs"] += 1
        proc.wait()
        proc.stderr.read()
        self.snapshot()

    def symlinked_output(self, run: subprocess.Popen) -> None:
        os.killpg(run.pid, signal.SIGSTOP)  # stopped, it holds its lock and cannot finish meanwhile
        try:
            self._second_run_through_a_link()
        finally:
            os.killpg(run.pid, signal.SIGCONT)

    def _second_run_through_a_link(self) -> None:
        other = os.path.join(self.folder, "other")
        os.makedirs(other, exist_ok=True)
        link = os.path.join(other, "link.csv")
        if not os.path.lexists(link):
            os.symlink(self.out, link)
        second = self.start(link)
        _, err = second.communicate(timeout=120)
        refused = second.returncode == 2 and b"another run is writing this output" in err
        self.check(refused, f"a run through a symlink to the output being written was not refused "
                            f"(rc {second.returncode}: {err.decode()[-300:]})")
        self.counts["symlinked runs refused"] += refused

    def concurrent_merge(self, run: subprocess.Popen) -> None:
        merged = os.path.join(self.folder, "merged.csv")
        cli = [sys.executable, os.path.join(ROOT, "benchmark.py"), "merge"]
        done = subprocess.run(cli + [self.out, "--out", merged, "--force"], capture_output=True, timeout=120)
        self.check(done.returncode in (0, 1), f"merging the output while it is written: rc {done.returncode}: "
                                              f"{done.stderr.decode()[-300:]}")
        from bench.results.files import read_lines

        parsed = read_lines(merged)
        ids = [ln.get(parsed.index, "cell_id") for ln in parsed.lines] if parsed else []
        self.check(bool(ids) and len(ids) == len(set(ids)), "the concurrent merge holds a cell twice or none")
        self.counts["concurrent merges"] += 1
        os.killpg(run.pid, signal.SIGSTOP)  # so the run cannot finish (and let go of its lock) meanwhile
        try:
            into = subprocess.run(cli + [merged, "--out", self.out, "--force"], capture_output=True, timeout=120)
        finally:
            os.killpg(run.pid, signal.SIGCONT)
        refused = into.returncode == 2 and b"another run is writing" in into.stderr
        self.check(refused, f"a merge into the output being written was not refused (rc {into.returncode})")
        self.counts["merges into the running output refused"] += refused

    def full_disk(self) -> None:
        filler = os.path.join(self.folder, "filler")
        runs_before = len(self.sidecar_runs())
        proc = self.start()
        self.counts["runs"] += 1
        while proc.poll() is None and len(self.sidecar_runs()) == runs_before:  # its own entry is down
            time.sleep(0.003)
        self.wait_for_rows(proc, 1)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        for size in (65536, 1):  # to the last byte
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
        os.close(fd)
        _, err = proc.communicate(timeout=120)
        os.unlink(filler)
        side = json.load(open(os.path.join(self.folder, "soak.json")))
        one_line = len(err.decode().strip().splitlines()[-1:]) == 1 and b"No space left" in err
        self.check(proc.returncode == 2 and one_line, f"a full disk mid-run: rc {proc.returncode}, "
                                                      f"{err.decode()[-300:]}")
        self.check(side["runs"][-1]["status"] == "failed", f"a full disk mid-run left the sidecar "
                                                          f"{side['runs'][-1]['status']!r}, not 'failed'")
        self.counts["full-disk runs stopped in one line"] += proc.returncode == 2
        self.snapshot()

    def sidecar_runs(self) -> List[dict]:
        try:
            with open(os.path.join(self.folder, "soak.json")) as f:
                return json.load(f).get("runs") or []
        except (OSError, ValueError):
            return []

    def finish(self) -> None:
        for _ in range(3):
            proc = self.start()
            self.counts["runs"] += 1
            _, err = proc.communicate(timeout=600)
            if proc.returncode == 0:
                return
            self.check(False, f"the final run: rc {proc.returncode}: {err.decode()[-300:]}")

    def verify(self) -> None:
        from bench.results.files import read_lines

        grid = soak_grid()
        parsed = read_lines(self.out)
        cols = parsed.index
        ids = collections.Counter(ln.get(cols, "cell_id") for ln in parsed.lines)
        expected = {c.cell_id for c in grid.cells}
        self.check(set(ids) == expected, f"{len(expected - set(ids))} cell(s) missing, "
                                         f"{len(set(ids) - expected)} unknown")
        self.check(all(n == 1 for n in ids.values()), f"{sum(n > 1 for n in ids.values())} cell(s) twice")
        statuses = collections.Counter(ln.get(cols, "status") for ln in parsed.lines)
        self.check(set(statuses) == {"ok"}, f"final statuses {dict(statuses)}")
        final = {ln.raw for ln in parsed.lines}
        changed = len(self.finished_rows - final)
        self.check(changed == 0, f"{changed} finished row(s) changed or lost")
        side = json.load(open(os.path.join(self.folder, "soak.json")))
        runs = collections.Counter(r.get("status") for r in side["runs"])
        self.check(side["status"] == "finished" and side["runs"][-1]["status"] == "finished",
                   f"final sidecar status {side['status']!r}")
        self.check("running" not in runs, f"{runs['running']} run(s) still say 'running'")
        self.check(runs["killed"] <= self.counts["SIGKILLs"], "more runs say 'killed' than were killed")
        self.counts.update({"cells": len(ids), "rows": len(parsed.lines),
                            "finished rows checked byte for byte": len(self.finished_rows)})
        self.counts.update({f"sidecar runs {k}": v for k, v in runs.items()})


def on_tmpfs(folder: str, size: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder],
                          capture_output=True).returncode == 0


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    folder = args.dir or tempfile.mkdtemp(prefix="bench-soak-")
    os.makedirs(folder, exist_ok=True)
    mounted = on_tmpfs(folder, "16m")
    soak = Soak(folder, args.seed)
    start = time.perf_counter()
    try:
        events = {args.kills // 5: soak.symlinked_output, 2 * args.kills // 5: soak.concurrent_merge}
        while soak.counts["SIGKILLs"] < args.kills:
            event = events.pop(soak.counts["SIGKILLs"], None)
            if event is not None:
                soak.during_a_run(event)
            elif mounted and soak.counts["SIGKILLs"] == 3 * args.kills // 5 and not soak.counts["full disks"]:
                soak.counts["full disks"] += 1
                soak.full_disk()
            elif not soak.kill_once():
                break  # the grid finished before every kill was used
        soak.finish()
        soak.verify()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", folder], capture_output=True)
    if not mounted:
        print("full disk: skipped (mounting a small tmpfs needs root)")
    for name, value in soak.counts.items():
        print(f"{name}: {value}")
    print(f"elapsed: {time.perf_counter() - start:.0f} s")
    print("soak: PASS" if not soak.failures else f"soak: FAIL ({len(soak.failures)} check(s))")
    return 0 if not soak.failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
