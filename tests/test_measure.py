"""Measuring one cell on the CPU: columns, consistency, OOM back-off and failure rows."""
import contextlib
import math

import pytest
import torch
from torch import nn

import bench.run.cell as measure
from bench.measure import memory
from bench.measure.step import train_step_fn
from bench.run.environment import throttle_reason_names
from bench.grid import expand_grid
from bench.run.runner import SerialExecutor, run_cell_safely
from bench.results.schema import COLUMNS


def cell_for(**settings):
    entry = {"preset": "resnet20", "batch_sizes": [1, 2], "warmup": 1, "repeats": 3, "device": "cpu", **settings}
    return expand_grid({"include": [entry]}, "t.yaml", cuda_available=False).cells[0]


def test_measure_cell_fills_speed_memory_and_complexity_columns():
    rows = measure.measure_cell(cell_for())
    assert [r["batch_size"] for r in rows] == [1, 2]
    for r in rows:
        assert set(r) <= set(COLUMNS)
        assert r["status"] == "ok" and r["params"] == 272_474 and r["macs"] == 40_813_194
        assert r["flops"] == 2 * r["macs"]
        assert r["latency_n"] == 3 and len(r["latency_samples_ms"].split(";")) == 3
        assert 0 < r["latency_ms_median"] <= r["latency_ms_p90"] + 1e-12
        assert r["throughput_img_s"] == pytest.approx(r["batch_size"] / (r["latency_ms_median"] / 1e3))
        assert r["achieved_gflop_s"] == pytest.approx(r["flops"] * r["batch_size"] / r["latency_ms_median"] / 1e6)
        assert r["latency_ms_per_image"] == pytest.approx(r["latency_ms_median"] / r["batch_size"])
        assert r["train_step_ms_median"] > 0 and r["train_throughput_img_s"] > 0
        # weights alone are 1.04 MiB; the workload's memory is at least that
        assert r["peak_mem_mb"] >= 272_474 * 4 / 2**20
        assert r["train_peak_mem_mb"] >= r["peak_mem_mb"] * 0.5
        assert r["cpu_peak_rss_mb"] > 0
        assert r["gpu_peak_alloc_mb"] is None  # GPU columns stay empty on the CPU
        assert r["stage_channels"] == "16-32-64" and r["stage_strides"] == "1-2-4" and r["groups"] == 1
        assert r["threads"] == torch.get_num_threads()


def test_low_precision_and_channels_last_run_on_cpu():
    rows = measure.measure_cell(cell_for(precision="bf16", memory_format="channels_last", batch_sizes=[2],
                                         train_step=False))
    (r,) = rows
    assert r["status"] == "ok" and r["precision"] == "bf16" and r["memory_format"] == "channels_last"
    assert r["train_step_ms_median"] is None and r["latency_ms_median"] > 0


def test_speed_off_gives_one_row_per_cell():
    rows = measure.measure_cell(cell_for(speed=False, train_step=False))
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["latency_ms_median"] is None


def test_next_smaller_batch_ladder():
    seq, b = [], 64
    while b is not None:
        b = measure.next_smaller_batch(b)
        seq.append(b)
    assert seq == [48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1, None]
    assert measure.next_smaller_batch(100) == 96


class OOMAbove(nn.Module):
    """A model that runs out of (GPU) memory for batches larger than ``limit``."""

    def __init__(self, model, limit):
        super().__init__()
        self.inner, self.limit = model, limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def _patch_model(monkeypatch, limit):
    real = measure.build_for_cell

    def build(cell):
        model = real(cell)
        wrapped = OOMAbove(model, limit)
        return wrapped

    monkeypatch.setattr(measure, "build_for_cell", build)
    # the wrapper is not the config's network, so check complexity on the inner model
    real_complexity = measure.measure_complexity
    monkeypatch.setattr(measure, "measure_complexity", lambda m, cfg: real_complexity(m.inner, cfg))


def test_oom_backs_off_to_a_smaller_batch(monkeypatch):
    _patch_model(monkeypatch, limit=3)
    rows = measure.measure_cell(cell_for(batch_sizes=[1, 8], train_step=False))
    assert [(r["requested_batch_size"], r["batch_size"], r["status"]) for r in rows] == [(1, 1, "ok"), (8, 3, "ok")]


def test_oom_without_backoff_is_an_oom_row_and_the_cell_goes_on(monkeypatch):
    _patch_model(monkeypatch, limit=1)
    rows = measure.measure_cell(cell_for(batch_sizes=[1, 4], oom_backoff=False, train_step=False))
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "oom" and rows[1]["batch_size"] is None and rows[1]["requested_batch_size"] == 4
    assert "out of memory at batch 4" in rows[1]["error"]


def test_other_errors_become_status_rows_and_the_sweep_goes_on():
    cells = [cell_for(), cell_for(precision="bf16")]

    def flaky(cell):
        if cell.settings["precision"] == "bf16":
            raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR\nmore detail")
        return [{"cell_id": cell.cell_id, "status": "ok"}]

    ex = SerialExecutor(measure=flaky)
    out = [ex.run(c) for c in cells]
    assert out[0] == [{"cell_id": cells[0].cell_id, "status": "ok"}]
    (row,) = out[1]
    assert row["status"] == "error" and row["cell_id"] == cells[1].cell_id
    assert row["error"] == "RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR more detail"
    # the analytic counts are known without measuring, so a failed cell still carries them (issue 12)
    assert row["variant"] == "resnet20" and row["params"] > 0 and row["macs"] > 0


def test_oom_raised_outside_the_batch_loop_is_an_oom_row():
    def oom(cell):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    (row,) = run_cell_safely(cell_for(), oom)
    assert row["status"] == "oom"


def test_training_status_propagates_to_rows():
    def diverged(model_factory, settings, **kw):
        assert isinstance(model_factory(), nn.Module) and kw["num_classes"] == 10
        return {"status": "diverged", "error": "loss became nan at step 3", "top1_acc": None, "epochs": 1}

    rows = measure.measure_cell(cell_for(train={"dataset": "synthetic"}, speed=False, train_step=False),
                                train_fn=diverged)
    assert rows[0]["status"] == "diverged" and "nan" in rows[0]["error"] and rows[0]["epochs"] == 1


def test_cuda_memory_columns_are_named_for_their_source(monkeypatch):
    monkeypatch.setattr(memory, "gpu_peak", lambda fn: {"alloc": 100.0, "reserved": 128.0, "nvml": 900.0})
    cols = measure._peak_memory(lambda: None, "cuda", nn.Linear(2, 2), torch.zeros(1), prefix="train_")
    assert cols == {"train_peak_mem_mb": 100.0, "train_gpu_peak_alloc_mb": 100.0,
                    "train_gpu_peak_reserved_mb": 128.0, "train_gpu_nvml_used_mb": 900.0}


def test_cpu_peak_memory_sees_a_large_temporary():
    def allocate():
        t = torch.ones(64, 1024, 1024)  # 256 MiB, freed at return
        return float(t[0, 0, 0])

    assert 200 < memory.cpu_peak_growth_mb(allocate, iterations=1) < 400


def test_throttle_reasons_decoded_from_the_mask():
    class FakeNvml:
        nvmlClocksThrottleReasonGpuIdle = 0x1
        nvmlClocksThrottleReasonSwPowerCap = 0x4
        nvmlClocksThrottleReasonHwSlowdown = 0x8
        nvmlClocksThrottleReasonNone = 0x0
        nvmlClocksThrottleReasonAll = 0xFF

    assert throttle_reason_names(0x4 | 0x8, FakeNvml) == ["HwSlowdown", "SwPowerCap"]
    assert throttle_reason_names(0, FakeNvml) == []


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cell = expand_grid({"include": [{"preset": "resnet20", "device": "cuda"}]}, "t.yaml", cuda_available=True).cells[0]
    (row,) = SerialExecutor().run(cell)
    assert row["status"] == "error" and "no CUDA device" in row["error"]
    assert not math.isnan(row["params"] or 0)


@pytest.mark.slow
def test_torch_compile_time_is_reported_apart_from_the_timings():
    (r,) = measure.measure_cell(cell_for(batch_sizes=[2], compile=True))
    assert r["status"] == "ok" and r["compile"] is True
    # compilation takes seconds; a compiled forward of resnet20 at batch 2 takes milliseconds
    assert r["compile_time_s"] > 1.0 and r["latency_ms_median"] < 1000 * r["compile_time_s"] / 10


@pytest.mark.slow
def test_each_batch_size_compiles_its_own_model_and_the_timed_loops_compile_nothing():
    # Proves: batch 4 is not a dynamic-shape recompile of batch 2's graphs, nor a cache hit reading 0 s; the
    # train-mode compile is reported apart; dynamo's counter sees no compile inside a timed loop. A GPU shows
    # the same logic with inductor's CUDA backend (compile times differ).
    rows = measure.measure_cell(cell_for(batch_sizes=[2, 4], compile=True, warmup=1, repeats=2))
    for r in rows:
        assert r["status"] == "ok" and r["compile_time_s"] > 1.0 and r["train_compile_time_s"] > 1.0
        assert r["compile_recompiles"] == 0


def test_no_training_step_where_batchnorm_cannot_train():
    # resnet18 (ImageNet stem) at 32 px ends in a 1x1 map: at batch 1 BatchNorm sees one value per channel.
    cell = expand_grid({"include": [{"preset": "resnet18", "input_size": 32, "num_classes": 10, "device": "cpu",
                                     "batch_sizes": [1, 2], "warmup": 0, "repeats": 2}]}, "t.yaml",
                       cuda_available=False).cells[0]
    assert measure.final_map_size(cell.model) == 1
    rows = measure.measure_cell(cell)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["train_step_ms_median"] is None and rows[0]["latency_ms_median"] > 0
    assert rows[1]["train_step_ms_median"] > 0


def test_rows_record_the_system_share_of_each_timed_loop_and_the_allocator_in_effect():
    # 12 iterations: the process CPU clock ticks every 10 ms, and a loop of 3 small forwards can read 0 ticks
    # on a busy machine (the share is then unknown, None)
    for r in measure.measure_cell(cell_for(batch_sizes=[2], repeats=12)):
        assert 0 <= r["latency_sys_share"] <= 1 and 0 <= r["train_step_sys_share"] <= 1
        assert 0 <= r["latency_others_share"] <= 1 and 0 <= r["train_step_others_share"] <= 1
        assert r["cpu_malloc"] in ("glibc-tuned", "glibc-tuned-32mib", "jemalloc", "tcmalloc", "default")


def test_a_loop_spending_over_a_tenth_of_its_cpu_time_in_the_kernel_is_flagged_noisy():
    from bench.measure import stats
    from bench.measure.timing import TimedLoop

    steady = [10.0] * 10  # IQR 0: not noisy by its spread
    calm = measure._timing_columns(TimedLoop(steady, user_s=0.95, sys_s=0.05), stats.summarize(steady), "latency")
    faulting = measure._timing_columns(TimedLoop(steady, user_s=0.5, sys_s=0.5), stats.summarize(steady), "latency")
    assert calm["latency_noisy"] is False and calm["latency_sys_share"] == pytest.approx(0.05)
    assert faulting["latency_noisy"] is True and faulting["latency_sys_share"] == pytest.approx(0.5)


def test_a_loop_during_which_other_processes_took_over_a_tenth_of_the_machine_is_flagged_noisy():
    from bench.measure import stats
    from bench.measure.timing import TimedLoop

    steady = [10.0] * 10
    alone = TimedLoop(steady, user_s=1.9, sys_s=0.0, machine_busy_s=1.95, machine_total_s=2.0)
    shared = TimedLoop(steady, user_s=1.0, sys_s=0.0, machine_busy_s=2.0, machine_total_s=2.0)
    alone_cols = measure._timing_columns(alone, stats.summarize(steady), "train_step")
    shared_cols = measure._timing_columns(shared, stats.summarize(steady), "train_step")
    assert alone_cols["train_step_noisy"] is False and alone_cols["train_step_others_share"] == pytest.approx(0.025)
    assert shared_cols["train_step_noisy"] is True and shared_cols["train_step_others_share"] == pytest.approx(0.5)


def test_train_step_measurement_leaves_weights_and_batchnorm_statistics_bit_identical():
    cell = cell_for(batch_sizes=[4])
    model = measure.build_for_cell(cell).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = dict(measure.cell_columns(cell, "cpu"), flops=1, num_classes=10, input_size=32)
    settings = dict(cell.settings, speed=False, train_step=True)
    row = measure.measure_batch(model, settings, base, 4, torch.contiguous_format, final_map_pixels=64)
    assert row["train_step_ms_median"] > 0
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name  # includes running_mean/var and num_batches_tracked
    assert all(p.grad is None for p in model.parameters()) and not model.training  # eval mode, as it came


def test_cpu_training_peak_counts_weights_gradients_and_momentum_like_a_gpu():
    # a 4096x4096 linear layer: weights, gradients and SGD momentum are 64 MiB each
    model = nn.Linear(4096, 4096)
    x = torch.randn(8, 4096)
    labels = torch.randint(0, 10, (8,))
    step = train_step_fn(model, x, labels, contextlib.nullcontext)
    peak = measure._peak_memory(step, "cpu", model, x, prefix="train_")["train_peak_mem_mb"]
    expected = 3 * (4096 * 4096 + 4096) * 4 / 2**20  # 192.05 MiB; input and activations are < 0.2 MiB
    assert expected * 0.99 < peak < expected * 1.03


def test_cpu_tensor_peak_counts_a_repeated_large_temporary_once():
    def allocate():
        t = torch.ones(64, 1024, 1024)  # 256 MiB, freed at return
        return float(t[0, 0, 0])

    assert 250 < memory.cpu_tensor_peak_growth_mb(allocate, iterations=2) < 262


def test_cpu_peak_rss_stays_the_lifetime_peak_after_a_later_measurement_resets_the_kernels_counter():
    big = torch.ones(96, 1024, 1024)  # 384 MiB resident
    high = memory.process_peak_rss_mb()
    del big
    memory.cpu_peak_growth_mb(lambda: torch.ones(4, 1024, 1024).sum(), iterations=1)  # resets VmHWM
    assert high > 384
    # (the kernel counts RSS in per-CPU batches: its own readings wobble by a fraction of a MiB)
    assert memory.process_peak_rss_mb() >= high - 1


def test_a_cells_memory_figures_do_not_depend_on_the_cells_measured_before_it():
    # (its timings are checked the same way, on a quiet machine, by benchmarks/order_independence.py)
    target = cell_for(batch_sizes=[4], repeats=2)
    alone = measure.measure_cell(target)[0]
    measure.measure_cell(cell_for(preset="resnet32", batch_sizes=[8], repeats=2))  # trains its own model first
    after = measure.measure_cell(target)[0]
    assert after["peak_mem_mb"] == pytest.approx(alone["peak_mem_mb"], rel=0.01)
    assert after["train_peak_mem_mb"] == pytest.approx(alone["train_peak_mem_mb"], rel=0.01)
    assert after["cpu_malloc"] == alone["cpu_malloc"]
