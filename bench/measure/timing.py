"""Timers and the timed loop. Returns raw per-iteration samples (ms).

Two timers share one interface: :class:`PerfCounterTimer` (CPU wall clock)
and :class:`CudaEventTimer` (CUDA events recorded on the stream, read after a
synchronize, so queued GPU work is fully counted and host overhead is not
mistaken for device time). The loop that drives them, :func:`timed_loop`,
is the same for both and is tested on CPU with a fake event timer. It also
splits the process's CPU time over the timed iterations into user and system
time: a high system share means the loop timed the kernel (page faults of
buffers the allocator returned to the OS), not the model.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Protocol, Union

from bench.measure.stats import relative_iqr

AUTO_MIN_SAMPLES = 10  # repeats: auto never stops with fewer samples
AUTO_MAX_SAMPLES = 1000
AUTO_TARGET_RELATIVE_IQR = 0.05  # repeats: auto stops once IQR / median is below this


class Timer(Protocol):
    name: str

    def time_block(self, fn: Callable[[], object], iterations: int) -> float:
        """Milliseconds taken by ``iterations`` back-to-back calls of ``fn``."""

    def synchronize(self) -> None:
        """Wait until all queued work is done."""


class PerfCounterTimer:
    name = "perf_counter"

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
                 sync: Optional[Callable[[], None]] = None) -> None:
        if event_factory is None or sync is None:
            import torch
            event_factory = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
            sync = sync or torch.cuda.synchronize
        self._event = event_factory
        self._sync = sync

    def time_block(self, fn: Callable[[], object], iterations: int) -> float:
        start, end = self._event(), self._event()
        start.record()
        for _ in range(iterations):
            fn()
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


@dataclass
class TimedLoop:
    """A timed loop's per-iteration samples (ms) and the process CPU time it took, split."""

    samples: List[float]
    user_s: float
    sys_s: float

    @property
    def sys_share(self) -> Optional[float]:
        """System / (user + system) CPU time of the whole process over the timed iterations."""
        total = self.user_s + self.sys_s
        return self.sys_s / total if total > 0 else None


def collect_samples(fn: Callable[[], object], timer: Timer, warmup: int, repeats: Union[int, str],
                    max_time_s: float = 2.0, min_block_ms: float = 0.0,
                    clock: Callable[[], float] = time.perf_counter, min_time_s: float = 0.0) -> List[float]:
    """Per-iteration times in ms (see :func:`timed_loop`, which also gives the CPU time split)."""
    return timed_loop(fn, timer, warmup, repeats, max_time_s, min_block_ms, clock, min_time_s).samples


def timed_loop(fn: Callable[[], object], timer: Timer, warmup: int, repeats: Union[int, str],
               max_time_s: float = 2.0, min_block_ms: float = 0.0,
               clock: Callable[[], float] = time.perf_counter, min_time_s: float = 0.0,
               cpu_times: Callable[[], "os.times_result"] = os.times) -> TimedLoop:
    """Per-iteration times in ms, after ``warmup`` discarded iterations, with the CPU time split.

    ``repeats`` is a fixed count, or ``"auto"``: sample until IQR/median is
    below 5% (with at least 10 samples and ``min_time_s`` spent) or
    ``max_time_s`` is spent. The minimum time keeps a fast model from being
    judged on a 0.1 s burst that happened to be calm. When one
    call takes less than ``min_block_ms``, iterations are timed in blocks and
    each sample is the block's mean, so the timer's own cost stays negligible.
    """
    with _gc_paused():
        return _sample(fn, timer, warmup, repeats, max_time_s, min_block_ms, clock, min_time_s, cpu_times)


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
            min_block_ms: float, clock: Callable[[], float], min_time_s: float,
            cpu_times: Callable[[], "os.times_result"]) -> TimedLoop:
    for _ in range(warmup):
        fn()
    timer.synchronize()
    block = 1
    if min_block_ms > 0:
        probe = timer.time_block(fn, 1)
        if probe < min_block_ms:
            block = min(1000, max(1, math.ceil(min_block_ms / max(probe, 1e-6))))
    samples: List[float] = []
    adaptive = repeats == "auto"
    limit = AUTO_MAX_SAMPLES if adaptive else int(repeats)
    started = clock()
    # os.times counts every thread of the process (torch's intra-op pool too);
    # warm-up and the block-size probe stay outside, like the samples.
    before = cpu_times()
    while len(samples) < limit:
        samples.append(timer.time_block(fn, block) / block)
        if adaptive and len(samples) >= AUTO_MIN_SAMPLES:
            elapsed = clock() - started
            stable = relative_iqr(samples) < AUTO_TARGET_RELATIVE_IQR and elapsed >= min_time_s
            if stable or elapsed > max_time_s:
                break
    after = cpu_times()
    return TimedLoop(samples, after.user - before.user, after.system - before.system)
