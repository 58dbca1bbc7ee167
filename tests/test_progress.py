"""Per-epoch progress lines during training, and the up-front time estimate."""
import csv

from bench.grid import expand_grid
from bench.run import console, estimate
from bench.train import training
from bench.train.training import EpochPoint

SYNTH = {"dataset": "synthetic", "train_subset": 64, "test_subset": 32, "epochs": 2, "batch_size": 16,
         "bn_recalibration": 0}


def _grid(train, **settings):
    raw = {"defaults": {"device": "cpu", "speed": False, "train_step": False, **settings},
           "include": [{"preset": "resnet20", "train": train}]}
    return expand_grid(raw, cuda_available=False)


def test_training_reports_every_epoch_with_loss_accuracy_and_position():
    from models import build_model, get_preset

    points = []
    training.train_cell(lambda: build_model(get_preset("resnet20")), {**SYNTH, "seeds": 2, "target_acc": 0.99},
                        device="cpu", on_epoch=lambda p, run, runs: points.append((p, run, runs)))
    assert [(p.seed, p.epoch, p.epochs, run, runs) for p, run, runs in points] == [
        (0, 1, 2, 0, 2), (0, 2, 2, 0, 2), (1, 1, 2, 1, 2), (1, 2, 2, 1, 2)]
    assert all(p.loss > 0 and p.test_acc is not None for p, _, _ in points)  # evaluated every epoch
    assert [p.step for p, _, _ in points[:2]] == [4, 8] and points[1][0].images == 128


def test_a_fractional_last_epoch_still_gets_a_line_without_accuracy_when_not_evaluated():
    from models import build_model, get_preset

    points = []
    training.train_cell(lambda: build_model(get_preset("resnet20")), {**SYNTH, "epochs": 1.5}, device="cpu",
                        on_epoch=lambda p, run, runs: points.append(p))
    assert [(p.epoch, p.epochs, p.step, p.total_steps) for p in points] == [(1, 2, 4, 6), (2, 2, 6, 6)]
    assert all(p.test_acc is None for p in points)


def test_epoch_line_shows_epoch_loss_accuracy_speed_and_eta():
    point = EpochPoint(seed=0, epoch=2, epochs=5, step=20, total_steps=50, loss=1.234, test_acc=0.615,
                       images=2560, wall_s=10.0)
    line = console.format_epoch("resnet20", point, run=0, runs=2)
    # 30 steps left in this seed + 50 in the next, at 0.5 s a step
    assert line == "  resnet20 seed 1/2 epoch 2/5  loss 1.234  test 61.5%  256 img/s  ETA 40 s"


def test_progress_lines_reach_the_console_and_no_progress_silences_them():
    lines = []
    grid = _grid(SYNTH)
    console.start_run(grid, grid.cells, "/nonexistent.csv", quick=True, progress=True, write=lines.append)
    callback = console.epoch_callback("resnet20")
    callback(EpochPoint(0, 1, 2, 4, 8, 2.0, None, 64, 1.0), 0, 1)
    assert lines and "epoch 1/2" in lines[0]
    console.start_run(grid, grid.cells, "/nonexistent.csv", quick=True, progress=False, write=lines.append)
    assert console.epoch_callback("resnet20") is None


def test_a_short_run_gets_no_estimate_and_no_probe(monkeypatch):
    monkeypatch.setattr(estimate, "probe_rate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("probed")))
    grid = _grid(SYNTH)
    assert estimate.announce(grid.cells, "/nonexistent.csv") is None


def test_a_long_run_is_estimated_from_macs_images_epochs_and_seeds():
    cell = _grid({"dataset": "cifar10", "epochs": 10, "seeds": 3, "bn_recalibration": 0, "tta_flip": False}).cells[0]
    macs = estimate.model_complexity(cell.model).macs
    work = estimate.cell_work(cell)
    assert work.macs == macs * (3 * 50000 * 10 + 10000) * 3
    line = estimate.announce([cell], "/nonexistent.csv", rate=work.macs / 7200,
                             quick_cells=lambda: [_grid({**SYNTH, "epochs": 1}).cells[0]])
    assert line.startswith("estimate: ~2.0 h for 1 cell(s) on this CPU") and "add --quick for a ~" in line


def test_earlier_rows_in_the_output_set_the_rate(tmp_path):
    path = tmp_path / "run.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["cell_id", "macs", "train_img_s"])
        w.writeheader()
        w.writerows([{"cell_id": "a", "macs": 1e6, "train_img_s": 100}, {"cell_id": "b", "macs": "", "train_img_s": ""},
                     {"cell_id": "c", "macs": 2e6, "train_img_s": 100}, {"cell_id": "d", "macs": 3e6, "train_img_s": 100}])
    assert estimate.rate_from_rows(str(path)) == 3 * 2e6 * 100
    cell = _grid({"dataset": "cifar10", "epochs": 10}).cells[0]
    assert "earlier rows in run.csv" in estimate.announce([cell], str(path))


def test_a_run_prints_the_estimate_before_its_first_cell(tmp_path, monkeypatch):
    from bench.run.runner import run_grid
    from bench.run.executors import SerialExecutor

    monkeypatch.setattr(estimate, "probe_rate", lambda *a, **k: 1e9)
    grid = _grid({"dataset": "cifar10", "epochs": 10})
    log = []
    seen = []

    def fake_measure(cell):
        seen.append(len(log))
        return [{"cell_id": cell.cell_id, "status": "ok"}]

    run_grid(grid, str(tmp_path / "out.csv"), executor=SerialExecutor(fake_measure), progress=False, log=log.append)
    assert any(m.startswith("estimate: ~") for m in log[:seen[0]])
