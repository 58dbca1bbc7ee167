"""Measure one cell: build the model, count it, time it, weigh its memory, train it.

Returns flat row dicts (one per batch size) and knows nothing of the runner
or the CLI. Running out of memory at one batch size steps down to a smaller
one when the grid allows it; any other failure propagates to the caller,
which records it as a status row.
"""
from __future__ import annotations

import contextlib
import gc
import time
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from models import build_model
from models.complexity import stage_costs

from bench.measure import memory

from bench.measure import stats
from bench.measure.counts import measure_complexity
from bench.results.samples import format_samples
from bench.run.environment import device_name as _device_name
from bench.grid import Cell
from bench.run.rows import cell_columns
from bench.measure.timing import collect_samples, make_timer

# Batch sizes tried after an out-of-memory error: 2^k and 1.5 * 2^k.
_LADDER = sorted({2 ** k for k in range(13)} | {3 * 2 ** k for k in range(12)})
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# CUDA: time blocks of iterations lasting at least this long, so event overhead is negligible.
CUDA_MIN_BLOCK_MS = 1.0
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


def build_for_cell(cell: Cell) -> nn.Module:
    """A fresh model for the cell, with pretrained weights loaded when the cell asks."""
    model = build_model(cell.model)
    if cell.pretrained:
        from models.pretrained import apply_pretrained  # only cells that ask pay for it

        weights = apply_pretrained(model, cell.preset, cell.pretrained, freeze_backbone=cell.freeze_backbone)
        model.pretrained_weights = weights  # type: ignore[attr-defined]
    return model


def autocast(device: str, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=_DTYPES[precision])


def configure_backends(settings: Dict[str, Any]) -> None:
    """Per-cell backend switches (each recorded as a column or in the sidecar)."""
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    if settings["device"] == "cuda":
        torch.backends.cudnn.benchmark = True  # autotuning happens in the warm-up
        torch.backends.cuda.matmul.allow_tf32 = settings["tf32"]
        torch.backends.cudnn.allow_tf32 = settings["tf32"]


def measure_cell(cell: Cell, train_fn: Optional[Callable[..., Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """All rows of one cell. ``train_fn`` replaces the training step (tests)."""
    s = cell.settings
    device = s["device"]
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no CUDA device")
    configure_backends(s)
    base = cell_columns(cell, _device_name(device))
    base["threads"] = torch.get_num_threads() if device == "cpu" else s.get("threads")

    model = build_for_cell(cell)
    base["pretrained"] = getattr(model, "pretrained_weights", None) or "none"
    base.update(measure_complexity(model, cell.model).as_row())

    rows: List[Dict[str, Any]] = []
    if s["speed"] or s["train_step"]:
        memory_format = torch.channels_last if s["memory_format"] == "channels_last" else torch.contiguous_format
        model = model.to(device=device, memory_format=memory_format)
        final_pixels = final_map_size(cell.model) ** 2
        for requested in s["batch_sizes"]:
            rows.append(_measure_batch_with_backoff(model, cell, base, requested, memory_format, final_pixels))
            if s.get("profile") and rows[-1]["status"] == "ok":  # extra untimed iterations, after the timed ones
                from bench.measure.profile import profile_batch
                from bench.results.profile_rows import profile_rows
                from bench.results.profile_schema import PROFILE_ROWS_KEY

                profiled = profile_batch(model, cell.model, s, rows[-1], rows[-1]["batch_size"], memory_format,
                                         lambda: autocast(device, s["precision"]))
                rows[-1][PROFILE_ROWS_KEY] = profile_rows(profiled, rows[-1])
        del model
        free_memory(device)
    else:
        rows.append(dict(base, status="ok"))

    if cell.train is not None:
        if train_fn is None:
            from bench.train.training import train_cell as train_fn  # noqa: N813 - the training entry point
        results = train_fn(lambda: build_for_cell(cell), cell.train, device=device,
                           num_classes=cell.model.num_classes, input_size=cell.model.input_size)
        for row in rows:
            status = results.get("status", "ok")
            row.update({k: v for k, v in results.items() if k in row and k not in ("status", "error")})
            if status != "ok" and row["status"] == "ok":
                row["status"], row["error"] = status, results.get("error")
    rows_peak = memory.process_peak_rss_mb()
    for row in rows:
        row["cpu_peak_rss_mb"] = rows_peak
    return rows


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
    precision = settings["precision"]
    row = dict(base, batch_size=batch, status="ok")
    size = base["input_size"]
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    timer = make_timer(device)
    min_block = CUDA_MIN_BLOCK_MS if device == "cuda" else 0.0
    flops = base["flops"]
    run_model = torch.compile(model) if settings["compile"] else model

    if settings["speed"]:
        model.eval()

        def infer():
            with torch.inference_mode(), autocast(device, precision):
                return run_model(x)

        if settings["compile"]:
            start = time.perf_counter()
            infer()
            timer.synchronize()
            row["compile_time_s"] = time.perf_counter() - start
        samples = collect_samples(infer, timer, settings["warmup"], settings["repeats"], settings["max_time_s"],
                                  min_block_ms=min_block, min_time_s=AUTO_MIN_TIME_FRACTION * settings["max_time_s"])
        summary = stats.summarize(samples)
        row.update(summary.as_columns("latency"))
        row["latency_samples_ms"] = format_samples(samples)
        row["latency_ms_per_image"] = summary.median / batch
        row["throughput_img_s"] = batch / (summary.median / 1e3)
        row["achieved_gflop_s"] = flops * batch / (summary.median / 1e3) / 1e9
        row.update(_peak_memory(infer, device, model, x, prefix=""))

    if settings["train_step"] and batch * final_map_pixels > 1:
        # (BatchNorm cannot train on a single value per channel: batch 1 with
        # a 1x1 final map, e.g. an ImageNet-stem model at 32 px, has no step.)
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        labels = torch.randint(0, base["num_classes"], (batch,), device=device)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                loss = loss_fn(run_model(x), labels)
            loss.backward()
            optimizer.step()

        samples = collect_samples(step, timer, settings["warmup"], settings["repeats"], settings["max_time_s"],
                                  min_block_ms=min_block, min_time_s=AUTO_MIN_TIME_FRACTION * settings["max_time_s"])
        summary = stats.summarize(samples)
        row.update(summary.as_columns("train_step"))
        row["train_step_samples_ms"] = format_samples(samples)
        row["train_throughput_img_s"] = batch / (summary.median / 1e3)
        # backward costs about twice the forward: the usual 3x rule for a training step
        row["train_achieved_gflop_s"] = 3 * flops * batch / (summary.median / 1e3) / 1e9
        row.update(_peak_memory(step, device, model, x, prefix="train_"))
        del optimizer
        model.zero_grad(set_to_none=True)
        model.eval()
    return row


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
    # weights and input (already resident) plus the peak growth while it runs.
    resident = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    resident += x.numel() * x.element_size()
    return {f"{prefix}peak_mem_mb": resident / memory.MIB + memory.cpu_peak_growth_mb(fn)}
