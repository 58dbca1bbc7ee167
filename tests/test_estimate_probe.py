"""The run-time estimate's probe (issue 22, item 10): optional, cheap, in a child, never stopping a run.

Before the fix the probe trained the grid's heaviest model inside the runner
before the first cell: under a 900 MiB cgroup every start was OOM-killed, and
``width_multiplier: 1e20`` raised a traceback. A real cgroup is not made
here; a probe child killed by SIGKILL stands in for the OOM killer (the
kernel's choice of victim is what ``oom_score_adj`` in the child steers, and
only a machine with a memory cgroup can show it).
"""
import sys

import pytest

from bench.cli import main
from bench.errors import UserError
from bench.grid import expand_grid
from bench.run import estimate

LONG = {"dataset": "synthetic", "epochs": 50}  # far over the 60 s below which no estimate is made


def _cells(*models):
    raw = {"defaults": {"device": "cpu", "speed": False, "train_step": False},
           "include": [{**m, "train": LONG} for m in models]}
    return expand_grid(raw, "g.yaml", cuda_available=False).cells


def _no_probe(*args, **kwargs):
    raise AssertionError("probed")


@pytest.fixture(autouse=True)
def _estimates_on(monkeypatch):
    monkeypatch.setattr(estimate, "_enabled", True, raising=False)  # whatever an earlier test's CLI run left


def test_a_grid_whose_only_model_is_too_large_to_probe_gets_no_estimate_and_no_traceback():
    # before the fix the probe built this model in the runner: TypeError from torch.empty, and no run
    note = estimate.announce(_cells({"preset": "resnet20", "width_multiplier": 1e20}), "/nonexistent.csv")
    assert note == "estimate: none (no model of the grid is small enough for a quick probe; --no-estimate hides this)"


def test_the_probe_trains_the_heaviest_model_it_can_afford_not_the_heaviest_of_the_grid():
    cells = _cells({"preset": "resnet20"}, {"preset": "resnet32"}, {"preset": "resnet20", "width_multiplier": 1e20})
    assert estimate.probe_model(cells) == cells[1].model  # resnet32: more work than resnet20, and affordable
    assert estimate.probe_batch(cells[0].model) == 12  # ~0.3 s a step at the pessimistic 5 GMAC/s
    assert estimate.probe_batch(cells[2].model) is None
    from models import get_preset

    # a 2-image step of resnet50 at 224 px needs ~300 MB of weights and optimizer state: over the bound
    assert estimate.probe_batch(get_preset("resnet50")) is None


@pytest.mark.parametrize("child, said", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "the probe failed (killed by signal 9)"),
    ("raise MemoryError('no room')", "the probe failed (exit code 1: MemoryError: no room)"),
    ("print('fast')", "the probe printed no rate"),
])
def test_a_probe_that_is_killed_or_fails_means_no_estimate_and_the_run_goes_on(tmp_path, monkeypatch, child, said):
    from bench.run.executors import SerialExecutor
    from bench.run.runner import run_grid

    monkeypatch.setattr(estimate, "_probe_command", lambda *a: [sys.executable, "-c", child])
    grid = expand_grid({"defaults": {"device": "cpu", "speed": False, "train_step": False},
                        "include": [{"preset": "resnet20", "train": LONG}, {"preset": "resnet32", "train": LONG}]},
                       "g.yaml", cuda_available=False)
    log, measured = [], []

    def fake_measure(cell):
        measured.append(cell.cell_id)
        return [{"cell_id": cell.cell_id, "status": "ok"}]

    run_grid(grid, str(tmp_path / "out.csv"), executor=SerialExecutor(fake_measure), progress=False, log=log.append)
    assert f"estimate: none ({said}); the run goes on" in log
    assert measured == [c.cell_id for c in grid.cells]


def test_no_estimate_turns_off_the_estimate_and_the_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(estimate, "probe_rate", _no_probe)
    estimate.set_enabled(False)
    assert estimate.announce(_cells({"preset": "resnet20"}), "/nonexistent.csv") is None
    # the flag reaches the runner: what the estimate module holds when run_grid starts
    import bench.run.runner as runner

    seen = []

    def stop(*args, **kwargs):
        seen.append(estimate._enabled)
        raise UserError("stopped here")

    monkeypatch.setattr(runner, "run_grid", stop)
    grid = tmp_path / "g.yaml"
    grid.write_text("include:\n  - {preset: resnet20, device: cpu}\n")
    for flags, enabled in ((["--no-estimate"], False), ([], True)):
        assert main(["--grid", str(grid), "--out", str(tmp_path / "o.csv"), "--no-progress", *flags]) == 2
        assert seen[-1] is enabled


@pytest.mark.slow
def test_the_probe_measures_a_rate_in_a_child_process(monkeypatch):
    """The real probe: a child process trains resnet20 for five steps. The parent's _measure_rate is
    replaced by one that fails, so a rate can only have come from the child."""
    monkeypatch.setattr(estimate, "_measure_rate", _no_probe)
    rate = estimate.probe_rate("cpu")
    assert 1e7 < rate < 1e14  # MAC-equivalents per second: any CPU lies in between
