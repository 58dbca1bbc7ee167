"""What a result depends on besides the grid: software versions, hardware, provenance.

Captured once per run into the sidecar (GPU state at the start and end of the
run, so clock throttling during the run is visible), and summarised by
:func:`bench.results.fingerprint.fingerprint` for comparing runs.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from typing import Any, Dict, List, Optional

from bench.measure import allocator


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Where the tree has no .git (it was copied to a GPU machine), the commit its preparing script
# recorded (scripts/carry_gpu.sh writes carry/GIT_COMMIT; scripts/gpu_run.py exports it as this).
GIT_COMMIT_ENV = "BENCH_GIT_COMMIT"
_COMMIT_FORM = re.compile(r"[0-9a-f]{7,40}(-dirty)?")


def git_commit(path: Optional[str] = None) -> Optional[str]:
    """HEAD of the checkout (``-dirty`` when tracked files changed), else ``$BENCH_GIT_COMMIT`` marked as recorded.

    The recorded form reads ``<commit> (recorded)``: git did not confirm it, the script that copied the
    tree said it. A value that is not a commit hash is ignored rather than written as one.
    """
    return _git_head(path) or _recorded_commit()


def _recorded_commit() -> Optional[str]:
    value = os.environ.get(GIT_COMMIT_ENV, "").strip()
    return f"{value} (recorded)" if _COMMIT_FORM.fullmatch(value) else None


def _git_head(path: Optional[str]) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or os.path.dirname(os.path.abspath(__file__)),
                             capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else None
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=path or os.path.dirname(os.path.abspath(__file__)),
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _package_version(name: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001 - a broken install must not stop the run; the version stays empty
        return None


def software() -> Dict[str, Any]:
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _package_version("torchvision"),
        "fvcore": _package_version("fvcore"),
        "numpy": _package_version("numpy"),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "platform": platform.platform(),
    }


# CPU features that change which kernels PyTorch and oneDNN pick, and so both the speed and the last
# bits of fp32 results. The model string hides them: two "AMD EPYC" machines differ by 1.7x on resnet18.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx")
# Environment variables that cap the instruction set the kernels may use (set by the CI's portability run).
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def cpu_flags(cpuinfo: str) -> Dict[str, bool]:
    """The ISA flags that matter, from the text of /proc/cpuinfo (amx: any of the amx_* flags)."""
    flags: set = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {name: any(f == name or f.startswith(name + "_") for f in flags) if name == "amx" else name in flags
            for name in ISA_FLAGS}


def cpu_isa() -> Dict[str, Any]:
    """ISA flags, torch's chosen CPU capability and any variable capping it."""
    import torch

    try:
        with open("/proc/cpuinfo") as f:
            flags: Dict[str, Any] = cpu_flags(f.read())
    except OSError:  # not Linux: the flags are unknown, not absent
        flags = {name: None for name in ISA_FLAGS}
    return {
        "isa": flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_env": {name: os.environ.get(name) for name in ISA_ENV},
    }


def cpu_info() -> Dict[str, Any]:
    import torch

    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        # at capture time; each row's cpu_malloc says what its cell timed with
        "allocator": allocator.describe(),
        **cpu_isa(),
    }


def gpu_info() -> List[Dict[str, Any]]:
    """Per visible GPU: torch's view plus NVML's (driver, clocks, temperature, throttling)."""
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        info: Dict[str, Any] = {
            "index": i,
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_mb": props.total_memory / 2**20,
            "multiprocessors": props.multi_processor_count,
        }
        info.update(nvml_state(i))
        gpus.append(info)
    return gpus


def nvml_state(index: int) -> Dict[str, Any]:
    """NVML facts about torch's ``cuda:index`` (each field guarded), or the reason there are none."""
    from bench.measure import nvml

    pynvml, handle, why = nvml.open_device(index)
    return nvml.device_facts(pynvml, handle) if handle is not None else {"nvml_error": why}


def throttle_reason_names(mask: int, pynvml_module: Any) -> List[str]:
    """Decode NVML's clock-event (throttle) reason bit mask into names; idle is not a throttle."""
    from bench.measure.nvml import reason_names

    return reason_names(mask, pynvml_module)


def capture(command: Optional[List[str]] = None) -> Dict[str, Any]:
    """The full environment of a run, for the sidecar."""
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(command if command is not None else sys.argv),
        "git_commit": git_commit(),
        "hostname": platform.node(),
        "software": software(),
        "cpu": cpu_info(),
        "gpus": gpu_info(),
    }


def device_name(device: str) -> str:
    if device == "cuda":
        import torch
        return torch.cuda.get_device_name()
    return cpu_model()
