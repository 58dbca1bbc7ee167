"""A small real run through the CLI, read back with pandas: columns, row count, sane values."""
import json

import pytest

from bench.cli import main
from bench.results.validate import read_table
from bench.results.schema import COLUMNS
from models import get_preset, model_complexity

GRID = """
name: e2e
defaults:
  device: cpu
  batch_sizes: [1, 2]
  warmup: 1
  repeats: 3
  train: {dataset: synthetic, train_subset: 200, test_subset: 100, epochs: 1, batch_size: 50, lr: 0.05}
include:
  - {preset: resnet20}
  - {block: bottleneck, depth: 11, stem: cifar, num_classes: 10, input_size: 32, cardinality: 2, bottleneck_width: 8}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    (root / "e2e.yaml").write_text(GRID)
    out = root / "runs" / "e2e.csv"
    import os

    cwd = os.getcwd()
    os.chdir(root)  # the report goes to ./plots/e2e/
    try:
        code = main(["--grid", str(root / "e2e.yaml"), "--out", str(out), "--no-progress"])
    finally:
        os.chdir(cwd)
    return code, root, out


def test_exit_code_and_files(run):
    code, root, out = run
    assert code == 0
    assert out.exists() and out.with_suffix(".json").exists()
    assert (root / "plots" / "e2e" / "report.md").exists()


def test_csv_reads_back_with_the_schema_and_sane_values(run):
    _, _, out = run
    df = read_table(str(out)).frame
    assert list(df.columns) == COLUMNS
    assert len(df) == 4 and set(df["status"]) == {"ok"}
    assert df["cell_id"].nunique() == 2 and df["run_id"].nunique() == 1
    r20 = df[df["variant"] == "resnet20"]
    expected = model_complexity(get_preset("resnet20"))
    assert set(r20["params"]) == {expected.params} and set(r20["macs"]) == {expected.macs}
    assert (df["flops"] == 2 * df["macs"]).all()
    assert sorted(df["batch_size"]) == [1, 1, 2, 2]
    assert (df["latency_ms_median"] > 0).all() and (df["latency_ms_p90"] >= df["latency_ms_median"]).all()
    assert ((df["throughput_img_s"] - df["batch_size"] * 1e3 / df["latency_ms_median"]).abs() < 1e-6).all()
    assert (df["train_step_ms_median"] > 0).all() and (df["peak_mem_mb"] > 0).all()
    assert df["gpu_peak_alloc_mb"].isna().all()  # CPU run: GPU columns empty
    assert df["top1_acc"].between(0, 1).all() and set(df["dataset"]) == {"synthetic"}
    assert set(df["variant"]) == {"resnet20", "resnext11_2x8d"}
    assert (df["threads"] >= 1).all()


def test_sidecar_has_the_grid_and_environment(run):
    _, _, out = run
    side = json.loads(out.with_suffix(".json").read_text())
    env = side["environment"]
    assert env["software"]["torch"] and env["cpu"]["cpu_count"] >= 1 and env["command"].startswith("benchmark.py")
    cells = side["grid"]["cells"]
    assert len(cells) == 2 and all(c["settings"]["train"]["dataset"] == "synthetic" for c in cells)
