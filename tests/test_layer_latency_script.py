"""benchmarks/layer_latency.py's generated sentences: the table against the profile and the microbenchmark."""
import pandas as pd

from benchmarks import layer_latency as ll

MICRO_HEADER = "# a comment line\nsweep,stage,channels,spatial,groups,d,batch_size,threads,ms_best,ms_median,gflop_s\n"


def micro(tmp_path, rows):
    path = tmp_path / "grouped_conv.csv"
    path.write_text(MICRO_HEADER + "".join(f"channels,s,{c},{h},{g},{c // g},{b},2,{best},{med},{rate}\n"
                                           for c, h, g, b, best, med, rate in rows))
    return str(path)


def why(rows):
    return pd.DataFrame(rows, columns=["shape", "batch_size", "gflop_s"])


def test_the_microbenchmark_sentence_quotes_both_rates_at_the_same_statistic_and_the_order_they_agree_on(tmp_path):
    path = micro(tmp_path, [(64, 8, 1, 1, 1.0, 2.0, 40.0),    # median-round rate: 20 GFLOP/s
                            (64, 8, 32, 1, 1.0, 1.0, 5.0)])
    text = " ".join(ll.micro_agreement(why([("conv k3 s1 g1 c64>64 h8", 1, 30.0), ("conv k3 s1 g32 c64>64 h8", 1, 4.0),
                                            ("conv k1 s1 g1 c64>64 h8", 1, 9.0)]), path))
    assert "conv k3 s1 g1 c64>64 h8 at batch 1: 30.0 GFLOP/s in the table, 20.0 there" in text
    assert "the 2 shape(s)" in text and "0.80-1.50x" in text
    assert "every grouped shape runs slower than every dense shape" in text


def test_the_microbenchmark_sentence_says_when_the_order_disagrees_and_is_absent_without_a_shared_shape(tmp_path):
    path = micro(tmp_path, [(64, 8, 1, 1, 1.0, 1.0, 20.0), (64, 8, 32, 1, 1.0, 1.0, 5.0)])
    text = " ".join(ll.micro_agreement(why([("conv k3 s1 g1 c64>64 h8", 1, 3.0), ("conv k3 s1 g32 c64>64 h8", 1, 4.0)]),
                                       path))
    assert "disagree on which shapes run slowest" in text
    assert ll.micro_agreement(why([("conv k3 s1 g1 c16>16 h32", 1, 3.0)]), path) == []
    assert ll.micro_agreement(why([("conv k3 s1 g1 c64>64 h8", 1, 3.0)]), str(tmp_path / "none.csv")) == []


def test_the_profile_ranking_sentence_compares_the_order_of_the_top_three_classes():
    def classes(ms):
        return pd.DataFrame({"ms": list(ms.values())}, index=list(ms))

    mine = classes({"conv 1x1": 5.0, "grouped conv 3x3": 3.0, "batch norm": 1.0, "ReLU": 0.1})
    same = ll._ranking_sentence("v", "C=32", mine, classes({"conv 1x1": 4, "grouped conv 3x3": 2, "batch norm": 1}))
    assert same == "C=32: the table and the profile rank the top 3 classes the same (conv 1x1, grouped conv 3x3, batch norm)."
    other = ll._ranking_sentence("v", "C=32", mine, classes({"conv 1x1": 1, "grouped conv 3x3": 2, "batch norm": 3}))
    assert "the profile batch norm, grouped conv 3x3, conv 1x1 (they disagree on the order)" in other


def test_the_layout_sentence_gives_the_conversions_share_of_each_variants_convolution_time(tmp_path, monkeypatch):
    path = tmp_path / "layout.csv"
    head = "shape,batch_size,precision,memory_format,threads,fingerprint_id,macs,ms_median\n"
    path.write_text(head + "conv k1 s1 g1 c8>8 h8,1,fp32,contiguous,2,me,0,1.0\n"
                           "conv k1 s1 g1 c8>8 h8,1,fp32,blocked,2,me,0,0.25\n"
                           "conv k3 s1 g4 c8>8 h8,1,fp32,contiguous,2,me,0,2.0\n"
                           "conv k3 s1 g4 c8>8 h8,1,fp32,blocked,2,me,0,2.5\n"
                           "conv k3 s1 g4 c8>8 h8,1,fp32,blocked,2,other,0,0.1\n")
    monkeypatch.setattr(ll, "study_pair", lambda: ["a", "b"])
    inventories = {"a": [("conv k1 s1 g1 c8>8 h8", 2, 0), ("bn k1 s1 g1 c8>8 h8", 3, 0)],
                   "b": [("conv k3 s1 g4 c8>8 h8", 1, 0)]}
    lines = ll.layout_section(str(path), "me", inventories, {"a": "A", "b": "B"})
    # A: 2 x 1.0 as called, 2 x 0.25 blocked -> 75%; B: the blocked one was slower
    assert "- A at batch 1: its convolutions take 2.00 ms as called, 0.50 ms already blocked: the conversions are " \
           "75% of the convolutions' time." in lines
    assert any(line.startswith("- B at batch 1:") and "-25%" in line and "blocked layout was slower" in line
               for line in lines)
    assert "- batch 1: 1 of 2 conv shapes ran slower already blocked than as called (1 of them grouped): " \
           "conv k3 s1 g4 c8>8 h8." in lines
    assert ll.layout_section(str(tmp_path / "none.csv"), "me", inventories, {}) == []


def block(path, name):
    from bench.results.schema import marker

    start, end = (marker(name, e, ll.EVALUATE_COMMAND) for e in (False, True))
    return path.read_text().split(start + "\n", 1)[1].split("\n" + end, 1)[0] + "\n"


def test_the_docs_and_the_readme_carry_the_committed_evaluation_as_evaluate_generates_them():
    from pathlib import Path

    root = Path(ll.ROOT)
    evaluation = (root / "results" / "layer-latency" / "evaluation.md").read_text()
    assert block(root / "docs" / "layer-latency.md", "evaluation") == ll.docs_block(evaluation)
    table = block(root / "README.md", "layer-errors")
    assert table == ll.readme_table(ll.parse_summary(evaluation))
    assert "| layer table | " in table and len(table.splitlines()) == 7


def test_the_readme_table_is_the_median_rows_of_the_evaluation_per_batch_and_method():
    rows = ll.parse_summary("| 1 | median | constant | all | 9 | 20.0% | 40.0% |\n"
                            "| 1 | min | constant | all | 9 | 1.0% | 2.0% |\n"
                            "| 32 | median | constant | all | 9 | 30.0% | 50.0% |\n")
    table = ll.readme_table(rows)
    assert "| constant | 20.0% / 40.0% | 30.0% / 50.0% |" in table
    assert "| layer table | - | - |" in table and "batch 32 (9 variants)" in table
