"""A layer table: each distinct operator shape timed in isolation, stored as a resumable CSV.

Each :class:`models.layers.Layer` becomes one call as the model makes it, on
tensors of its shape: the ``nn.Module`` it holds (``nn.Conv2d`` with its
groups and stride, eval-mode ``nn.BatchNorm2d``, in-place ``nn.ReLU``,
pooling, ``nn.Linear``), or the tensor call of the block's own ``forward``
(the in-place residual add, ``torch.flatten``), in the cell's precision
(autocast) and memory format, under inference mode. Shapes are timed a chunk at a time in interleaved
rounds: every round times each shape of the chunk once (in a shuffled order)
with the harness's own loop (:func:`bench.measure.timing.timed_loop`, blocks
of calls long enough for the clock), so a drift of the machine's speed
spreads over all of them instead of biasing the ones timed during it. A
shape's entry is the median of its rounds, with the raw per-round samples
and the largest share of the machine other processes took meanwhile.

Two rows measure what the sum of operators misses: ``call`` is an
``nn.Module`` call that does nothing (the per-module cost the eager framework
adds to every conv, BN and ReLU of a model), ``op`` the cheapest dispatched
torch call (the per-op floor). The predictor reports them beside its fitted
per-layer overhead.

Rows are appended a chunk at a time (flushed and fsynced) and a shape already
in the file for the same batch, precision, memory format, threads and
fingerprint is skipped, so an interrupted build resumes where it stopped.
This module knows the shapes and the clock, not where the fingerprint comes
from: the caller passes its id (``bench.results.fingerprint``).
"""
from __future__ import annotations

import csv
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch
from torch import nn

from models.layers import Layer

from bench.measure.numerics import autocast, numeric_settings
from bench.measure.timing import PerfCounterTimer, timed_loop

COLUMNS = ("shape", "batch_size", "precision", "memory_format", "threads", "fingerprint_id", "macs",
           "ms_median", "ms_iqr", "rounds", "others_share_max", "samples_ms")
OVERHEAD_SHAPES = ("call k1 s1 g1 c1>1 h1", "op k1 s1 g1 c1>1 h1")
TableKey = Tuple[str, int, str, str, int, str]  # shape, batch, precision, memory format, threads, fingerprint id


@dataclass(frozen=True)
class TableSpec:
    """What a table's rows are measured at (and keyed by, with the shape)."""

    batch: int
    precision: str
    memory_format: str  # "contiguous" or "channels_last"
    threads: int
    fingerprint_id: str

    def key(self, shape: str) -> TableKey:
        return (shape, self.batch, self.precision, self.memory_format, self.threads, self.fingerprint_id)


def _torch_format(memory_format: str) -> torch.memory_format:
    return torch.channels_last if memory_format == "channels_last" else torch.contiguous_format


class _Nothing(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _module(layer: Layer) -> nn.Module:
    """The module a variant calls for ``layer`` (torchvision's blocks and models/resnet.py build these)."""
    k, s, g, c_in, c_out = layer.kernel, layer.stride, layer.groups, layer.c_in, layer.c_out
    if layer.kind == "conv":
        return nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2, groups=g, bias=False)
    if layer.kind == "bn":
        return nn.BatchNorm2d(c_in)
    if layer.kind == "relu":
        return nn.ReLU(inplace=True)
    if layer.kind == "maxpool":
        return nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)
    if layer.kind == "avgpool":
        return nn.AdaptiveAvgPool2d((1, 1))
    if layer.kind == "linear":
        return nn.Linear(c_in, c_out)
    raise ValueError(f"layer kind {layer.kind!r}: no operator to time")


def operator(layer: Optional[Layer], shape: str, batch: int, memory_format: str) -> Callable[[], object]:
    """One call of the operator ``layer`` describes, as the model makes it, on fresh tensors of its shape
    (``layer`` None: an overhead row of :data:`OVERHEAD_SHAPES`). Call under inference mode.

    Convolution, BN, ReLU, pooling and the classifier are called as the ``nn.Module`` the model holds, so
    an entry carries the module's own Python (``nn.BatchNorm2d.forward``'s checks, ``nn.Conv2d``'s
    ``_conv_forward``) as well as the kernel; the residual add and the flatten are the tensor calls
    the block's ``forward`` makes (``out += identity``, ``torch.flatten``)."""
    fmt = _torch_format(memory_format)
    if layer is None:
        x, nothing = torch.zeros(1), _Nothing()
        return (lambda: nothing(x)) if shape.startswith("call") else (lambda: x.view(1))

    def image(channels: int, size: int) -> torch.Tensor:
        return torch.randn(batch, channels, size, size).contiguous(memory_format=fmt)

    if layer.kind == "add":
        x, y = image(layer.c_in, layer.size), image(layer.c_in, layer.size) * 1e-6  # in place; stays finite
        return lambda: x.add_(y)
    if layer.kind == "flatten":
        x = image(layer.c_in, 1)
        return lambda: torch.flatten(x, 1)
    module = _module(layer).eval()
    if layer.kind == "bn":  # running statistics of a trained model, not the fresh 0/1
        with torch.no_grad():
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 1.5)
    x = torch.randn(batch, layer.c_in) if layer.kind == "linear" else image(layer.c_in, layer.size)
    module = module.to(memory_format=fmt) if layer.kind == "conv" else module
    return lambda: module(x)


def read_keys(path: str) -> Set[TableKey]:
    """The keys already in the table file (empty when it does not exist yet)."""
    if not os.path.exists(path):
        return set()
    with _open(path, "r") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(COLUMNS) <= set(reader.fieldnames):
            raise ValueError(f"{path}: not a layer table (expected the columns {', '.join(COLUMNS)})")
        return {(r["shape"], int(r["batch_size"]), r["precision"], r["memory_format"], int(r["threads"]),
                 r["fingerprint_id"]) for r in reader}


def _open(path: str, mode: str):
    """Open without following a symlink at ``path`` (a shared folder is untrusted)."""
    flags = os.O_RDONLY if mode == "r" else os.O_WRONLY | os.O_APPEND | os.O_CREAT
    fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(fd, mode if mode == "r" else "a", newline="")


def append_rows(path: str, rows: Sequence[Dict[str, object]], columns: Sequence[str] = COLUMNS) -> None:
    """Append ``rows`` (header first when the file is new), flushed to disk before returning."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with _open(path, "a") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def _interleaved(fns: Dict[Any, Callable[[], object]], rounds: int, block_ms: float,
                 seed: int) -> Tuple[Dict[Any, List[float]], Dict[Any, float]]:
    """Each callable's samples over ``rounds`` rounds (a shuffled order each), and the largest share of the
    machine other processes took while it was timed. Call under inference mode."""
    rng, timer = random.Random(seed), PerfCounterTimer()
    samples: Dict[Any, List[float]] = {key: [] for key in fns}
    others: Dict[Any, float] = {key: 0.0 for key in fns}
    for fn in fns.values():  # warm: oneDNN primitives created, output buffers in the allocator
        fn()
        fn()
    order = list(fns)
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            loop = timed_loop(fns[key], timer, warmup=0, repeats=1, min_block_ms=block_ms)
            samples[key].append(loop.samples[0])
            others[key] = max(others[key], loop.others_share or 0.0)
    return samples, others


def time_chunk(items: Sequence[Tuple[str, Optional[Layer]]], spec: TableSpec, rounds: int, block_ms: float,
               seed: int = 0) -> List[Dict[str, object]]:
    """Time each (shape, layer) of ``items`` in ``rounds`` interleaved rounds; one table row each."""
    with torch.inference_mode(), autocast("cpu", spec.precision):
        fns = {shape: operator(layer, shape, spec.batch, spec.memory_format) for shape, layer in items}
        samples, others = _interleaved(fns, rounds, block_ms, seed)
    macs = {shape: (layer.macs * spec.batch if layer is not None else 0) for shape, layer in items}
    return [_row(shape, spec, macs[shape], samples[shape], others[shape]) for shape, _ in items]


BLOCKED = "blocked"  # the memory_format of a layout row: input and weights already in oneDNN's layout


def blocked_conv(layer: Layer, batch: int) -> Callable[[], object]:
    """``layer``'s convolution with no layout conversion in the call: its weights reordered once
    (``torch.utils.mkldnn``) and its input the output of a preceding oneDNN convolution, as a model kept in
    oneDNN's blocked layout throughout would run it. ``operator``'s NCHW call minus this one is what the
    call's reorders cost. Checked against the NCHW module before it is returned (fp32 only)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.utils.mkldnn's modules are TorchScript: a deprecation warning
        from torch.utils import mkldnn

        conv, feed = _module(layer).eval(), nn.Conv2d(layer.c_in, layer.c_in, 1, bias=False).eval()
        blocked, blocked_feed = mkldnn.to_mkldnn(conv), mkldnn.to_mkldnn(feed)
    x = torch.randn(batch, layer.c_in, layer.size, layer.size)
    xb = blocked_feed(x.to_mkldnn())
    expected, got = conv(feed(x)), blocked(xb).to_dense()
    if not torch.allclose(expected, got, rtol=1e-3, atol=1e-3):
        raise RuntimeError(f"{layer.shape}: the blocked-layout convolution disagrees with the NCHW one")
    return lambda: blocked(xb)


def time_layouts(layers: Sequence[Layer], spec: TableSpec, rounds: int, block_ms: float,
                 seed: int = 0) -> List[Dict[str, object]]:
    """Each conv of ``layers`` as the model calls it (NCHW, ``spec``'s format) and in the blocked layout,
    all in the same interleaved rounds: two rows per shape, the second with memory_format ``blocked``."""
    convs = list(dict((layer.shape, layer) for layer in layers if layer.kind == "conv").values())
    blocked_spec = TableSpec(spec.batch, spec.precision, BLOCKED, spec.threads, spec.fingerprint_id)
    with torch.inference_mode(), numeric_settings("cpu", threads=spec.threads):
        fns: Dict[Any, Callable[[], object]] = {}
        for layer in convs:
            fns[(layer.shape, spec.memory_format)] = operator(layer, layer.shape, spec.batch, spec.memory_format)
            fns[(layer.shape, BLOCKED)] = blocked_conv(layer, spec.batch)
        samples, others = _interleaved(fns, rounds, block_ms, seed)
    return [_row(layer.shape, s, layer.macs * spec.batch, samples[(layer.shape, s.memory_format)],
                 others[(layer.shape, s.memory_format)]) for layer in convs for s in (spec, blocked_spec)]


def _row(shape: str, spec: TableSpec, macs: int, samples: List[float], others: float) -> Dict[str, object]:
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return {"shape": shape, "batch_size": spec.batch, "precision": spec.precision,
            "memory_format": spec.memory_format, "threads": spec.threads, "fingerprint_id": spec.fingerprint_id,
            "macs": macs, "ms_median": statistics.median(samples), "ms_iqr": q[2] - q[0], "rounds": len(samples),
            "others_share_max": round(others, 4), "samples_ms": " ".join(f"{v:.6g}" for v in samples)}


def build_table(path: str, layers: Iterable[Layer], spec: TableSpec, rounds: int = 7, block_ms: float = 2.0,
                chunk: int = 48, deadline: Optional[float] = None,
                progress: Callable[[str], None] = lambda text: None, retime: Iterable[str] = ()) -> int:
    """Time the shapes of ``layers`` (and the overhead rows) not yet in ``path``; rows appended per chunk.

    Stops after the chunk during which ``deadline`` (a ``time.monotonic`` value) passed. Returns the
    number of shapes still missing (0: the table is complete for these layers). Shapes in ``retime`` are
    timed again though present: their new rows are appended, and a reader takes a key's last row.
    """
    present = read_keys(path) - {spec.key(shape) for shape in retime}
    items: List[Tuple[str, Optional[Layer]]] = [(s, None) for s in OVERHEAD_SHAPES]
    items += [(layer.shape, layer) for layer in dict((layer.shape, layer) for layer in layers).values()]
    todo = [item for item in items if spec.key(item[0]) not in present]
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        t0 = time.monotonic()
        with numeric_settings("cpu", threads=spec.threads):
            rows = time_chunk(part, spec, rounds, block_ms, seed=start)
        append_rows(path, rows)
        progress(f"batch {spec.batch}: {start + len(part)}/{len(todo)} shapes timed "
                 f"({time.monotonic() - t0:.1f} s for the last {len(part)})")
        if deadline is not None and time.monotonic() > deadline:
            return len(todo) - start - len(part)
    return 0
