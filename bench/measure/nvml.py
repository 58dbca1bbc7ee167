"""NVML readings of the GPU a timed loop runs on: clocks, temperature, power, energy, clock-event reasons.

One reading before the first sample and one after each sample (outside the
timed range: the samples are synchronised, so the device is idle then).
Every NVML field is read on its own guard, so one call a driver does not
support (power on a MIG slice, the renamed clock-event call on an old driver)
leaves that field empty, not the others.

* **Device.** torch's ``cuda:i`` is found in NVML by its UUID, which names the
  same device whatever ``CUDA_DEVICE_ORDER`` and ``CUDA_VISIBLE_DEVICES`` say
  (indices, ``GPU-`` UUIDs or ``MIG-`` UUIDs). Without a UUID from torch, a
  ``CUDA_VISIBLE_DEVICES`` UUID entry is looked up as such, and an index is
  trusted only under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (NVML numbers devices by
  PCI bus; CUDA's default order puts the fastest first) or on a one-GPU machine.
* **Energy.** NVML's total-energy counter (mJ since the driver loaded) moves
  when the driver refreshes its power reading (tens of ms); a loop shorter
  than :data:`ENERGY_MIN_LOOP_S` would read a few refreshes, so its energy is
  left empty with the reason. The energy of a loop includes the idle gaps
  between its synchronised samples; per image it is divided by the images
  the loop processed.
* **Clock-event reasons** (NVML's newer name for throttle reasons):
  ``GpuIdle`` is left out (between loops the GPU is idle by design). A
  reason in :data:`SLOWDOWNS`, or an SM clock that moved by more than
  :data:`CLOCK_CHANGE_LIMIT` during the loop, makes the loop noisy.
"""
from __future__ import annotations

import functools
import os
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

ENERGY_MIN_LOOP_S = 1.0  # >= 10 refreshes of the counter at 100 ms: quantisation under ~10%
CLOCK_CHANGE_LIMIT = 0.02  # (max - min) / max of the SM clock over a loop; boost steps are ~15 MHz of ~2000
_PREFIXES = ("nvmlClocksEventReason", "nvmlClocksThrottleReason")
_MASKS = frozenset({"None", "All", "Unknown", "GpuIdle"})  # not reasons, or (idle) not one that matters here
# Reasons that mean the clock was held below what the load asked for (not a user's or the display's setting).
SLOWDOWNS = frozenset({"SwPowerCap", "HwSlowdown", "SyncBoost", "SwThermalSlowdown", "HwThermalSlowdown",
                       "HwPowerBrakeSlowdown", "BoardLimit", "Reliability"})


def reason_names(mask: int, pynvml: Any) -> List[str]:
    """Decode a clock-event (throttle) reason bit mask into names, ``GpuIdle`` left out."""
    names = set()
    for attr in dir(pynvml):
        prefix = next((p for p in _PREFIXES if attr.startswith(p)), None)
        if prefix is None or attr[len(prefix):] in _MASKS:
            continue
        bit = getattr(pynvml, attr)
        if isinstance(bit, int) and bit and mask & bit == bit:
            names.add(attr[len(prefix):])
    names.discard("UserDefinedClocks")  # the deprecated alias of ApplicationsClocksSetting
    return sorted(names)


def event_reasons_mask(pynvml: Any, handle: Any) -> int:
    """Current clock-event reasons; the deprecated throttle-reason call only where the new one is missing."""
    call = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if call is not None:
        try:
            return int(call(handle))
        except Exception as e:  # noqa: BLE001 - an old driver without the function: fall back
            if "FunctionNotFound" not in type(e).__name__ and "NotSupported" not in type(e).__name__:
                raise
    return int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def device_handle(pynvml: Any, cuda_index: int, torch_uuid: Optional[str] = None,
                  env: Mapping[str, str] = os.environ) -> Any:
    """The NVML handle of torch's ``cuda:cuda_index`` (see the module doc); LookupError when it cannot be told."""
    if torch_uuid:
        bare = torch_uuid.split("-", 1)[1] if torch_uuid.startswith(("GPU-", "MIG-")) else torch_uuid
        for candidate in ("GPU-" + bare, "MIG-" + bare):
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(candidate)
            except Exception:  # noqa: BLE001 - try the other form
                continue
    visible = [p.strip() for p in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if p.strip()]
    entry = visible[cuda_index] if cuda_index < len(visible) else None
    if entry is not None and entry.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(entry)
    index = int(entry) if entry is not None and entry.isdigit() else cuda_index
    if env.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID" or pynvml.nvmlDeviceGetCount() == 1:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    raise LookupError("CUDA numbers GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by PCI bus, "
                      "and torch gave no UUID: set CUDA_DEVICE_ORDER=PCI_BUS_ID")


def _torch_uuid(cuda_index: int) -> Optional[str]:
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(cuda_index), "uuid", None)
        return str(uuid) if uuid is not None else None
    except Exception:  # noqa: BLE001 - older torch: map without it
        return None


@functools.lru_cache(maxsize=None)
def open_device(cuda_index: int) -> Tuple[Any, Any, str]:
    """(pynvml, handle, '') for torch's ``cuda:cuda_index``, or (None, None, why not)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, device_handle(pynvml, cuda_index, _torch_uuid(cuda_index)), ""
    except Exception as e:  # noqa: BLE001 - no driver, no package, no mapping: the columns stay empty
        return None, None, f"no NVML ({type(e).__name__}: {' '.join(str(e).split())[:80]})"


def _guarded(fn: Callable[[], Any]) -> Optional[Any]:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - one field the driver cannot give stays empty; the others are read
        return None


def read_state(pynvml: Any, handle: Any) -> Dict[str, Any]:
    """One reading: each field on its own guard (None where NVML refused it)."""
    return {
        "sm_mhz": _guarded(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        "mem_mhz": _guarded(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
        "temp_c": _guarded(lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        "power_w": _guarded(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
        "energy_mj": _guarded(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)),
        "reasons": _guarded(lambda: reason_names(event_reasons_mask(pynvml, handle), pynvml)),
    }


def device_facts(pynvml: Any, handle: Any) -> Dict[str, Any]:
    """What the run's sidecar records of a GPU once: identity and one reading, each field guarded."""
    state = read_state(pynvml, handle)
    return {
        "uuid": _guarded(lambda: _text(pynvml.nvmlDeviceGetUUID(handle))),
        "driver": _guarded(lambda: _text(pynvml.nvmlSystemGetDriverVersion())),
        "sm_clock_mhz": state["sm_mhz"], "mem_clock_mhz": state["mem_mhz"],
        "max_sm_clock_mhz": _guarded(lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        "temperature_c": state["temp_c"], "power_w": state["power_w"], "throttle_reasons": state["reasons"],
    }


def _values(readings: List[Dict[str, Any]], key: str) -> List[Any]:
    return [r[key] for r in readings if r.get(key) is not None]


@dataclass
class LoopReadings:
    """The readings of one timed loop; :meth:`read` is the loop's ``observe`` hook."""

    pynvml: Any
    handle: Any
    readings: List[Dict[str, Any]] = field(default_factory=list)

    def read(self) -> None:
        self.readings.append(read_state(self.pynvml, self.handle))

    def columns(self, prefix: str, loop_s: float, images: int) -> Tuple[Dict[str, Any], List[str]]:
        """The loop's GPU columns (``{prefix}_...``) and notes for what was left empty."""
        r, notes = self.readings, []
        sm = _values(r, "sm_mhz")
        reasons = sorted({name for names in _values(r, "reasons") for name in names})
        out: Dict[str, Any] = {
            f"{prefix}_sm_clock_mhz": statistics.median(sm) if sm else None,
            f"{prefix}_sm_clock_change": (max(sm) - min(sm)) / max(sm) if sm and max(sm) > 0 else None,
            f"{prefix}_mem_clock_mhz": statistics.median(_values(r, "mem_mhz")) if _values(r, "mem_mhz") else None,
            f"{prefix}_gpu_temp_c": max(_values(r, "temp_c"), default=None),
            f"{prefix}_power_w": statistics.median(_values(r, "power_w")) if _values(r, "power_w") else None,
            f"{prefix}_clock_events": (";".join(reasons) or "none") if _values(r, "reasons") else None,
            f"{prefix}_energy_j_per_image": None,
        }
        energy = [r[0].get("energy_mj"), r[-1].get("energy_mj")] if r else [None, None]
        if None in energy:
            notes.append(f"{prefix} energy: NVML gave no total-energy counter")
        elif loop_s < ENERGY_MIN_LOOP_S:
            notes.append(f"{prefix} energy: loop of {loop_s:.2f} s is shorter than the {ENERGY_MIN_LOOP_S:g} s "
                         f"the energy counter needs")
        elif energy[1] <= energy[0]:
            notes.append(f"{prefix} energy: the counter did not advance during the loop")
        else:
            out[f"{prefix}_energy_j_per_image"] = (energy[1] - energy[0]) / 1e3 / images
        return out, notes


def gpu_noisy(prefix: str, columns: Dict[str, Any]) -> bool:
    """A clock that moved, or a slowdown reason seen, during the loop (the GPU rows' noise rule)."""
    change = columns.get(f"{prefix}_sm_clock_change")
    events = set((columns.get(f"{prefix}_clock_events") or "none").split(";"))
    return bool((change is not None and change > CLOCK_CHANGE_LIMIT) or events & SLOWDOWNS)


def loop_readings(cuda_index: Optional[int] = None) -> Tuple[Optional[LoopReadings], str]:
    """Readings for a loop on ``cuda:cuda_index`` (the current device), or (None, why there are none)."""
    if cuda_index is None:
        import torch

        cuda_index = torch.cuda.current_device()
    pynvml, handle, why = open_device(cuda_index)
    return (LoopReadings(pynvml, handle), "") if handle is not None else (None, why)
