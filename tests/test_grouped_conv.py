"""The grouped-conv microbenchmark: its CSV reads back, and the sentence says what the numbers do, no more."""
import csv

import pytest

from bench.analysis import grouped_conv as G
from bench.errors import UserError


def _row(d, gflop_s, sweep="channels", channels=128, batch=32, intensity=3.0, noisy=0, roof=100.0, macs=None):
    macs = macs if macs is not None else 64 * 9 * channels * d
    return {"sweep": sweep, "stage": "layer3", "channels": channels, "spatial": 8, "groups": channels // d, "d": d,
            "batch_size": batch, "threads": 2, "macs": macs, "bytes": 1000, "arithmetic_intensity": intensity,
            "ms_best": 2 * macs * batch / gflop_s / 1e6, "ms_median": 1.0, "round_spread": 0.02, "noisy": noisy,
            "rounds": 5, "gflop_s": gflop_s, "peak_gflop_s": 100.0, "bandwidth_gb_s": 25.0,
            "ridge_macs_per_byte": 2.0, "roof_gflop_s": roof, "roof_share": gflop_s / roof,
            "vector_lanes_fp32": 16, "vector_isa": "avx512f", "torch_cpu_capability": "AVX512"}


def _write(tmp_path, rows):
    path = tmp_path / "gc.csv"
    with open(path, "w", newline="") as f:
        f.write("# command: python -m benchmarks.grouped_conv\n")
        writer = csv.DictWriter(f, fieldnames=G.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_a_rate_that_rises_with_d_and_jumps_at_the_vector_width_is_described_as_such(tmp_path):
    rates = {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0, 16: 30.0, 32: 40.0, 64: 50.0}
    path = _write(tmp_path, [_row(d, g) for d, g in rates.items()])
    text = G.sentence(path)
    assert "runs at 1, 2, 4, 8, 30, 40, 50 GFLOP/s for d = 1, 2, 4, 8, 16, 32, 64" in text
    assert "the rate rises at every doubling of d, 50.0x from d = 1 to 64" in text
    assert "at d = 4 (the C=32 network at this stage) it reaches 8% of d = 64's rate" in text
    assert "Every d below the 16-lane vector width runs slower (at most 8 GFLOP/s) than every d at or above it " \
           "(at least 30)" in text
    assert "d = 1, 2, 4, 8, 16, 32, 64 sit right of the probed ridge (2 MACs/byte at a 100 GFLOP/s peak): " \
           "compute-bound in the roofline's terms, yet reaching 1%-50% of the roof" in text
    assert "noisy" not in text and "no ceiling" not in text


def test_a_non_monotone_rate_left_of_the_ridge_and_noisy_rows_are_said_plainly(tmp_path):
    rates = {1: 5.0, 4: 3.0, 16: 4.0, 64: 6.0}
    rows = [_row(d, g, intensity=1.0 if d == 1 else 3.0, noisy=int(d == 4), roof=50.0 if d == 1 else 100.0)
            for d, g in rates.items()]
    text = G.sentence(_write(tmp_path, rows))
    assert "the rate is not monotone in d: it falls at d = 1 -> 4 (5 -> 3) and is highest at d = 64" in text
    assert "does not split the rates: d < 16 reach up to 5 GFLOP/s, d >= 16 as little as 4" in text
    assert "d = 1 sit left of it: memory-bound in the roofline's terms, reaching 10% of the bandwidth roof" in text
    assert "1 of these 4 shapes were noisy" in text


def test_a_shape_faster_than_the_probed_roof_says_the_roof_is_no_ceiling_and_places_nothing_on_it(tmp_path):
    text = G.sentence(_write(tmp_path, [_row(4, 10.0), _row(64, 120.0)]))
    assert "The roof (a matmul probe, 100 GFLOP/s) is below the 120 GFLOP/s that d = 64 reached (1 of these 2 " \
           "shapes above it), so it is no ceiling for this convolution here and this run places no shape on the " \
           "roofline." in text
    assert "compute-bound" not in text and "memory-bound" not in text


def test_the_fixed_macs_sweep_is_quoted_as_time_for_the_same_macs(tmp_path):
    rows = [_row(64, 50.0)] + [_row(d, g, sweep="macs", channels=4096 // d, macs=10 ** 6)
                               for d, g in ((1, 1.0), (64, 10.0))]
    text = G.sentence(_write(tmp_path, rows))
    assert "d = 1 (4096 channels) takes 64 ms and d = 64 (64 channels) 6.4 ms: 10.0x the time for the same MACs" \
        in text


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("gflop_s"), "gflop_s: column missing"),
    (lambda r: r.update(ms_best="fast"), "ms_best: expected a non-negative number, got 'fast' (row 2)"),
])
def test_a_malformed_csv_is_one_line_naming_the_column(tmp_path, mutate, message):
    row = _row(4, 10.0)
    mutate(row)
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    with pytest.raises(UserError) as err:
        G.sentence(str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_benchmark_writes_a_csv_the_analysis_reads_and_a_summary_ending_in_the_sentence(tmp_path):
    from benchmarks import grouped_conv as B

    out = tmp_path / "gc.csv"
    assert B.main(["--threads", "1", "--rounds", "1", "--repeats", "1", "--warmup", "0", "--min-block-ms", "0",
                   "--batch-sizes", "1", "--out", str(out)]) == 0
    assert out.read_text().startswith("# command: python -m benchmarks.grouped_conv --threads 1")
    df = G.read(str(out))
    assert len(df) == len(B.shapes()) and set(df["d"]) == set(B.D_VALUES)
    assert (df["groups"] * df["d"] == df["channels"]).all()  # fixed channels: groups x d
    fixed = df[df["sweep"] == "macs"]
    assert fixed["macs"].nunique() == 1 == (fixed["groups"] * fixed["d"] ** 2).nunique()
    summary = (tmp_path / "gc.txt").read_text().strip().splitlines()
    assert summary[-1] == G.sentence(str(out))
