"""The ``baseline`` subcommand: store a run (CSV + sidecar) as a named baseline.

A baseline is a plain copy of a run's two files under ``results/baselines/``,
so it can be reviewed and committed like code. The sidecar gains a
``baseline`` entry (name, source, time) and keeps the ``thresholds`` of the
baseline it replaces, so regenerating with ``--force`` does not silently
drop per-metric thresholds someone tuned.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import sys
from typing import Any, Dict, Optional

from bench.errors import UserError
from bench.analysis.regression import BASELINES_DIR, load, parse_threshold_args, require_comparable
from bench.results.files import (OutputLock, check_folder_writable, read_sidecar, sidecar_path, write_bytes_atomic,
                                 write_json_atomic)
from bench.results.schema import STATUS_OK

DEFAULT_DIR = BASELINES_DIR
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="result CSV of the run to store (its sidecar NAME.json must sit beside it)")
    parser.add_argument("--name", required=True, help="baseline name, e.g. quick-cpu (letters, digits, . _ -)")
    parser.add_argument("--dir", default=DEFAULT_DIR, help="folder of baselines")
    parser.add_argument("--force", action="store_true", help="replace an existing baseline of that name")
    parser.add_argument("--threshold", action="append", default=[], metavar="METRIC=FRACTION",
                        help="store a per-metric timing threshold in the baseline's sidecar (repeatable)")


def store_baseline(run_csv: str, name: str, folder: str = DEFAULT_DIR, force: bool = False,
                   thresholds: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """Copy ``run_csv`` and its sidecar to ``folder/name.{csv,json}``; returns facts for the message."""
    if not _NAME.match(name):
        raise UserError(f"--name {name!r}: expected letters, digits, '.', '_' or '-' (no path separators)")
    check_folder_writable(folder, "--dir")  # a file, a read-only folder: refused before anything is read
    result = load(run_csv)  # the same validation compare applies: a baseline must be comparable
    require_comparable(result)
    if result.notes:  # a cut last line or another run's sidecar: a stored baseline must be whole and its own
        raise UserError(f"{result.notes[0]}; a baseline is stored only from a clean run")
    meta = result.meta
    if meta is None:
        raise UserError(f"{sidecar_path(run_csv)}: no sidecar; a baseline needs the run's environment "
                        f"to decide whether timings are comparable")
    dest_csv = os.path.join(folder, name + ".csv")
    dest_json = sidecar_path(dest_csv)
    if os.path.abspath(dest_csv) == os.path.abspath(run_csv):
        raise UserError(f"{run_csv}: is already the baseline {name!r}")
    with OutputLock(dest_csv):  # the lock every writer of a result file takes
        existing = [p for p in (dest_csv, dest_json) if os.path.exists(p)]
        if existing and not force:
            raise UserError(f"{existing[0]}: baseline {name!r} exists; pass --force to replace it")
        return _store(run_csv, name, result, meta, dest_csv, dest_json, thresholds)


def _store(run_csv: str, name: str, result: Any, meta: Dict[str, Any], dest_csv: str, dest_json: str,
           thresholds: Optional[Dict[str, float]]) -> Dict[str, Any]:
    old_meta = read_sidecar(dest_csv) if os.path.exists(dest_json) else None
    new_meta = dict(meta)
    kept = None
    if thresholds:
        new_meta["thresholds"] = dict(thresholds)
    elif "thresholds" not in new_meta and old_meta and "thresholds" in old_meta:
        new_meta["thresholds"] = kept = old_meta["thresholds"]
    new_meta["baseline"] = {
        "name": name,
        "source": os.path.abspath(run_csv),
        "stored": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(run_csv, "rb") as f:
        write_bytes_atomic(dest_csv, f.read())
    write_json_atomic(dest_json, new_meta)
    not_ok = sum(1 for r in result.rows if r.get("status") != STATUS_OK)
    return {"csv": dest_csv, "json": dest_json, "rows": len(result.rows), "not_ok": not_ok,
            "kept_thresholds": kept, "run_status": meta.get("status")}


def run(args: argparse.Namespace) -> int:
    thresholds = parse_threshold_args(args.threshold)
    facts = store_baseline(args.run, args.name, args.dir, args.force, thresholds)
    print(f"stored baseline {args.name!r}: {facts['rows']} rows -> {facts['csv']} (+ {facts['json']})")
    if facts["kept_thresholds"]:
        print(f"kept thresholds from the replaced baseline: {facts['kept_thresholds']}")
    if facts["run_status"] not in (None, "finished", "merged"):
        print(f"warning: the run's sidecar says status {facts['run_status']!r}: it may be incomplete",
              file=sys.stderr)
    if facts["not_ok"]:
        print(f"warning: {facts['not_ok']} row(s) have status != ok; they cannot catch regressions",
              file=sys.stderr)
    return 0

