"""The report subcommand end to end, on small hand-made result CSVs.

Each test renders real figures through the real code path; the expected
frontiers are computed here from the hand-written numbers with the
unit-tested :func:`bench.analysis.pareto.pareto_front`, then compared with report.md.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from bench.cli import main
from bench.errors import UserError
from bench.analysis.pareto import pareto_front
from bench.analysis.reports import ACCURACY_PAIRS, METRICS, SPEED_PAIRS, write_report
from bench.results.files import rows_to_csv_text
from bench.results.schema import COLUMNS, empty_row

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Hand-made cells: (cell_id, variant, family, cardinality, width d, depth, params, MACs,
#                   latency at batch 1 (ms), throughput at batch 8 (img/s), memory at batch 8 (MiB), top-1)
CELLS = [
    ("c00000000001", "resnet20", "resnet", 1, 16, 20, 272_474, 41.0e6, 2.0, 900.0, 20.0, 0.62),
    ("c00000000002", "resnet32", "resnet", 1, 16, 32, 466_906, 69.6e6, 3.1, 520.0, 30.0, 0.66),
    ("c00000000003", "resnet20-w2", "resnet", 1, 16, 20, 1_080_000, 162.0e6, 4.5, 300.0, 55.0, 0.70),
    ("c00000000004", "resnext11-1x16d", "resnet", 1, 16, 11, 150_000, 30.0e6, 1.8, 1100.0, 15.0, 0.55),
    ("c00000000005", "resnext11-4x7d", "resnext", 4, 7, 11, 140_000, 30.5e6, 2.4, 800.0, 17.0, 0.58),
    ("c00000000006", "resnext11-32x4d", "resnext", 32, 4, 11, 500_000, 600.0e6, 9.0, 90.0, 140.0, 0.60),
    # exact duplicate of resnet32's MACs and accuracy: both must stay on the MACs frontier
    ("c00000000007", "resnet32-copy", "resnet", 1, 16, 32, 466_906, 69.6e6, 3.3, 500.0, 31.0, 0.66),
]
FAILED_ID = "c00000000009"
NOISY_VARIANT = "resnet20-w2"


def _rows(cells=CELLS, accuracy=True, device="cpu", device_name="AMD EPYC", precision="fp32", run_id="r1",
          dataset="synthetic", scale=1.0, failed=True):
    """Two rows per cell: batch 1 (latency) and batch 8 (throughput, memory); plus one failed cell."""
    rows = []
    for cid, variant, fam, card, width, depth, params, macs, lat1, thr8, mem8, acc in cells:
        for bs, lat, thr, mem in ((1, lat1 / scale, 1e3 * scale / lat1, mem8 / 4),
                                  (8, 8e3 / (thr8 * scale), thr8 * scale, mem8)):
            r = empty_row()
            r.update(run_id=run_id, cell_id=cid, variant=variant, family=fam, cardinality=card,
                     bottleneck_width=width, depth=depth, block="bottleneck", stem="cifar", layout="cifar",
                     input_size=32, params=params, macs=macs, flops=2 * macs, device=device,
                     device_name=device_name, precision=precision, threads=2, batch_size=bs,
                     requested_batch_size=bs, status="ok", latency_ms_median=lat,
                     latency_noisy=(variant == NOISY_VARIANT and bs == 1), throughput_img_s=thr,
                     achieved_gflop_s=2 * macs * thr / 1e9, peak_mem_mb=mem)
            if accuracy:
                r.update(top1_acc=acc, dataset=dataset, epochs=1, n_seeds=1)
            rows.append(r)
    if failed:
        r = empty_row()
        r.update(run_id=run_id, cell_id=FAILED_ID, variant="resnet110", family="resnet", cardinality=1,
                 device=device, device_name=device_name, precision=precision, requested_batch_size=8,
                 status="oom", error="out of memory at batch 8")
        rows.append(r)
    return rows


def _write(path, rows, sidecar=None):
    path.write_text(rows_to_csv_text(rows, COLUMNS, header=True))
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return str(path)


_ENV = {"timestamp": "2026-01-02T03:04:05+00:00", "git_commit": "abc123def",
        "software": {"torch": "9.9.9", "python": "3.11.0", "cuda": None, "cudnn": None},
        "cpu": {"cpu_model": "AMD EPYC", "cpu_count": 2, "torch_threads": 2}, "gpus": []}
# The runner's sidecar: top level = latest run; ``runs`` = every run that wrote to the file. Run r0 wrote
# no row of this CSV (its rows were replaced), so the report must describe r1 only.
SIDECAR = {
    "run_id": "r1", "status": "finished", "quick": True, "grid": {"name": "handmade"}, "environment": _ENV,
    "runs": [{"run_id": "r0", "status": "killed", "grid_name": "handmade",
              "environment": {**_ENV, "software": {"torch": "0.0.1"}}},
             {"run_id": "r1", "status": "finished", "grid_name": "handmade", "quick": True, "environment": _ENV,
              "finished": "2026-01-02T04:00:00+00:00"}],
}


def _expected(cells, pair):
    """Cell ids on the frontier of ``pair``, from the hand-written numbers (no report code involved)."""
    value = {"macs": lambda c: c[7], "params": lambda c: c[6], "latency": lambda c: c[8],
             "throughput": lambda c: c[9], "memory": lambda c: c[10], "top1": lambda c: c[11]}
    x, y = METRICS[pair.x], METRICS[pair.y]
    pts = [(value[pair.x](c), value[pair.y](c)) for c in cells]
    return {cells[i][0] for i in pareto_front(pts, [x.sense, y.sense])}


def _frontier_ids(report, pair, slug):
    """Cell ids in the report.md frontier table of ``pair`` in section ``slug``."""
    x, y = METRICS[pair.x], METRICS[pair.y]
    heading = f"#### Frontier: {y.short} vs {x.short} — `{slug}`"
    assert heading in report, heading
    table = report.split(heading, 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\|[^|]*\| `([0-9a-f]{12})`", table, flags=re.M))


def _section(report, title):
    return report.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _gpu_cells():
    """The same cells on a GPU in fp16: 20x faster, resnext11-32x4d 3x more, so the frontiers differ."""
    return [c[:8] + (c[8] / 20, c[9] * 20 * (3 if c[1] == "resnext11-32x4d" else 1)) + c[10:] for c in CELLS]


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    """One report from a CPU file (with a failed cell and a sidecar) and a GPU fp16 file (no sidecar).

    Rendering is the slow part, so most tests read this one report."""
    d = tmp_path_factory.mktemp("combined")
    cpu = _write(d / "cpu.csv", _rows(), SIDECAR)
    gpu = _write(d / "gpu.csv", _rows(_gpu_cells(), device="cuda", device_name="NVIDIA H100", precision="fp16",
                                      run_id="r2", failed=False))
    out = d / "out"
    path = write_report([cpu, gpu], str(out))
    return out, open(path, encoding="utf-8").read()


def test_every_figure_is_rendered_and_linked(combined):
    out, report = combined
    names = [f"{slug}-{name}" for slug in ("cpu-fp32", "cuda-fp16")
             for name in [p.name for p in ACCURACY_PAIRS] + ["throughput_vs_batch", "memory_vs_batch"]]
    for name in names:
        png, svg = out / f"{name}.png", out / f"{name}.svg"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert b"<svg" in svg.read_bytes()[:2000]
        assert f"]({name}.png)" in report and f"]({name}.svg)" in report
    # nothing half-written left behind
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]


def test_the_same_figure_is_the_same_bytes_when_drawn_again(tmp_path):
    """No date and no random ids in the SVG: a regenerated report changes in git only where its data did."""
    import matplotlib.pyplot as plt

    from bench.analysis.plots import save_figure

    drawn = []
    for name in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [3, 1, 2])
        ax.set_xlim(0, 4)  # a clipped line: its clip-path id was random
        save_figure(fig, str(tmp_path / name))
        drawn.append(((tmp_path / f"{name}.svg").read_bytes(), (tmp_path / f"{name}.png").read_bytes()))
    assert drawn[0] == drawn[1] and b"<dc:date>" not in drawn[0][0]


@pytest.mark.parametrize("pair", ACCURACY_PAIRS, ids=lambda p: p.name)
def test_frontier_tables_are_the_frontier_function(combined, pair):
    _, report = combined
    assert _frontier_ids(report, pair, "cpu-fp32") == _expected(CELLS, pair)
    assert _frontier_ids(report, pair, "cuda-fp16") == _expected(_gpu_cells(), pair)


def test_duplicate_points_both_stay_on_the_frontier(combined):
    _, report = combined
    ids = _frontier_ids(report, ACCURACY_PAIRS[0], "cpu-fp32")  # top-1 vs MACs
    assert {"c00000000002", "c00000000007"} <= ids


def test_report_content(combined):
    _, report = combined
    # environment from the sidecar
    env = _section(report, "Environment")
    for fact in ("9.9.9", "abc123def", "AMD EPYC", "2026-01-02T03:04:05", "2026-01-02T04:00:00", "handmade"):
        assert fact in env
    assert "0.0.1" not in env and "killed" not in env  # run r0 wrote none of these rows
    # synthetic accuracies are marked wherever they appear
    assert "not CIFAR-10" in report
    assert "62.00 (SYNTHETIC)" in report
    assert not re.search(r"\| 62\.00 \|", report)
    # the noisy timing is flagged
    assert "4.5 (noisy)" in report
    # failed cells are listed and plotted nowhere
    failed = _section(report, "Failed cells")
    assert FAILED_ID in failed and "oom" in failed and "out of memory at batch 8" in failed
    assert report.count(FAILED_ID) == 1
    # ranked table: resnet20 has the best top-1 per ms of latency (62 / 2.0 = 31)
    ranked = report.split("### Ranked", 1)[1].split("\n#", 1)[0]
    first = [line for line in ranked.splitlines() if line.startswith("| 1 |")][0]
    assert "resnet20 " in first and "| 31 |" in first


def test_cardinality_at_equal_complexity(combined):
    _, report = combined
    section = report.split("### Cardinality at equal complexity", 1)[1].split("\n## ", 1)[0]
    assert "resnext11-1x16d" in section and "resnext11-4x7d" in section
    assert "resnext11-32x4d" not in section  # same depth, but 20x the MACs
    assert "resnet20" not in section  # different depth
    # 4x7d: 30.5 / 30.0 MACs = +1.7 %, latency 2.4 / 1.8 = 1.33x
    assert "+1.7%" in section and "1.33×" in section


def test_speed_only_run_uses_speed_pairs(tmp_path):
    # a resumed file: run r1 measured four cells, then r2 (killed later) the other three
    rows = _rows(CELLS[:4], accuracy=False, failed=False) + \
        _rows(CELLS[4:], accuracy=False, failed=False, run_id="r2")
    sidecar = {**SIDECAR, "run_id": "r2", "runs": [
        {"run_id": "r1", "status": "finished", "environment": _ENV},
        {"run_id": "r2", "status": "killed", "environment": {**_ENV, "git_commit": "fff999"}}]}
    csv = _write(tmp_path / "speed.csv", rows, sidecar)
    path = write_report([csv], str(tmp_path / "out"))
    report = open(path, encoding="utf-8").read()
    env = _section(report, "Environment")
    assert "`speed` run r1" in env and "`speed` run r2" in env and "fff999" in env
    assert "run r2 has status killed" in env
    assert "| rows (ok / all) | 8 / 8 | 6 / 6 |" in env  # counted per run
    for pair in SPEED_PAIRS:
        assert (tmp_path / "out" / f"cpu-fp32-{pair.name}.png").exists()
        assert _frontier_ids(report, pair, "cpu-fp32") == _expected(CELLS, pair)
    for pair in ACCURACY_PAIRS:
        if "top1" in (pair.x, pair.y):
            assert not (tmp_path / "out" / f"cpu-fp32-{pair.name}.png").exists()
    assert "speed-only" in report and "Ranked by throughput" in report
    assert "SYNTHETIC" not in report
    assert "None: every row has status ok." in report


def test_several_csvs_are_kept_apart_by_device_and_precision(combined):
    _, report = combined
    assert "## AMD EPYC (cpu), fp32" in report and "## NVIDIA H100 (cuda), fp16" in report
    cpu, gpu = _section(report, "AMD EPYC (cpu), fp32"), _section(report, "NVIDIA H100 (cuda), fp16")
    assert "7 point(s) from `cpu`" in cpu and "7 point(s) from `gpu`" in gpu
    # no averaging across devices: each section reports its own throughput for resnext11-32x4d
    assert "90 @bs8" in cpu and "5400 @bs8" not in cpu
    assert "5400 @bs8" in gpu and "90 @bs8" not in gpu
    env = _section(report, "Environment")
    assert "`cpu`" in env and "`gpu`" in env and "no sidecar (gpu.json)" in env


def test_same_cell_in_two_files_keeps_both_labelled(tmp_path):
    a = _write(tmp_path / "monday.csv", _rows(CELLS[:2], failed=False))
    # resnet20 re-measured: faster, so it must appear twice with its file in the label
    again = [CELLS[0][:8] + (1.0, 1800.0) + CELLS[0][10:]]
    b = _write(tmp_path / "tuesday.csv", _rows(again, run_id="r2", failed=False))
    # monday's rows again in another file (as a merged file repeats its shards): counted once
    copy = _write(tmp_path / "copy.csv", _rows(CELLS[:2], failed=False))
    report = open(write_report([a, b, copy, a], str(tmp_path / "out")), encoding="utf-8").read()
    assert "4 row(s) repeated another file's row exactly" in report
    assert "resnet20 [monday]" in report and "resnet20 [tuesday]" in report
    assert "3 point(s)" in report
    latency = [p for p in ACCURACY_PAIRS if p.x == "latency"][0]
    ids = _frontier_ids(report, latency, "cpu-fp32")
    assert ids == {"c00000000001", "c00000000002"}
    table = report.split("#### Frontier: top-1 (%) vs latency bs1 (ms)", 1)[1].split("\n#", 1)[0]
    assert "resnet20 [tuesday]" in table and "resnet20 [monday]" not in table


def _bad_csvs(tmp_path):
    missing_col = tmp_path / "nomacs.csv"
    cols = [c for c in COLUMNS if c != "macs"]
    rows = [{k: v for k, v in r.items() if k != "macs"} for r in _rows(CELLS[:1])]
    missing_col.write_text(rows_to_csv_text(rows, cols, header=True))
    failed_only = _write(tmp_path / "failed.csv", [r for r in _rows(CELLS[:1]) if r["status"] != "ok"])
    text = _rows(CELLS[:1], failed=False)
    text[0]["params"] = "lots"
    garbled = tmp_path / "garbled.csv"
    garbled.write_text(rows_to_csv_text(text, COLUMNS, header=True))
    header_only = _write(tmp_path / "headeronly.csv", [])
    return {
        "missing file": (str(tmp_path / "nope.csv"), "no such results file"),
        "missing column": (str(missing_col), "missing column(s) macs"),
        "no ok rows": (failed_only, "no rows with status ok (1 oom)"),
        "not a number": (str(garbled), "line 2, column params: expected a whole number >= 1, got 'lots'"),
        "no rows": (header_only, "no rows with status ok"),
    }


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    for what, (path, message) in _bad_csvs(tmp_path).items():
        out = tmp_path / ("out-" + what.replace(" ", "-"))
        assert main(["report", path, "--out", str(out)]) == 2, what
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (what, err)
        assert path in err and message in err, (what, err)
        assert not out.exists(), what  # nothing written for unusable input
        with pytest.raises(UserError):  # what the CLI turns into a warning after a run
            write_report([path], str(out))


def test_out_path_that_is_a_file(tmp_path, capsys):
    csv = _write(tmp_path / "r.csv", _rows(CELLS[:2], failed=False))
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(["report", csv, "--out", str(blocker)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_default_out_folder_and_no_torch(tmp_path):
    """`benchmark.py report X.csv` writes plots/X/; reports never import torch or the model code."""
    csv = _write(tmp_path / "myrun.csv", _rows(CELLS[:3], failed=False))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from bench.cli import main; "
            "rc = main(['report', sys.argv[2]]); "
            "bad = [m for m in ('torch', 'models') if m in sys.modules]; assert not bad, bad; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, REPO, csv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote plots and report to {os.path.join('plots', 'myrun', 'report.md')}"
    assert (tmp_path / "plots" / "myrun" / "report.md").exists()
    assert (tmp_path / "plots" / "myrun" / "cpu-fp32-top1_vs_macs.png").exists()
