"""Global numeric settings of one measurement, set on entry and restored on exit.

Threads, cuDNN autotuning and TF32 are process-wide switches in torch. A
cell that sets them and leaves them changes the numbers of every later cell
in the same process (and of training, which runs after the timing), so they
are set in one context manager that puts the previous values back, as
``torch.utils.benchmark`` does for threads. The precision -> autocast helper
lives here too, so timing and training read a precision the same way.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Dict, Iterator, Optional

import torch

from bench.choices import PRECISIONS

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: str) -> Optional[torch.dtype]:
    """The autocast dtype for a precision setting (None: plain fp32); ``auto`` is bf16 on a GPU, fp32 on a CPU."""
    if precision == "auto":
        precision = "bf16" if device == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected {', '.join(PRECISIONS)} or auto, got {precision!r}")
    return _DTYPES.get(precision)


def autocast(device: str, precision: str) -> ContextManager[Any]:
    """Autocast to the precision's dtype, or nothing for fp32."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)


@contextlib.contextmanager
def numeric_settings(device: str, threads: Optional[int] = None, tf32: bool = False,
                     cudnn_benchmark: bool = True) -> Iterator[Dict[str, Any]]:
    """Threads (when given), and on CUDA cuDNN autotuning and TF32, for the block; restored afterwards.

    Yields the settings in effect (``threads`` as torch reports it).
    """
    saved_threads = torch.get_num_threads()
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if threads:
            torch.set_num_threads(threads)
        if device == "cuda":
            torch.backends.cudnn.benchmark = cudnn_benchmark  # autotuning happens in the warm-up
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        yield {"threads": torch.get_num_threads(), "tf32": tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark}
    finally:
        torch.set_num_threads(saved_threads)
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved
