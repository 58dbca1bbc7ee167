"""The CI gate: the quick grid, run through the real CLI, against the committed CPU baseline.

Exact metrics and accuracy gate; timings are reported but never fail here
(``--timings report``, the default), because a shared 2-core CI machine is
too noisy for them. Accuracy is judged against the test set's sampling
error, so the fp32 drift between CPU instruction sets (a few of 500 test
images) passes: .ci/run runs this file a second time under
``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41``. The other tests
prove the gate still catches real regressions: a learning-rate bug injected
into the real training code, and deliberate edits of the committed rows.

Regenerate the baseline with ``scripts/update_quick_baseline.sh`` when a
change legitimately moves its numbers.
"""
import csv
import json
import os
import shutil

import pytest
import yaml

from bench.analysis import regression as reg
from bench.cli import main
from bench.results.files import sidecar_path
from bench.measure.stats import median
from bench.results.samples import format_samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "results", "baselines", "quick-cpu.csv")
GRID = os.path.join(ROOT, "grids", "quick.yaml")
REGENERATE = "regenerate it with scripts/update_quick_baseline.sh"

needs_baseline = pytest.mark.skipif(
    not os.path.exists(BASELINE), reason=f"{os.path.relpath(BASELINE, ROOT)} is absent; {REGENERATE}")


def _read_rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _write_rows(path, header, rows, sidecar_from):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    shutil.copyfile(sidecar_path(sidecar_from), sidecar_path(str(path)))
    return str(path)


def _ok_rows(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, f"{BASELINE} has no status=ok row, so it cannot catch anything; {REGENERATE}"
    return ok


@needs_baseline
def test_quick_grid_passes_against_the_cpu_baseline(tmp_path, capsys):
    out_csv = str(tmp_path / "quick.csv")
    code = main(["--grid", GRID, "--out", out_csv, "--no-report", "--no-progress"])
    run_out = capsys.readouterr()
    assert code == 0, f"the quick grid did not run cleanly:\n{run_out.out[-3000:]}\n{run_out.err[-2000:]}"

    code = main(["compare", out_csv, "--baseline", BASELINE, "--all"])
    out = capsys.readouterr().out
    assert code == 0, f"regression against {BASELINE} (if intended, {REGENERATE}):\n{out}"
    assert "timings: report only" in out and "result: PASS" in out

    # Passing must mean something was compared: every ok baseline cell had its exact
    # metrics checked, and accuracy wherever the run produced it.
    baseline, current = reg.load(BASELINE), reg.load(out_csv)
    comparison = reg.compare(baseline, current, reg.Options())
    ok_cells = {r["cell_id"] for r in baseline.rows if r["status"] == "ok"}
    assert ok_cells, f"{BASELINE} has no status=ok row; {REGENERATE}"
    exact = [ln for ln in comparison.lines if ln.metric in reg.EXACT_METRICS]
    assert len(exact) == len(reg.EXACT_METRICS) * len(ok_cells)
    assert all(ln.verdict == reg.OK for ln in exact)
    has_acc = {r["cell_id"] for r in current.rows if r.get("top1_acc") is not None}
    acc_lines = [ln for ln in comparison.lines if ln.metric == reg.ACCURACY_METRIC]
    assert all(ln.verdict != reg.NEW for ln in acc_lines), (
        f"the run has top1_acc but the baseline does not (a provisional baseline?); {REGENERATE}")
    assert len(acc_lines) == len(has_acc & ok_cells)
    # timings were compared (or marked incomparable with a reason) but never gate here
    timing = [ln for ln in comparison.lines if ln.metric in reg.TIMING_BY_NAME]
    assert timing and not any(ln.gating for ln in timing)


@needs_baseline
def test_gate_catches_a_doubled_width_model(tmp_path, capsys):
    """Simulates a builder bug that doubles the width while the config (and cell id) stay the same."""
    header, rows = _read_rows(BASELINE)
    victim = _ok_rows(rows)[0]["cell_id"]
    for r in rows:
        if r["cell_id"] == victim and r["status"] == "ok":
            for metric in reg.EXACT_METRICS:  # 2x width: ~4x params and MACs in the convolutions
                r[metric] = str(int(float(r[metric]) * 4))
    cur = _write_rows(tmp_path / "wide.csv", header, rows, BASELINE)
    code = main(["compare", cur, "--baseline", BASELINE])
    out = capsys.readouterr().out
    assert code == 1, out
    changed = [ln.split() for ln in out.splitlines() if ln.split()[:1] in (["params"], ["macs"])]
    assert len(changed) == 2 and all(fields[4:6] == ["4.000", "changed"] for fields in changed), out
    assert victim in out
    assert f"result: FAIL ({len(reg.EXACT_METRICS)} changed)" in out


@needs_baseline
def test_gate_catches_a_tight_slowdown_only_when_timings_gate(tmp_path, capsys):
    """A 25% slower forward pass with tight samples: reported by default, fails with --timings gate."""
    header, rows = _read_rows(BASELINE)
    target = next(r for r in _ok_rows(rows) if r["latency_samples_ms"])
    # Both files get tight samples around the baseline's median, so the test does not
    # depend on how noisy the machine that made the baseline was.
    m = float(target["latency_ms_median"])
    tight = [m * (1 + 0.002 * i) for i in range(10)]
    slow = [x * 1.25 for x in tight]
    batch = float(target["batch_size"])

    def set_latency(row, samples):
        row.update(latency_samples_ms=format_samples(samples), latency_ms_median=repr(median(samples)),
                   throughput_img_s=repr(batch * 1e3 / median(samples)))

    set_latency(target, tight)
    base = _write_rows(tmp_path / "base.csv", header, rows, BASELINE)
    set_latency(target, slow)
    cur = _write_rows(tmp_path / "slow.csv", header, rows, BASELINE)

    code = main(["compare", cur, "--baseline", base])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 timing line(s) regressed but not gating" in out

    code = main(["compare", cur, "--baseline", base, "--timings", "gate"])
    out = capsys.readouterr().out
    assert code == 1, out
    lat = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["latency_ms_median"])
    assert lat[4:6] == ["1.250", "regressed"], out
    assert "result: FAIL (2 regressed)" in out


@needs_baseline
def test_committed_baseline_is_well_formed():
    """The committed pair loads with the same validation compare uses, and records where it came from."""
    baseline = reg.load(BASELINE)
    assert baseline.meta is not None, f"{sidecar_path(BASELINE)} is missing; {REGENERATE}"
    assert isinstance(baseline.meta.get("environment"), dict)
    assert baseline.meta.get("baseline", {}).get("name") == "quick-cpu"
    reg.sidecar_thresholds(baseline)  # raises on a malformed thresholds entry
    with open(sidecar_path(BASELINE)) as f:
        json.load(f)


def _baseline_subset(tmp_path, cell_ids):
    """The committed baseline's rows of ``cell_ids`` only, with its sidecar: a baseline of a smaller grid."""
    header, rows = _read_rows(BASELINE)
    return _write_rows(tmp_path / "subset.csv", header, [r for r in rows if r["cell_id"] in cell_ids], BASELINE)


@needs_baseline
def test_gate_fails_on_a_learning_rate_bug_in_the_real_training_code(tmp_path, capsys, monkeypatch):
    """Every step at 1/100 of the scheduled learning rate: the grid and the cell id stay the same,
    accuracy collapses, and the gate must say regressed (not within noise)."""
    from bench.train import training

    scheduled = training.lr_factor
    monkeypatch.setattr(training, "lr_factor", lambda *a, **k: scheduled(*a, **k) / 100)
    with open(GRID) as f:
        grid = yaml.safe_load(f)
    grid["include"] = [{"preset": "resnet20"}]  # the quick grid's resnet20 cell alone, to keep the test short
    grid_path = tmp_path / "quick-resnet20.yaml"
    grid_path.write_text(yaml.safe_dump(grid))
    out_csv = str(tmp_path / "buggy.csv")
    assert main(["--grid", str(grid_path), "--out", out_csv, "--no-report", "--no-progress"]) == 0
    capsys.readouterr()
    cell_ids = {r["cell_id"] for r in _read_rows(out_csv)[1]}
    assert cell_ids <= {r["cell_id"] for r in _read_rows(BASELINE)[1]}, f"resnet20 is not in the baseline; {REGENERATE}"

    code = main(["compare", out_csv, "--baseline", _baseline_subset(tmp_path, cell_ids)])
    out = capsys.readouterr().out
    assert code == 1, out
    acc = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["top1_acc"])
    assert acc[5] == "regressed" and "two-proportion z" in out, out
    assert "result: FAIL (1 regressed)" in out


def _set_accuracy(row, acc, images):
    correct = round(acc * images)
    row.update(top1_acc=repr(correct / images), top1_acc_seeds=repr(correct / images),
               top1_correct_seeds=str(correct), test_images=str(images))


@needs_baseline
def test_gate_on_the_committed_rows_fails_a_real_drop_and_passes_sampling_noise(tmp_path, capsys):
    """A copy of the committed rows with one cell's accuracy lowered: by 1.4 pp (the drift seen between
    CPU instruction sets, within the test set's sampling error) it passes; by 10 pp it fails."""
    header, rows = _read_rows(BASELINE)
    header = header + [c for c in ("test_images", "top1_correct_seeds") if c not in header]
    trained = [r for r in _ok_rows(rows) if r["top1_acc"]]
    assert trained, f"{BASELINE} has no accuracy; {REGENERATE}"
    victim = trained[0]
    with open(GRID) as f:  # a baseline from before test_images: the grid's test subset says how many
        images = int(victim.get("test_images") or yaml.safe_load(f)["defaults"]["train"]["test_subset"])
    base_acc = float(victim["top1_acc"])
    for drop, verdict, code_expected in ((0.014, "ok", 0), (0.10, "regressed", 1)):
        edited = [dict(r) for r in rows]
        for r in edited:
            if r["cell_id"] == victim["cell_id"]:
                _set_accuracy(r, base_acc - drop, images)
        cur = _write_rows(tmp_path / f"drop{drop}.csv", header, edited, BASELINE)
        code = main(["compare", cur, "--baseline", BASELINE, "--all"])
        out = capsys.readouterr().out
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == ["top1_acc"] and
                    ln.split()[2] != ln.split()[3])
        assert code == code_expected and line.split()[5] == verdict, out
        assert "p=" in line and "two-proportion z" in line and "margin" in line
