"""Side-by-side timing: interleaved blocks cancel a drifting machine, and the ratio carries a sign-test interval."""
import statistics

import pytest

from bench.measure.paired import median_interval, time_interleaved


class DriftingTimer:
    """Each timed call costs what ``fn`` returns, times a slowdown that grows by ``drift`` per call."""

    name = "fake"

    def __init__(self, drift: float) -> None:
        self.drift = drift
        self.calls = 0

    def time_block(self, fn, iterations):
        total = 0.0
        for _ in range(iterations):
            self.calls += 1
            total += fn() * (1 + self.drift * self.calls)
        return total

    def synchronize(self):
        pass


def test_interleaving_recovers_the_true_ratio_on_a_machine_that_slows_down_twofold():
    timer = DriftingTimer(drift=0.005)
    paired = time_interleaved(lambda: 1.0, lambda: 1.5, timer, rounds=20, calls=5, warmup=0)
    assert paired.ratio == pytest.approx(1.5, rel=0.01)
    assert paired.significant
    # the same calls timed one after the other read the drift as a difference
    timer = DriftingTimer(drift=0.005)
    a = [timer.time_block(lambda: 1.0, 1) for _ in range(100)]
    b = [timer.time_block(lambda: 1.5, 1) for _ in range(100)]
    assert statistics.median(b) / statistics.median(a) > 1.8


def test_the_order_within_a_round_alternates_so_neither_side_always_goes_first():
    seen = []
    timer = DriftingTimer(drift=0.0)
    time_interleaved(lambda: seen.append("a") or 1.0, lambda: seen.append("b") or 1.0, timer, rounds=4, calls=1,
                     warmup=0)
    assert "".join(seen) == "abbaabba"


def test_equal_workloads_are_within_noise():
    noise = iter([1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 1.0] * 10)
    paired = time_interleaved(lambda: next(noise), lambda: next(noise), DriftingTimer(0.0), rounds=20, calls=1,
                              warmup=0)
    low, high = paired.interval
    assert low < 1 < high and not paired.significant
    assert "within noise" in paired.describe("C=1", "C=32")


def test_the_median_interval_uses_the_sign_test_ranks():
    # n = 20 at 95%: the 6th smallest and the 6th largest (P(Binomial(20, 1/2) <= 5) = 0.021)
    assert median_interval(list(range(1, 21)), 0.95) == (6, 15)
    # n = 6 is the smallest sample with a 95% interval: its extremes (P = 1/64 per tail)
    assert median_interval([3, 1, 2, 6, 5, 4], 0.95) == (1, 6)
    assert median_interval([1, 2, 3, 4, 5], 0.95) is None


def test_too_few_rounds_say_so_instead_of_claiming_a_difference():
    paired = time_interleaved(lambda: 1.0, lambda: 2.0, DriftingTimer(0.0), rounds=3, calls=1, warmup=0)
    assert paired.ratio == 2.0 and paired.interval is None and not paired.significant
    assert "too few rounds (3)" in paired.describe()


def test_rounds_and_calls_must_be_positive():
    with pytest.raises(ValueError, match="rounds and calls"):
        time_interleaved(lambda: 1.0, lambda: 1.0, DriftingTimer(0.0), rounds=0, calls=1)


def _grid(tmp_path):
    path = tmp_path / "pair.yaml"
    path.write_text("defaults: {device: cpu, input_size: 16, threads: 1}\n"
                    "include:\n  - {preset: resnet20}\n  - {preset: resnet20, width_multiplier: 2}\n")
    return str(path)


def test_the_script_times_two_variants_of_a_grid_and_prints_their_ratio(tmp_path, capsys):
    from benchmarks.paired_latency import main

    assert main(["--grid", _grid(tmp_path), "--a", "resnet20", "--b", "resnet20_w2", "--rounds", "2",
                 "--calls", "1", "--phase", "train_step"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("train_step at batch 1: resnet20_w2 / resnet20 = ") and "too few rounds (2)" in out


def test_the_script_names_the_grids_variants_when_one_is_missing(tmp_path, capsys):
    from benchmarks.paired_latency import main

    assert main(["--grid", _grid(tmp_path), "--a", "resnet20", "--b", "resnet21"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no variant 'resnet21'; the grid has: resnet20, resnet20_w2" in err


def test_the_rounds_csv_gives_back_the_ratio_and_interval_printed(tmp_path, capsys):
    from benchmarks.paired_latency import main
    from bench.measure.paired import read_rounds

    rounds = tmp_path / "rounds.csv"
    assert main(["--grid", _grid(tmp_path), "--a", "resnet20", "--b", "resnet20_w2", "--rounds", "7",
                 "--calls", "1", "--rounds-csv", str(rounds)]) == 0
    printed = capsys.readouterr().out
    assert main(["--grid", _grid(tmp_path), "--a", "resnet20", "--b", "resnet20", "--rounds", "6",
                 "--calls", "1", "--rounds-csv", str(rounds)]) == 0  # appended: the first comparison stays
    back = read_rounds(str(rounds))
    assert [key[0] for key in back] == ["inference bs1 resnet20_w2/resnet20", "inference bs1 resnet20/resnet20"]
    first = next(iter(back.values()))
    assert len(first.ratios) == 7 and first.describe("resnet20", "resnet20_w2") in printed
    # recomputed by hand from the file's ratio column: the sign-test ranks at n = 7 (95%) are the extremes
    import csv
    with open(rounds) as f:
        ratios = sorted(float(r["ratio"]) for r in csv.DictReader(f) if r["comparison"].startswith("inference bs1 resnet20_w2"))
    assert first.interval == (ratios[0], ratios[-1]) and first.ratio == ratios[3]


def test_a_malformed_rounds_csv_is_one_line_naming_the_line(tmp_path):
    from bench.errors import UserError
    from bench.measure.paired import ROUND_COLUMNS, read_rounds

    path = tmp_path / "rounds.csv"
    path.write_text(",".join(ROUND_COLUMNS) + "\ninference bs1 b/a,t,0.95,0,a,1.0,-2,x\n")
    with pytest.raises(UserError, match=r"rounds.csv: line 2: expected positive finite ms"):
        read_rounds(str(path))
