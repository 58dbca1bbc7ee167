"""From a measured profile to profile CSV rows: shares, work, intensity and the agreement check.

Pure Python on plain data (no torch): the measurement hands over per-key
times and analytic costs (:class:`bench.measure.profile.BatchProfile`, read
by attribute), and this module shapes them into :data:`PROFILE_COLUMNS` rows.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from bench.results.profile_schema import AGREEMENT_TOLERANCE, OP_CLASSES, PHASES, STAGES

Key = Tuple[str, str, str]  # phase, stage, op class
_IDENTITY = ("cell_id", "variant_id", "variant", "cardinality", "device", "device_name", "precision",
             "memory_format", "threads")
_ORDER = ({p: i for i, p in enumerate(PHASES)}, {s: i for i, s in enumerate(STAGES)},
          {c: i for i, c in enumerate(OP_CLASSES)})


def agreement(profiled_ms: Optional[float], measured_ms: Optional[float], device: str,
              overhead: Optional[float], unprofiled_ms: Optional[float] = None) -> Tuple[Optional[float], str]:
    """profiled / measured, and an empty note within 15%, else by how much and the likely reason.

    ``unprofiled_ms`` (iterations timed beside the profile) tells a machine
    that changed speed since the timed loop from time the profile misses.
    """
    if not profiled_ms or not measured_ms:
        return None, "no timed median to compare with (speed or train_step off, or no time profiled)"
    ratio = profiled_ms / measured_ms
    if abs(ratio - 1) <= AGREEMENT_TOLERANCE:
        return ratio, ""
    direction = f"{1 - ratio:.0%} below" if ratio < 1 else f"{ratio - 1:.0%} above"
    if unprofiled_ms and abs(profiled_ms / unprofiled_ms - 1) <= AGREEMENT_TOLERANCE:
        return ratio, (f"profiled total {direction} the timed median but within {AGREEMENT_TOLERANCE:.0%} of "
                       f"unprofiled iterations timed beside the profile ({unprofiled_ms:.4g} ms): the machine's "
                       f"speed changed between the timed loop and the profile (a shared machine)")
    if ratio < 1:
        outside = "idle device time between kernels (launch-bound), Python and dispatch" if device == "cuda" \
            else "Python, dispatch and memory allocation outside the operators"
        return ratio, (f"profiled operators add up to {1 - ratio:.0%} less than the timed median: "
                       f"{outside} is not attributed to any operator")
    why = f"profiler overhead (measured {overhead:+.0%} on wall time)" if overhead is not None else "profiler overhead"
    return ratio, (f"profiled total {ratio - 1:.0%} above the timed median: {why}, or the machine's speed changed "
                   f"between the timed loop and the profile")


def _order(key: Key) -> Tuple[int, int, int]:
    return tuple(order.get(part, len(order)) for order, part in zip(_ORDER, key))  # type: ignore[return-value]


def profile_rows(batch_profile: Any, measured: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The tidy rows of one cell at one batch size; ``measured`` is its result row (identity, timed medians).

    ``batch_profile.profiles[group].times`` holds per-iteration values (us, calls) per key.
    """
    bp = batch_profile
    identity = {k: measured.get(k) for k in _IDENTITY}
    rows: List[Dict[str, Any]] = []
    for group, prof in bp.profiles.items():
        phases = PHASES[:1] if group == "inference" else PHASES[1:]
        ms = {k: v["us"] / 1e3 for k, v in prof.times.items() if k[0] in phases}
        calls = {k: v["calls"] for k, v in prof.times.items() if k[0] in phases}
        total = sum(ms.values())
        median = measured.get("latency_ms_median" if group == "inference" else "train_step_ms_median")
        ratio, note = agreement(total, median, bp.device, prof.overhead, prof.unprofiled_ms)
        common = dict(identity, run_id=measured.get("run_id"), batch_size=bp.batch,
                      time_source="cuda_kernel" if bp.device == "cuda" else "cpu_op",
                      profiled_ms_total=total, measured_ms_median=median, unprofiled_ms_median=prof.unprofiled_ms,
                      agreement=ratio, agreement_note=note,
                      profiler_overhead=prof.overhead, profiled_iterations=prof.iterations,
                      peak_gflop_s=bp.peak_gflop_s, bandwidth_gb_s=bp.bandwidth_gb_s)
        keys = sorted(set(ms) | {k for k in bp.costs if k[0] in phases}, key=_order)
        for phase in phases:
            phase_ms = sum(v for k, v in ms.items() if k[0] == phase)
            phase_macs = sum(v["macs"] for k, v in bp.costs.items() if k[0] == phase)
            for key in (k for k in keys if k[0] == phase):
                t = ms.get(key, 0.0)
                work = bp.costs.get(key, {"macs": 0, "bytes": 0})
                rows.append(dict(
                    common, phase=phase, stage=key[1], op_class=key[2],
                    ms=t, share=t / phase_ms if phase_ms else None, calls=calls.get(key, 0.0),
                    macs=work["macs"], mac_share=work["macs"] / phase_macs if phase_macs else None,
                    bytes=work["bytes"],
                    arithmetic_intensity=work["macs"] * bp.batch / work["bytes"] if work["bytes"] else None,
                    achieved_gflop_s=2 * work["macs"] * bp.batch / (t / 1e3) / 1e9 if work["macs"] and t else None))
    return rows
