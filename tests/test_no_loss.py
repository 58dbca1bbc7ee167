"""Nothing lost, nothing silent (issue 12): every writer of a result file takes the run's lock,
outputs that cannot be written fail in one line before any work, a full disk leaves a true sidecar,
and a cell that got the runner killed is recorded instead of killing every resume.

Each test reproduces one reported case; the cells are measured by a stand-in function, so the
tests are about the files, not torch.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import ok_rows, run_stand_in, tiny_grid

from bench.cli import main
from bench.errors import UserError
from bench.grid import expand_grid
from bench.results.files import OutputLock, read_lines
from bench.run import started

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "results", "baselines", "quick-cpu.csv")


def statuses(path):
    parsed = read_lines(str(path))
    return {ln.get(parsed.index, "cell_id"): ln.get(parsed.index, "status") for ln in parsed.lines}


def one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ------------------------------------------------------------- 1-2: data loss
def test_merge_into_a_file_a_run_is_writing_is_refused_and_the_run_keeps_every_row(tmp_path, capsys):
    other = tmp_path / "other.csv"
    run_stand_in(tiny_grid(widths=(3,)), other)
    out = tmp_path / "lockt.csv"
    codes = []

    def merge_during_the_run(cell):
        if not codes:  # while the runner holds the lock, on its first cell
            codes.append(main(["merge", str(other), "--out", str(out), "--force"]))
        return ok_rows(cell)

    summary, _ = run_stand_in(tiny_grid(), out, merge_during_the_run)
    assert codes == [2]
    assert "another run is writing this output" in capsys.readouterr().err
    assert summary.cells_run == 4
    assert set(statuses(out)) == {c.cell_id for c in tiny_grid().cells}  # all four cells, no stranger's rows
    assert len(read_lines(str(out)).lines) == 8


def test_baseline_into_a_locked_file_is_refused(tmp_path, capsys):
    folder = tmp_path / "baselines"
    folder.mkdir()
    with OutputLock(str(folder / "gate.csv")):
        one_line_error(capsys, ["baseline", BASELINE, "--name", "gate", "--dir", str(folder)],
                       "another run is writing this output")
    assert not (folder / "gate.csv").exists()
    assert main(["baseline", BASELINE, "--name", "gate", "--dir", str(folder)]) == 0


def test_merge_over_an_existing_file_needs_force(tmp_path, capsys):
    a = tmp_path / "a.csv"
    run_stand_in(tiny_grid(widths=(1,)), a)
    out = tmp_path / "m.csv"
    out.write_text("precious\n")
    one_line_error(capsys, ["merge", str(a), "--out", str(out)], str(out), "exists; pass --force")
    assert out.read_text() == "precious\n"
    # the sidecar alone counts too: it would be overwritten
    out.unlink()
    side = tmp_path / "m.json"
    side.write_text("{}")
    one_line_error(capsys, ["merge", str(a), "--out", str(out)], str(side), "--force")
    assert side.read_text() == "{}"
    assert main(["merge", str(a), "--out", str(out), "--force"]) == 0
    assert len(read_lines(str(out)).lines) == 2


# ------------------------------------------------- 3-4: outputs that cannot be written
@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only); the test is skipped where it cannot be mounted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder):
    """Fill the filesystem holding ``folder`` up to the last byte."""
    fd = os.open(os.path.join(folder, "filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def untimed_grid_file(folder, name, widths):
    """A grid file of resnet20 CPU cells, one per width, that neither time nor train (counts only)."""
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\ndefaults: {{preset: resnet20, device: cpu, speed: false, train_step: false}}\n"
                    f"matrix: {{width_multiplier: {list(widths)}}}\n")
    return str(path)


@pytest.fixture
def grid_file(tmp_path):
    return untimed_grid_file(tmp_path, "g", [1])


def test_an_output_under_proc_is_refused_in_one_line_before_any_work(tmp_path, grid_file, capsys):
    one_line_error(capsys, ["--grid", grid_file, "--out", "/proc/x.csv", "--no-progress"], "/proc/x.csv")
    a = tmp_path / "a.csv"
    run_stand_in(tiny_grid(widths=(1,)), a)
    one_line_error(capsys, ["merge", str(a), "--out", "/proc/x.csv"], "/proc/x.csv", "cannot write")


def test_baseline_dir_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    one_line_error(capsys, ["baseline", BASELINE, "--name", "x", "--dir", str(not_a_folder)],
                   f"--dir {not_a_folder}: is not a folder")


def test_an_output_on_a_read_only_filesystem_is_refused_in_one_line(tmp_path, small_disk, grid_file, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    out = small_disk / "r.csv"
    err = one_line_error(capsys, ["--grid", grid_file, "--out", str(out), "--no-progress"], str(out))
    assert "Read-only file system" in err
    with pytest.raises(UserError, match="Read-only file system"):
        run_stand_in(tiny_grid(widths=(1,)), out)


def test_a_full_disk_at_start_is_one_line_and_nothing_runs(tmp_path, small_disk, grid_file, capsys):
    fill(small_disk)
    calls = []
    with pytest.raises(UserError, match="No space left on device"):
        run_stand_in(tiny_grid(), small_disk / "r.csv", lambda cell: calls.append(cell) or ok_rows(cell))
    assert calls == []
    one_line_error(capsys, ["--grid", grid_file, "--out", str(small_disk / "r.csv")], "No space left")


def test_a_disk_filling_up_mid_run_is_one_line_and_the_sidecar_says_failed(small_disk):
    out = small_disk / "r.csv"
    grid = tiny_grid()

    def filling(cell):
        if cell.cell_id == grid.cells[1].cell_id:
            fill(small_disk)
        rows = ok_rows(cell)
        return rows * 8  # more than the page the CSV has left: the append needs a new one

    with pytest.raises(UserError) as info:
        run_stand_in(grid, out, filling)
    message = str(info.value)
    assert message.startswith(f"{out}: cannot write results: No space left on device") and "\n" not in message
    assert set(statuses(out)) == {grid.cells[0].cell_id}  # the first cell is safe
    side = json.loads((small_disk / "r.json").read_text())
    assert side["status"] == "failed" and side["runs"][-1]["status"] == "failed"
    os.unlink(small_disk / "filler")
    summary, _ = run_stand_in(grid, out)  # the resume sees a failed run, not a killed one, and finishes the grid
    side = json.loads((small_disk / "r.json").read_text())
    assert [r["status"] for r in side["runs"]] == ["failed", "finished"]
    assert summary.cells_run == 3


def test_a_full_disk_mid_run_without_a_small_filesystem(tmp_path, monkeypatch):
    """The same guarantee where no tmpfs can be mounted: the writes are made to fail with ENOSPC."""
    import bench.run.runner as runner
    from bench.results.files import ResultWriter

    out = tmp_path / "r.csv"
    grid = tiny_grid()
    real_append, real_json = ResultWriter.append, runner.write_bytes_atomic
    full = []

    def append(self, rows):
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        real_append(self, rows)

    def write_json(path, data):
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_json(path, data)

    monkeypatch.setattr(ResultWriter, "append", append)
    monkeypatch.setattr(runner, "write_bytes_atomic", write_json)

    def measure(cell):
        if cell.cell_id == grid.cells[1].cell_id:
            full.append(True)
        return ok_rows(cell)

    with pytest.raises(UserError, match=r"r.csv: cannot write results: No space left on device$"):
        run_stand_in(grid, out, measure)
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "failed"


# ------------------------------------------------------ 5: a cell that kills the runner
CHILD = """\
import os, signal, sys
sys.path.insert(0, {root!r})
from bench.grid import expand_grid
from bench.run.executors import SerialExecutor
from bench.run.rows import cell_columns
from bench.run.runner import run_grid

def measure(cell):
    if cell.model.width_multiplier == 1.5:
        {kill}
    row = cell_columns(cell, "cpu")
    row.update(status="ok", batch_size=1, requested_batch_size=1, latency_ms_median=1.0)
    return [row]

raw = {{"name": "tiny", "defaults": {{"preset": "resnet20", "device": "cpu", "speed": True, "train_step": False,
        "batch_sizes": [1, 2], "warmup": 0, "repeats": 2}}, "matrix": {{"width_multiplier": [1, 1.5, 2, 2.5]}}}}
run_grid(expand_grid(raw, "tiny.yaml"), sys.argv[1], executor=SerialExecutor(measure), progress=False,
         command=["test"], log=lambda m: None)
"""
SIGKILL_SELF = "os.kill(os.getpid(), signal.SIGKILL)"
EAT_MEMORY = "hog = []\n        while True: hog.append(bytearray(64 << 20))"


def run_child(tmp_path, out, kill, preexec_fn=None):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=ROOT, kill=kill))
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, timeout=300,
                          preexec_fn=preexec_fn)
    return done.returncode


def test_a_runner_killed_by_the_oom_killer_records_the_cell_and_resume_moves_on(tmp_path, monkeypatch):
    out = tmp_path / "r.csv"
    assert run_child(tmp_path, out, SIGKILL_SELF) == -9
    grid = tiny_grid()
    killed = next(c for c in grid.cells if c.model.width_multiplier == 1.5)
    mark = started.read(str(out))
    assert mark is not None and mark.cell_id == killed.cell_id
    # The kernel's OOM-kill counter rose meanwhile: the OOM killer did it.
    monkeypatch.setattr(started, "oom_kill_count", lambda: (mark.oom_kills or 0) + 1)
    calls = []
    summary, messages = run_stand_in(grid, out, lambda cell: calls.append(cell.cell_id) or ok_rows(cell))
    assert killed.cell_id not in calls and summary.cells_run == 2
    parsed = read_lines(str(out))
    row = next(ln for ln in parsed.lines if ln.get(parsed.index, "cell_id") == killed.cell_id)
    assert row.get(parsed.index, "status") == "oom"
    assert "killed while running" in row.get(parsed.index, "error")
    assert "--isolate" in row.get(parsed.index, "error")
    assert any(killed.cell_id in m and "status=oom" in m for m in messages)
    assert started.read(str(out)) is None  # the mark is gone once recorded
    # The recorded cell is a failed cell like any other: --retry-failed runs it again.
    summary, _ = run_stand_in(grid, out, ok_rows, retry_failed=True)
    assert summary.cells_run == 1 and statuses(out)[killed.cell_id] == "ok"


def test_a_runner_killed_not_by_the_oom_killer_records_an_error_not_oom(tmp_path, monkeypatch):
    out = tmp_path / "r.csv"
    assert run_child(tmp_path, out, SIGKILL_SELF) == -9
    mark = started.read(str(out))
    monkeypatch.setattr(started, "oom_kill_count", lambda: mark.oom_kills)
    monkeypatch.setattr(started, "boot_id", lambda: mark.boot)
    run_stand_in(tiny_grid(), out)
    assert statuses(out)[mark.cell_id] == "error"


def test_an_orderly_stop_or_a_cell_error_leaves_no_mark(tmp_path):
    out = tmp_path / "r.csv"

    def broken(cell):
        raise RuntimeError("boom")

    run_stand_in(tiny_grid(widths=(1,)), out, broken)
    assert started.read(str(out)) is None and not os.path.exists(started.mark_path(str(out)))


def _memory_cgroup(limit_bytes):
    """A fresh cgroup-v1 memory group under this process's own, or None where that is not possible."""
    try:
        with open("/proc/self/cgroup") as f:
            mine = next(line.split(":", 2)[2].strip() for line in f if ":memory:" in line)
    except (OSError, StopIteration):
        return None
    path = os.path.join("/sys/fs/cgroup/memory", mine.lstrip("/"), f"bench-test-{os.getpid()}")
    try:
        os.mkdir(path)
        with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit_bytes))
    except OSError:
        return None
    return path


@pytest.mark.skipif(not os.path.exists("/sys/fs/cgroup/memory"), reason="needs a cgroup-v1 memory controller")
def test_a_real_oom_kill_in_a_memory_cgroup_is_recorded_as_oom(tmp_path):
    """The real thing, fenced in: the child may use 1 GiB, so the machine is never at risk."""
    group = _memory_cgroup(1 << 30)
    if group is None:
        pytest.skip("cannot create a memory cgroup here (needs root)")

    def enter():
        with open(os.path.join(group, "tasks"), "w") as f:
            f.write(str(os.getpid()))

    out = tmp_path / "r.csv"
    try:
        assert run_child(tmp_path, out, EAT_MEMORY, preexec_fn=enter) == -9
    finally:
        os.rmdir(group)
    if started.oom_kill_count() is None:
        pytest.skip("no oom_kill counter in /proc/vmstat")
    run_stand_in(tiny_grid(), out)
    parsed = read_lines(str(out))
    killed = {ln.get(parsed.index, "cell_id"): ln.get(parsed.index, "error") for ln in parsed.lines
              if ln.get(parsed.index, "status") == "oom"}
    assert len(killed) == 1 and "OOM killer" in next(iter(killed.values()))


def kill_self(cell):
    """A measure function that dies as an OOM-killed cell does (for --isolate children)."""
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("oom_killer", [True, False])
def test_an_isolated_cell_killed_by_sigkill_is_oom_when_the_oom_killer_acted(monkeypatch, oom_killer):
    import itertools

    from bench.run import executors

    counter = itertools.count(5) if oom_killer else itertools.repeat(5)
    monkeypatch.setattr(executors, "oom_kill_count", lambda: next(counter))
    cell = tiny_grid(widths=(1,)).cells[0]
    row = executors.IsolatedExecutor(measure=kill_self).run(cell)[0]
    assert "died with SIGKILL" in row["error"]
    if oom_killer:
        assert row["status"] == "oom" and "OOM killer" in row["error"]
    else:
        assert row["status"] == "error" and "probably out of memory" in row["error"]


def test_temporary_cell_folders_of_a_killed_run_are_removed_by_the_next(tmp_path, monkeypatch):
    import tempfile

    from bench.run.executors import IsolatedExecutor

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"bench-cell-{dead.pid}-x1"
    live = tmp_path / f"bench-cell-{os.getpid()}-x2"  # a running process's: still in use
    other = tmp_path / "bench-cellar"
    for folder in (stale, live, other):
        folder.mkdir()
    (stale / "rows.json").write_text("{}")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    IsolatedExecutor().open()
    assert not stale.exists() and live.exists() and other.exists()


def test_a_cpu_train_step_that_cannot_fit_is_refused_as_oom_before_it_is_tried():
    from bench.run.executors import predicted_cpu_oom, run_cell_safely

    raw = {"name": "big", "defaults": {"preset": "resnet20", "device": "cpu", "speed": False, "train_step": True,
                                       "batch_sizes": [4096]}, "matrix": {"width_multiplier": [1]}}
    cell = expand_grid(raw, "big.yaml").cells[0]
    # resnet20 keeps ~0.5 M activations per image: 4096 images need ~8 GiB, not there in 1 GiB
    assert "predicted out of memory" in predicted_cpu_oom(cell, available=1 << 30)
    assert predicted_cpu_oom(cell, available=64 << 30) == ""
    small = expand_grid({**raw, "defaults": {**raw["defaults"], "batch_sizes": [2]}}, "s.yaml").cells[0]
    assert predicted_cpu_oom(small, available=1 << 30) == ""
    import bench.run.executors as executors

    original = executors.mem_available
    executors.mem_available = lambda: 1 << 30
    try:
        row = run_cell_safely(cell)[0]  # the real measurement, which would be killed: never started
    finally:
        executors.mem_available = original
    assert row["status"] == "oom" and "not tried" in row["error"]


# ------------------------------------------------------------ 6, 7, 11-13: CIFAR-10
def cifar(tmp_path):
    from test_data import write_cifar  # 200 training and 60 test images in the real format

    write_cifar(tmp_path)
    return str(tmp_path)


def prepare(**settings):
    import warnings

    from bench.train import data
    from bench.train.recipe import resolve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny folder is not the official release
        return data.prepare_data(resolve(settings))


@pytest.mark.parametrize("field,count,held", [("train_subset", 500, 200), ("test_subset", 100, 60)])
def test_a_folder_with_fewer_images_than_the_subset_asks_for_is_refused(tmp_path, field, count, held):
    root = cifar(tmp_path)
    with pytest.raises(UserError) as info:
        prepare(data_root=root, **{field: count})
    message = str(info.value)
    assert f"{field}: asks for {count} images but" in message and f"holds only {held}" in message
    assert "cifar-10-batches-py" in message


def test_the_dataset_label_names_a_test_subset(tmp_path):
    root = cifar(tmp_path)
    # the tiny folder holds 200 training images, not the release's 50,000: the label counts them (issue 22)
    assert prepare(data_root=root, test_subset=20).label == "cifar10-subset-200-test-20"
    assert prepare(data_root=root, train_subset=150, test_subset=40).label == "cifar10-subset-150-test-40"
    assert prepare(data_root=root).label == "cifar10-subset-200-test-60"


def test_the_test_subset_does_not_depend_on_the_training_seed(tmp_path):
    import torch

    root = cifar(tmp_path)
    a = prepare(data_root=root, train_subset=100, test_subset=30, seed=0)
    b = prepare(data_root=root, train_subset=100, test_subset=30, seed=1)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, b.train.images)  # the training subset still follows the seed


def test_missing_cifar_is_refused_before_any_cell_runs(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ndefaults: {preset: resnet20, device: cpu, speed: false, train_step: false}\n"
                    f"matrix: {{width_multiplier: [1, 2]}}\n"
                    f"include:\n  - {{preset: resnet20, train: {{data_root: {tmp_path / 'none'}, download: false, "
                    f"epochs: 1}}}}\n")
    out = tmp_path / "r.csv"
    one_line_error(capsys, ["--grid", str(grid), "--out", str(out), "--no-progress", "--no-report"],
                   "CIFAR-10 not found")
    assert not out.exists()  # not even the cells that need no data ran


def test_too_small_cifar_is_refused_before_any_cell_runs(tmp_path, capsys):
    root = cifar(tmp_path)
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ndefaults: {preset: resnet20, device: cpu, speed: false, train_step: false}\n"
                    f"matrix: {{width_multiplier: [1]}}\n"
                    f"include:\n  - {{preset: resnet20, train: {{data_root: {root}, test_subset: 1000}}}}\n")
    out = tmp_path / "r.csv"
    one_line_error(capsys, ["--grid", str(grid), "--out", str(out), "--no-progress"],
                   "test_subset: asks for 1000 images but", "holds only 60")
    assert not out.exists()


CORRUPT = {
    "overflow": b"\x8e\xff\xff\xff\xff\xff\xff\xff\x7f",  # made pickle raise OverflowError
    "memory": b"\x8e\x00\x00\x00\x00\x00\x00\x10\x00",  # made pickle raise MemoryError
    "unknown-module": b"cnosuchmodule\nthing\n.",  # made pickle raise ModuleNotFoundError
    "random": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("content", list(CORRUPT.values()), ids=list(CORRUPT))
def test_a_corrupt_batch_file_is_a_one_line_error_naming_the_file(tmp_path, content):
    from bench.train.data import read_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_batch(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read a CIFAR-10 batch") and "\n" not in message


def test_a_batch_file_cannot_import_or_run_anything(tmp_path):
    import pickle

    from bench.train.data import read_batch

    witness = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {witness}",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(UserError, match="cannot read a CIFAR-10 batch"):
        read_batch(str(path))
    assert not witness.exists()


# ------------------------------------------------------------------ 14-16: training
def test_batchnorm_recalibration_is_the_true_mean_over_uneven_batches():
    import torch
    from torch import nn

    from bench.train import training

    bn = nn.BatchNorm2d(1)
    model = nn.Sequential(bn)
    # sorted data: 100 images of 0 then 10 of 1; the true mean over the 110 images is 10/110
    batches = [(torch.zeros(100, 1, 2, 2), None), (torch.ones(10, 1, 2, 2), None)]
    assert training.recalibrate_batchnorm(model, batches, 110) == 110
    assert bn.running_mean.item() == pytest.approx(10 / 110)  # equal batch weights gave 0.5
    assert bn.momentum == 0.1


def test_momentum_zero_with_nesterov_is_refused_naming_both_fields():
    from bench.train.recipe import resolve

    with pytest.raises(ValueError) as info:
        resolve({"momentum": 0})
    assert str(info.value).startswith("nesterov: ") and "momentum: 0" in str(info.value)
    assert resolve({"momentum": 0, "nesterov": False}).momentum == 0
    assert resolve({"momentum": 0, "optimizer": "adam"}).optimizer == "adam"


def test_a_nan_model_is_never_evaluated_even_between_divergence_checks(monkeypatch):
    from torch import nn

    from bench.train import training

    class TurnsNaN(nn.Module):
        """Finite for the first training step, NaN from the second on."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 10)
            self.steps = 0

        def forward(self, x):
            if self.training:
                self.steps += 1
            out = self.fc(x.mean((2, 3)))
            return out * float("nan") if self.steps >= 2 else out

    # as on a GPU: the loss is read back only every 50 steps, more rarely than the evaluations
    monkeypatch.setattr(training, "CPU_DIVERGENCE_CHECK_STEPS", 50)
    evaluated = []
    settings = {"dataset": "synthetic", "train_subset": 200, "test_subset": 100, "epochs": 2, "batch_size": 50,
                "eval_every": 0.5, "bn_recalibration": 0}
    result = training.train_cell(TurnsNaN, settings, device="cpu", on_eval=lambda seed, p: evaluated.append(p))
    assert result["status"] == "diverged" and "step 2 of 8" in result["error"]
    assert [p.step for p in evaluated] == []  # the first evaluation (step 2) came after the NaN


# --------------------------------------------------------------- 17-22: messages
@pytest.fixture
def four_cells(tmp_path):
    return untimed_grid_file(tmp_path, "four", [1, 1.5, 2, 2.5])


def test_an_empty_shard_says_so_instead_of_every_cell_being_done(tmp_path, four_cells, capsys):
    out = tmp_path / "shard8.csv"
    assert main(["--grid", four_cells, "--out", str(out), "--shard", "8/8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "shard 8/8 holds no cell: the grid has 4 cell(s) for 8 shard(s)" in printed
    assert "already" not in printed and not out.exists()


@pytest.mark.parametrize("spec", ["-1/2", "-3/-2"])
def test_a_negative_shard_gets_the_one_line_error_not_the_usage_text(four_cells, capsys, spec):
    err = one_line_error(capsys, ["--grid", four_cells, "--shard", spec], f"--shard {spec}:")
    assert "usage:" not in err


def test_a_corrupt_sidecar_on_resume_is_kept_aside_with_one_clear_warning(tmp_path):
    out = tmp_path / "r.csv"
    run_stand_in(tiny_grid(widths=(1,)), out)
    side = tmp_path / "r.json"
    side.write_text("{ not json")
    _, messages = run_stand_in(tiny_grid(widths=(1, 2)), out)
    warnings = [m for m in messages if m.startswith("warning")]
    assert len(warnings) == 1 and "unreadable sidecar" in warnings[0] and "missing" not in warnings[0]
    assert (tmp_path / "r.json.corrupt").read_text() == "{ not json"
    assert json.loads(side.read_text())["status"] == "finished"


def test_merging_a_folder_says_it_is_a_folder(tmp_path, capsys):
    one_line_error(capsys, ["merge", str(tmp_path), "--out", str(tmp_path / "m.csv")],
                   f"{tmp_path}: is a folder", "*.csv")


def test_a_timeout_row_keeps_the_batch_size_and_counts_it_knows():
    from models import model_complexity

    from bench.run.rows import failure_rows

    raw = {"name": "t", "defaults": {"preset": "resnet20", "device": "cpu", "batch_sizes": [8]},
           "matrix": {"width_multiplier": [1]}}
    cell = expand_grid(raw, "t.yaml").cells[0]
    row = failure_rows(cell, "timeout", "did not finish within --timeout 5 s")[0]
    counts = model_complexity(cell.model)
    assert (row["batch_size"], row["requested_batch_size"]) == (8, 8)
    assert (row["params"], row["macs"], row["activations"]) == (counts.params, counts.macs, counts.acts)
    assert row["status"] == "timeout"
