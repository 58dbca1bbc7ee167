"""What this CPU computes natively, read from /proc/cpuinfo.

Decides ``precision: auto`` for CPU training: bf16 autocast pays only where
the CPU has bf16 dot-product instructions; elsewhere oneDNN emulates bf16 and
it is slower than fp32 (and less accurate).
"""
from __future__ import annotations

import os
from typing import FrozenSet, Iterable, Optional

CPUINFO = "/proc/cpuinfo"
# AVX-512 BF16 (Cooper Lake, Zen 4 and later) or AMX (Sapphire Rapids and later).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# ONEDNN_MAX_CPU_ISA values that still allow oneDNN's bf16 kernels; a lower cap
# (CI's ONEDNN_MAX_CPU_ISA=SSE41 run) makes bf16 emulated even on a capable CPU.
_BF16_ISAS = frozenset({"ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                        "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
                        "AVX10_2_512_AMX_2"})


def cpu_flags(path: str = CPUINFO) -> FrozenSet[str]:
    """The instruction-set flags of the first processor listed (empty where the file is unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:  # not Linux, or /proc hidden: no flags known, so nothing is assumed native
        pass
    return frozenset()


def native_bf16(flags: Optional[Iterable[str]] = None, max_isa: Optional[str] = None) -> bool:
    """True where bf16 matrix math runs in hardware on this CPU.

    ``flags`` and ``max_isa`` are test seams: they default to /proc/cpuinfo and
    the ``ONEDNN_MAX_CPU_ISA`` environment variable.
    """
    flags = cpu_flags() if flags is None else frozenset(flags)
    if max_isa is None:
        max_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    if max_isa and max_isa.upper() not in _BF16_ISAS:
        return False
    return bool(flags & BF16_FLAGS)
