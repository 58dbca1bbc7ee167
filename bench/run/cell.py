"""Measure one cell: build the model, count it, time it, weigh its memory, train it.

Returns flat row dicts (one per batch size) and knows nothing of the runner
or the CLI. Running out of memory at one batch size steps down to a smaller
one when the grid allows it (an out-of-memory training step keeps the
inference columns, with a note); any other failure propagates to the caller,
which records it as a status row.

Every timed loop follows one rule (:data:`bench.measure.timing.TIMING_RULE`),
named in the ``timing_rule`` column. On a GPU each loop also records NVML's
clocks, temperature, power and energy (:mod:`bench.measure.nvml`), and its
noise flag comes from those (a clock that moved, a slowdown reason), not
from the CPU's system-time rule. ``cuda_graphs`` replays a captured forward;
``compile`` builds one compiled model per batch size.
"""
from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from models import build_model
from models.complexity import stage_costs

from bench.measure import allocator, memory, nvml
from bench.measure import stats
from bench.measure.counts import measure_complexity
from bench.results.image_schema import IMAGE_ROWS_KEY
from bench.results.samples import format_samples
from bench.run.environment import device_name as _device_name
from bench.grid import Cell
from bench.run import console
from bench.run.rows import cell_columns
from bench.measure.numerics import autocast, numeric_settings
from bench.measure.step import train_step_fn
from bench.measure.timing import (OTHERS_SHARE_LIMIT, SYS_SHARE_LIMIT, TIMING_RULE, TimedLoop, Timer, make_timer,
                                  timed_loop)

# Batch sizes tried after an out-of-memory error: 2^k and 1.5 * 2^k.
_LADDER = sorted({2 ** k for k in range(13)} | {3 * 2 ** k for k in range(12)})
# repeats: auto samples for at least this fraction of max_time_s before it may stop as "stable".
AUTO_MIN_TIME_FRACTION = 0.25


def next_smaller_batch(batch: int) -> Optional[int]:
    """The next batch size to try after ``batch`` ran out of memory (None below 1)."""
    smaller = [b for b in _LADDER if b < batch]
    return smaller[-1] if smaller else None


def final_map_size(config) -> int:
    """Height (= width) of the last stage's output map at the config's input size."""
    _, stages, _ = stage_costs(config)
    return stages[-1].output_size


def is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def memory_format_of(settings: Dict[str, Any]) -> torch.memory_format:
    """The torch memory format a cell's ``memory_format`` setting names."""
    return torch.channels_last if settings["memory_format"] == "channels_last" else torch.contiguous_format


def build_for_cell(cell: Cell) -> nn.Module:
    """A fresh model for the cell, with pretrained weights loaded when the cell asks."""
    model = build_model(cell.model)
    if cell.pretrained:
        from models.pretrained import apply_pretrained  # only cells that ask pay for it

        weights = apply_pretrained(model, cell.preset, cell.pretrained, freeze_backbone=cell.freeze_backbone)
        model.pretrained_weights = weights  # type: ignore[attr-defined]
    return model


def measure_cell(cell: Cell, train_fn: Optional[Callable[..., Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """All rows of one cell. ``train_fn`` replaces the training step (tests).

    Threads, cuDNN autotuning and TF32 hold for this cell only. The CPU
    allocator is a process-wide choice: the cell's ``cpu_allocator`` is put
    in place (or refused, when the process already runs the other one).
    """
    s = cell.settings
    device = s["device"]
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no CUDA device")
    # GPU cells time no host allocations that matter: they take the process as it is
    cpu_malloc = (allocator.ensure(s.get("cpu_allocator", allocator.DEFAULT_ALLOCATOR)) if device == "cpu"
                  else allocator.in_effect())
    with numeric_settings(device, threads=s.get("threads"), tf32=s["tf32"]) as applied:
        rows = _measure_cell(cell, train_fn, applied["threads"] if device == "cpu" else s.get("threads"))
    for row in rows:
        row["cpu_malloc"] = cpu_malloc
    return rows


def _measure_cell(cell: Cell, train_fn: Optional[Callable[..., Dict[str, Any]]],
                  threads: Optional[int]) -> List[Dict[str, Any]]:
    device = cell.settings["device"]
    model, base = _counted_model(cell, threads)
    if cell.settings["speed"] or cell.settings["train_step"]:
        rows = _batch_rows(model, cell, base)
        del model  # the timed model goes before training builds its own
        free_memory(device)
    else:
        rows = [dict(base, status="ok")]
    if cell.train is not None:
        _add_training_columns(rows, cell, train_fn)
    rows_peak = memory.process_peak_rss_mb()
    for row in rows:
        row["cpu_peak_rss_mb"] = rows_peak
    return rows


def _counted_model(cell: Cell, threads: Optional[int]) -> Tuple[nn.Module, Dict[str, Any]]:
    """The cell's model, and the columns all its rows share: settings, device, weights and counts."""
    device = cell.settings["device"]
    base = cell_columns(cell, _device_name(device))
    base["threads"] = threads
    model = build_for_cell(cell)
    base["pretrained"] = getattr(model, "pretrained_weights", None) or "none"
    base.update(measure_complexity(model, cell.model).as_row())
    return model, base


def _batch_rows(model: nn.Module, cell: Cell, base: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per requested batch size: timed and weighed, then profiled when the cell asks."""
    s = cell.settings
    memory_format = memory_format_of(s)
    model = model.to(device=s["device"], memory_format=memory_format)
    final_pixels = final_map_size(cell.model) ** 2
    rows: List[Dict[str, Any]] = []
    for requested in s["batch_sizes"]:
        rows.append(_measure_batch_with_backoff(model, cell, base, requested, memory_format, final_pixels))
        if s.get("profile") and rows[-1]["status"] == "ok":  # extra untimed iterations, after the timed ones
            _add_profile_rows(model, cell, rows[-1], memory_format)
    return rows


def _add_profile_rows(model: nn.Module, cell: Cell, row: Dict[str, Any], memory_format) -> None:
    from bench.measure.profile import profile_batch
    from bench.results.profile_rows import profile_rows
    from bench.results.profile_schema import PROFILE_ROWS_KEY

    s = cell.settings
    with preserved_state(model):  # its training steps must not change the next batch's model
        profiled = profile_batch(model, cell.model, s, row, row["batch_size"], memory_format,
                                 lambda: autocast(s["device"], s["precision"]))
    row[PROFILE_ROWS_KEY] = profile_rows(profiled, row)


def _add_training_columns(rows: List[Dict[str, Any]], cell: Cell,
                          train_fn: Optional[Callable[..., Dict[str, Any]]]) -> None:
    """Train the cell and put its columns on every row; a failed training marks the rows that were ok."""
    if train_fn is None:
        from bench.train.training import train_cell as train_fn  # noqa: N813 - the training entry point
    results = train_fn(lambda: build_for_cell(cell), cell.train, device=cell.settings["device"],
                       num_classes=cell.model.num_classes, input_size=cell.model.input_size,
                       on_epoch=console.epoch_callback(cell.variant))
    for row in rows:
        status = results.get("status", "ok")
        row.update({k: v for k, v in results.items() if k in row and k not in ("status", "error")})
        if status != "ok" and row["status"] == "ok":
            row["status"], row["error"] = status, results.get("error")
    if rows and results.get(IMAGE_ROWS_KEY):  # per-image correctness, for RUN.images.csv (bench/run/runner.py)
        rows[0][IMAGE_ROWS_KEY] = results[IMAGE_ROWS_KEY]


def _measure_batch_with_backoff(model: nn.Module, cell: Cell, base: Dict[str, Any], requested: int,
                                memory_format, final_map_pixels: int) -> Dict[str, Any]:
    device = cell.settings["device"]
    batch: Optional[int] = requested
    last_error = ""
    while batch is not None:
        try:
            row = measure_batch(model, cell.settings, base, batch, memory_format, final_map_pixels)
            row["requested_batch_size"] = requested
            return row
        except Exception as e:  # noqa: BLE001 - only OOM is handled here
            if not is_oom(e):
                raise
            last_error = f"out of memory at batch {batch}: {' '.join(str(e).split())[:200]}"
        # Freed here, not in the except block: until it ends, the exception's traceback
        # holds the failed attempt's frames and so its tensors.
        free_memory(device)
        batch = next_smaller_batch(batch) if cell.settings["oom_backoff"] else None
    row = dict(base, status="oom", error=last_error, batch_size=None, requested_batch_size=requested)
    return row


def measure_batch(model: nn.Module, settings: Dict[str, Any], base: Dict[str, Any], batch: int,
                  memory_format, final_map_pixels: int = 2) -> Dict[str, Any]:
    """Latency, throughput, training-step time and peak memory at one batch size.

    ``final_map_pixels`` (pixels of the last feature map) decides whether a
    training step is possible at all at this batch size.
    """
    device = settings["device"]
    row = dict(base, batch_size=batch, status="ok", timing_rule=TIMING_RULE)
    size = base["input_size"]
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    timed = _TimedBatch(model, _compiled(model) if settings["compile"] else model, settings, base, x, batch,
                        make_timer(device))

    if settings["speed"]:
        row.update(_inference_columns(timed))

    if settings["train_step"] and batch * final_map_pixels > 1:
        # (BatchNorm cannot train on a single value per channel: batch 1 with
        # a 1x1 final map, e.g. an ImageNet-stem model at 32 px, has no step.)
        row.update(_train_step_or_oom(timed))
    if settings["compile"]:
        row["compile_recompiles"] = timed.recompiles
    row["notes"] = "; ".join(dict.fromkeys(timed.notes)) or None
    return row


def _train_step_or_oom(t: "_TimedBatch") -> Dict[str, Any]:
    """The training-step columns; a step that runs out of memory leaves them empty with a note.

    The steps update weights and BatchNorm statistics: the model is put back
    as it was (also after an error), so what is timed next (the next batch
    size, the next cell's shared weights) does not depend on this measurement.
    """
    try:
        with preserved_state(t.model):
            return _train_step_columns(t)
    except Exception as e:  # noqa: BLE001 - only OOM is handled here
        if not is_oom(e):
            raise
        t.notes.append(f"training step out of memory at batch {t.batch} (inference kept): "
                       f"{' '.join(str(e).split())[:120]}")
    free_memory(t.settings["device"])  # after the except block: the traceback no longer holds the tensors
    return {}


def _dynamo_graphs() -> int:
    """Graphs torch.compile has compiled so far in this process (dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _compiled(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A compiled model for one batch size alone: dynamo's caches are reset, so its compile time is its own
    (not a recompile of the previous batch size's graphs with dynamic shapes, nor a cache hit reading 0 s)."""
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False)


def _graphed(fn: Callable[[], object], warmup: int = 3) -> Callable[[], object]:
    """Capture one call of ``fn`` in a CUDA graph and return its replay.

    The warm-up calls run on a side stream, as capture requires (cuDNN's
    autotuning and the allocator's first requests happen there, not in the
    graph). The input tensor is the one the graph was captured with.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph.replay


@dataclass
class _TimedBatch:
    """What inference and the training step at one batch size are measured with."""

    model: nn.Module
    run_model: Callable[[torch.Tensor], torch.Tensor]  # the model, compiled when the cell asks
    settings: Dict[str, Any]
    base: Dict[str, Any]  # the cell's columns (flops, num_classes)
    x: torch.Tensor  # the input batch
    batch: int
    timer: Timer
    notes: List[str] = field(default_factory=list)  # what a reader should know about the row
    recompiles: int = 0  # graphs torch.compile compiled during the timed loops


def _inference_columns(t: _TimedBatch) -> Dict[str, Any]:
    """Compile time (when compiled), latency, throughput and peak memory of inference on the batch."""
    device, precision = t.settings["device"], t.settings["precision"]
    t.model.eval()

    def infer():
        with torch.inference_mode(), autocast(device, precision):
            return t.run_model(t.x)

    out: Dict[str, Any] = {"cuda_graphs": False}
    if t.settings["compile"]:
        out["compile_time_s"] = _first_call_s(t, infer)
    timed = infer
    if t.settings.get("cuda_graphs"):
        if device != "cuda":
            t.notes.append("cuda_graphs ignored: CUDA graphs need a GPU, the CPU timed eager calls")
        elif t.settings["compile"]:
            raise RuntimeError("cuda_graphs: true with compile: true: torch.compile captures graphs itself "
                               "(mode reduce-overhead); set one of them")
        else:
            timed = _graphed(infer)
            out["cuda_graphs"] = True
    timing, summary = _timed_columns(t, timed, "latency", "", t.base["flops"])
    out.update(timing)
    out["latency_ms_per_image"] = summary.median / t.batch
    del timed  # a captured graph's private pool goes before memory is weighed, on the eager forward
    out.update(_peak_memory(infer, device, t.model, t.x, prefix=""))
    return out


def _first_call_s(t: _TimedBatch, fn: Callable[[], object]) -> float:
    """Wall time of the first call of a compiled function (the compile), synchronised."""
    start = time.perf_counter()
    fn()
    t.timer.synchronize()
    return time.perf_counter() - start


def _timed_columns(t: _TimedBatch, fn: Callable[[], object], prefix: str, rate_prefix: str,
                   flop_per_image: float) -> Tuple[Dict[str, Any], stats.Summary]:
    """Time ``fn`` (one pass over the batch): its timing columns, and the images/s and GFLOP/s they mean.

    Inference and the training step are timed alike; only their column prefixes differ
    (``latency``/"" and ``train_step``/``train_``). Returns the columns and the summary.
    """
    settings = t.settings
    readings, why = nvml.loop_readings() if settings["device"] == "cuda" else (None, "")
    if why:
        t.notes.append(f"no GPU readings: {why}")
    graphs = _dynamo_graphs() if settings["compile"] else 0
    loop = timed_loop(fn, t.timer, settings["warmup"], settings["repeats"], settings["max_time_s"],
                      min_time_s=AUTO_MIN_TIME_FRACTION * settings["max_time_s"],
                      observe=readings.read if readings else None)
    if settings["compile"]:
        t.recompiles += _dynamo_graphs() - graphs
    summary = stats.summarize(loop.samples)
    gpu: Optional[Dict[str, Any]] = None
    if readings is not None:
        gpu, notes = readings.columns(prefix, loop.wall_s, t.batch * len(loop.samples))
        t.notes.extend(notes)
    out = _timing_columns(loop, summary, prefix, settings["device"], gpu)
    out[f"{rate_prefix}throughput_img_s"] = t.batch / (summary.median / 1e3)
    out[f"{rate_prefix}achieved_gflop_s"] = flop_per_image * t.batch / (summary.median / 1e3) / 1e9
    return out, summary


@contextlib.contextmanager
def preserved_state(model: nn.Module):
    """Run a block that trains ``model``; restore its parameters, buffers, grads and mode afterwards.

    The copy is kept on the host, so it does not count in a GPU's peak memory.
    """
    saved = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    was_training = model.training
    try:
        yield
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
        model.train(was_training)


def _train_step_columns(t: _TimedBatch) -> Dict[str, Any]:
    """Time, throughput and peak memory of an SGD training step on the batch (compile time when compiled)."""
    device, precision = t.settings["device"], t.settings["precision"]
    t.model.train()
    labels = torch.randint(0, t.base["num_classes"], (t.batch,), device=device)

    def new_step() -> Callable[[], None]:
        return train_step_fn(t.model, t.x, labels, lambda: autocast(device, precision), precision, t.run_model)

    step = new_step()
    out: Dict[str, Any] = {}
    if t.settings["compile"]:  # train mode and backward are graphs of their own
        out["train_compile_time_s"] = _first_call_s(t, step)
    # backward costs about twice the forward: the usual 3x rule for a training step
    timing, _ = _timed_columns(t, step, "train_step", "train_", 3 * t.base["flops"])
    out.update(timing)
    del step
    # Memory is weighed from a fresh start (no gradients, no momentum yet), so
    # the peak counts them as a GPU's max_memory_allocated does.
    t.model.zero_grad(set_to_none=True)
    out.update(_peak_memory(new_step(), device, t.model, t.x, prefix="train_"))
    return out


def _timing_columns(loop: TimedLoop, summary: stats.Summary, prefix: str, device: str = "cpu",
                    gpu: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Summary columns, samples, CPU shares, host share and GPU readings of one timed loop.

    Noise beyond the IQR rule: on the CPU, a loop that spent over 10% of its
    CPU time in the kernel (it timed page faults and allocator calls as much
    as the model), or during which other processes took over 10% of the
    machine's CPU time (it timed contention for the cores). On a GPU those
    do not apply (the host mostly waits on the device): an SM clock that
    moved or a slowdown reason during the loop does (``gpu``: the loop's
    NVML columns, None without NVML).
    """
    out = summary.as_columns(prefix)
    share, others = loop.sys_share, loop.others_share
    out[f"{prefix}_samples_ms"] = format_samples(loop.samples)
    out[f"{prefix}_sys_share"] = share
    out[f"{prefix}_others_share"] = others
    out[f"{prefix}_host_share"] = loop.host_share
    out.update(gpu or {})
    if device == "cuda":
        noisy = gpu is not None and nvml.gpu_noisy(prefix, gpu)
    else:
        noisy = (share is not None and share > SYS_SHARE_LIMIT) or (others is not None and others > OTHERS_SHARE_LIMIT)
    if noisy:
        out[f"{prefix}_noisy"] = True
    return out


def _peak_memory(fn: Callable[[], object], device: str, model: nn.Module, x: torch.Tensor,
                 prefix: str) -> Dict[str, Any]:
    if device == "cuda":
        peak = memory.gpu_peak(fn)
        return {
            f"{prefix}peak_mem_mb": peak["alloc"],
            f"{prefix}gpu_peak_alloc_mb": peak["alloc"],
            f"{prefix}gpu_peak_reserved_mb": peak["reserved"],
            f"{prefix}gpu_nvml_used_mb": peak["nvml"],
        }
    # CPU: like max_memory_allocated on a GPU, count what the workload holds:
    # weights, buffers and input (already resident) plus the peak growth while
    # it runs (for a training step from a fresh start: gradients, optimizer
    # state and activations).
    resident = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    resident += x.numel() * x.element_size()
    growth = memory.cpu_tensor_peak_growth_mb(fn)
    if growth is None:  # no profiler memory events: the resident set is the next best witness
        growth = memory.cpu_peak_growth_mb(fn)
    return {f"{prefix}peak_mem_mb": resident / memory.MIB + growth}
