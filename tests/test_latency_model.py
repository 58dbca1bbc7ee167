"""The latency model: recovers a known power law, honest held-out errors, refuses foreign fingerprints."""
import math

import numpy as np
import pandas as pd
import pytest

from bench.analysis import latency_model as L
from bench.cli import main
from bench.errors import UserError
from bench.grid import expand_grid
from bench.results.files import ResultWriter, write_json_atomic
from bench.results.schema import empty_row
from bench.run import environment
from models import model_complexity

KEY = ("cpu", "Test CPU", "fp32", 2)


def power_law(macs, acts, params, group):
    # grouped convs (the "32" group) 1.5x slower per MAC: the group offset the model must find
    return 2e-4 * macs ** 0.7 * acts ** 0.2 * params ** 0.05 * (1.5 if group == "32" else 1.0)


def known_points(n=40, seed=0):
    rng = np.random.default_rng(seed)
    pts = pd.DataFrame({"macs": rng.uniform(1e7, 1e8, n), "activations": rng.uniform(1e5, 1e6, n),
                        "params": rng.uniform(1e5, 1e6, n), "group": ["1", "32"] * (n // 2)})
    features = pts[["macs", "activations", "params", "group"]].itertuples(index=False)
    pts["latency_bs1_ms"] = [power_law(*r) for r in features]
    return pts


def test_the_model_recovers_a_known_power_law_with_zero_held_out_error():
    model = L.fit(known_points(), KEY)
    assert model.coef[1:4] == pytest.approx([0.7, 0.2, 0.05], abs=1e-9)
    assert math.exp(model.coef[4]) == pytest.approx(1.5)  # the "32" group's offset
    assert model.median_ape < 1e-9 and model.p90_ape < 1e-9 and len(model.heldout_ape) == 40
    ms, lo, hi = model.predict(5e7, 4e5, 3e5, "32")
    assert ms == pytest.approx(power_law(5e7, 4e5, 3e5, "32")) and lo == pytest.approx(ms) == pytest.approx(hi)


def test_held_out_errors_are_leave_one_out_errors_when_k_equals_n():
    # intercept only: each point is predicted by the geometric mean of the others
    x, y = np.ones((4, 1)), np.log([1.0, 1.0, 1.0, 8.0])
    held = L.heldout_predictions(x, y, np.arange(4))
    assert list(L.percentage_errors(held, y)) == pytest.approx([1.0, 1.0, 1.0, 0.875])


def test_noisy_latencies_give_held_out_errors_of_the_noise_size():
    pts = known_points(200, seed=1)
    noise = np.random.default_rng(2).choice([0.9, 1.1], size=len(pts))  # +-10% exactly
    pts["latency_bs1_ms"] *= noise
    model = L.fit(pts, KEY)
    assert 0.05 < model.median_ape < 0.15 and model.p90_ape < 0.25


def test_too_few_cells_are_refused_with_one_line():
    with pytest.raises(UserError, match=r"needs at least 7 timed cells .* got 5"):
        L.fit(known_points(6).head(5), KEY, source="run.csv")


def test_a_model_of_a_known_power_law_beats_every_baseline_on_the_same_folds():
    model = L.fit(known_points(), KEY)
    assert [b.name for b in model.baselines] == ["constant", "MACs only", "activations only"]
    assert all(b.beaten and b.p_value < 1e-6 and b.median_ape > 0.01 for b in model.baselines)
    assert model.beats_baselines and model.verdict().startswith("beats constant (p = ")
    assert all(len(b.heldout_ape) == len(model.heldout_ape) for b in model.baselines)  # the same cells


def test_a_constant_baseline_held_out_is_the_geometric_mean_of_the_other_folds():
    # intercept only, k = n: each cell predicted by the geometric mean of the others (as the constant baseline is)
    pts = known_points(10)
    pts["latency_bs1_ms"] = [1.0] * 9 + [8.0]
    model = L.fit(pts, KEY, k=10)
    constant = model.baselines[0].heldout_ape
    others = np.exp(np.log(pts["latency_bs1_ms"]).sum() - np.log(pts["latency_bs1_ms"]))  # product of the rest
    expected = np.abs(others ** (1 / 9) / pts["latency_bs1_ms"] - 1)
    assert sorted(constant) == pytest.approx(sorted(expected))


def test_a_model_of_pure_noise_does_not_beat_the_constant_and_says_no_claim_rests_on_it():
    pts = known_points(60, seed=3)
    pts["latency_bs1_ms"] = np.exp(np.random.default_rng(4).normal(1.0, 0.3, len(pts)))  # counts explain nothing
    model = L.fit(pts, KEY)
    constant = model.baselines[0]
    assert not constant.beaten and not model.beats_baselines
    assert "does not beat constant (held-out median APE" in model.verdict()
    assert model.verdict().endswith("no claim rests on this model")


def test_quiet_points_drop_variants_whose_batch_1_latency_is_flagged_noisy():
    speed = pd.DataFrame({"device": "cpu", "device_name": "X", "precision": "fp32", "threads": [2, 2, 2],
                          "variant_id": ["a", "b", "c"], "latency_bs1_ms": [1.0, 2.0, 3.0]})
    rows = pd.DataFrame({"device": "cpu", "device_name": "X", "precision": "fp32", "threads": 2,
                         "variant_id": ["a", "a", "b", "c"], "batch_size": [1, 32, 1, 1],
                         "latency_noisy": [False, True, True, None]})
    # a's batch-32 row is noisy but its batch-1 latency is not; c's flag is unset (an older file): kept
    assert list(L.quiet_points(speed, rows)["variant_id"]) == ["a", "c"]
    assert list(L.quiet_points(speed, rows.drop(columns="latency_noisy"))["variant_id"]) == ["a", "b", "c"]


def test_a_group_the_model_never_saw_has_no_prediction():
    assert all(math.isnan(v) for v in L.fit(known_points(), KEY).predict(5e7, 4e5, 3e5, "8"))


def test_a_model_refuses_a_fingerprint_it_was_not_fitted_on():
    model = L.fit(known_points(), KEY, fingerprints=[{"torch": "2.1", "device_name": "A"}])
    model.check_fingerprint({"torch": "2.1", "device_name": "A"}, "run.csv")
    with pytest.raises(UserError, match=r"run.csv: fingerprint: .*device_name A vs B"):
        model.check_fingerprint({"torch": "2.1", "device_name": "B"}, "run.csv")


# ---------------------------------------------------------------- dry run --predict, through the CLI
SPACE_YAML = """\
defaults: {preset: resnext29_32x4d, width_multiplier: 0.25, stem_width: 16, device: cpu, threads: 2}
sample:
  seed: 1
  n: 30
  settings: {cardinality: {choice: [1, 32]}, bottleneck_width: {int: [4, 64]}, depth: {choice: [11, 20, 29]}}
  constraints: {macs: [10e6, 80e6]}
"""


def _timed_run(tmp_path, env, timed=20, noisy=False, latency=power_law):
    """A result file in which the first ``timed`` sampled cells were timed at ``latency`` (the known power law)."""
    grid_path = tmp_path / "space.yaml"
    grid_path.write_text(SPACE_YAML)
    grid = expand_grid(__import__("yaml").safe_load(SPACE_YAML), str(grid_path), cuda_available=False)
    rows = []
    for cell in grid.cells[:timed]:
        c = model_complexity(cell.model)
        row = empty_row()
        row.update({"run_id": "r1", "cell_id": cell.cell_id, "variant_id": cell.variant_id, "variant": cell.variant,
                    "status": "ok", "device": "cpu", "device_name": env["cpu"].get("cpu_model"), "precision": "fp32",
                    "threads": 2, "cardinality": cell.model.cardinality, "batch_size": 1, "macs": c.macs,
                    "params": c.params, "activations": c.acts,
                    "latency_noisy": noisy,
                    "latency_ms_median": latency(c.macs, c.acts, c.params, str(cell.model.cardinality))})
        rows.append(row)
    csv = str(tmp_path / "run.csv")
    ResultWriter(csv).append(rows)
    write_json_atomic(str(tmp_path / "run.json"), {"run_id": "r1", "environment": env, "cells": {}})
    return str(grid_path), csv, grid


def _this_machine():
    return {"software": environment.software(), "cpu": environment.cpu_info(), "gpus": []}


def test_dry_run_predict_annotates_untimed_samples_with_the_model_s_latency(tmp_path, capsys):
    grid_path, csv, grid = _timed_run(tmp_path, _this_machine())
    assert main(["--grid", grid_path, "--dry-run", "--predict", csv, "--out", str(tmp_path / "new.csv")]) == 0
    out = capsys.readouterr().out
    lines = {cell.cell_id: line for cell in grid.cells for line in out.splitlines() if cell.cell_id in line}
    for cell in grid.cells:
        c = model_complexity(cell.model)
        line = lines[cell.cell_id]
        if grid.cells.index(cell) < 20:
            assert "latency: timed" in line
        else:
            predicted = float(line.split("latency: predicted ")[1].split(" ms")[0])
            known = power_law(c.macs, c.acts, c.params, str(cell.model.cardinality))
            assert predicted == pytest.approx(known, rel=2e-3)  # printed to 3 significant digits


def test_dry_run_predict_refuses_a_run_whose_latencies_are_all_noisy(tmp_path, capsys):
    grid_path, csv, _ = _timed_run(tmp_path, _this_machine(), noisy=True)
    assert main(["--grid", grid_path, "--dry-run", "--predict", csv]) == 2
    err = capsys.readouterr().err.strip()
    assert "latency_noisy: all 20 batch-1 latencies are flagged noisy" in err and "\n" not in err


def test_dry_run_predict_refuses_a_model_that_does_not_beat_its_baselines(tmp_path, capsys):
    noise = iter(np.exp(np.random.default_rng(5).normal(1.0, 0.3, 30)))
    grid_path, csv, _ = _timed_run(tmp_path, _this_machine(), timed=30, latency=lambda *counts: float(next(noise)))
    assert main(["--grid", grid_path, "--dry-run", "--predict", csv]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not beat constant" in err and err.endswith("no predictions from it") and "\n" not in err


def test_dry_run_predict_refuses_a_run_from_another_machine(tmp_path, capsys):
    env = _this_machine()
    env["software"] = {**env["software"], "torch": "0.0.1"}
    grid_path, csv, _ = _timed_run(tmp_path, env)
    assert main(["--grid", grid_path, "--dry-run", "--predict", csv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {csv}: fingerprint: ") and "torch 0.0.1 vs" in err and "\n" not in err


def test_predict_without_dry_run_is_refused(tmp_path, capsys):
    grid_path, csv, _ = _timed_run(tmp_path, _this_machine(), timed=3)
    assert main(["--grid", grid_path, "--predict", csv, "--out", str(tmp_path / "x.csv")]) == 2
    assert "only used with --dry-run" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
