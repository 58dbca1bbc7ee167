"""The CPU allocator setting: what is detected, what children inherit, and that tuned keeps buffers in."""
import os
import subprocess
import sys
import textwrap

import pytest

from bench.measure import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = allocator._libc() is not None


def run_python(code: str, env_extra=None, drop=()) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter: the allocator is process-wide, so each case needs its own."""
    env = {k: v for k, v in os.environ.items() if k not in drop and k not in allocator.TUNED_ENV}
    env.update(env_extra or {})
    env["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=240)


def test_a_preloaded_jemalloc_or_tcmalloc_is_named_from_the_maps_or_ld_preload():
    maps = "7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n"
    assert allocator.preloaded_allocator(maps, "") == "jemalloc"
    assert allocator.preloaded_allocator("", "/usr/lib/libtcmalloc_minimal.so.4") == "tcmalloc"
    assert allocator.preloaded_allocator("7f00-7f10 r-xp 0 08:01 1 /usr/lib/libc.so.6\n", "") is None


def test_children_of_a_tuned_cell_start_with_raised_thresholds_and_system_cells_without_ours():
    tuned = allocator.child_env("tuned", {"PATH": "/bin"})
    assert tuned["MALLOC_MMAP_THRESHOLD_"] == str(4 << 30) and tuned["PATH"] == "/bin"
    system = allocator.child_env("system", tuned)
    assert "MALLOC_MMAP_THRESHOLD_" not in system and "MALLOC_TRIM_THRESHOLD_" not in system
    # a user's own value is theirs: left in place (and refused by the system cell's process)
    assert allocator.child_env("system", {"MALLOC_MMAP_THRESHOLD_": "1"})["MALLOC_MMAP_THRESHOLD_"] == "1"


def test_isolated_children_get_the_environment_of_their_cells_allocator():
    from bench.grid import expand_grid
    from bench.run.executors import _child_env

    cells = expand_grid({"include": [{"preset": "resnet20", "device": "cpu", "cpu_allocator": a}
                                     for a in ("tuned", "system")]}, "t.yaml", cuda_available=False).cells
    assert _child_env(cells[0])["MALLOC_TRIM_THRESHOLD_"] == str(64 << 30)
    assert "MALLOC_TRIM_THRESHOLD_" not in _child_env(cells[1]) or os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_cpu_allocator_at_its_default_leaves_old_cell_ids_unchanged():
    from bench.grid import expand_grid

    def cell_id(**extra):
        entry = {"preset": "resnet20", "device": "cpu", **extra}
        return expand_grid({"include": [entry]}, "t.yaml", cuda_available=False).cells[0].cell_id

    assert cell_id() == cell_id(cpu_allocator="tuned") != cell_id(cpu_allocator="system")


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator is what tuned adjusts")
def test_one_process_refuses_a_second_allocator_with_one_line():
    out = run_python("""
        from bench.measure import allocator
        print(allocator.ensure("system"))
        try:
            allocator.ensure("tuned")
        except allocator.AllocatorConflict as e:
            print("refused:", e)
    """)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "glibc", out.stderr
    assert lines[1].startswith("refused: cpu_allocator: tuned asked for, but this process already runs system")


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator is what tuned adjusts")
def test_system_is_refused_where_glibc_was_started_with_tuned_thresholds():
    out = run_python("""
        from bench.measure import allocator
        try:
            allocator.ensure("system")
        except allocator.AllocatorConflict as e:
            print("refused:", e)
    """, env_extra=allocator.TUNED_ENV)
    assert "refused: cpu_allocator: system asked for, but MALLOC_MMAP_THRESHOLD_" in out.stdout, out.stderr


BUFFER_PAGES = (32 << 20) // 4096  # page faults to map one 32 MiB buffer in 4 KiB pages

LOOP = """
    import os
    import resource
    import torch
    from bench.measure import allocator
    torch.set_num_threads(1)
    print(allocator.ensure({setting!r}))
    x = torch.randn(128, 64, 32, 32)  # 32 MiB: above glibc's largest dynamic mmap threshold

    def forward():
        return ((x * 2) + 1).sum()

    # glibc's heap settles after a few passes (it grows by whole buffers in
    # the first 5-7 here): warm up well past that before counting
    for _ in range(12):
        forward()
    before, faults = os.times(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(30):
        forward()
    after, faults = os.times(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    user, system = after.user - before.user, after.system - before.system
    print(faults, system / max(user + system, 1e-9))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator is what tuned adjusts")
def test_tuned_keeps_32_mib_buffers_in_the_process_so_the_loop_no_longer_page_faults():
    # Page faults, not the kernel's share of time, are asserted: the count is
    # the mechanism itself and does not move with the load on a shared machine.
    tuned = run_python(LOOP.format(setting="tuned"))
    system = run_python(LOOP.format(setting="system"))
    name, tuned_faults, tuned_share = tuned.stdout.split()
    system_name, system_faults, system_share = system.stdout.split()
    assert name in ("glibc-tuned", "glibc-tuned-32mib"), tuned.stderr
    assert system_name == "glibc", system.stderr
    if name == "glibc-tuned-32mib":
        pytest.skip("this glibc caps the mmap threshold at 32 MiB, so a 32 MiB buffer is still mmapped")
    shares = f"kernel share of time: tuned {float(tuned_share):.2f}, system {float(system_share):.2f}"
    # The heap may still grow by a buffer now and then (one 32 MiB growth,
    # 8192 faults, was seen after 12 warm-up passes), but it keeps what it
    # has: at most two buffers' worth of faults in 30 passes ...
    assert int(tuned_faults) <= 2 * BUFFER_PAGES, shares
    # ... where glibc's defaults mmap and unmap both 32 MiB temporaries of
    # every pass, faulting them in again each time (measured: 491,580)
    assert int(system_faults) >= 10 * max(int(tuned_faults), 30), shares
