"""The result table's columns: one registry that names them, in order, with meaning, unit and rule.

Every result CSV has exactly these columns, on CPU and GPU alike (a metric
that does not apply is left empty), so files from different machines and
runs concatenate without surprises. Everything else about a column is
generated from :data:`REGISTRY`:

* the validation rules every reader applies (``RULES`` in :mod:`bench.results.validate`);
* the analysis column types (``NUMERIC``/``TEXT`` in :mod:`bench.analysis.reports`);
* the column table of ``docs/reference.md`` (``python -m bench.results.schema --write docs/reference.md``;
  ``tests/test_registry.py`` fails when the committed table differs).

Adding a column is one :class:`Column` entry below, at its place in the order.

Convention: ``macs`` counts one multiply-add as 1; ``flops`` is ``2 * macs``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from bench import choices
from bench.choices import FAILED_STATUSES, STATUS_OK  # noqa: F401  (re-exported: readers know them from here)

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Rule:
    """What one column may hold. Empty is always allowed (a metric that does not apply)."""

    kind: str  # number, int, bool, samples (';'-separated numbers), ints (';'-separated ints), choice, text
    lo: Optional[float] = None
    hi: Optional[float] = None
    above: bool = False  # lo itself is excluded (> lo rather than >= lo)
    choices: Tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        """A number column: readers type it as float (NaN when empty)."""
        return self.kind in ("number", "int")

    def expected(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        what = {"number": "a finite number", "int": "a whole number", "samples": "';'-separated finite numbers",
                "ints": "';'-separated whole numbers"}.get(self.kind, "text")
        bounds = []
        if self.lo is not None:
            bounds.append(f"{'>' if self.above else '>='} {self.lo:g}")
        if self.hi is not None:
            bounds.append(f"<= {self.hi:g}")
        return what + (" " + " and ".join(bounds) if bounds else "")

    def check(self, text: str) -> None:
        """Raise ValueError when ``text`` (not empty) breaks the rule."""
        if self.kind == "text":
            return
        if self.kind == "choice":
            if text.strip().lower() not in self.choices:
                raise ValueError
            return
        if self.kind == "bool":
            if text.strip().lower() not in ("true", "false"):
                raise ValueError
            return
        parts = text.split(";") if self.kind in ("samples", "ints") else [text]
        for part in parts:
            self._check_number(part.strip())

    def _check_number(self, text: str) -> None:
        value = float(text)  # ValueError for 'abc' and ''
        if not math.isfinite(value):
            raise ValueError
        if self.kind in ("int", "ints") and value != int(value):
            raise ValueError
        if self.lo is not None and (value <= self.lo if self.above else value < self.lo):
            raise ValueError
        if self.hi is not None and value > self.hi:
            raise ValueError


def one_of(values: Sequence[str]) -> Rule:
    return Rule("choice", choices=tuple(values))


TEXT = Rule("text")
BOOL = Rule("bool")
COUNT = Rule("int", 1)  # a count of things that exist: at least one
POSITIVE = Rule("number", 0, above=True)
NON_NEGATIVE = Rule("number", 0)  # CPU memory figures are growths of the resident set, so 0 is possible
FRACTION = Rule("number", 0, 1)
TIMES = Rule("samples", 0, above=True)
SEED_LIST = Rule("ints", 0)


@dataclass(frozen=True)
class Column:
    name: str
    meaning: str
    unit: str  # "" when the value has no unit (a name, a count, a flag)
    rule: Rule



def _gpu_loop_columns(prefix: str, what: str) -> Tuple[Column, ...]:
    """The GPU readings of one timed loop (inference or training step): host share, clocks, power, energy."""
    return (
        Column(f"{prefix}_host_share", f"GPU: median over the timed {what} of the host's time in the call "
               "(launching, until it returns) / the call's CUDA-event time; near 1 the GPU waited for launches "
               "(host-bound), well below 1 the device was the bottleneck; empty on the CPU", "fraction", FRACTION),
        Column(f"{prefix}_sm_clock_mhz", f"GPU: median SM clock over NVML readings taken before the timed {what} "
               "and after each one (outside the timed calls)", "MHz", POSITIVE),
        Column(f"{prefix}_sm_clock_change", f"GPU: (max - min) / max of those SM clock readings; above 0.02 the "
               f"{what} ran at a changing clock (noisy)", "fraction", FRACTION),
        Column(f"{prefix}_mem_clock_mhz", "GPU: median memory clock over the same readings", "MHz", POSITIVE),
        Column(f"{prefix}_gpu_temp_c", f"GPU: highest temperature read during the {what}", "deg C",
               Rule("number", -50, 150)),
        Column(f"{prefix}_power_w", f"GPU: median power draw read during the {what}", "W", NON_NEGATIVE),
        Column(f"{prefix}_energy_j_per_image", f"GPU: NVML total-energy counter over the timed {what} (gaps "
               "between synchronised samples included) / images processed; empty with a note when the loop was "
               "under 1 s (the counter's refresh period makes it coarse) or NVML has no counter", "J", NON_NEGATIVE),
        Column(f"{prefix}_clock_events", f"GPU: NVML clock-event (throttle) reasons seen during the {what}, "
               "';'-separated, GpuIdle left out; none when none; a slowdown (power cap, thermal, HW slowdown, sync "
               "boost...) marks the loop noisy", "", TEXT),
    )


C = Column
# Grouped: identity, model, settings, status, complexity, architecture, speed, memory, accuracy.
REGISTRY: Tuple[Column, ...] = (
    # identity
    C("run_id", "id of the run that wrote the row (UTC start time + short hash)", "", TEXT),
    C("cell_id", "stable hash of the cell's resolved settings (12 hex digits)", "", TEXT),
    C("variant_id", "stable hash of the model config and input size (12 hex digits): the same architecture in any "
      "run, device or recipe; report and compare join training and speed rows on it", "", TEXT),
    C("variant", "readable model name: the preset, or one derived from the fields", "", TEXT),
    C("preset", "preset name the cell started from (empty if none)", "", TEXT),
    C("family", "resnet (cardinality 1) or resnext", "", TEXT),
    # model
    C("block", "residual block", "", one_of(choices.BLOCKS)),
    C("depth", "weighted layers (stem conv + block convs + classifier)", "", COUNT),
    C("blocks", "blocks per stage, e.g. 3-4-6-3", "", TEXT),
    C("cardinality", "groups of the 3x3 conv (1 = ResNet)", "", COUNT),
    C("bottleneck_width", "width per group d (the 4 in 32x4d)", "channels", COUNT),
    C("width_multiplier", "multiplier on stage widths", "", POSITIVE),
    C("stem", "imagenet (7x7/2 + max-pool) or cifar (3x3/1)", "", one_of(choices.STEMS)),
    C("layout", "stage layout: imagenet (4 stages) or cifar (3 stages)", "", one_of(choices.LAYOUTS)),
    C("num_classes", "classifier outputs", "", COUNT),
    C("input_size", "input height = width", "px", COUNT),
    C("pretrained", "weights the cell started from: none, or the torchvision weights name", "", TEXT),
    # settings
    C("device", "what the row was measured on", "", one_of(choices.DEVICES)),
    C("device_name", "CPU model or GPU name", "", TEXT),
    C("precision", "autocast dtype of the measurement (fp32: none)", "", one_of(choices.PRECISIONS)),
    C("tf32", "TF32 matmul/conv allowed (GPU fp32 only)", "", BOOL),
    C("memory_format", "tensor layout of the model and input", "", one_of(choices.MEMORY_FORMATS)),
    C("compile", "torch.compile used", "", BOOL),
    C("threads", "torch intra-op threads (CPU)", "", COUNT),
    C("cpu_malloc", "CPU heap allocator in effect: glibc-tuned (thresholds raised: cpu_allocator tuned), glibc "
      "(defaults: cpu_allocator system), jemalloc or tcmalloc (preloaded), glibc-tuned-32mib (old glibc: only "
      "32 MiB allowed), default (no glibc)", "", TEXT),
    C("batch_size", "images per forward pass for this row", "images", COUNT),
    C("requested_batch_size", "batch size the grid asked for (differs after OOM back-off)", "images", COUNT),
    C("cuda_graphs", "inference timed as replays of a captured CUDA graph (grid cuda_graphs: true, GPU only; the "
      "training step stays eager)", "", BOOL),
    C("timing_rule", "how each timing sample was taken: single-call = one call started with the device idle (the "
      "previous sample ended with a synchronize), CUDA events on a GPU, perf_counter on the CPU; empty in files "
      "from before this column (on a GPU, calls under 1 ms were then timed as pipelined block means)", "",
      one_of(("single-call",))),
    # status
    C("status", "outcome of the cell", "", one_of(choices.STATUSES)),
    C("error", "one-line message for a failed cell", "", TEXT),
    C("notes", "what a reader should know about an ok row, '; '-separated: a training step that ran out of "
      "memory (its columns empty, inference kept), an energy left empty and why, cuda_graphs ignored on the CPU",
      "", TEXT),
    # complexity (per image, exact)
    C("params", "learnable parameters", "", COUNT),
    C("macs", "multiply-accumulates per image, conv + linear (classifier bias adds included)", "MACs", COUNT),
    C("flops", "floating-point operations per image = 2 x macs", "FLOPs", COUNT),
    C("activations", "output elements of conv and linear layers per image", "", COUNT),
    C("counters", "the independent counts that agreed exactly on params, macs and activations: analytic+fvcore "
      "(fvcore installed) or analytic+flop_counter (torch's FlopCounterMode, where fvcore is absent)", "",
      one_of(("analytic+fvcore", "analytic+flop_counter"))),
    # architecture
    C("stage_channels", "output channels per stage, e.g. 256-512-1024-2048", "", TEXT),
    C("stage_strides", "stride of each stage's output relative to the input, e.g. 4-8-16-32", "", TEXT),
    C("feature_dim", "channels of the final feature map (classifier input)", "channels", COUNT),
    C("groups", "groups of the 3x3 convs (cardinality)", "", COUNT),
    # inference speed
    C("latency_ms_median", "median time of one forward pass of the whole batch", "ms", POSITIVE),
    C("latency_ms_p90", "90th percentile of the forward time", "ms", POSITIVE),
    C("latency_ms_iqr", "interquartile range of the forward time", "ms", NON_NEGATIVE),
    C("latency_cv", "coefficient of variation (std / mean) of the forward time", "", NON_NEGATIVE),
    C("latency_noisy", "true when IQR / median > 0.10; CPU rows also when latency_sys_share > 0.10 or "
      "latency_others_share > 0.10; GPU rows (not the CPU rules) also when latency_sm_clock_change > 0.02 or "
      "latency_clock_events has a slowdown", "", BOOL),
    C("latency_n", "timed repetitions kept", "", COUNT),
    C("latency_samples_ms", "raw per-repetition forward times, ';'-separated", "ms", TIMES),
    C("latency_sys_share", "system / (user + system) CPU time of the process over the timed forward passes; "
      "above 0.10 the loop timed page faults, not only the model", "fraction", FRACTION),
    C("latency_others_share", "share of the machine's CPU time (all cores) that other processes or the hypervisor "
      "(steal) took during the timed forward passes, from /proc/stat; above 0.10 the loop timed contention",
      "fraction", FRACTION),
    C("latency_ms_per_image", "latency_ms_median / batch_size", "ms", POSITIVE),
    C("throughput_img_s", "batch_size / median forward time", "images/s", POSITIVE),
    C("achieved_gflop_s", "flops x batch_size / median forward time", "GFLOP/s", POSITIVE),
    C("compile_time_s", "torch.compile warm-up time, excluded from timings", "s", NON_NEGATIVE),
    C("compile_recompiles", "graphs torch.compile compiled during this batch size's timed loops (inference and "
      "training step; each batch size has its own compiled model): 0 expected, more means a sample timed a compile",
      "", Rule("int", 0)),
    *_gpu_loop_columns("latency", "forward passes"),
    # training-step speed: the timed loop of single steps, not the training run (train_img_s)
    C("train_step_ms_median", "median of one timed training step (forward + backward + optimizer step) on a "
      "fixed batch", "ms", POSITIVE),
    C("train_step_ms_p90", "90th percentile of the training step", "ms", POSITIVE),
    C("train_step_ms_iqr", "interquartile range of the training step", "ms", NON_NEGATIVE),
    C("train_step_cv", "coefficient of variation of the training step", "", NON_NEGATIVE),
    C("train_step_noisy", "true when IQR / median > 0.10; CPU rows also when train_step_sys_share > 0.10 or "
      "train_step_others_share > 0.10; GPU rows also when train_step_sm_clock_change > 0.02 or "
      "train_step_clock_events has a slowdown", "", BOOL),
    C("train_step_n", "timed training steps kept", "", COUNT),
    C("train_step_samples_ms", "raw per-step times, ';'-separated", "ms", TIMES),
    C("train_step_sys_share", "system / (user + system) CPU time of the process over the timed training steps",
      "fraction", FRACTION),
    C("train_step_others_share", "share of the machine's CPU time that other processes or the hypervisor took "
      "during the timed training steps", "fraction", FRACTION),
    C("train_throughput_img_s", "batch_size / train_step_ms_median: the timed training step's rate (model only, "
      "no data loading or evaluation); not train_img_s, the rate of the whole training run", "images/s", POSITIVE),
    C("train_achieved_gflop_s", "3 x flops x batch_size / median step (backward ~ 2x forward)", "GFLOP/s",
      POSITIVE),
    C("train_compile_time_s", "torch.compile: first training step (train-mode and backward graphs compiled), "
      "excluded from timings", "s", NON_NEGATIVE),
    *_gpu_loop_columns("train_step", "training steps"),
    # memory
    C("peak_mem_mb", "peak memory of inference: GPU max_memory_allocated, or on CPU weights + buffers + input "
      "plus the peak RSS growth while it runs", "MiB", NON_NEGATIVE),
    C("gpu_peak_alloc_mb", "inference: torch.cuda.max_memory_allocated", "MiB", NON_NEGATIVE),
    C("gpu_peak_reserved_mb", "inference: torch.cuda.max_memory_reserved", "MiB", NON_NEGATIVE),
    C("gpu_nvml_used_mb", "inference: device memory in use per NVML (all processes, context included)", "MiB",
      NON_NEGATIVE),
    C("train_peak_mem_mb", "peak memory of training steps from a fresh start (same source as peak_mem_mb): "
      "weights, gradients, optimizer state and activations", "MiB", NON_NEGATIVE),
    C("train_gpu_peak_alloc_mb", "training step: torch.cuda.max_memory_allocated", "MiB", NON_NEGATIVE),
    C("train_gpu_peak_reserved_mb", "training step: torch.cuda.max_memory_reserved", "MiB", NON_NEGATIVE),
    C("train_gpu_nvml_used_mb", "training step: device memory in use per NVML", "MiB", NON_NEGATIVE),
    C("cpu_peak_rss_mb", "process lifetime peak resident set size after the cell (kept across the peak resets "
      "of the CPU memory measurements)", "MiB", NON_NEGATIVE),
    # accuracy (short-schedule training)
    C("dataset", "cifar10, cifar10-subset-N or synthetic; -test-M appended when a test subset of M images was used",
      "", TEXT),
    C("epochs", "training epochs", "", COUNT),
    C("optimizer", "sgd (Nesterov) or adam", "", one_of(choices.OPTIMIZERS)),
    C("lr", "peak learning rate", "", POSITIVE),
    C("train_batch_size", "training batch size", "images", COUNT),
    C("train_precision", "autocast dtype training used (precision auto resolved on the device)", "",
      one_of(choices.PRECISIONS)),
    C("resize", "training/test input size after on-device resize (empty = native 32 px)", "px", COUNT),
    C("n_seeds", "seeds trained (the recipe's train.seeds)", "", COUNT),
    C("seeds", "the seeds, ';'-separated", "", SEED_LIST),
    C("top1_acc", "mean test top-1 accuracy over seeds", "fraction", FRACTION),
    C("top1_acc_std", "sample std of test top-1 over seeds (empty for one seed)", "fraction", FRACTION),
    C("top1_acc_seeds", "per-seed test top-1, ';'-separated", "fraction", Rule("samples", 0, 1)),
    C("test_images", "test images behind each seed's top1_acc (the sampling error of an accuracy depends on it)",
      "images", COUNT),
    C("top1_correct_seeds", "per-seed correctly classified test images, ';'-separated", "images", SEED_LIST),
    C("val_acc", "mean validation top-1 (held out from the training set)", "fraction", FRACTION),
    C("train_time_s", "training time, evaluation excluded, mean over seeds", "s", NON_NEGATIVE),
    C("train_img_s", "training images per second over the whole training run (data pipeline and every step; "
      "evaluation excluded); not train_throughput_img_s, the timed single step", "images/s", POSITIVE),
    C("target_acc", "accuracy target for time_to_target_s", "fraction", FRACTION),
    C("time_to_target_s", "training time until test accuracy first reached target_acc (empty if never)", "s",
      NON_NEGATIVE),
    C("deterministic", "training ran with deterministic kernels (recipe deterministic: auto = true on the CPU, "
      "false on a GPU, where deterministic cuDNN turns autotuning off and picks slower kernels)", "", BOOL),
)
del C

COLUMNS: List[str] = [c.name for c in REGISTRY]
BY_NAME: Dict[str, Column] = {c.name: c for c in REGISTRY}


def empty_row() -> Dict[str, object]:
    return {name: None for name in COLUMNS}


# The columns docs/gpu-columns.md explains (its table is generated from their docs; a test checks it).
GPU_COLUMNS: List[str] = [c.name for c in REGISTRY if c.meaning.startswith("GPU:")] + [
    "tf32", "cuda_graphs", "timing_rule", "notes", "compile_time_s", "compile_recompiles", "train_compile_time_s",
    "gpu_peak_alloc_mb", "gpu_peak_reserved_mb", "gpu_nvml_used_mb", "deterministic"]


def markdown_table(names: Optional[Sequence[str]] = None) -> str:
    """The column table of ``docs/reference.md`` (all columns, or ``names`` in registry order)."""
    lines = ["| column | meaning | unit | values |", "|---|---|---|---|"]
    lines += [f"| `{c.name}` | {c.meaning} | {c.unit or '-'} | {c.rule.expected()} |" for c in REGISTRY
              if names is None or c.name in names]
    return "\n".join(lines)


# --------------------------------------------------------------------------- generated doc sections


def generated_sections() -> Dict[str, str]:
    """Every generated table of ``docs/reference.md``, by the name its markers carry."""
    from bench.results import image_schema, profile_schema

    return {"columns": markdown_table(), "choices": choices.markdown_table(),
            "profile-columns": profile_schema.markdown_table(), "image-columns": image_schema.markdown_table()}


WRITE_COMMAND = "python -m bench.results.schema --write FILE"


def marker(name: str, end: bool = False, command: str = WRITE_COMMAND) -> str:
    """The line that opens (or closes) a generated section, naming the command that writes it."""
    return f"<!-- generated: {name} {'end' if end else 'start'} ({command}) -->"


def fill_sections(text: str, sections: Dict[str, str], command: str = WRITE_COMMAND) -> str:
    """``text`` with every marked section replaced by its generated table; ValueError for a missing marker."""
    for name, table in sections.items():
        start, end = marker(name, command=command), marker(name, end=True, command=command)
        if start not in text or end not in text:
            raise ValueError(f"no {name} section (expected the line {start!r})")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{table}\n{end}{tail}"
    return text


def main(argv: Sequence[str]) -> int:
    """Print the column table, or rewrite the generated sections of a doc with ``--write FILE``."""
    if len(argv) == 2 and argv[0] == "--write":
        with open(argv[1], encoding="utf-8") as f:
            text = f.read()
        with open(argv[1], "w", encoding="utf-8") as f:
            f.write(fill_sections(text, generated_sections()))
        return 0
    print(markdown_table(GPU_COLUMNS if list(argv) == ["--gpu"] else None))
    return 0


if __name__ == "__main__":  # pragma: no cover - documentation helper
    sys.exit(main(sys.argv[1:]))
