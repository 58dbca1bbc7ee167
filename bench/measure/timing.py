"""Timers and the timed loop. Returns raw per-iteration samples (ms).

Two timers share one interface: :class:`PerfCounterTimer` (CPU wall clock)
and :class:`CudaEventTimer` (CUDA events recorded on the stream, read after a
synchronize, so queued GPU work is fully counted and host overhead is not
mistaken for device time). The loop that drives them, :func:`collect_samples`,
is the same for both and is tested on CPU with a fake event timer.
"""
from __future__ import annotations

import contextlib
import gc
import math
import time
from typing import Callable, Iterator, List, Optional, Protocol, Union

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


def make_timer(device: str) -> Timer:
    return CudaEventTimer() if device == "cuda" else PerfCounterTimer()


def collect_samples(fn: Callable[[], object], timer: Timer, warmup: int, repeats: Union[int, str],
                    max_time_s: float = 2.0, min_block_ms: float = 0.0,
                    clock: Callable[[], float] = time.perf_counter, min_time_s: float = 0.0) -> List[float]:
    """Per-iteration times in ms, after ``warmup`` discarded iterations.

    ``repeats`` is a fixed count, or ``"auto"``: sample until IQR/median is
    below 5% (with at least 10 samples and ``min_time_s`` spent) or
    ``max_time_s`` is spent. The minimum time keeps a fast model from being
    judged on a 0.1 s burst that happened to be calm. When one
    call takes less than ``min_block_ms``, iterations are timed in blocks and
    each sample is the block's mean, so the timer's own cost stays negligible.
    """
    with _gc_paused():
        return _sample(fn, timer, warmup, repeats, max_time_s, min_block_ms, clock, min_time_s)


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
            min_block_ms: float, clock: Callable[[], float], min_time_s: float) -> List[float]:
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
    while len(samples) < limit:
        samples.append(timer.time_block(fn, block) / block)
        if adaptive and len(samples) >= AUTO_MIN_SAMPLES:
            elapsed = clock() - started
            stable = relative_iqr(samples) < AUTO_TARGET_RELATIVE_IQR and elapsed >= min_time_s
            if stable or elapsed > max_time_s:
                break
    return samples
