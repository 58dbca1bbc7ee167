"""The CPU OOM prediction counts a memory cgroup's limit, not only the machine's memory (issue 22, item 14).

The cgroup trees here are folders of the real file names (``memory.max``,
``memory.limit_in_bytes``, ...) in a temporary directory: the parsing and
the walk up the hierarchy are exercised for real. That the kernel enforces
those numbers is what only a machine inside such a cgroup shows.
"""
import functools

from bench.grid import expand_grid
from bench.run import executors

MiB = 1 << 20


def _tree(tmp_path, proc_line, files):
    """A /proc/self/cgroup holding ``proc_line`` and a cgroup mount with ``files`` ({relative path: text})."""
    mount = tmp_path / "cgroup"
    for rel, text in files.items():
        path = mount / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    mount.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_line)
    return str(proc), str(mount)


def test_v2_room_is_the_tightest_limit_on_the_path_minus_usage_plus_reclaimable_cache(tmp_path):
    proc, mount = _tree(tmp_path, "0::/batch/job7\n", {
        "batch/memory.max": str(2048 * MiB), "batch/memory.current": str(1500 * MiB),
        "batch/job7/memory.max": str(900 * MiB), "batch/job7/memory.current": str(400 * MiB),
        "batch/job7/memory.stat": f"anon {300 * MiB}\ninactive_file {100 * MiB}\n",
    })
    # job7: 900 - (400 - 100 cache) = 600 MiB; its parent: 2048 - 1500 = 548 MiB, the tighter
    assert executors.cgroup_room(proc, mount) == 548 * MiB


def test_v1_limit_and_no_limit(tmp_path):
    proc, mount = _tree(tmp_path, "9:pids:/\n4:memory:/process_api/abc\n0::/\n", {
        "memory/process_api/abc/memory.limit_in_bytes": str(900 * MiB),
        "memory/process_api/abc/memory.usage_in_bytes": str(100 * MiB),
        "memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "unlimited"
        "memory/memory.usage_in_bytes": str(5000 * MiB),
    })
    assert executors.cgroup_room(proc, mount) == 800 * MiB
    unlimited, mount2 = _tree(tmp_path / "u", "0::/\n", {"memory.max": "max\n", "memory.current": "1\n"})
    assert executors.cgroup_room(unlimited, mount2) is None
    assert executors.cgroup_room(str(tmp_path / "no-such-file"), mount) is None


def test_a_container_that_sees_its_own_group_at_the_root_is_read_there(tmp_path):
    # /proc/self/cgroup names the host's path, which does not exist inside the container's mount
    proc, mount = _tree(tmp_path, "0::/docker/0123abcd\n", {"memory.max": str(900 * MiB),
                                                            "memory.current": str(300 * MiB)})
    assert executors.cgroup_room(proc, mount) == 600 * MiB


def test_the_cpu_oom_prediction_refuses_a_cell_that_fits_the_machine_but_not_its_cgroup(tmp_path, monkeypatch):
    proc, mount = _tree(tmp_path, "0::/\n", {"memory.max": str(900 * MiB), "memory.current": str(300 * MiB)})
    monkeypatch.setattr(executors, "cgroup_room", functools.partial(executors.cgroup_room, proc, mount))
    monkeypatch.setattr(executors, "_meminfo_available", lambda: 64 << 30)  # a big machine
    raw = {"defaults": {"preset": "resnet20", "device": "cpu", "speed": False, "train_step": True,
                        "batch_sizes": [1024]}, "matrix": {"width_multiplier": [1]}}
    cell = expand_grid(raw, "big.yaml", cuda_available=False).cells[0]
    # resnet20 keeps ~0.5 M activations per image: 1024 images need ~2 GiB, more than the 600 MiB left
    assert executors.mem_available() == 600 * MiB
    assert "predicted out of memory, not tried" in executors.predicted_cpu_oom(cell)
