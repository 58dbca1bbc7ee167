"""Timers and the timed loop. Returns raw per-iteration samples (ms).

Two timers share one interface: :class:`PerfCounterTimer` (CPU wall clock)
and :class:`CudaEventTimer` (CUDA events recorded on the stream, read after a
synchronize, so queued GPU work is fully counted and host overhead is not
mistaken for device time). The loop that drives them, :func:`timed_loop`,
is the same for both and is tested on CPU with a fake event timer. It also
splits the process's CPU time over the timed iterations into user and system
time: a high system share means the loop timed the kernel (page faults of
buffers the allocator returned to the OS), not the model.

One timing rule at every batch size (:data:`TIMING_RULE`): each sample is
one call, started with the device idle (the previous sample ended with a
synchronize), so a sample is the latency of one request: launching its
kernels included, nothing of the previous call overlapped. On a GPU the
event timer also records how long the host took to return from the call
(it launches and returns; the kernels run on): ``host_share`` is that time
over the sample's event time, median over samples. Near 1 the GPU waited
for launches (host-bound: eager batch 1); well below 1 the device was the
bottleneck.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import time
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Protocol, Tuple, Union

from bench.measure.stats import relative_iqr

AUTO_MIN_SAMPLES = 10  # repeats: auto never stops with fewer samples
AUTO_MAX_SAMPLES = 1000
AUTO_TARGET_RELATIVE_IQR = 0.05  # repeats: auto stops once IQR / median is below this
TIMING_RULE = "single-call"  # each sample one call from an idle device (see the module doc)


class Timer(Protocol):
    name: str

    def time_block(self, fn: Callable[[], object], iterations: int) -> float:
        """Milliseconds taken by ``iterations`` back-to-back calls of ``fn``."""

    def synchronize(self) -> None:
        """Wait until all queued work is done."""


class PerfCounterTimer:
    name = "perf_counter"
    last_host_ms: Optional[float] = None  # the call is synchronous: no separate host time

    def time_block(self, fn: Callable[[], object], iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        return (time.perf_counter() - start) * 1e3

    def synchronize(self) -> None:
        pass


class CudaEventTimer:
    """CUDA events around a block of iterations; ``event_factory``/``sync`` are injectable for tests."""

    name = "cuda_event"

    def __init__(self, event_factory: Optional[Callable[[], object]] = None,
                 sync: Optional[Callable[[], None]] = None,
                 host_clock: Callable[[], float] = time.perf_counter) -> None:
        if event_factory is None or sync is None:
            import torch
            event_factory = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
            sync = sync or torch.cuda.synchronize
        self._event = event_factory
        self._sync = sync
        self._host_clock = host_clock
        self.last_host_ms: Optional[float] = None  # host time spent in the calls of the last block

    def time_block(self, fn: Callable[[], object], iterations: int) -> float:
        start, end = self._event(), self._event()
        start.record()
        launched = self._host_clock()
        for _ in range(iterations):
            fn()
        self.last_host_ms = (self._host_clock() - launched) * 1e3
        end.record()
        self._sync()  # elapsed_time is only valid once both events have completed
        return float(start.elapsed_time(end))

    def synchronize(self) -> None:
        self._sync()


class Stopwatch:
    """Time that can pause (training with evaluations off the clock): CUDA events on a GPU, else perf_counter.

    The same clocks as the timers above: on a GPU the stop event is waited
    for, so queued work is fully counted.
    """

    def __init__(self, device: str, event_factory: Optional[Callable[[], object]] = None) -> None:
        self.cuda = device == "cuda"
        self.total_s = 0.0
        self._start: Any = None
        self._event = event_factory
        if self.cuda and event_factory is None:
            import torch
            self._event = lambda: torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self._start = self._event()
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> float:
        """Add the time since :meth:`start` (queued GPU work included) and return the total, s."""
        if self.cuda:
            end = self._event()
            end.record()
            end.synchronize()
            self.total_s += self._start.elapsed_time(end) / 1e3
        else:
            self.total_s += time.perf_counter() - self._start
        return self.total_s


def make_timer(device: str) -> Timer:
    return CudaEventTimer() if device == "cuda" else PerfCounterTimer()


# A timed loop whose process spent more than this share of its CPU time in the
# kernel measured page faults and allocator calls more than the model: flagged.
SYS_SHARE_LIMIT = 0.10


# Above this share of the machine's CPU time taken by other processes (or
# stolen by the hypervisor) during a timed loop, its samples timed contention.
OTHERS_SHARE_LIMIT = 0.10


def machine_cpu_seconds(path: str = "/proc/stat") -> Optional[Tuple[float, float]]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores; None where /proc/stat is absent.

    Busy is user + nice + system + irq + softirq + steal: steal is time the
    hypervisor gave this VM's cores to someone else, so it counts as taken.
    Guest time is already inside user and nice.
    """
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    busy = user + nice + system + irq + softirq + steal
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return busy / tick, (busy + idle + iowait) / tick


@dataclass
class TimedLoop:
    """A timed loop's per-iteration samples (ms), the process CPU time it took, split, and the machine's."""

    samples: List[float]
    user_s: float
    sys_s: float
    machine_busy_s: Optional[float] = None  # CPU seconds used on the whole machine meanwhile (all processes)
    machine_total_s: Optional[float] = None  # CPU seconds the machine had meanwhile (cores x wall time)
    host_ms: List[float] = field(default_factory=list)  # per sample: host time in the call (GPU timers only)
    wall_s: float = 0.0  # wall time of the timed iterations, gaps between samples included

    @property
    def host_share(self) -> Optional[float]:
        """Median over samples of host time in the call / the sample's time (see the module doc)."""
        ratios = [h / s for h, s in zip(self.host_ms, self.samples) if s > 0]
        return min(1.0, statistics.median(ratios)) if ratios else None

    @property
    def sys_share(self) -> Optional[float]:
        """System / (user + system) CPU time of the whole process over the timed iterations."""
        total = self.user_s + self.sys_s
        return self.sys_s / total if total > 0 else None

    @property
    def others_share(self) -> Optional[float]:
        """Share of the machine's CPU time that other processes (or the hypervisor) took during the loop.

        On a 2-core machine, one other busy thread takes 0.5: the timed
        threads then wait for a core, and torch's intra-op barriers can cost
        far more than the work (a batch-1 forward read 994 ms for 3 ms).
        """
        if self.machine_busy_s is None or not self.machine_total_s:
            return None
        others = self.machine_busy_s - (self.user_s + self.sys_s)
        return min(1.0, max(0.0, others / self.machine_total_s))


def collect_samples(fn: Callable[[], object], timer: Timer, warmup: int, repeats: Union[int, str],
                    max_time_s: float = 2.0, clock: Callable[[], float] = time.perf_counter,
                    min_time_s: float = 0.0) -> List[float]:
    """Per-iteration times in ms (see :func:`timed_loop`, which also gives the CPU time split)."""
    return timed_loop(fn, timer, warmup, repeats, max_time_s, clock, min_time_s).samples


def timed_loop(fn: Callable[[], object], timer: Timer, warmup: int, repeats: Union[int, str],
               max_time_s: float = 2.0, clock: Callable[[], float] = time.perf_counter, min_time_s: float = 0.0,
               cpu_times: Callable[[], "os.times_result"] = os.times,
               machine_times: Callable[[], Optional[Tuple[float, float]]] = machine_cpu_seconds,
               observe: Optional[Callable[[], None]] = None, *, min_block_ms: float = 0.0) -> TimedLoop:
    """Per-call times in ms (:data:`TIMING_RULE`), after ``warmup`` discarded calls, with the CPU time split.

    ``repeats`` is a fixed count, or ``"auto"``: sample until IQR/median is
    below 5% (with at least 10 samples and ``min_time_s`` spent) or
    ``max_time_s`` is spent. The minimum time keeps a fast model from being
    judged on a 0.1 s burst that happened to be calm. ``observe`` (GPU
    readings) runs before the first sample and after each one, outside the
    timed calls.

    ``min_block_ms`` is for microbenchmarks of single layers on the CPU
    (benchmarks/grouped_conv.py, the layer table), never for result rows: a
    call shorter than it is timed in blocks of calls and each sample is the
    block's mean, so the timer's own microsecond stays out of a
    microsecond-sized sample. 0 (the default) keeps one call per sample.
    """
    with _gc_paused():
        return _sample(fn, timer, warmup, repeats, max_time_s, clock, min_time_s, cpu_times, machine_times,
                       observe or (lambda: None), min_block_ms)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's garbage collector off while timing, as timeit and torch.utils.benchmark do.

    A forward pass allocates enough Python objects to trigger collections, and
    in a process holding many objects a collection costs milliseconds: noise
    (and a bias) in the timings of small models.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _sample(fn: Callable[[], object], timer: Timer, warmup: int, repeats: Union[int, str], max_time_s: float,
            clock: Callable[[], float], min_time_s: float, cpu_times: Callable[[], "os.times_result"],
            machine_times: Callable[[], Optional[Tuple[float, float]]], observe: Callable[[], None],
            min_block_ms: float = 0.0) -> TimedLoop:
    for _ in range(warmup):
        fn()
    timer.synchronize()
    block = 1
    if min_block_ms > 0:
        probe = timer.time_block(fn, 1)
        if probe < min_block_ms:
            block = min(1000, max(1, math.ceil(min_block_ms / max(probe, 1e-6))))
    samples: List[float] = []
    host: List[float] = []
    adaptive = repeats == "auto"
    limit = AUTO_MAX_SAMPLES if adaptive else int(repeats)
    observe()
    started = clock()
    # os.times counts every thread of the process (torch's intra-op pool too);
    # the warm-up stays outside, like the samples.
    before, machine_before = cpu_times(), machine_times()
    while len(samples) < limit:
        samples.append(timer.time_block(fn, block) / block)
        if getattr(timer, "last_host_ms", None) is not None:
            host.append(timer.last_host_ms)
        observe()
        if adaptive and len(samples) >= AUTO_MIN_SAMPLES:
            elapsed = clock() - started
            stable = relative_iqr(samples) < AUTO_TARGET_RELATIVE_IQR and elapsed >= min_time_s
            if stable or elapsed > max_time_s:
                break
    after, machine_after = cpu_times(), machine_times()
    wall = clock() - started
    busy = total = None
    if machine_before is not None and machine_after is not None:
        busy, total = machine_after[0] - machine_before[0], machine_after[1] - machine_before[1]
    return TimedLoop(samples, after.user - before.user, after.system - before.system, busy, total, host, wall)
