"""Paired accuracy tests over per-image records, RUN.images.csv loading and the compare family.

Hand-made correctness vectors with known answers; scipy is the reference where it has the function
(binomtest for McNemar's exact test)."""
import csv

import numpy as np
import pytest

from bench.analysis.paired_images import ImageRecord, image_totals, load_images, paired_test
from bench.errors import GridError, UserError
from bench.results.compare_spec import describe, parse_compare, parse_compare_arg
from bench.results.image_schema import IMAGE_COLUMNS, encode_bits, images_path


def record(*seeds, test_set="t"):
    return ImageRecord(test_set, tuple(range(len(seeds))), np.array(seeds, dtype=bool))


def test_mcnemar_counts_only_the_images_one_model_got_right_and_matches_scipy():
    from scipy.stats import binomtest

    # 100 images: both right on 60, only the first on 3, only the second on 10, both wrong on 27
    a = [1] * 60 + [1] * 3 + [0] * 10 + [0] * 27
    b = [1] * 60 + [0] * 3 + [1] * 10 + [0] * 27
    r = paired_test(record(a), record(b), n_boot=500)
    assert r.name == "McNemar exact" and r.difference == pytest.approx(0.07)
    assert r.p_value == pytest.approx(binomtest(10, 13, 0.5).pvalue)  # 0.092: 13 discordant images
    assert "10 images right only in the second, 3 only in the first" in r.detail
    assert r.seeds_ahead == (1, 1) and r.low < 0.07 < r.high


def test_identical_models_differ_by_nothing_with_p_1():
    a = [1, 0, 1, 1, 0, 1, 0, 1]
    assert paired_test(record(a), record(a), n_boot=200).p_value == 1.0
    # two seeds of equal accuracy: no seed effect to draw, and the same images for both: nothing moves
    r = paired_test(record(a, a[::-1]), record(a, a[::-1]), n_boot=200)
    assert r.name == "paired bootstrap" and r.difference == 0 and r.p_value == 1.0 and r.low == r.high == 0


def test_rows_scored_on_different_test_sets_are_never_paired():
    with pytest.raises(ValueError, match="refusing to pair accuracies scored on different test sets"):
        paired_test(record([1, 0], test_set="aaa"), record([1, 0], test_set="bbb"))


def test_a_clear_gap_is_significant_and_its_interval_covers_it():
    rng = np.random.default_rng(3)
    difficulty = rng.random(2000)
    a = [rng.random(2000) < 0.6 + 0.4 * (difficulty - 0.5) for _ in range(3)]
    b = [rng.random(2000) < 0.66 + 0.4 * (difficulty - 0.5) for _ in range(3)]
    r = paired_test(record(*a), record(*b), n_boot=2000)
    assert r.low < r.difference < r.high and r.low > 0 and r.p_value == pytest.approx(2 / 2001)
    assert r.seeds_ahead == (3, 3) and r.detail == "2,000 images x 3 seeds, 2,000 resamples"


def test_the_paired_bootstrap_interval_has_its_coverage_neither_less_nor_much_more():
    """Two models with a known true difference (2 pp) and seed noise: the 95% interval covers it in 92-98.5%
    of 200 simulated studies of 1,000 images x 3 seeds (two binomial standard errors each way). Drawing
    seeds and images without :func:`seed_scale` counts the per-image noise twice and covers 99.5%."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(200):
        difficulty = rng.random(1000)
        base = 0.6 + 0.5 * (difficulty - 0.5)
        shift_a, shift_b = rng.normal(0, 0.01, 3), rng.normal(0, 0.01, 3)  # seed-to-seed spread
        a = [rng.random(1000) < base + s for s in shift_a]
        b = [rng.random(1000) < base + 0.02 + s for s in shift_b]
        r = paired_test(record(*a), record(*b), n_boot=400, seed=int(rng.integers(1 << 30)))
        # the population difference these two models stand for: 2 pp (seed shifts average to 0)
        covered += r.low <= 0.02 <= r.high
    assert 0.92 <= covered / 200 <= 0.985


def test_the_seed_draw_adds_only_the_seed_effect_not_the_noise_the_images_carry():
    from bench.analysis.paired_images import seed_scale

    rng = np.random.default_rng(5)
    p = 0.6 + 0.3 * (rng.random(4000) - 0.5)
    same = record(*[rng.random(4000) < p for _ in range(4)])  # seeds differ by noise alone
    shifted = record(*[rng.random(4000) < p + s for s in (-0.05, 0.0, 0.02, 0.05)])  # a real seed effect
    assert seed_scale(same) < 0.5 and 0.9 < seed_scale(shifted) <= (4 / 3) ** 0.5
    assert seed_scale(record([1, 0, 1])) == 1.0 and seed_scale(record([1, 0], [1, 0])) == 0.0


def test_one_resampling_of_the_images_serves_a_whole_family():
    a, b = record([1, 0, 1, 1], [1, 1, 0, 1]), record([0, 0, 1, 1])
    t_a, t_b = image_totals([a, b], n_boot=50)
    assert t_a.shape == (50, 2) and t_b.shape == (50, 1)
    assert paired_test(a, b, n_boot=50, totals=(t_a, t_b)) == paired_test(a, b, n_boot=50)


# ------------------------------------------------------------------ RUN.images.csv
def _images_file(tmp_path, rows):
    csv_path = str(tmp_path / "run.csv")
    with open(images_path(csv_path), "w", newline="") as f:
        writer = csv.DictWriter(f, IMAGE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def _row(seed, bits, run_id="r1", cell_id="c1", test_set="abc", **over):
    row = {"run_id": run_id, "cell_id": cell_id, "variant_id": "v", "seed": seed, "test_images": len(bits),
           "test_set": test_set, "correct_images": sum(bits), "correct": encode_bits(bits)}
    return {**row, **over}


def test_loading_keeps_only_the_result_rows_run_and_orders_seeds(tmp_path):
    path = _images_file(tmp_path, [_row(1, [1, 1, 0]), _row(0, [1, 0, 0]), _row(0, [0, 0, 0], run_id="old")])
    (rec,) = load_images(path, [("r1", "c1")]).values()
    assert rec.seeds == (0, 1) and rec.correct.tolist() == [[True, False, False], [True, True, False]]
    assert load_images(str(tmp_path / "none.csv"), [("r1", "c1")]) == {}


@pytest.mark.parametrize("rows, message", [
    ([_row(0, [1, 0]), _row(0, [1, 1])], "seed 0 of cell c1 (run r1) given twice"),
    ([_row(0, [1, 0]), _row(1, [1, 1], test_set="xyz")], "test_set xyz differs from the cell's other seeds"),
    ([_row(0, [1, 0], correct_images=2)], "correct_images 2 but the bits hold 1 correct images"),
    ([_row(0, [1, 0], correct="!!")], "correct: expected base64 text"),
    ([_row("x", [1, 0])], "seed, test_images and correct_images must be whole numbers"),
])
def test_a_bad_images_file_is_a_one_line_error_naming_file_line_and_field(tmp_path, rows, message):
    path = _images_file(tmp_path, rows)
    with pytest.raises(UserError, match="run.images.csv: line [23]") as e:
        load_images(path, [("r1", "c1")])
    assert message in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ the compare family
def test_the_compare_forms_parse_to_one_normalised_family():
    assert parse_compare("all-pairs") == [{"all_pairs": True}]
    assert parse_compare({"cardinality": [1, 32]}) == [{"setting": "cardinality", "values": [1, 32]}]
    family = parse_compare([["resnet20_w1.1", "resnet26_w0.95"], "all-pairs", "all-pairs"])
    assert family == [{"pair": ["resnet20_w1.1", "resnet26_w0.95"]}, {"all_pairs": True}]
    assert describe(family) == "resnet20_w1.1 vs resnet26_w0.95; all-pairs"
    assert parse_compare_arg("cardinality=1,4,8,32") == [{"setting": "cardinality", "values": [1, 4, 8, 32]}]
    assert parse_compare_arg("a:b") == [{"pair": ["a", "b"]}]


@pytest.mark.parametrize("value, message", [
    ({"cardnality": [1, 32]}, "unknown setting 'cardnality'"),
    ({"cardinality": [1]}, "expected a list of 2 or more values"),
    ({"cardinality": [1, 1]}, "a value is listed twice"),
    (["a", "a"], "expected 'all-pairs'"),
    ([["a", "a"]], "two different variants"),
    ([], "got an empty list"),
])
def test_a_bad_compare_value_is_refused_with_what_was_expected(value, message):
    with pytest.raises(ValueError, match=message):
        parse_compare(value)


def test_the_grid_checks_its_compare_key_and_keeps_it_in_the_sidecar_source():
    from bench.grid import expand_grid

    cell = {"preset": "resnet20", "speed": False}
    grid = expand_grid({"compare": {"cardinality": [1, 32]}, "include": [cell]}, "g.yaml", cuda_available=False)
    assert grid.to_dict()["source"]["compare"] == {"cardinality": [1, 32]}  # what `report` reads back
    with pytest.raises(GridError, match="g.yaml: compare: unknown setting 'depht'"):
        expand_grid({"compare": {"depht": [20, 26]}, "include": [cell]}, "g.yaml", cuda_available=False)


def test_a_sidecar_whose_grid_compare_does_not_parse_is_a_one_line_error(tmp_path):
    from bench.analysis.report_points import Source
    from bench.analysis.reports import comparison_family

    bad = Source(str(tmp_path / "train.csv"), "train", {"grid": {"source": {"compare": {"cardinality": 32}}}})
    with pytest.raises(UserError, match=r"train.json: grid.source.compare: cardinality: expected a list of 2"):
        comparison_family([bad], None)
    good = Source(str(tmp_path / "t.csv"), "t", {"grid": {"source": {"compare": "all-pairs"}}})
    assert comparison_family([good], None).origin == "declared in the grid: `compare:` in t.json"
    assert comparison_family([good], [{"pair": ["a", "b"]}]).text == "a vs b"  # --compare replaces it
    assert comparison_family([Source("x.csv", "x")], None).text == "all-pairs"  # the default
