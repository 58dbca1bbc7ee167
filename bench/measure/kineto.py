"""Keep the profiler library's own chatter off the user's terminal.

torch's profiler (kineto) writes straight to file descriptor 2 from C++ each
time it starts and stops (``USDT: ... profiler_start``), and on a machine
without a GPU it adds ``ERROR: ... gpuGetDeviceCount failed``. The CPU memory
measurement opens a profiler for every cell, so a plain CPU run printed these
lines between its progress lines, and an ``ERROR`` a user cannot act on reads
as a failure. Python's ``sys.stderr`` cannot catch them: only the descriptor
can be redirected. Everything else written to it meanwhile is passed on once
the block ends, so a real warning is delayed, never lost.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

# glog-style kineto lines: "LEVEL:YYYY-MM-DD hh:mm:ss pid:tid File.cpp:NN] message"
_KINETO_LINE = re.compile(r"^[A-Z]+:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ (\w+)\.cpp:\d+\] (.*)$")
# start/stop notices and stage banners: information only, on every device
_CHATTER = re.compile(r"profiler_start|profiler_stop|Completed Stage|Warm Up|Collection|Post Processing")
# "no GPU here" is expected only where there is none
_NO_GPU = re.compile(r"gpuGetDeviceCount failed|cudaGetDeviceCount|No CUDA devices")


def is_chatter(line: str, gpu_present: bool) -> bool:
    """True for a kineto line that carries no news: a start/stop notice, or "no GPU" on a CPU-only machine."""
    match = _KINETO_LINE.match(line.strip())
    if match is None:
        return False
    message = match.group(2)
    return bool(_CHATTER.search(message)) or (not gpu_present and bool(_NO_GPU.search(message)))


def without_chatter(text: str, gpu_present: bool) -> str:
    """``text`` less kineto's chatter lines; the rest byte for byte (a progress bar's ``\\r`` included)."""
    return "\n".join(line for line in text.split("\n") if not is_chatter(line, gpu_present))


@contextmanager
def quiet_profiler(gpu_present: bool) -> Iterator[None]:
    """Hold file descriptor 2 while a profiler runs; write back all but kineto's chatter afterwards."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a detached process): nothing to tidy
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = without_chatter(held.read().decode("utf-8", errors="replace"), gpu_present)
            if kept.strip():
                sys.stderr.write(kept)
                sys.stderr.flush()
