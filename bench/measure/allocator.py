"""The CPU heap allocator a process times with: ``cpu_allocator: tuned | system``.

Why it matters: glibc's malloc hands allocations above its mmap threshold
(128 KiB, raised dynamically up to 32 MiB) straight to ``mmap`` and returns
them to the OS on ``free``. A CNN's activation tensors at batch 128 are that
big (64 x 32 x 32 x 128 fp32 values are exactly 32 MiB), so every forward pass
page-faults its buffers in again: half of a timed loop can be kernel time,
and the dynamic threshold makes the cost depend on what ran before (issue 17).

``tuned`` keeps large buffers inside the process: when jemalloc or tcmalloc
is preloaded (``LD_PRELOAD``) it is used as is and named; otherwise glibc's
mmap and trim thresholds are raised, through the environment variables glibc
reads at start (set for ``--isolate`` children and Ray workers, see
:func:`child_env`) or, in a process already running, through ``mallopt``.
``system`` keeps glibc's defaults, so the difference can be shown.

The allocator is a property of the process: glibc's dynamic threshold cannot
be switched back on once it has been fixed. So the first cell decides, and a
later cell asking for the other setting in the same process is refused with
one line (run it with ``--isolate``, where each cell gets a process set up for
it). What is in effect is recorded per row as ``cpu_malloc``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Dict, Mapping, Optional

ALLOCATORS = ("tuned", "system")
DEFAULT_ALLOCATOR = "tuned"

# glibc reads these at process start. 4 GiB / 64 GiB: no activation of any
# model here reaches them, so nothing is mmapped per call or trimmed back.
TUNED_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(64 << 30)}
# glibc's malloc.h constants for mallopt.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# mallopt takes an int: the largest value it can be given. glibc before 2.35
# caps the mmap threshold at 32 MiB (HEAP_MAX_SIZE / 2) and rejects more.
_INT_MAX = 2 ** 31 - 1
_GLIBC_OLD_CAP = 32 << 20
_PRELOADED = ("jemalloc", "tcmalloc")


class AllocatorConflict(RuntimeError):
    """A cell asks for an allocator this process cannot give it."""


_state: Optional[str] = None  # what this process runs with, once a cell has asked
_mallopt_result: Optional[str] = None  # what mallopt achieved, when it was used


def preloaded_allocator(maps_text: Optional[str] = None, ld_preload: Optional[str] = None) -> Optional[str]:
    """``jemalloc`` or ``tcmalloc`` when one is loaded into this process (or preloaded), else None."""
    if maps_text is None:
        try:
            with open("/proc/self/maps") as f:
                maps_text = f.read()
        except OSError:
            maps_text = ""
    preload = os.environ.get("LD_PRELOAD", "") if ld_preload is None else ld_preload
    for name in _PRELOADED:
        if f"lib{name}" in maps_text or name in preload:
            return name
    return None


def _libc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and macOS have no mallopt: there is no glibc to tune
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def env_is_tuned(env: Mapping[str, str] = os.environ) -> bool:
    """True when glibc was started with raised thresholds (by us or by the user)."""
    return "MALLOC_MMAP_THRESHOLD_" in env or "MALLOC_TRIM_THRESHOLD_" in env


def _mallopt_tuned(libc: ctypes.CDLL) -> str:
    """Raise glibc's thresholds in this running process; the name of what was achieved."""
    libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
    if libc.mallopt(_M_MMAP_THRESHOLD, _INT_MAX):
        return "glibc-tuned"
    # Old glibc: 32 MiB is the most mallopt allows, so buffers of exactly
    # 32 MiB (and larger) are still mmapped. Say so in the column.
    libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_OLD_CAP)
    return "glibc-tuned-32mib"


def ensure(setting: str) -> str:
    """Put this process under ``setting`` (once) and return what is in effect, for ``cpu_malloc``.

    Raises :class:`AllocatorConflict` when the process already runs the
    other setting, or ``system`` is asked for while jemalloc/tcmalloc is
    preloaded or glibc was started with tuned thresholds.
    """
    global _state, _mallopt_result
    if setting not in ALLOCATORS:
        raise ValueError(f"cpu_allocator: expected one of {', '.join(ALLOCATORS)}, got {setting!r}")
    if _state is not None:
        if _state != setting:
            raise AllocatorConflict(
                f"cpu_allocator: {setting} asked for, but this process already runs {_state} (the allocator is "
                f"set once per process); run cells with different cpu_allocator values with --isolate")
        return in_effect()
    preloaded = preloaded_allocator()
    libc = _libc()
    if setting == "system":
        if preloaded:
            raise AllocatorConflict(f"cpu_allocator: system asked for, but {preloaded} is preloaded (LD_PRELOAD); "
                                    f"unset LD_PRELOAD or use cpu_allocator: tuned")
        if libc is not None and env_is_tuned():
            raise AllocatorConflict("cpu_allocator: system asked for, but MALLOC_MMAP_THRESHOLD_/"
                                    "MALLOC_TRIM_THRESHOLD_ are set in the environment; unset them or use "
                                    "cpu_allocator: tuned")
    elif preloaded is None and libc is not None and not env_is_tuned():
        _mallopt_result = _mallopt_tuned(libc)
    _state = setting
    return in_effect()


def in_effect() -> str:
    """The allocator this process times with: jemalloc, tcmalloc, glibc-tuned, glibc, or default (no glibc)."""
    preloaded = preloaded_allocator()
    if preloaded:
        return preloaded
    if _libc() is None:
        return "default"
    if env_is_tuned():
        return "glibc-tuned"
    return _mallopt_result or "glibc"


def child_env(setting: str, env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment for a fresh process (``--isolate`` child, Ray worker) that runs ``setting``.

    The thresholds are given through the environment so glibc starts with
    them, before Python allocates anything; for ``system`` our own variables
    are removed (a user's explicit values are left, and refused in the child).
    """
    out = dict(os.environ if env is None else env)
    if setting == "tuned":
        for key, value in TUNED_ENV.items():
            out.setdefault(key, value)
    else:
        for key, value in TUNED_ENV.items():
            if out.get(key) == value:
                del out[key]
    return out


def describe() -> Dict[str, Optional[str]]:
    """For the sidecar: the allocator in effect and the variables that shape it."""
    return {"cpu_malloc": in_effect(), "setting": _state, "ld_preload": os.environ.get("LD_PRELOAD"),
            **{k: os.environ.get(k) for k in TUNED_ENV}}


def _reset_for_tests() -> None:
    global _state, _mallopt_result
    _state = None
    _mallopt_result = None
