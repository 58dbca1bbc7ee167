"""The report on a study's two files: training rows (speed: false) and speed rows of the same variants.

Hand-made CSVs shaped like results/studies/cpu-cardinality/: train.csv holds
accuracy and no timings, speed.csv timings and no accuracy; both carry the
variant_id of each architecture. The numbers are invented here, in tmp dirs.
"""
import os

import pytest

from bench.analysis.report_points import points_and_joins
from bench.analysis.reports import load_results, write_report
from bench.results.files import rows_to_csv_text
from bench.results.schema import COLUMNS, empty_row

TEST_IMAGES = 10_000
# (variant, variant_id, cardinality, width d, params, MACs, per-seed correct counts out of TEST_IMAGES)
VARIANTS = [
    ("resnet29_w0.25", "89b3f90e896d", 1, 64, 313_114, 47.1e6, (6829, 6834, 6851)),
    ("resnext29_32x4d_w0.25", "38ddd2ec14ab", 32, 4, 305_500, 48.7e6, (7129, 7054, 7189)),
    ("resnext29_8x14d_w0.25", "072f0dc13bf4", 8, 14, 311_000, 47.05e6, (7174, 7097)),
    ("resnet20_w1.1", "45aa17a7409f", 1, 16, 326_800, 49.7e6, (7620, 7512)),
]


def _base(variant, variant_id, card, width, params, macs, cell_id, run_id):
    r = empty_row()
    r.update(run_id=run_id, cell_id=cell_id, variant_id=variant_id, variant=variant, cardinality=card,
             family="resnext" if card > 1 else "resnet", bottleneck_width=width,
             depth=20 if variant.startswith("resnet20") else 29,
             block="basic" if variant.startswith("resnet20") else "bottleneck",
             stem="cifar", layout="cifar", input_size=32, num_classes=10, params=params, macs=macs, flops=2 * macs,
             device="cpu", device_name="AMD EPYC", precision="fp32", threads=2, status="ok")
    return r


def train_rows(variants=VARIANTS, with_variant_id=True, run_id="train-run"):
    """One row per variant, no batch size, accuracy from the per-seed correct counts (as the runner writes)."""
    rows = []
    for k, (variant, vid, card, width, params, macs, correct) in enumerate(variants):
        r = _base(variant, vid if with_variant_id else None, card, width, params, macs, f"a{k:011d}", run_id)
        seeds = [c / TEST_IMAGES for c in correct]
        mean = sum(seeds) / len(seeds)
        std = (sum((s - mean) ** 2 for s in seeds) / (len(seeds) - 1)) ** 0.5 if len(seeds) > 1 else 0.0
        r.update(dataset="cifar10", epochs=2, n_seeds=len(seeds), top1_acc=mean, top1_acc_std=std,
                 top1_acc_seeds=";".join(f"{s:.4f}" for s in seeds), test_images=TEST_IMAGES,
                 top1_correct_seeds=";".join(str(c) for c in correct), target_acc=0.6, time_to_target_s=900.0)
        rows.append(r)
    return rows


def speed_rows(variants=VARIANTS, with_variant_id=True, run_id="speed-run"):
    """Batches 1, 8, 32, 128 per variant: latency, throughput, train step and memory; no accuracy."""
    rows = []
    for k, (variant, vid, card, width, params, macs, _) in enumerate(variants):
        lat1 = 4.0 + card / 8  # grouped convolutions are slower per MAC on a CPU
        for bs in (1, 8, 32, 128):
            r = _base(variant, vid if with_variant_id else None, card, width, params, macs, f"b{k:011d}", run_id)
            lat = lat1 * bs ** 0.7
            r.update(batch_size=bs, requested_batch_size=bs, latency_ms_median=lat, throughput_img_s=bs * 1e3 / lat,
                     train_step_ms_median=3 * lat, peak_mem_mb=10 + bs, train_peak_mem_mb=20 + 3 * bs)
            rows.append(r)
    return rows


def _write(path, rows):
    path.write_text(rows_to_csv_text(rows, COLUMNS, header=True))
    return str(path)


def _points(tmp_path, train, speed):
    rows, _ = load_results([_write(tmp_path / "train.csv", train), _write(tmp_path / "speed.csv", speed)])
    rows["group"] = "cpu-fp32"
    return points_and_joins(rows[rows["status"] == "ok"])


def test_train_and_speed_rows_join_into_one_point_per_variant(tmp_path):
    points, notes = _points(tmp_path, train_rows(), speed_rows())
    assert notes == []
    assert sorted(points["variant"]) == sorted(v[0] for v in VARIANTS)
    c1 = points.set_index("variant").loc["resnet29_w0.25"]
    assert c1["top1_acc"] == pytest.approx((6829 + 6834 + 6851) / 3 / TEST_IMAGES)
    assert c1["latency_bs1_ms"] == pytest.approx(4.125)
    assert c1["throughput_bs"] == 128 and c1["train_step_bs"] == 128 and c1["mem_bs"] == 128
    assert c1["train_step_ms"] == pytest.approx(3 * 4.125 * 128 ** 0.7)
    assert c1["test_images"] == TEST_IMAGES and c1["top1_correct_seeds"] == "6829;6834;6851"
    assert c1["source"] == "speed" and c1["acc_source"] == "train"
    assert c1["label"] == "resnet29_w0.25"  # one point per variant: no [train]/[speed] suffix needed


def test_files_without_variant_id_keep_train_and_speed_points_apart(tmp_path):
    points, notes = _points(tmp_path, train_rows(with_variant_id=False), speed_rows(with_variant_id=False))
    assert notes == []
    assert len(points) == 2 * len(VARIANTS)
    assert set(points.loc[points["top1_acc"].notna(), "source"]) == {"train"}
    assert points.loc[points["top1_acc"].notna(), "latency_bs1_ms"].isna().all()
    assert "resnet29_w0.25 [train]" in set(points["label"])


def test_two_trainings_of_one_variant_are_not_joined_and_say_so(tmp_path):
    twice = train_rows() + train_rows(VARIANTS[:1], run_id="other-recipe")
    twice[-1]["cell_id"] = "c99999999999"
    points, notes = _points(tmp_path, twice, speed_rows())
    assert len(notes) == 1 and "resnet29_w0.25: 2 trained cells" in notes[0] and "89b3f90e896d" in notes[0]
    c1 = points[points["variant"] == "resnet29_w0.25"]
    assert len(c1) == 3  # two trained points and the speed point, none merged
    assert c1.loc[c1["latency_bs1_ms"].notna(), "top1_acc"].isna().all()
    assert points.loc[points["variant"] == "resnet20_w1.1", "top1_acc"].notna().all()  # others still joined


def test_an_accuracy_within_noise_of_chance_is_marked(tmp_path):
    near = [("resnet29_w0.25", "89b3f90e896d", 1, 64, 313_114, 47.1e6, (1030, 1010)),  # 10.2%: guessing
            ("resnext29_32x4d_w0.25", "38ddd2ec14ab", 32, 4, 305_500, 48.7e6, (1120, 1100)),  # 11.1%: p < 1e-9
            ("resnet20_w1.1", "45aa17a7409f", 1, 16, 326_800, 49.7e6, (7620, 7512))]
    points, _ = _points(tmp_path, train_rows(near), speed_rows(near))
    marked = points.set_index("variant")["near_chance"]
    assert marked.to_dict() == {"resnet29_w0.25": True, "resnext29_32x4d_w0.25": False, "resnet20_w1.1": False}
    note = points.set_index("variant").loc["resnet29_w0.25", "chance_note"]
    assert "binomial test against 10.0%: 2040/20000 correct" in note


def test_without_test_images_chance_uses_the_two_sigma_rule(tmp_path):
    rows = train_rows(VARIANTS[:2])
    for r, (mean, std) in zip(rows, ((0.11, 0.01), (0.15, 0.01))):  # 2 sigma over 3 seeds: 1.15 pp
        r.update(top1_acc=mean, top1_acc_std=std, top1_acc_seeds=None, top1_correct_seeds=None, test_images=None)
    points, _ = _points(tmp_path, rows, speed_rows(VARIANTS[:2]))
    marked = points.set_index("variant")["near_chance"]
    assert marked["resnet29_w0.25"] and not marked["resnext29_32x4d_w0.25"]
    assert "2-sigma rule" in points.set_index("variant").loc["resnet29_w0.25", "chance_note"]


def test_report_of_a_study_joins_files_and_marks_chance(tmp_path):
    near = [VARIANTS[0][:6] + ((1010, 990, 1001),)] + VARIANTS[1:]
    train = _write(tmp_path / "train.csv", train_rows(near))
    speed = _write(tmp_path / "speed.csv", speed_rows(near))
    report = open(write_report([train, speed], str(tmp_path / "out"))).read()
    assert "**Joined on variant_id:** 4 point(s)" in report
    assert "| resnet29_w0.25 | 10.00 ± 0.10 (CHANCE) | 4.125 |" in report  # the ranked table
    assert "| resnet29_w0.25 | `b00000000000` | 0.3131 | 1039 @bs128 | resnet | 1 | speed + train |" in report
    assert "> **Chance-level accuracy.** 1 of 4 accuracy value(s)" in report
    assert "No point has both values" not in report  # every accuracy figure has the joined points
    assert os.path.exists(tmp_path / "out" / "cpu-fp32-top1_vs_latency.png")


def _pair(name):
    from bench.analysis.report_points import ACCURACY_PAIRS

    return next(p for p in ACCURACY_PAIRS if p.name == name)


# resnet29 13 pp behind: with 2 seeds on the other side (Welch df about 1), a gap the test can call
FAR_BEHIND = [VARIANTS[0][:6] + ((5829, 5834, 5851),)] + VARIANTS[1:3]


def test_a_variant_within_the_seed_spread_of_the_frontier_is_tied_not_dropped(tmp_path):
    from bench.analysis.report_points import frontier

    # resnext29_8x14d (47.05 MMACs) dominates both others on MACs; 32x4d is 0.1 pp behind with 3 vs 2 seeds
    # spread ~0.6 pp (tied); resnet29 is 13 pp behind with a tight spread (significantly worse: dropped)
    points, _ = _points(tmp_path, train_rows(FAR_BEHIND), speed_rows(FAR_BEHIND))
    fr = frontier(points, _pair("top1_vs_macs")).points.set_index("variant")
    assert fr["front"].to_dict() == {"resnet29_w0.25": False, "resnext29_32x4d_w0.25": False,
                                     "resnext29_8x14d_w0.25": True}
    assert fr["tied"].to_dict() == {"resnet29_w0.25": False, "resnext29_32x4d_w0.25": True,
                                    "resnext29_8x14d_w0.25": False}
    assert fr.loc["resnext29_32x4d_w0.25", "tied_note"].startswith("0.11 pp below resnext29_8x14d_w0.25, p=0.9")


def test_without_a_spread_to_test_the_frontier_stays_exact(tmp_path):
    from bench.analysis.report_points import frontier

    rows = train_rows(VARIANTS[:3])
    for r in rows:  # one seed, no test set size: a 0.1 pp gap cannot be judged, so nothing is tied
        r.update(n_seeds=1, top1_acc_std=None, top1_acc_seeds=None, top1_correct_seeds=None, test_images=None)
    points, _ = _points(tmp_path, rows, speed_rows(VARIANTS[:3]))
    fr = frontier(points, _pair("top1_vs_macs")).points
    assert fr["front"].sum() == 1 and not fr["tied"].any()


def test_timing_pairs_have_no_ties(tmp_path):
    from bench.analysis.report_points import SPEED_PAIRS, frontier

    points, _ = _points(tmp_path, train_rows(VARIANTS[:3]), speed_rows(VARIANTS[:3]))
    assert not any(frontier(points, pair).points["tied"].any() for pair in SPEED_PAIRS)


def test_the_report_lists_tied_points_apart_from_the_frontier_table(tmp_path):
    train = _write(tmp_path / "train.csv", train_rows(FAR_BEHIND))
    speed = _write(tmp_path / "speed.csv", speed_rows(FAR_BEHIND))
    report = open(write_report([train, speed], str(tmp_path / "out"))).read()
    macs = report.split("#### Frontier: top-1 (%) vs GMACs", 1)[1].split("\n### ", 1)[0]
    frontier_table, tied_table = macs.split("#### Tied with the frontier: top-1 (%) vs GMACs — `cpu-fp32`")
    assert "resnext29_8x14d_w0.25" in frontier_table and "resnext29_32x4d_w0.25" not in frontier_table
    assert "| resnext29_32x4d_w0.25 | `b00000000001` |" in tied_table and "resnet29_w0.25" not in tied_table


def test_headline_table_has_every_quantity_per_variant_best_first(tmp_path):
    train = _write(tmp_path / "train.csv", train_rows())
    speed = _write(tmp_path / "speed.csv", speed_rows())
    report = open(write_report([train, speed], str(tmp_path / "out"))).read()
    head = report.split("### Headline: accuracy, cost and speed per variant", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in head.splitlines() if line.startswith("| resne")]
    assert [r.split(" | ")[0][2:] for r in rows[:4]] == ["resnet20_w1.1", "resnext29_8x14d_w0.25",
                                                         "resnext29_32x4d_w0.25", "resnet29_w0.25"]
    # resnet29: 68.38 ± 0.12 over 3 seeds, 47.1 MMACs, 313.1 k params, 4.125 ms, throughput, step and memory @128
    thr = 128e3 / (4.125 * 128 ** 0.7)
    assert rows[3] == (f"| resnet29_w0.25 | 68.38 ± 0.12 (n=3) | 47.1 | 313.1 | 4.125 | {thr:.4g} @bs128 | "
                       f"{3 * 4.125 * 128 ** 0.7:.4g} @bs128 | 138 @bs128 | 404 @bs128 |")


def write_images(csv_path, rows, test_set="0123456789ab", seed=0):
    """RUN.images.csv for train rows: per seed, bits whose count is the row's correct count, the images
    ordered by a difficulty all models share (as real models largely agree on which images are hard)."""
    import numpy as np

    from bench.results.image_schema import IMAGE_COLUMNS, encode_bits, images_path

    rng = np.random.default_rng(seed)
    difficulty = rng.random(TEST_IMAGES)
    out = []
    for r in rows:
        for k, correct in enumerate(int(c) for c in r["top1_correct_seeds"].split(";")):
            order = np.argsort(difficulty + 0.3 * rng.random(TEST_IMAGES))
            bits = np.zeros(TEST_IMAGES, bool)
            bits[order[:correct]] = True
            out.append({"run_id": r["run_id"], "cell_id": r["cell_id"], "variant_id": r["variant_id"], "seed": k,
                        "test_images": TEST_IMAGES, "test_set": test_set, "correct_images": correct,
                        "correct": encode_bits(bits)})
    path = images_path(str(csv_path))
    with open(path, "w", newline="") as f:
        import csv

        writer = csv.DictWriter(f, IMAGE_COLUMNS)
        writer.writeheader()
        writer.writerows(out)
    return path


def _tests(tmp_path, family=None, images=True, variants=VARIANTS):
    from bench.analysis.report_points import Family, accuracy_tests
    from bench.analysis.reports import load_image_records

    train, speed = train_rows(variants), speed_rows(variants)
    rows, sources = load_results([_write(tmp_path / "train.csv", train), _write(tmp_path / "speed.csv", speed)])
    if images:
        write_images(tmp_path / "train.csv", train)
    rows["group"] = "cpu-fp32"
    points, _ = points_and_joins(rows[rows["status"] == "ok"])
    return accuracy_tests(points, family or Family(), load_image_records(rows, sources))


def test_the_default_family_is_every_pair_not_the_ones_the_data_singled_out(tmp_path):
    tests = _tests(tmp_path, images=False)
    pairs = {frozenset((c.first, c.second)) for c in tests.comparisons}
    assert len(tests.comparisons) == 6 and len(pairs) == 6  # 4 variants: C(4, 2) pairs, each once
    assert {c.kind for c in tests.comparisons} == {"all-pairs"} and tests.family.text == "all-pairs"
    assert all(c.difference > 0 for c in tests.comparisons)  # the less accurate first
    raw = sorted(c.p_value for c in tests.comparisons)
    assert min(c.holm_p for c in tests.comparisons) == pytest.approx(min(1.0, 6 * raw[0]))  # Holm over all 6
    assert all(c.family_size == 6 and c.test_name == "Welch t on seed means" for c in tests.comparisons)


def test_a_declared_setting_contrast_pairs_only_points_that_differ_in_that_setting(tmp_path):
    from bench.analysis.report_points import Family
    from bench.analysis.verdicts import AccuracySample, seed_mean_test

    tests = _tests(tmp_path, Family(({"setting": "cardinality", "values": [1, 32]},), "test"), images=False)
    # resnet20_w1.1 has cardinality 1 too, but another depth: only resnet29 vs resnext29_32x4d is declared
    (c,) = tests.comparisons
    assert (c.kind, c.first, c.second) == ("cardinality 1 vs 32", "resnet29_w0.25", "resnext29_32x4d_w0.25")
    c1, c32 = (AccuracySample(tuple(x / TEST_IMAGES for x in v[6]), TEST_IMAGES, v[6]) for v in VARIANTS[:2])
    welch = seed_mean_test(c1, c32, 0.05)
    assert c.p_value == pytest.approx(welch.p_value) and c.holm_p == pytest.approx(welch.p_value)  # family of 1
    assert (c.low, c.high) == pytest.approx((c.difference - welch.critical, c.difference + welch.critical))


def test_with_per_image_records_each_pair_gets_the_paired_bootstrap(tmp_path):
    tests = _tests(tmp_path)
    assert {c.test_name for c in tests.comparisons} == {"paired bootstrap"} and tests.notes == []
    card = next(c for c in tests.comparisons if {c.first, c.second} == {"resnet29_w0.25", "resnext29_32x4d_w0.25"})
    assert card.difference == pytest.approx((7129 + 7054 + 7189 - 6829 - 6834 - 6851) / 3 / TEST_IMAGES)
    assert card.low < card.difference < card.high and card.seeds_ahead == (3, 3)
    assert "10,000 images x 3 seeds, 10,000 resamples" in card.test


def test_records_on_different_test_sets_are_refused_and_compared_unpaired(tmp_path):
    from bench.analysis.paired_images import load_images
    from bench.analysis.report_points import Family, accuracy_tests

    train = train_rows(VARIANTS[:2])
    path = _write(tmp_path / "train.csv", train)
    write_images(path, train[:1], test_set="aaaaaaaaaaaa")
    other = load_images(path, [(train[0]["run_id"], train[0]["cell_id"])])
    write_images(path, train[1:], test_set="bbbbbbbbbbbb")
    rows, sources = load_results([path])
    rows["group"] = "cpu-fp32"
    points, _ = points_and_joins(rows[rows["status"] == "ok"])
    from bench.analysis.reports import load_image_records

    images = load_image_records(rows, sources)
    images[("train", train[0]["run_id"], train[0]["cell_id"])] = next(iter(other.values()))
    tests = accuracy_tests(points, Family(), images)
    (c,) = tests.comparisons
    assert c.test_name == "Welch t on seed means"
    assert tests.notes == ["resnet29_w0.25 and resnext29_32x4d_w0.25 were scored on different test sets "
                           "(aaaaaaaaaaaa vs bbbbbbbbbbbb): not paired"]


def test_a_declared_trend_that_cannot_run_is_not_called_undeclared(tmp_path):
    import json

    # C = 1, 32, 8 trained (no C=4, so the declared trend has a level missing); the resnet20 timed only
    train = train_rows(VARIANTS[:3])
    train_csv = _write(tmp_path / "train.csv", train)
    write_images(train_csv, train)  # paired: C=32 vs C=1 is significant, so its sentence names the family
    sidecar = {"schema_version": 1, "run_id": "train-run", "runs": [{"run_id": "train-run", "status": "finished"}],
               "grid": {"name": "study", "source": {"compare": [{"cardinality": [1, 4, 8, 32]}]}}}
    (tmp_path / "train.json").write_text(json.dumps(sidecar))
    report = open(write_report([train_csv, _write(tmp_path / "speed.csv", speed_rows())],
                               str(tmp_path / "out"))).read()
    findings = report.split("### Findings", 1)[1].split("\n### ", 1)[0]
    assert "- The declared trend test over cardinality (1, 4, 8, 32) could not be run" in findings
    assert "No trend test was declared" not in findings
    # the family is the pairs the trained variants form, and the sentence says how many of the section's
    assert "over the 3 declared pairs (cardinality 1, 4, 8, 32) that the 3 of 4 variants with an accuracy form" \
        in findings


def test_a_trend_claim_needs_a_declared_trend_test(tmp_path):
    from bench.analysis.report_points import Family

    variants = VARIANTS[:3] + [("resnext29_4x24d_w0.25", "aaaaaaaaaaaa", 4, 24, 309_300, 47.9e6, (7067, 6978))]
    plain = _tests(tmp_path, images=False, variants=variants)
    assert plain.trends == []
    declared = _tests(tmp_path, Family(({"setting": "cardinality", "values": [1, 4, 8, 32]},), "test"),
                      images=False, variants=variants)
    (trend,) = declared.trends
    assert trend.labels == ("resnet29_w0.25", "resnext29_4x24d_w0.25", "resnext29_8x14d_w0.25",
                            "resnext29_32x4d_w0.25")
    assert not trend.result.monotone  # 68.38, 70.23, 71.36, 71.24: C=8 above C=32
    assert trend.result.slope > 0 and len(declared.comparisons) == 6  # every pair of the 4 values, all matched
    assert trend.result.test_name == "Welch t on the slope"  # no per-image file: the seeds and the test-set error
    paired = _tests(tmp_path, Family(({"setting": "cardinality", "values": [1, 4, 8, 32]},), "test"),
                    variants=variants)
    assert paired.trends[0].result.test_name == "paired bootstrap slope"
    assert paired.trends[0].result.slope == pytest.approx(trend.result.slope)  # the same seeds' accuracies


def test_the_study_report_generates_findings_from_the_family_the_grid_declared(tmp_path):
    import json

    train, speed = train_rows(), speed_rows()
    train_csv = _write(tmp_path / "train.csv", train)
    write_images(train_csv, train)
    sidecar = {"schema_version": 1, "run_id": "train-run", "runs": [{"run_id": "train-run", "status": "finished"}],
               "grid": {"name": "study", "source": {"compare": [{"cardinality": [1, 32]}, "all-pairs"]}}}
    (tmp_path / "train.json").write_text(json.dumps(sidecar))
    out = tmp_path / "out"
    report = open(write_report([train_csv, _write(tmp_path / "speed.csv", speed)], str(out),
                               limitations=["the recipe was tuned on the test set"])).read()
    findings = report.split("### Findings", 1)[1].split("\n### ", 1)[0]
    assert "declared in the grid: `compare:` in train.json" in findings
    sentence = next(line for line in findings.splitlines() if "resnext29_32x4d_w0.25 led resnet29_w0.25" in line)
    assert sentence.startswith("- After 2 epochs on 10,000 test images, resnext29_32x4d_w0.25 led resnet29_w0.25 "
                               "by 2.86 pp, 95% CI ")
    # 3 seeds each way ahead: every resample agrees, so p is the bootstrap's floor 2/10,001, an upper bound,
    # and Holm over 6 pairs multiplies it: 'p ≤ 0.0012', never 'p = '
    assert "ahead in 3 of 3 seeds (paired bootstrap; 10,000 images x 3 seeds, 10,000 resamples; Holm-adjusted " \
           "p ≤ 0.0012 over the 6 declared pairs (cardinality 1, 32; all-pairs))." in sentence
    assert "| +2.01 to +3.69 | ≤ 0.0002 | ≤ 0.0012 | significant |" in report
    assert "No trend test was declared" in findings
    assert "- Limitation: the recipe was tuned on the test set." in findings
    assert "| resnext29_32x4d_w0.25 − resnet29_w0.25 | cardinality 1 vs 32, all-pairs |" in report


def test_report_compare_option_replaces_the_family_and_bad_values_are_one_line_errors(tmp_path, capsys):
    from bench.cli import main

    train_csv = _write(tmp_path / "train.csv", train_rows(VARIANTS[:2]))
    assert main(["report", train_csv, "--out", str(tmp_path / "o"), "--compare", "cardnality=1,32"]) == 2
    err = capsys.readouterr().err
    assert "report --compare 'cardnality=1,32': unknown setting 'cardnality'" in err and "Traceback" not in err
    assert main(["report", train_csv, "--out", str(tmp_path / "o"), "--compare",
                 "resnet29_w0.25:resnext29_32x4d_w0.25"]) == 0
    report = (tmp_path / "o" / "report.md").read_text()
    assert "**resnet29_w0.25 vs resnext29_32x4d_w0.25** (given as `report --compare`), 1 pair(s)" in report


def test_headline_difference_without_spread_is_not_tested(tmp_path):
    from bench.analysis.report_points import headline_comparisons

    rows = train_rows(VARIANTS[:2])
    for r in rows:
        r.update(n_seeds=1, top1_acc_std=None, top1_acc_seeds=None, top1_correct_seeds=None, test_images=None)
    points, _ = _points(tmp_path, rows, speed_rows(VARIANTS[:2]))
    comparisons = headline_comparisons(points)
    assert comparisons and all(c.p_value is None and not c.significant for c in comparisons)
    assert comparisons[0].test == "not testable: one seed and test_images unknown"


def test_a_high_system_time_share_is_flagged_like_a_noisy_timing(tmp_path):
    speed = speed_rows(VARIANTS[:2])
    for r in speed:
        r["latency_sys_share"] = 0.25 if r["variant"] == "resnet29_w0.25" else 0.01
    columns = list(COLUMNS) + [c for c in ("latency_sys_share",) if c not in COLUMNS]  # older schemas lack it
    (tmp_path / "speed.csv").write_text(rows_to_csv_text(speed, columns, header=True))
    train = _write(tmp_path / "train.csv", train_rows(VARIANTS[:2]))
    report = open(write_report([train, str(tmp_path / "speed.csv")], str(tmp_path / "out"))).read()
    assert "**System time** above 10% of a timed loop" in report and "resnet29_w0.25 (forward 25%)" in report
    assert "resnext29_32x4d_w0.25 (forward" not in report
