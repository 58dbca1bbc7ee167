"""The result table's columns: one place that names them, in order, with units.

Every result CSV has exactly these columns, on CPU and GPU alike (a metric
that does not apply is left empty), so files from different machines and
runs concatenate without surprises. The README's column table is generated
from :data:`COLUMNS` (``python -m bench.results.schema``) so the two cannot drift.

Convention: ``macs`` counts one multiply-add as 1; ``flops`` is ``2 * macs``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

SCHEMA_VERSION = 1

# (name, description with unit). Grouped: identity, model, settings, status,
# complexity, architecture, speed, memory, accuracy.
_COLUMN_DOCS: List[Tuple[str, str]] = [
    # identity
    ("run_id", "id of the run that wrote the row (UTC start time + short hash)"),
    ("cell_id", "stable hash of the cell's resolved settings (12 hex digits)"),
    ("variant_id", "stable hash of the model config and input size (12 hex digits): the same architecture in any "
     "run, device or recipe; report and compare join training and speed rows on it"),
    ("variant", "readable model name: the preset, or one derived from the fields"),
    ("preset", "preset name the cell started from (empty if none)"),
    ("family", "resnet (cardinality 1) or resnext"),
    # model
    ("block", "basic or bottleneck"),
    ("depth", "weighted layers (stem conv + block convs + classifier)"),
    ("blocks", "blocks per stage, e.g. 3-4-6-3"),
    ("cardinality", "groups of the 3x3 conv (1 = ResNet)"),
    ("bottleneck_width", "width per group d (the 4 in 32x4d)"),
    ("width_multiplier", "multiplier on stage widths"),
    ("stem", "imagenet (7x7/2 + max-pool) or cifar (3x3/1)"),
    ("layout", "stage layout: imagenet (4 stages) or cifar (3 stages)"),
    ("num_classes", "classifier outputs"),
    ("input_size", "input height = width, px"),
    ("pretrained", "weights the cell started from: none, or the torchvision weights name"),
    # settings
    ("device", "cpu or cuda"),
    ("device_name", "CPU model or GPU name"),
    ("precision", "fp32, bf16 or fp16 (autocast for the low precisions)"),
    ("tf32", "TF32 matmul/conv allowed (GPU fp32 only)"),
    ("memory_format", "contiguous or channels_last"),
    ("compile", "torch.compile used"),
    ("threads", "torch intra-op threads (CPU)"),
    ("cpu_malloc", "CPU heap allocator in effect: glibc-tuned (thresholds raised: cpu_allocator tuned), glibc "
     "(defaults: cpu_allocator system), jemalloc or tcmalloc (preloaded), glibc-tuned-32mib (old glibc: only "
     "32 MiB allowed), default (no glibc)"),
    ("batch_size", "images per forward pass for this row"),
    ("requested_batch_size", "batch size the grid asked for (differs after OOM back-off)"),
    # status
    ("status", "ok, error, oom, timeout or diverged"),
    ("error", "one-line message for a failed cell"),
    # complexity (per image, exact)
    ("params", "learnable parameters"),
    ("macs", "multiply-accumulates per image, conv + linear (classifier bias adds included)"),
    ("flops", "floating-point operations per image = 2 x macs"),
    ("activations", "output elements of conv and linear layers per image"),
    ("counters", "the independent counts that agreed exactly on params, macs and activations: analytic+fvcore "
     "(fvcore installed) or analytic+flop_counter (torch's FlopCounterMode, where fvcore is absent)"),
    # architecture
    ("stage_channels", "output channels per stage, e.g. 256-512-1024-2048"),
    ("stage_strides", "stride of each stage's output relative to the input, e.g. 4-8-16-32"),
    ("feature_dim", "channels of the final feature map (classifier input)"),
    ("groups", "groups of the 3x3 convs (cardinality)"),
    # inference speed
    ("latency_ms_median", "median time of one forward pass of the whole batch, ms"),
    ("latency_ms_p90", "90th percentile of the forward time, ms"),
    ("latency_ms_iqr", "interquartile range of the forward time, ms"),
    ("latency_cv", "coefficient of variation (std / mean) of the forward time"),
    ("latency_noisy", "true when IQR / median > 0.10, latency_sys_share > 0.10 or latency_others_share > 0.10"),
    ("latency_n", "timed repetitions kept"),
    ("latency_samples_ms", "raw per-repetition forward times, ms, ';'-separated"),
    ("latency_sys_share", "system / (user + system) CPU time of the process over the timed forward passes; "
     "above 0.10 the loop timed page faults, not only the model"),
    ("latency_others_share", "share of the machine's CPU time (all cores) that other processes or the hypervisor "
     "(steal) took during the timed forward passes, from /proc/stat; above 0.10 the loop timed contention"),
    ("latency_ms_per_image", "latency_ms_median / batch_size"),
    ("throughput_img_s", "batch_size / median forward time, images/s"),
    ("achieved_gflop_s", "flops x batch_size / median forward time, GFLOP/s"),
    ("compile_time_s", "torch.compile warm-up time, excluded from timings, s"),
    # training-step speed
    ("train_step_ms_median", "median forward + backward + optimizer step, ms"),
    ("train_step_ms_p90", "90th percentile of the training step, ms"),
    ("train_step_ms_iqr", "interquartile range of the training step, ms"),
    ("train_step_cv", "coefficient of variation of the training step"),
    ("train_step_noisy", "true when IQR / median > 0.10, train_step_sys_share > 0.10 or "
     "train_step_others_share > 0.10"),
    ("train_step_n", "timed training steps kept"),
    ("train_step_samples_ms", "raw per-step times, ms, ';'-separated"),
    ("train_step_sys_share", "system / (user + system) CPU time of the process over the timed training steps"),
    ("train_step_others_share", "share of the machine's CPU time that other processes or the hypervisor took "
     "during the timed training steps"),
    ("train_throughput_img_s", "batch_size / median training step, images/s"),
    ("train_achieved_gflop_s", "3 x flops x batch_size / median step (backward ~ 2x forward), GFLOP/s"),
    # memory
    ("peak_mem_mb", "peak memory of inference: GPU max_memory_allocated, or on CPU weights + buffers + input "
     "plus the peak RSS growth while it runs, MiB"),
    ("gpu_peak_alloc_mb", "inference: torch.cuda.max_memory_allocated, MiB"),
    ("gpu_peak_reserved_mb", "inference: torch.cuda.max_memory_reserved, MiB"),
    ("gpu_nvml_used_mb", "inference: device memory in use per NVML (all processes, context included), MiB"),
    ("train_peak_mem_mb", "peak memory of training steps from a fresh start (same source as peak_mem_mb): "
     "weights, gradients, optimizer state and activations, MiB"),
    ("train_gpu_peak_alloc_mb", "training step: torch.cuda.max_memory_allocated, MiB"),
    ("train_gpu_peak_reserved_mb", "training step: torch.cuda.max_memory_reserved, MiB"),
    ("train_gpu_nvml_used_mb", "training step: device memory in use per NVML, MiB"),
    ("cpu_peak_rss_mb", "process lifetime peak resident set size after the cell (kept across the peak resets "
     "of the CPU memory measurements), MiB"),
    # accuracy (short-schedule training)
    ("dataset", "cifar10, cifar10-subset-N or synthetic"),
    ("epochs", "training epochs"),
    ("optimizer", "sgd (Nesterov) or adam"),
    ("lr", "peak learning rate"),
    ("train_batch_size", "training batch size"),
    ("train_precision", "autocast dtype training used: fp32, bf16 or fp16 (precision auto resolved on the device)"),
    ("resize", "training/test input size after on-device resize (empty = native 32 px)"),
    ("n_seeds", "seeds trained"),
    ("seeds", "the seeds, ';'-separated"),
    ("top1_acc", "mean test top-1 accuracy over seeds, fraction 0-1"),
    ("top1_acc_std", "sample std of test top-1 over seeds (empty for one seed)"),
    ("top1_acc_seeds", "per-seed test top-1, ';'-separated"),
    ("test_images", "test images behind each seed's top1_acc (the sampling error of an accuracy depends on it)"),
    ("top1_correct_seeds", "per-seed correctly classified test images, ';'-separated"),
    ("val_acc", "mean validation top-1 (held out from the training set)"),
    ("train_time_s", "training time, evaluation excluded, mean over seeds, s"),
    ("train_img_s", "training images per second over the schedule"),
    ("target_acc", "accuracy target for time_to_target_s"),
    ("time_to_target_s", "training time until test accuracy first reached target_acc (empty if never), s"),
]

COLUMNS: List[str] = [name for name, _ in _COLUMN_DOCS]
COLUMN_DOCS: Dict[str, str] = dict(_COLUMN_DOCS)

# Columns that are the same for every row of a cell (set once per cell).
STATUS_OK = "ok"
FAILED_STATUSES = ("error", "oom", "timeout", "diverged")


def empty_row() -> Dict[str, object]:
    return {name: None for name in COLUMNS}


def markdown_table() -> str:
    lines = ["| column | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {doc} |" for name, doc in _COLUMN_DOCS]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(markdown_table())
