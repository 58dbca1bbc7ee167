"""Peak memory of one workload, measured in its own loop (never inside a timed loop).

GPU: the caching allocator's peaks (``max_memory_allocated``: tensors alive at
the worst moment; ``max_memory_reserved``: what the allocator held from the
driver) after resetting them, plus NVML's device-level "used" figure, which
also counts the CUDA context and other processes.

CPU: the growth of the bytes held by live tensors during the workload, from
torch's profiler (:func:`cpu_tensor_peak_growth_mb`), which is what a GPU's
``max_memory_allocated`` counts. Where the profiler reports nothing, the
growth of the process's peak resident set size is used instead: on Linux the
kernel's peak (VmHWM) is reset by writing 5 to /proc/self/clear_refs, so the
peak reflects this workload alone; where that is
not possible the lifetime peak (``ru_maxrss``) is used and only a new peak
shows up as growth. The peak before each reset is kept, so
:func:`process_peak_rss_mb` is still the process's lifetime peak. Freed heap
memory is first handed back to the OS (``malloc_trim``); otherwise a
workload that reuses pages the allocator already holds would show no growth
at all. Trimming changes no allocator setting (the thresholds of
``cpu_allocator: tuned`` stay), and it runs after the timed loops of a batch
size, whose warm-up faults the pages in again before the next timed loop.
"""
from __future__ import annotations

import gc
import resource
from typing import Callable, Dict, Optional

from bench.measure.kineto import quiet_profiler

MIB = 1024 * 1024


def _read_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# The largest VmHWM seen before any reset (KiB): resetting the kernel's peak
# counter for one workload must not lose the process's lifetime peak.
_lifetime_peak_kib = 0


def _reset_peak_rss() -> bool:
    global _lifetime_peak_kib
    # both witnesses: ru_maxrss also remembers threads that have exited
    hwm = _read_status_kib("VmHWM") or 0
    _lifetime_peak_kib = max(_lifetime_peak_kib, hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> Optional[float]:
    kib = _read_status_kib("VmRSS")
    return kib / 1024 if kib is not None else None


def process_peak_rss_mb() -> float:
    """The process's lifetime peak RSS, MiB, across the peak resets the CPU measurements make.

    ``ru_maxrss`` (KiB on Linux) follows the kernel's VmHWM, which
    :func:`cpu_peak_growth_mb` resets, so the running maximum kept before
    each reset is part of the answer.
    """
    now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = _read_status_kib("VmHWM") or 0
    return max(now, hwm, _lifetime_peak_kib) / 1024


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc), so memory the workload reuses shows up as growth."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_peak_growth_mb(fn: Callable[[], object], iterations: int = 2) -> float:
    """Peak RSS growth (MiB) over the RSS before running ``fn`` ``iterations`` times."""
    gc.collect()
    _release_free_heap()
    before = current_rss_mb()
    if before is not None and _reset_peak_rss():
        for _ in range(iterations):
            fn()
        peak = _read_status_kib("VmHWM")
        if peak is not None:
            return max(0.0, peak / 1024 - before)
    start_peak = process_peak_rss_mb()
    for _ in range(iterations):
        fn()
    return max(0.0, process_peak_rss_mb() - start_peak)


def cpu_tensor_peak_growth_mb(fn: Callable[[], object], iterations: int = 2) -> Optional[float]:
    """Peak growth (MiB) of the bytes held by live CPU tensors while ``fn`` runs, or None if unknown.

    The counterpart of a GPU's ``max_memory_allocated``: torch's profiler
    reports every CPU tensor allocation and free (``profile_memory``); their
    running sum in time order peaks at what the workload held at its worst
    moment. Unlike the resident set, this does not depend on the heap
    allocator: glibc's aligned allocations with raised thresholds
    (``cpu_allocator: tuned``) leave freed 256 MiB blocks unused for the next
    request of the same size, so RSS growth over two iterations would count
    such a buffer twice. Nothing is trimmed or reset, so the allocator state
    the next timed loop sees is untouched.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with quiet_profiler(torch.cuda.is_available()), \
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(iterations):
            fn()
    cpu = torch._C._autograd.DeviceType.CPU
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == cpu]
    if not events:
        return None
    events.sort(key=lambda e: e.start_ns())
    held = peak = 0
    for event in events:
        held += event.nbytes()  # negative for a free
        peak = max(peak, held)
    return peak / MIB


def gpu_peak(fn: Callable[[], object], iterations: int = 2, device_index: Optional[int] = None) -> Dict[str, float]:
    """Peak allocated/reserved (torch) and used (NVML) memory in MiB while running ``fn``."""
    import torch

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    nvml_peak = None
    for _ in range(iterations):
        fn()
        torch.cuda.synchronize()
        used = nvml_used_mb(device_index)
        if used is not None:
            nvml_peak = used if nvml_peak is None else max(nvml_peak, used)
    return {
        "alloc": torch.cuda.max_memory_allocated() / MIB,
        "reserved": torch.cuda.max_memory_reserved() / MIB,
        "nvml": nvml_peak,
    }


def nvml_used_mb(device_index: Optional[int] = None) -> Optional[float]:
    """Device memory in use per NVML, MiB, or None without NVML (the device found as :mod:`bench.measure.nvml` does)."""
    from bench.measure import nvml

    try:
        import torch

        pynvml, handle, _ = nvml.open_device(torch.cuda.current_device() if device_index is None else device_index)
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB if handle is not None else None
    except Exception:  # noqa: BLE001 - no driver, no NVML (any of its errors): the column stays empty
        return None
