"""How long a run will take, said before its first cell.

The work of a cell is counted analytically: training costs about 3x the
forward MACs per image (backward ~ 2x forward), evaluation and BatchNorm
recalibration 1x, each timed loop of the speed measurement its time budget.
A rate in MACs per second turns work into time. The rate comes from earlier
rows of the same output file where they have training throughput (the
machine's own record for these models), else from a probe of a few seconds:
a few training steps on this device of the grid's heaviest model among those
a probe can afford (a step of a few tenths of a second, a few hundred MB).

The probe runs in a child process with a time limit, so that it can never
stop the run: a probe that fails, is killed (the OOM killer under a tight
cgroup) or runs over means no estimate, and the run goes on. A grid with no
affordable model gets no probe. ``--no-estimate`` turns the whole thing off.

It is a rough figure (one rate for every model; grouped convolutions and
narrow layers run well below a plain ResNet's MAC rate on a CPU, and a busy
machine skews the probe), there to tell a 9-hour run from a 3-minute one.
"""
from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from models import ModelConfig, get_preset, model_complexity

from bench.errors import one_line
from bench.train.recipe import for_device, resolve

# Training costs ~3 forward passes per image (forward + backward ~ 2x forward).
TRAIN_FACTOR = 3
# Below this the run is short anyway: no estimate, no probe. A pessimistic rate
# (a slow 2-core CPU on grouped convolutions) decides, so a long run is never missed.
SILENT_BELOW_S = 60.0
PESSIMISTIC_MACS_PER_S = 5e9
PROBE_STEP_S = 0.3  # a probe step at the pessimistic rate; the probe takes ~5 of them
PROBE_MAX_STEP_S = 3.0  # a model whose 2-image step takes longer at the pessimistic rate is not probed
PROBE_MEMORY_BYTES = 256 << 20  # what a probe's training step may need (weights, optimizer, activations)
PROBE_TIMEOUT_S = 120.0  # the child's limit: interpreter and torch start-up (slow on a busy machine) and the steps
PER_CELL_OVERHEAD_S = 2.0  # model build, complexity counts (fvcore), memory probes
# Images per split when no subset is given (bench/train/data.py).
_SPLITS = {"cifar10": (50000, 10000), "synthetic": (10000, 2000)}


@dataclass
class Work:
    """A cell's work: MAC-equivalents to compute, plus seconds that do not scale with the rate."""

    macs: float = 0.0
    fixed_s: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.macs + other.macs, self.fixed_s + other.fixed_s)

    def seconds(self, macs_per_s: float) -> float:
        return self.macs / macs_per_s + self.fixed_s


def cell_work(cell: Any) -> Work:
    """The work of one :class:`bench.grid.Cell`: training, evaluations and the timed loops."""
    s = cell.settings
    macs = float(model_complexity(cell.model).macs)
    work = Work(fixed_s=PER_CELL_OVERHEAD_S)
    loops = int(bool(s.get("speed"))) + int(bool(s.get("train_step")))
    for batch in s.get("batch_sizes") or []:
        if s.get("repeats") == "auto":
            work.fixed_s += loops * float(s.get("max_time_s") or 0)
        else:
            iterations = int(s.get("repeats") or 0) + int(s.get("warmup") or 0) + 1  # +1: the memory probe
            passes = int(bool(s.get("speed"))) + TRAIN_FACTOR * int(bool(s.get("train_step")))
            work.macs += iterations * batch * macs * passes
    if s.get("train") is not None:
        config = for_device(resolve(s["train"]), s["device"])
        n_train, n_test = _SPLITS.get(config.dataset, _SPLITS["cifar10"])
        train_images = min(config.train_subset or n_train, n_train) - config.val_size
        test_images = min(config.test_subset or n_test, n_test)
        evals = math.ceil(config.epochs / config.eval_every) if config.target_acc is not None else 1
        per_eval = config.bn_recalibration + test_images * (2 if config.tta_flip is True else 1)
        per_seed = TRAIN_FACTOR * train_images * config.epochs + evals * per_eval
        work.macs += macs * per_seed * config.seeds
    return work


def total_work(cells: Iterable[Any]) -> Work:
    total = Work()
    for cell in cells:
        total = total + cell_work(cell)
    return total


def rate_from_rows(csv_path: str) -> Optional[float]:
    """MAC-equivalents per second from the output's earlier training rows (median over cells), if any."""
    if not os.path.isfile(csv_path):
        return None
    rates: Dict[str, float] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # a BOM an editor added
            for row in csv.DictReader(f):
                try:
                    rates[row["cell_id"]] = TRAIN_FACTOR * float(row["macs"]) * float(row["train_img_s"])
                except (KeyError, TypeError, ValueError):  # a speed-only or failed row: no training rate
                    continue
    except (OSError, csv.Error, UnicodeDecodeError):  # unreadable: the runner reports it; the probe stands in
        return None
    good = [r for r in rates.values() if r > 0]
    return statistics.median(good) if good else None


_enabled = True


def set_enabled(enabled: bool) -> None:
    """``--no-estimate``: no estimate line and no probe for the runs of this process."""
    global _enabled
    _enabled = enabled


def probe_batch(config: ModelConfig) -> Optional[int]:
    """The probe's batch for ``config``: a step of about PROBE_STEP_S at the pessimistic rate, 2 to 64 images,
    within PROBE_MEMORY_BYTES; None when 2 images exceed the memory or PROBE_MAX_STEP_S (no cheap probe)."""
    c = model_complexity(config)
    per_image_s = TRAIN_FACTOR * c.macs / PESSIMISTIC_MACS_PER_S
    # fp32 weights, gradients and momentum; each conv/linear output kept, with its gradient and a BN/ReLU copy
    fixed, per_image = 4 * 3 * c.params, 4 * 3 * c.acts
    if 2 * per_image_s > PROBE_MAX_STEP_S or fixed + 2 * per_image > PROBE_MEMORY_BYTES:
        return None
    by_time = int(PROBE_STEP_S / per_image_s) if per_image_s > 0 else 64
    by_memory = int((PROBE_MEMORY_BYTES - fixed) // per_image) if per_image > 0 else 64
    return max(2, min(64, by_time, by_memory))


def probe_model(cells: Sequence[Any]) -> Optional[ModelConfig]:
    """The model the probe trains: the one with the most work among those it can afford (the MAC rate
    depends on the model: a quarter-width ResNeXt trains at ~1/6 of resnet20's on a CPU)."""
    affordable = [c for c in cells if probe_batch(c.model) is not None]
    return max(affordable, key=lambda c: cell_work(c).macs).model if affordable else None


class ProbeFailed(Exception):
    """The probe gave no rate; the message says why."""


def probe_rate(device: str, config: Optional[ModelConfig] = None, steps: int = 3) -> float:
    """MAC-equivalents per second of a few training steps of ``config`` (default resnet20) on ``device``,
    measured in a child process (:class:`ProbeFailed` when it fails, is killed or runs over)."""
    config = config or get_preset("resnet20")
    if probe_batch(config) is None:
        raise ProbeFailed(f"{config.label()} is too large for a quick probe")
    from bench.run.executors import _child_env  # the harness importable in the child, wherever it started

    try:
        proc = subprocess.run(_probe_command(device, config, steps), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, env=_child_env(), timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ProbeFailed(f"the probe ran over {PROBE_TIMEOUT_S:.0f} s") from None
    except OSError as e:
        raise ProbeFailed(f"the probe could not start: {e}") from None
    if proc.returncode != 0:
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        last = (proc.stderr.strip().splitlines() or [""])[-1][:120]
        raise ProbeFailed(f"the probe failed ({why}{': ' + last if last else ''})")
    try:
        rate = float(proc.stdout.split()[-1])
    except (IndexError, ValueError):
        raise ProbeFailed("the probe printed no rate") from None
    if not (math.isfinite(rate) and rate > 0):
        raise ProbeFailed(f"the probe measured {rate:g} MAC/s")
    return rate


def _probe_command(device: str, config: ModelConfig, steps: int) -> List[str]:
    return [sys.executable, "-m", "bench.run.estimate", device, json.dumps(config.to_dict()), str(steps)]


def _measure_rate(device: str, config: ModelConfig, steps: int) -> float:
    """The probe itself, in the child: the median step after two warm-up steps counts (the first steps
    pay for the allocator and kernel selection, and a busy machine delays single steps)."""
    import torch
    from torch import nn

    from models import build_model
    from bench.measure import cpu

    macs = model_complexity(config).macs
    batch = probe_batch(config) or 2
    model = build_model(config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, config.input_size, config.input_size, device=device)
    y = torch.randint(0, config.num_classes, (batch,), device=device)
    recipe = for_device(resolve(None), device, device == "cuda" or cpu.native_bf16())
    dtype = torch.bfloat16 if recipe.precision == "bf16" else None

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()

    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return TRAIN_FACTOR * macs * batch / statistics.median(times[2:])


def format_duration(seconds: float) -> str:
    """A rough duration: 45 s, 12 min, 3.4 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(seconds: float, cells: int, device: str, source: str, quick_seconds: Optional[float]) -> str:
    """The line a run prints before its first cell."""
    where = "this CPU" if device == "cpu" else ("this GPU" if device == "cuda" else "these devices")
    text = f"estimate: ~{format_duration(seconds)} for {cells} cell(s) on {where} ({source}; rough)"
    if quick_seconds is not None:
        text += f"; add --quick for a ~{format_duration(quick_seconds)} version"
    return text


def announce(cells: Sequence[Any], csv_path: str, quick_cells: Optional[Callable[[], Sequence[Any]]] = None,
             rate: Optional[float] = None) -> Optional[str]:
    """The estimate line for a run of ``cells``, or None for a run that is short anyway.

    ``quick_cells()`` (the same grid under --quick, on the CPU; called only
    when an estimate is printed) adds the quick version's time. ``rate`` skips the rows and the probe (tests).
    """
    cells = list(cells)
    if not cells or not _enabled:
        return None
    work = total_work(cells)
    if work.seconds(PESSIMISTIC_MACS_PER_S) < SILENT_BELOW_S:
        return None
    devices = {c.settings["device"] for c in cells}
    device = devices.pop() if len(devices) == 1 else "mixed"
    source = "given rate"
    if rate is None:
        rate = rate_from_rows(csv_path)
        source = f"training speed of the earlier rows in {os.path.basename(csv_path)}"
    if rate is None:
        probed = probe_model(cells)
        if probed is None:
            return "estimate: none (no model of the grid is small enough for a quick probe; --no-estimate hides this)"
        started = time.perf_counter()
        try:
            rate = probe_rate("cuda" if device == "cuda" else "cpu", probed)
        except Exception as e:  # noqa: BLE001 - a probe must never stop a run
            return f"estimate: none ({one_line(e, 200)}); the run goes on"
        source = f"a {time.perf_counter() - started:.0f} s probe of {probed.label()}: {rate / 1e9:.0f} GMAC/s"
    quick_seconds = None
    quick = list(quick_cells()) if quick_cells is not None else []
    quick_model = probe_model(quick) if quick and device != "cpu" else None
    try:
        cpu_rate = rate if device == "cpu" else (probe_rate("cpu", quick_model) if quick_model else None)
    except Exception:  # noqa: BLE001 - no quick estimate, that is all
        cpu_rate = None
    if quick and cpu_rate:
        quick_seconds = total_work(quick).seconds(cpu_rate)
    seconds = work.seconds(rate)
    if quick_seconds is not None and quick_seconds > seconds / 2:  # the grid is already quick-sized
        quick_seconds = None
    return describe(seconds, len(cells), device, source, quick_seconds)


def quick_version(grid: Any) -> List[Any]:
    """The cells of ``grid`` under --quick (empty when they cannot be expanded)."""
    from bench.errors import GridError
    from bench.grid import expand_grid

    try:
        return expand_grid(grid.raw, grid.path, quick=True).cells
    except GridError:  # a grid whose quick section does not expand: no quick estimate
        return []


if __name__ == "__main__":  # the probe's child: python -m bench.run.estimate DEVICE CONFIG_JSON STEPS
    try:  # should memory run out (a tight cgroup), the kernel kills the probe, not the run
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
            f.write("1000")
    except OSError:
        pass
    print(_measure_rate(sys.argv[1], ModelConfig(**json.loads(sys.argv[2])), int(sys.argv[3])))
