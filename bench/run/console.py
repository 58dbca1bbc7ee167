"""The table printed at the end of a run: one line per row, the numbers people look at first."""
from __future__ import annotations

from typing import Any, Dict, List


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
