"""The timed loop with both timers; the CUDA event timer runs here against fake events."""
import time

import pytest

from bench.measure.timing import (AUTO_MIN_SAMPLES, TIMING_RULE, CudaEventTimer, PerfCounterTimer, Stopwatch,
                                  collect_samples, timed_loop)


class FakeClock:
    """A device whose queued work finishes only at synchronize(), like a CUDA stream."""

    def __init__(self, costs):
        self.now = 0.0
        self.queued = 0.0
        self.costs = iter(costs)
        self.syncs = 0

    def work(self):
        self.queued += next(self.costs)

    def event(self):
        clock = self

        class Event:
            def record(self):
                clock.now += clock.queued  # events complete in stream order
                clock.queued = 0.0
                self.t = clock.now

            def elapsed_time(self, other):
                return other.t - self.t

        return Event()

    def sync(self):
        self.syncs += 1
        self.now += self.queued
        self.queued = 0.0


def test_cuda_event_timer_counts_queued_work_and_synchronizes():
    clock = FakeClock([1.0] * 3 + [2.0, 4.0, 8.0])
    timer = CudaEventTimer(event_factory=clock.event, sync=clock.sync)
    samples = collect_samples(clock.work, timer, warmup=3, repeats=3)
    assert samples == [2.0, 4.0, 8.0]  # warm-up discarded, each iteration's own cost
    assert clock.syncs >= 4  # after warm-up and before reading each sample


def test_fast_calls_are_timed_one_at_a_time_from_an_idle_device_like_slow_ones():
    # Proves: one rule at every size (no switch to pipelined block means under 1 ms): each sample is one call
    # and a synchronize ends every sample. Only a GPU shows what the events cost (microseconds) at batch 1.
    clock = FakeClock([0.01] * 5 + [30.0] * 5)
    timer = CudaEventTimer(event_factory=clock.event, sync=clock.sync)
    calls = []
    samples = collect_samples(lambda: (calls.append(1), clock.work()), timer, warmup=0, repeats=10)
    assert samples == pytest.approx([0.01] * 5 + [30.0] * 5) and len(calls) == 10
    assert clock.syncs == 1 + 10  # after the warm-up, then once per sample
    assert TIMING_RULE == "single-call"


class LaunchClock:
    """A GPU stream fed by a host: a call spends ``host`` ms launching, then its kernels run ``device`` ms."""

    def __init__(self, host, device):
        self.host_ms, self.device_ms = host, device
        self.host = 0.0  # host clock, ms
        self.free = 0.0  # when the stream has run everything queued, ms

    def call(self):
        self.host += self.host_ms
        self.free = max(self.free, self.host) + self.device_ms  # the last kernel starts once launched

    def event(self):
        clock = self

        class Event:
            def record(self):
                self.t = max(clock.free, clock.host)  # runs when the stream reaches it

            def elapsed_time(self, other):
                return other.t - self.t

        return Event()

    def sync(self):
        self.host = max(self.host, self.free)

    def timer(self):
        return CudaEventTimer(event_factory=self.event, sync=self.sync, host_clock=lambda: self.host / 1e3)


@pytest.mark.parametrize("host, device, share", [(0.9, 0.1, 0.9), (0.1, 4.9, 0.02)])
def test_host_share_is_the_hosts_launch_time_over_the_event_time_of_a_call(host, device, share):
    # Proves: the arithmetic and what is timed (host: from the start event to the call's return; device: event
    # to event). A host-bound call (launches take 0.9 of its 1 ms) reads 0.9, a device-bound one 0.02. Only a
    # GPU shows real launch costs (about 300 launches per eager ResNet-50 pass).
    clock = LaunchClock(host, device)
    loop = timed_loop(clock.call, clock.timer(), warmup=1, repeats=5)
    assert loop.samples == pytest.approx([host + device] * 5)
    assert loop.host_share == pytest.approx(share)


def test_a_cpu_loop_has_no_host_share():
    assert timed_loop(lambda: None, PerfCounterTimer(), warmup=0, repeats=3).host_share is None


def test_the_observer_reads_before_the_first_sample_and_after_each_never_inside_a_call():
    clock = LaunchClock(0.1, 1.0)
    inside, seen = [False], []

    def call():
        inside[0] = True
        clock.call()
        inside[0] = False

    timed_loop(call, clock.timer(), warmup=2, repeats=4, observe=lambda: seen.append(inside[0]))
    assert seen == [False] * 5


def test_fixed_repeats_give_exactly_that_many_samples():
    calls = []
    samples = collect_samples(lambda: calls.append(1), PerfCounterTimer(), warmup=4, repeats=7)
    assert len(samples) == 7 and len(calls) == 11
    assert all(s >= 0 for s in samples)


def test_auto_repeats_stop_early_when_stable():
    clock = FakeClock([1.0] * 2000)
    timer = CudaEventTimer(event_factory=clock.event, sync=clock.sync)
    samples = collect_samples(clock.work, timer, warmup=0, repeats="auto", max_time_s=60)
    assert len(samples) == AUTO_MIN_SAMPLES


def test_auto_repeats_stop_at_the_time_budget_when_noisy():
    import itertools

    clock = FakeClock(itertools.cycle([1.0, 3.0, 9.0]))
    timer = CudaEventTimer(event_factory=clock.event, sync=clock.sync)
    fake_time = itertools.count(0, 0.1)  # each check of the budget advances 0.1 s
    samples = collect_samples(clock.work, timer, warmup=0, repeats="auto", max_time_s=2.0,
                              clock=lambda: next(fake_time))
    assert AUTO_MIN_SAMPLES <= len(samples) < 40


def test_perf_counter_timer_measures_real_sleep():
    samples = collect_samples(lambda: time.sleep(0.005), PerfCounterTimer(), warmup=1, repeats=5)
    assert all(4.5 <= s < 50 for s in samples)


def test_auto_repeats_keep_sampling_until_the_minimum_time():
    import itertools

    clock = FakeClock([1.0] * 2000)
    timer = CudaEventTimer(event_factory=clock.event, sync=clock.sync)
    fake_time = itertools.count(0, 0.1)
    samples = collect_samples(clock.work, timer, warmup=0, repeats="auto", max_time_s=60, min_time_s=3.0,
                              clock=lambda: next(fake_time))
    # stable from the 10th sample on, but the check only passes once 3 s (30 ticks of 0.1 s) are spent
    assert len(samples) == 9 + 30


def test_garbage_collector_is_paused_while_timing_and_restored():
    import gc

    seen = []
    collect_samples(lambda: seen.append(gc.isenabled()), PerfCounterTimer(), warmup=1, repeats=3)
    assert seen == [False] * 4 and gc.isenabled()
    gc.disable()
    try:
        collect_samples(lambda: None, PerfCounterTimer(), warmup=0, repeats=1)
        assert not gc.isenabled()  # a caller's choice is left alone
    finally:
        gc.enable()


def test_timed_loop_splits_the_cpu_time_of_the_timed_iterations_only():
    from types import SimpleNamespace

    readings = iter([SimpleNamespace(user=10.0, system=1.0), SimpleNamespace(user=10.6, system=1.4)])
    calls = []
    loop = timed_loop(lambda: calls.append(1), PerfCounterTimer(), warmup=2, repeats=4,
                      cpu_times=lambda: next(readings))
    assert len(loop.samples) == 4 and len(calls) == 6  # warm-up ran outside the two readings
    assert loop.user_s == pytest.approx(0.6) and loop.sys_s == pytest.approx(0.4)
    assert loop.sys_share == pytest.approx(0.4)


def test_a_loop_too_short_to_register_cpu_time_has_no_system_share():
    from types import SimpleNamespace

    same = SimpleNamespace(user=1.0, system=1.0)
    assert timed_loop(lambda: None, PerfCounterTimer(), warmup=0, repeats=2, cpu_times=lambda: same).sys_share is None


def test_the_loop_says_what_share_of_the_machine_other_processes_took_meanwhile():
    from types import SimpleNamespace

    readings = iter([SimpleNamespace(user=10.0, system=1.0), SimpleNamespace(user=10.8, system=1.0)])
    machine = iter([(100.0, 400.0), (101.6, 402.0)])  # 2 cores for 1 s: 2 CPU-s, 1.6 of them busy
    loop = timed_loop(lambda: None, PerfCounterTimer(), warmup=0, repeats=3, cpu_times=lambda: next(readings),
                      machine_times=lambda: next(machine))
    # the loop's own process used 0.8 CPU-s: others took the other 0.8 of 2
    assert loop.others_share == pytest.approx(0.4)


def test_without_proc_stat_there_is_no_others_share():
    loop = timed_loop(lambda: None, PerfCounterTimer(), warmup=0, repeats=2, machine_times=lambda: None)
    assert loop.others_share is None


def test_machine_cpu_seconds_count_steal_as_busy_and_iowait_as_idle(tmp_path):
    import os

    from bench.measure.timing import machine_cpu_seconds

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 30 5 5 10 0 0\ncpu0 50 0 25 400 15 2 3 5 0 0\n")
    tick = os.sysconf("SC_CLK_TCK")
    busy, total = machine_cpu_seconds(str(stat))
    assert busy == pytest.approx(170 / tick) and total == pytest.approx(1000 / tick)
    assert machine_cpu_seconds(str(tmp_path / "absent")) is None


def test_stopwatch_on_a_gpu_adds_the_event_time_of_each_interval():
    class Event:
        clock = [0.0]

        def record(self):
            self.t = Event.clock[0]

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return end.t - self.t

    watch = Stopwatch("cuda", event_factory=Event)
    watch.start()
    Event.clock[0] = 1500.0  # ms
    assert watch.stop() == pytest.approx(1.5)
    watch.start()
    Event.clock[0] = 2000.0
    assert watch.stop() == pytest.approx(2.0)


def test_a_microbenchmark_times_calls_shorter_than_min_block_ms_in_blocks_and_reports_the_block_mean():
    from bench.measure.timing import timed_loop

    class FakeTimer:
        """Each call of fn costs 0.1 ms; a block of n calls reads n * 0.1 ms (proves the block size and the mean)."""

        def __init__(self):
            self.blocks = []

        def synchronize(self):
            pass

        def time_block(self, fn, n):
            self.blocks.append(n)
            return 0.1 * n

    timer = FakeTimer()
    loop = timed_loop(lambda: None, timer, warmup=0, repeats=3, min_block_ms=2.0)
    assert timer.blocks == [1, 20, 20, 20]  # one probe call, then blocks of 2.0 / 0.1 calls
    assert loop.samples == pytest.approx([0.1, 0.1, 0.1])
    single = FakeTimer()
    timed_loop(lambda: None, single, warmup=0, repeats=3)
    assert single.blocks == [1, 1, 1]  # result rows: one call per sample
