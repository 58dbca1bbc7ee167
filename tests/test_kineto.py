"""kineto's start/stop chatter stays off the terminal; anything else on stderr still gets through."""
import os
import subprocess
import sys
import textwrap

from bench.measure import kineto

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = "USDT:2026-11-29 02:56:02 3924:3924 SyncActivityProfilerHandler.cpp:39] profiler_start"
NO_GPU = "ERROR:2026-11-29 02:56:02 3924:3924 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35"


def test_start_and_stop_notices_are_chatter_on_every_machine():
    assert kineto.is_chatter(START, gpu_present=False) and kineto.is_chatter(START, gpu_present=True)


def test_no_gpu_is_chatter_only_where_there_is_no_gpu():
    assert kineto.is_chatter(NO_GPU, gpu_present=False)
    assert not kineto.is_chatter(NO_GPU, gpu_present=True)


def test_other_lines_are_kept_byte_for_byte():
    text = f"warning: something real\n{START}\n\rcells: 1/2\nlast"
    assert kineto.without_chatter(text, gpu_present=False) == "warning: something real\n\rcells: 1/2\nlast"
    # a kineto line that is not chatter is news
    other = "WARNING:2026-11-29 02:56:02 1:1 CuptiActivityProfiler.cpp:12] buffer overflow, events dropped"
    assert kineto.without_chatter(other, gpu_present=True) == other


def test_the_cpu_memory_measurement_prints_no_profiler_chatter_but_passes_other_stderr_on():
    code = textwrap.dedent("""
        import os
        import torch
        from bench.measure.memory import cpu_tensor_peak_growth_mb
        model = torch.nn.Linear(64, 64)
        x = torch.randn(8, 64)

        def step():
            os.write(2, b"a native warning\\n")
            model(x).sum().backward()

        print(cpu_tensor_peak_growth_mb(step, iterations=1) > 0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.stdout.strip() == "True", out.stderr
    assert "profiler_start" not in out.stderr and "gpuGetDeviceCount" not in out.stderr
    assert out.stderr.count("a native warning") == 1
