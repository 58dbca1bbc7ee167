"""The CUDA paths, run on the CPU through seams: fake NVML, fake CUDA-graph capture, fake out-of-memory errors.

Each test says what its fake proves and what only a GPU can show.
"""
import contextlib
import gc
import sys
import weakref

import pytest
import torch
from torch import nn

import bench.run.cell as measure
from bench.grid import expand_grid
from bench.measure import memory, nvml, stats
from bench.measure.timing import PerfCounterTimer, TimedLoop
from bench.results.schema import COLUMNS
from bench.results.validate import RULES


class FakeNvml:
    """pynvml's surface as the harness uses it; ``broken`` names calls that raise, like an unsupported field."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    nvmlClocksEventReasonGpuIdle = 0x1  # noqa: N815 - pynvml's names
    nvmlClocksEventReasonApplicationsClocksSetting = 0x2  # noqa: N815 - pynvml's names
    nvmlClocksEventReasonSwPowerCap = 0x4  # noqa: N815 - pynvml's names
    nvmlClocksEventReasonNone = 0x0  # noqa: N815 - pynvml's names
    nvmlClocksThrottleReasonGpuIdle = 0x1  # noqa: N815 - pynvml's names
    nvmlClocksThrottleReasonSwPowerCap = 0x4  # noqa: N815 - pynvml's names
    nvmlClocksThrottleReasonHwSlowdown = 0x8  # noqa: N815 - pynvml's names

    class NVMLError_FunctionNotFound(Exception):  # noqa: N801 - pynvml's name
        pass

    def __init__(self, sm=(1980,), energy=(0, 0), reasons=0, broken=(), uuids=("GPU-a", "GPU-b"), count=2):
        self.sm, self.energy, self.reasons, self.broken = iter(sm), iter(energy), reasons, set(broken)
        self.uuids, self.count, self.last_sm = list(uuids), count, None

    def _check(self, name):
        if name in self.broken:
            raise self.NVMLError_FunctionNotFound(name)

    def nvmlDeviceGetClockInfo(self, h, kind):  # noqa: N802
        self._check("clock")
        if kind == self.NVML_CLOCK_SM:
            self.last_sm = next(self.sm, self.last_sm)
            return self.last_sm
        return 2619

    def nvmlDeviceGetTemperature(self, h, kind):  # noqa: N802
        return 45

    def nvmlDeviceGetPowerUsage(self, h):  # noqa: N802
        self._check("power")
        return 350_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):  # noqa: N802
        self._check("energy")
        return next(self.energy)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):  # noqa: N802
        self._check("event_reasons")
        return self.reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):  # noqa: N802
        return self.reasons | 0x8  # tells the fallback apart

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
        if uuid not in self.uuids:
            raise KeyError(uuid)
        return ("uuid", uuid)

    def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
        return ("index", i)

    def nvmlDeviceGetCount(self):  # noqa: N802
        return self.count


# ---------------------------------------------------------------- NVML fields
def test_each_nvml_field_is_guarded_on_its_own():
    # Proves: a call the driver refuses (power on a MIG slice, say) empties that field only. Only a GPU shows
    # which calls a given driver and device refuse.
    state = nvml.read_state(FakeNvml(broken={"power"}), "h")
    assert state["power_w"] is None and state["sm_mhz"] == 1980 and state["temp_c"] == 45
    assert state["mem_mhz"] == 2619 and state["reasons"] == []


def test_clock_event_reasons_come_from_the_new_call_and_fall_back_to_the_deprecated_one():
    # Proves: nvmlDeviceGetCurrentClocksEventReasons is used; the deprecated throttle call only where the
    # driver lacks the new one. GpuIdle is never a reason.
    assert nvml.read_state(FakeNvml(reasons=0x1 | 0x4), "h")["reasons"] == ["SwPowerCap"]
    assert nvml.read_state(FakeNvml(reasons=0x4, broken={"event_reasons"}), "h")["reasons"] == ["HwSlowdown",
                                                                                                 "SwPowerCap"]
    assert nvml.reason_names(0x1, FakeNvml) == []


def test_the_sidecar_facts_keep_the_fields_nvml_gives_when_one_call_fails():
    facts = nvml.device_facts(FakeNvml(broken={"event_reasons", "clock"}), "h")
    assert facts["sm_clock_mhz"] is None and facts["temperature_c"] == 45 and facts["power_w"] == 350.0
    assert facts["throttle_reasons"] == ["HwSlowdown"]  # fell back to the deprecated call


# -------------------------------------------------------------- device mapping
def test_the_nvml_device_is_found_by_the_uuid_torch_gives_whatever_the_visible_devices_say():
    # Proves: with torch's UUID the index and CUDA_VISIBLE_DEVICES are not consulted. Only a GPU shows that
    # torch's get_device_properties(i).uuid is the UUID NVML knows (bare, as torch prints it).
    env = {"CUDA_VISIBLE_DEVICES": "1,0"}
    assert nvml.device_handle(FakeNvml(), 0, torch_uuid="b", env=env) == ("uuid", "GPU-b")
    assert nvml.device_handle(FakeNvml(uuids=["MIG-c"]), 0, torch_uuid="c", env=env) == ("uuid", "MIG-c")


@pytest.mark.parametrize("env, index, expected", [
    ({"CUDA_VISIBLE_DEVICES": "GPU-b,GPU-a"}, 1, ("uuid", "GPU-a")),
    ({"CUDA_VISIBLE_DEVICES": "MIG-x"}, 0, ("uuid", "MIG-x")),
    ({"CUDA_VISIBLE_DEVICES": "3,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, 1, ("index", 1)),
    ({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, 1, ("index", 1)),
])
def test_without_a_uuid_from_torch_the_visible_devices_entry_names_the_device(env, index, expected):
    fake = FakeNvml(uuids=["GPU-a", "GPU-b", "MIG-x"])
    assert nvml.device_handle(fake, index, env=env) == expected


def test_an_index_under_cudas_default_order_on_a_many_gpu_machine_is_not_guessed():
    with pytest.raises(LookupError, match="CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        nvml.device_handle(FakeNvml(count=2), 0, env={"CUDA_VISIBLE_DEVICES": "1"})
    assert nvml.device_handle(FakeNvml(count=1), 0, env={}) == ("index", 0)


# ------------------------------------------------------------ per-loop columns
def _loop(fake, reads):
    readings = nvml.LoopReadings(fake, "h")
    for _ in range(reads):
        readings.read()
    return readings


def test_energy_per_image_comes_from_the_counter_over_a_long_enough_loop_else_empty_with_the_reason():
    # Proves: joules per image = counter delta (mJ) / images, only for a loop of at least ENERGY_MIN_LOOP_S.
    # Only a GPU shows the counter's real refresh period (tens of ms).
    long_loop = _loop(FakeNvml(energy=iter([1_000_000, 1_700_000])), 2)
    cols, notes = long_loop.columns("latency", loop_s=2.0, images=700)
    assert cols["latency_energy_j_per_image"] == pytest.approx(1.0) and notes == []
    short, notes = _loop(FakeNvml(energy=iter([0, 5000])), 2).columns("latency", loop_s=0.2, images=10)
    assert short["latency_energy_j_per_image"] is None and "shorter than the 1 s" in notes[0]
    _, notes = _loop(FakeNvml(broken={"energy"}), 2).columns("latency", loop_s=5.0, images=10)
    assert "no total-energy counter" in notes[0]


def test_a_gpu_loop_is_noisy_when_its_clock_moved_or_a_slowdown_was_seen_not_by_the_cpus_system_share():
    # Proves: the GPU rows' noise rule (clock change > 2%, a slowdown reason) replaces the CPU's sys_share and
    # others_share rules. Only a GPU shows how much its clocks move under a real load.
    steady = [1.0] * 20
    faulting = TimedLoop(steady, user_s=0.5, sys_s=0.5, machine_busy_s=2.0, machine_total_s=2.0)

    def columns(fake):
        gpu, _ = _loop(fake, 3).columns("latency", 1.0, 20)
        return measure._timing_columns(faulting, stats.summarize(steady), "latency", "cuda", gpu)

    calm = columns(FakeNvml(sm=(1980, 1980, 1965)))
    assert calm["latency_noisy"] is False and calm["latency_sys_share"] == 0.5  # recorded, not applied
    assert calm["latency_sm_clock_mhz"] == 1980 and calm["latency_clock_events"] == "none"
    assert columns(FakeNvml(sm=(1980, 1500, 1980)))["latency_noisy"] is True
    capped = columns(FakeNvml(reasons=0x4))
    assert capped["latency_noisy"] is True and capped["latency_clock_events"] == "SwPowerCap"
    assert measure._timing_columns(faulting, stats.summarize(steady), "latency", "cpu")["latency_noisy"] is True
    # a GPU without NVML readings has only the IQR rule
    assert measure._timing_columns(faulting, stats.summarize(steady), "latency", "cuda")["latency_noisy"] is False


def test_a_timed_loop_on_a_gpu_takes_its_readings_outside_the_timed_calls(monkeypatch):
    # Proves: the wiring from the cell's timed loop to NVML: one reading before the samples and one after each,
    # and the columns land in the row. Only a GPU shows real readings.
    fake = FakeNvml(sm=(1980,) * 10)
    readings = nvml.LoopReadings(fake, "h")
    monkeypatch.setattr(nvml, "loop_readings", lambda: (readings, ""))
    settings = {"device": "cuda", "warmup": 0, "repeats": 4, "max_time_s": 1.0, "compile": False}
    t = measure._TimedBatch(nn.Identity(), nn.Identity(), settings, {"flops": 1}, torch.ones(1), 2,
                            PerfCounterTimer())
    fake.energy = iter([0, 10])
    out, _ = measure._timed_columns(t, lambda: None, "latency", "", 1.0)
    assert len(readings.readings) == 1 + 4 and out["latency_sm_clock_mhz"] == 1980
    assert any("energy" in n for n in t.notes)  # a loop of microseconds has no energy figure


def test_every_gpu_column_has_a_schema_doc_and_a_validation_rule():
    for prefix in ("latency", "train_step"):
        cols, _ = _loop(FakeNvml(energy=iter([0, 1])), 2).columns(prefix, 1.0, 1)
        for name in list(cols) + [f"{prefix}_host_share"]:
            assert name in COLUMNS and name in RULES, name
    for name in ("timing_rule", "cuda_graphs", "notes", "compile_recompiles", "train_compile_time_s"):
        assert name in COLUMNS and name in RULES, name


# ------------------------------------------------------------------ rows on CPU
def cell_for(**settings):
    entry = {"preset": "resnet20", "batch_sizes": [2], "warmup": 1, "repeats": 3, "device": "cpu", **settings}
    return expand_grid({"include": [entry]}, "t.yaml", cuda_available=False).cells[0]


def test_cpu_rows_name_the_timing_rule_and_ignore_cuda_graphs_with_a_note():
    (row,) = measure.measure_cell(cell_for(cuda_graphs=True, train_step=False))
    assert row["status"] == "ok" and row["timing_rule"] == "single-call"
    assert row["cuda_graphs"] is False and "cuda_graphs ignored" in row["notes"]
    assert row["latency_host_share"] is None and row["latency_sm_clock_mhz"] is None


def test_cuda_graphs_false_keeps_the_cell_ids_of_grids_written_before_the_setting():
    assert cell_for().cell_id == cell_for(cuda_graphs=False).cell_id != cell_for(cuda_graphs=True).cell_id


def test_cuda_graphs_on_a_gpu_times_the_replays_of_one_captured_forward(monkeypatch):
    # Proves: with cuda_graphs the timed function is the captured graph's replay and the row says so; memory
    # is weighed on the eager forward. Only a GPU shows the capture itself (torch.cuda.graph) and its speed-up.
    captured, replays = [], []

    def fake_graphed(fn):
        fn()
        captured.append(fn)
        return lambda: replays.append(1)

    monkeypatch.setattr(measure, "_graphed", fake_graphed)
    monkeypatch.setattr(nvml, "loop_readings", lambda: (None, "no NVML (fake)"))
    monkeypatch.setattr(memory, "gpu_peak", lambda fn: {"alloc": 1.0, "reserved": 2.0, "nvml": None})
    settings = {"device": "cuda", "precision": "fp32", "warmup": 2, "repeats": 5, "max_time_s": 1.0,
                "compile": False, "cuda_graphs": True}
    model = nn.Linear(4, 3)
    t = measure._TimedBatch(model, model, settings, {"flops": 24}, torch.ones(2, 4), 2, PerfCounterTimer())
    out = measure._inference_columns(t)
    assert out["cuda_graphs"] is True and len(captured) == 1 and len(replays) == 2 + 5
    assert out["latency_n"] == 5 and "no GPU readings: no NVML (fake)" in t.notes


# --------------------------------------------------------------------- OOM
class OOMWhen(nn.Module):
    """Runs out of (GPU) memory in training mode, or above a batch size; holds a tensor while it fails."""

    def __init__(self, inner, in_training=False, above=None):
        super().__init__()
        self.inner, self.in_training, self.above = inner, in_training, above
        self.held = []

    def forward(self, x):
        if (self.in_training and self.training) or (self.above is not None and x.shape[0] > self.above):
            held = torch.empty(1024)  # what a failed attempt still holds: its frame keeps it alive
            self.held.append(weakref.ref(held))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def _patch_model(monkeypatch, **kw):
    real_build, real_counts = measure.build_for_cell, measure.measure_complexity
    monkeypatch.setattr(measure, "build_for_cell", lambda cell: OOMWhen(real_build(cell), **kw))
    monkeypatch.setattr(measure, "measure_complexity", lambda m, cfg: real_counts(m.inner, cfg))


def _watch_frees(monkeypatch):
    """free_memory, recording whether an exception was still being handled and whether the failed
    attempt's tensors were already collectable when it ran."""
    seen = []
    real = measure.free_memory

    def free(device):
        gc.collect()
        seen.append((sys.exc_info()[0] is None, list(models[0].held)))
        real(device)

    models = []
    real_build = measure.build_for_cell
    monkeypatch.setattr(measure, "build_for_cell", lambda cell: models.append(real_build(cell)) or models[-1])
    monkeypatch.setattr(measure, "free_memory", free)
    return seen


def test_memory_is_freed_after_the_out_of_memory_exception_is_dropped(monkeypatch):
    # Proves: the back-off frees memory only once the exception (whose traceback holds the failed attempt's
    # frames and tensors) is gone: the tensor the failed forward held is already collected. Only a GPU shows
    # the bytes coming back to the caching allocator (empty_cache after gc).
    _patch_model(monkeypatch, above=2)
    seen = _watch_frees(monkeypatch)
    rows = measure.measure_cell(cell_for(batch_sizes=[4], train_step=False))
    assert rows[0]["batch_size"] == 2 and rows[0]["requested_batch_size"] == 4
    outside, held = seen[0]
    assert outside and held and all(ref() is None for ref in held)


def test_an_out_of_memory_training_step_keeps_the_inference_row_with_a_note(monkeypatch):
    # Proves: the row keeps latency, throughput and memory, leaves the training-step columns empty and says
    # why; the weights are put back. Only a GPU shows a real allocator failing mid-backward.
    _patch_model(monkeypatch, in_training=True)
    seen = _watch_frees(monkeypatch)
    (row,) = measure.measure_cell(cell_for(batch_sizes=[2]))
    assert row["status"] == "ok" and row["batch_size"] == 2 and row["latency_ms_median"] > 0
    assert row["train_step_ms_median"] is None and row["train_peak_mem_mb"] is None
    assert "training step out of memory at batch 2 (inference kept)" in row["notes"]
    assert seen and seen[0][0]  # freed outside the except block


# ----------------------------------------------------------- the training step
def test_the_fp16_training_step_scales_its_loss_and_the_others_do_not(monkeypatch):
    # Proves: the one timed step (the cell's and the profile's) builds an enabled GradScaler for fp16 only and
    # steps through it. Only a GPU shows fp16 gradients that would underflow without it.
    from bench.measure import step as step_module

    made = []

    class Scaler(torch.amp.GradScaler):
        def __init__(self, device, enabled):
            super().__init__("cpu", enabled=False)  # the arithmetic of a disabled scaler, recorded
            made.append({"enabled": enabled, "scaled": 0})

        def scale(self, loss):
            made[-1]["scaled"] += 1
            return super().scale(loss)

    monkeypatch.setattr(step_module.torch.amp, "GradScaler", Scaler)
    model = nn.Linear(4, 3)
    x, labels = torch.randn(2, 4), torch.tensor([0, 2])
    for precision in ("fp16", "fp32"):
        step = step_module.train_step_fn(model, x, labels, contextlib.nullcontext, precision)
        step()
        step()
    assert made == [{"enabled": True, "scaled": 2}, {"enabled": False, "scaled": 2}]
    from bench.measure import profile
    assert profile.train_step_fn is step_module.train_step_fn


def test_the_gpu_columns_doc_holds_the_generated_table():
    import os

    from bench.results.schema import GPU_COLUMNS, markdown_table

    path = os.path.join(os.path.dirname(__file__), "..", "docs", "gpu-columns.md")
    with open(path) as f:
        assert markdown_table(GPU_COLUMNS) in f.read()
    assert all(name in COLUMNS for name in GPU_COLUMNS)


def test_a_failing_runtime_probe_costs_the_estimate_only(monkeypatch):
    # Proves: the probe runs outside every cell's error handling, so its failure (a CUDA error, an OOM) turns
    # into a line saying there is no estimate instead of ending the run. Only a GPU shows a real CUDA failure.
    from bench.run import estimate

    def broken(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    monkeypatch.setattr(estimate, "probe_rate", broken)
    entry = {"preset": "resnet20", "device": "cpu", "speed": False, "train": {"dataset": "cifar10", "epochs": 10}}
    cells = expand_grid({"include": [entry]}, "t.yaml", cuda_available=False).cells
    line = estimate.announce(cells, "/nonexistent.csv")
    assert line == "estimate: none (CUDA out of memory. Tried to allocate 2.00 GiB); the run goes on"


def test_a_result_file_from_before_the_gpu_columns_still_loads(tmp_path):
    import csv

    from bench.results.schema import GPU_COLUMNS
    from bench.results.validate import read_table

    new = set(GPU_COLUMNS) - {"tf32", "compile_time_s", "gpu_peak_alloc_mb", "gpu_peak_reserved_mb",
                                "gpu_nvml_used_mb"}
    old_columns = [c for c in COLUMNS if c not in new]
    path = tmp_path / "old.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, old_columns)
        w.writeheader()
        w.writerow({"cell_id": "abc", "status": "ok", "device": "cuda", "latency_ms_median": "1.5",
                    "latency_noisy": "false"})
    table = read_table(str(path))
    assert list(table.frame["latency_ms_median"]) == [1.5] and "timing_rule" not in table.frame
