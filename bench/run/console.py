"""What a run prints: the estimate before it, per-epoch training lines during it, the table after it."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from bench.run import estimate


def _fmt(value: Any, spec: str) -> str:
    if value is None or value == "":
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def format_summary(rows: List[Dict[str, Any]]) -> str:
    header = (f"{'variant':26s} {'dev':4s} {'prec':4s} {'bs':>4s} {'params(M)':>9s} {'GMACs':>7s} "
              f"{'lat ms':>9s} {'img/s':>9s} {'train ms':>9s} {'mem MiB':>8s} {'top1':>6s}  status")
    lines = [header, "-" * len(header)]
    for r in rows:
        params = r.get("params")
        macs = r.get("macs")
        lines.append(
            f"{str(r.get('variant'))[:26]:26s} {str(r.get('device')):4s} {str(r.get('precision')):4s} "
            f"{_fmt(r.get('batch_size'), 'd'):>4s} "
            f"{_fmt(params / 1e6 if params else None, '.3f'):>9s} {_fmt(macs / 1e9 if macs else None, '.3f'):>7s} "
            f"{_fmt(r.get('latency_ms_median'), '.3f'):>9s} {_fmt(r.get('throughput_img_s'), '.1f'):>9s} "
            f"{_fmt(r.get('train_step_ms_median'), '.2f'):>9s} {_fmt(r.get('peak_mem_mb'), '.1f'):>8s} "
            f"{_fmt(r.get('top1_acc'), '.4f'):>6s}  {r.get('status')}"
            + (f" ({str(r.get('error'))[:60]})" if r.get("error") else "")
        )
    return "\n".join(lines)


# ------------------------------------------------------------ during a run
Write = Callable[[str], None]
# Where per-epoch training lines go during a run; None (the default, and with
# --no-progress) keeps training silent. Set by start_run, read by cell.py: the
# executors hand cells to measure_cell one by one, so a module-level sink is the
# one route that needs no change to their contract.
_epoch_write: Optional[Write] = None


def start_run(grid: Any, cells: Sequence[Any], csv_path: str, *, quick: bool, progress: bool,
              write: Write) -> None:
    """What a run says before its first cell: the time estimate (not in quick mode); per-epoch lines on or off."""
    global _epoch_write
    _epoch_write = write if progress else None
    if not quick:
        note = estimate.announce(cells, csv_path, quick_cells=lambda: estimate.quick_version(grid))
        if note:
            write(note)


def format_epoch(variant: str, point: Any, run: int, runs: int) -> str:
    """One line per training epoch: where it is, the loss, test accuracy if evaluated, speed and time left.

    ``point`` is a :class:`bench.train.training.EpochPoint` (duck-typed: this
    module stays free of torch).
    """
    per_step = point.wall_s / point.step if point.step else 0.0
    steps_left = (point.total_steps - point.step) + (runs - run - 1) * point.total_steps
    seed = f" seed {run + 1}/{runs}" if runs > 1 else ""
    acc = f"  test {point.test_acc:.1%}" if point.test_acc is not None else ""
    img_s = point.images / point.wall_s if point.wall_s > 0 else 0.0
    return (f"  {variant}{seed} epoch {point.epoch}/{point.epochs}  loss {point.loss:.3f}{acc}  "
            f"{img_s:.0f} img/s  ETA {estimate.format_duration(per_step * steps_left)}")


def epoch_callback(variant: str) -> Optional[Callable[[Any, int, int], None]]:
    """The ``on_epoch`` hook for a cell's training, or None when progress lines are off."""
    write = _epoch_write
    if write is None:
        return None
    return lambda point, run, runs: write(format_epoch(variant, point, run, runs))
