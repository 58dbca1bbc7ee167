"""The sidecar (``NAME.json`` beside ``NAME.csv``) as one type, for every reader.

Two layouts exist. Newer sidecars keep one entry per run that wrote rows
(``runs``: run id, status, environment, ...) next to the latest run's facts
at the top level. Older ones are a single run: its facts at the top level
only. :class:`Sidecar` hides the difference, so the runner (carrying earlier
runs forward on resume), ``compare`` and ``report`` read runs the same way.

It also answers whether a sidecar belongs to its CSV at all: every row names
the run that wrote it (``run_id``), and a sidecar that knows none of a CSV's
run ids was copied from, or left behind by, another run; and whether a JSON
is a sidecar of this harness at all (:meth:`Sidecar.is_harness`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from bench.results.files import read_sidecar, sidecar_path

# What an old single-run sidecar says about its run, as a ``runs`` entry.
_RUN_KEYS = ("run_id", "status", "executor", "quick", "environment", "finished", "seconds", "failed_cells")


@dataclass(frozen=True)
class Sidecar:
    path: str  # the JSON file
    data: Dict[str, Any]

    @classmethod
    def read(cls, csv_path: str) -> Optional["Sidecar"]:
        """The sidecar beside ``csv_path``; None when absent, :class:`UserError` when unreadable."""
        data = read_sidecar(csv_path)
        return None if data is None else cls(sidecar_path(csv_path), data)

    @staticmethod
    def is_harness(data: Any) -> bool:
        """Whether ``data`` (a parsed JSON) is a sidecar this harness wrote, in either layout: it names its runs.

        A JSON that merely shares the sidecar's name (``{}``, another tool's
        settings) is not one, and the runner refuses to overwrite it.
        """
        return isinstance(data, dict) and (isinstance(data.get("runs"), list) or bool(data.get("run_id")))

    @property
    def runs(self) -> List[Dict[str, Any]]:
        """One entry per run that wrote rows, oldest first, in the newer layout whatever the file's."""
        runs = [r for r in self.data.get("runs") or [] if isinstance(r, dict)]
        if not runs and self.data.get("run_id"):
            runs = [{k: self.data.get(k) for k in _RUN_KEYS}]
        return runs

    @property
    def run_ids(self) -> List[str]:
        ids = [str(r["run_id"]) for r in self.runs if r.get("run_id")]
        top = self.data.get("run_id")
        return ids + ([str(top)] if top and str(top) not in ids else [])

    def run(self, run_id: Any) -> Optional[Dict[str, Any]]:
        return next((r for r in self.runs if run_id and r.get("run_id") == run_id), None)

    def environment(self, run_id: Any = None) -> Optional[Dict[str, Any]]:
        """The environment of the run that wrote a row.

        A row of a run this sidecar does not know gets None (its environment
        is unknown); a row without a run id, or a sidecar naming no run, falls
        back to the top-level environment (the latest run's).
        """
        if run_id and self.run_ids:
            run = self.run(run_id)
            if run is None:
                return None if str(run_id) not in self.run_ids else self._top_environment()
            env = run.get("environment")
            return env if isinstance(env, dict) else None
        return self._top_environment()

    def _top_environment(self) -> Optional[Dict[str, Any]]:
        env = self.data.get("environment")
        return env if isinstance(env, dict) else None

    def unknown_run_ids(self, csv_run_ids: Iterable[Any]) -> List[str]:
        """The CSV's run ids this sidecar has no record of ([] when it names no run, so cannot tell)."""
        known = set(self.run_ids)
        if not known:
            return []
        return sorted({str(r) for r in csv_run_ids if r and str(r) not in known})

    def foreign(self, csv_run_ids: Iterable[Any]) -> bool:
        """True when the sidecar knows none of the CSV's run ids: it belongs to another run altogether."""
        ids = {str(r) for r in csv_run_ids if r}
        return bool(ids) and len(self.unknown_run_ids(ids)) == len(ids)

    def mismatch(self, csv_path: str, csv_run_ids: Iterable[Any]) -> str:
        """'' when the sidecar describes the runs that wrote the CSV, else one line saying why not."""
        ids = sorted({str(r) for r in csv_run_ids if r})
        unknown = self.unknown_run_ids(ids)
        if not unknown:
            return ""
        whose = "another run" if len(unknown) == len(ids) else f"other runs than {len(unknown)} of the CSV's"
        return (f"{self.path}: describes {whose} (it knows run(s) {', '.join(self.run_ids[:3])}; "
                f"{csv_path} has rows of {', '.join(unknown[:3])})")
