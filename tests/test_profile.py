"""Profiling: exact MAC attribution, op attribution by scope and sequence number, the honesty checks, files."""
import contextlib
import dataclasses
import itertools
import os
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch.autograd import DeviceType

from bench import cli
from bench.analysis import profile_report
from bench.grid import expand_grid
from bench.measure import profile as P
from bench.results.files import read_header
from bench.results.profile_rows import agreement, profile_rows
from bench.results.profile_schema import OP_CLASSES, PROFILE_COLUMNS, PROFILE_ROWS_KEY, profile_path
from bench.run.executors import SerialExecutor
from bench.run.runner import run_grid
from models import build_model, get_preset, model_complexity
from models.summary import architecture_summary


# ------------------------------------------------------------- MAC attribution
def _configs():
    quarter = dict(width_multiplier=0.25, stem_width=16)
    return {
        "resnet50 (imagenet stem)": dataclasses.replace(get_preset("resnet50"), input_size=64),
        "resnext50_32x4d (grouped, imagenet stem)": dataclasses.replace(get_preset("resnext50_32x4d"), input_size=64),
        "resnet20 (basic, cifar)": get_preset("resnet20"),
        "resnext29 32x4d quarter width": dataclasses.replace(get_preset("resnext29_32x4d"), **quarter),
        "resnext29 1x64d quarter width": dataclasses.replace(get_preset("resnext29_32x4d"), cardinality=1,
                                                             bottleneck_width=64, **quarter),
    }


@pytest.mark.parametrize("name", list(_configs()))
def test_per_class_macs_add_up_exactly_to_the_models_macs_and_per_stage_to_its_stages(name):
    config = _configs()[name]
    model = build_model(config)
    costs = P.record_costs(model, config, torch.randn(2, 3, config.input_size, config.input_size),
                           contextlib.nullcontext)
    by_key = P.costs_by_key(costs, batch=2)
    inference = {k: v["macs"] for k, v in by_key.items() if k[0] == "inference"}
    assert sum(inference.values()) == model_complexity(config).macs
    for row in architecture_summary(config).rows:
        assert sum(v for k, v in inference.items() if k[1] == row.name) == row.macs, row.name
    classes = {k[2] for k, v in inference.items() if v}
    assert ("grouped conv 3x3" in classes) == (config.cardinality > 1)
    assert ("conv 7x7 stem" in classes) == (config.stem == "imagenet")


def test_backward_macs_count_both_gradients_except_the_stem_convs_input():
    config = get_preset("resnet20")
    costs = P.record_costs(build_model(config), config, torch.randn(2, 3, 32, 32), contextlib.nullcontext)
    stem = next(c for c in costs if c.stage == "stem" and c.macs)
    assert sum(c.backward_macs for c in costs) == 2 * model_complexity(config).macs - stem.macs


def test_check_macs_refuses_costs_that_do_not_add_up():
    config = get_preset("resnet20")
    with pytest.raises(P.ProfileError, match="add up to"):
        P.check_macs([P.LayerCost("layer1", "dense conv 3x3", macs=5)], config)


@pytest.mark.parametrize("kernel, groups, stage, expected", [
    (1, 1, "layer2", "conv 1x1"), (3, 1, "layer1", "dense conv 3x3"), (3, 32, "layer3", "grouped conv 3x3"),
    (7, 1, "stem", "conv 7x7 stem"), (3, 1, "stem", "dense conv 3x3"), (5, 1, "layer1", "other")])
def test_conv_class_follows_kernel_groups_and_stage(kernel, groups, stage, expected):
    assert P.conv_class(kernel, groups, stage) == expected


# ------------------------------------------------------- attribution of events
class Events:
    """A fake torch.profiler event list: a tree of events with self times and sequence numbers."""

    def __init__(self, start=0):
        self.events = []
        self._clock = itertools.count(start)

    def add(self, name, parent=None, cpu=0.0, cuda=0.0, seq=-1, device_type=DeviceType.CPU):
        start = next(self._clock)
        e = SimpleNamespace(name=name, cpu_parent=parent, sequence_nr=seq, self_cpu_time_total=cpu,
                            self_device_time_total=cuda, time_range=SimpleNamespace(start=start, end=start),
                            device_type=device_type)
        self.events.append(e)
        return e

    def close(self, event):
        """End ``event`` now: it spans everything added since it."""
        event.time_range.end = next(self._clock)


def _inference_events(start=0):
    ev = Events(start)
    phase = ev.add("phase::inference", cpu=50)
    conv = ev.add("prof::layer1|grouped conv 3x3", phase, cpu=40)
    top = ev.add("aten::conv2d", conv, cpu=2, cuda=0, seq=0)
    ev.add("aten::mkldnn_convolution", top, cpu=100, cuda=70)
    block = ev.add("prof::layer1|block", phase, cpu=30)
    ev.add("aten::add_", block, cpu=3, cuda=4)
    ev.add("aten::empty", ev.add("prof::head|linear", phase), cpu=1, cuda=0)
    ev.close(phase)
    ev.add("aten::relu", None, cpu=1000)  # outside every phase: not profiled work
    return ev.events


def test_attribute_sums_operator_cpu_time_per_scope_and_leaves_markers_out():
    totals = P.attribute(_inference_events(), "cpu")
    assert totals[("inference", "layer1", "grouped conv 3x3")] == [{"us": 102.0, "calls": 1}]
    assert totals[("inference", "layer1", "residual add")] == [{"us": 3.0, "calls": 1}]
    assert totals[("inference", "head", "linear")][0]["us"] == 1.0
    assert sum(v[0]["us"] for v in totals.values()) == 106.0  # markers' 120 us of own time and the stray op left out


def test_attribute_takes_kernel_time_on_cuda():
    totals = P.attribute(_inference_events(), "cuda")
    assert totals[("inference", "layer1", "grouped conv 3x3")][0]["us"] == 70.0
    assert totals[("inference", "layer1", "residual add")][0]["us"] == 4.0


def _with_kineto_gpu_copies(events):
    """What kineto adds on CUDA: each record_function range that encloses kernel launches, copied onto the GPU
    timeline with the same name and device_type CUDA (no CPU parent, later start), and the kernels themselves."""
    gpu = Events(start=10_000 + int(events[0].time_range.start))
    for e in events:
        if e.name.startswith((P.PHASE, P.SCOPE)):
            gpu.close(gpu.add(e.name, device_type=DeviceType.CUDA, cuda=e.self_device_time_total))
        elif e.self_device_time_total:
            gpu.add("void cudnn_kernel<...>", device_type=DeviceType.CUDA, cuda=e.self_device_time_total)
    return events + gpu.events


def test_kineto_gpu_copies_of_the_scopes_neither_mark_iterations_nor_halve_the_times():
    # Proves: GPU-side duplicates (device_type CUDA) of phase and layer scopes and the kernel events are left
    # out, so 5 iterations stay 5 and each class keeps its kernel time and calls. Only a GPU shows that real
    # kineto traces have this shape (the fake copies the shape torch 2.x's FunctionEvent list has).
    events = []
    for i in range(5):
        events += _with_kineto_gpu_copies(_inference_events(100 * i))
    per_iteration = P.attribute(events, "cuda")
    conv = per_iteration[("inference", "layer1", "grouped conv 3x3")]
    assert len(conv) == 5
    assert P.median_iteration(per_iteration)[("inference", "layer1", "grouped conv 3x3")] == {"us": 70.0, "calls": 1}
    assert P.median_iteration(per_iteration)[("inference", "layer1", "residual add")] == {"us": 4.0, "calls": 1}


def test_a_phase_marked_a_different_number_of_times_than_profiled_iterations_is_an_error():
    events = _inference_events(0) + _inference_events(100)
    assert len(P.attribute(events, "cpu", iterations=2)[("inference", "layer1", "residual add")]) == 2
    with pytest.raises(P.ProfileError, match="phase::inference marked 2 times in 3 profiled iterations"):
        P.attribute(events, "cpu", iterations=3)


def test_each_iteration_is_kept_apart_and_the_median_iteration_ignores_one_slow_one():
    slow = _inference_events(200)
    for e in slow:  # an iteration slowed down 50x (a busy shared machine)
        e.self_cpu_time_total *= 50
    events = _inference_events(0) + _inference_events(100) + slow
    per_iteration = P.attribute(events, "cpu")
    assert [it["us"] for it in per_iteration[("inference", "layer1", "residual add")]] == [3.0, 3.0, 150.0]
    assert P.median_iteration(per_iteration)[("inference", "layer1", "residual add")] == {"us": 3.0, "calls": 1}


def test_backward_ops_go_to_the_scope_of_the_forward_op_that_made_their_node():
    ev = Events()
    fwd = ev.add("phase::train_forward")
    ev.close(fwd)  # (children are added after; only backward phases' ranges matter)
    ev.add("aten::conv2d", ev.add("prof::layer2|conv 1x1", fwd), cpu=5, seq=7)
    # an op that makes no autograd node takes the next number: the conv3x3 below, the last with 8, owns it
    ev.add("aten::view", ev.add("prof::layer2|block", fwd), cpu=1, seq=8)
    ev.add("aten::conv2d", ev.add("prof::layer3|dense conv 3x3", fwd), cpu=5, seq=8)
    bwd = ev.add("phase::train_backward")
    node = ev.add("autograd::engine::evaluate_function: ConvolutionBackward0", bwd, cpu=1, seq=8)
    ev.add("aten::convolution_backward", ev.add("ConvolutionBackward0", node, cpu=2, seq=8), cpu=30)
    node7 = ev.add("autograd::engine::evaluate_function: ConvolutionBackward0", bwd, cpu=1, seq=7)
    ev.add("aten::convolution_backward", node7, cpu=20)
    ev.add("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad", bwd, cpu=4, seq=-1)
    # on CUDA the engine runs backward on its own thread: no phase scope above the node, but inside its time range
    cuda_node = ev.add("autograd::engine::evaluate_function: ConvolutionBackward0", None, cpu=1, cuda=0, seq=7)
    ev.add("aten::convolution_backward", cuda_node, cpu=5, cuda=40)
    ev.close(bwd)
    ev.add("autograd::engine::evaluate_function: ConvolutionBackward0", None, cpu=99, seq=7)  # after it: no phase
    totals = {k: v[0] for k, v in P.attribute(ev.events, "cpu").items()}
    assert totals[("train_backward", "layer3", "dense conv 3x3")] == {"us": 33.0, "calls": 1}
    assert totals[("train_backward", "layer2", "conv 1x1")] == {"us": 27.0, "calls": 2}
    assert P.attribute(ev.events, "cuda")[("train_backward", "layer2", "conv 1x1")][0]["us"] == 40.0
    assert totals[("train_backward", "other", "other")]["us"] == 4.0
    assert totals[("train_forward", "layer2", "other")]["us"] == 1.0


# ------------------------------------------------------------------- honesty
@pytest.mark.parametrize("profiled, measured, device, expected", [
    (105.0, 100.0, "cpu", ""),
    (86.0, 100.0, "cpu", ""),
    (60.0, 100.0, "cpu", "40% less than the timed median: Python"),
    (60.0, 100.0, "cuda", "idle device time between kernels"),
    (130.0, 100.0, "cpu", "30% above the timed median: profiler overhead (measured +12%"),
])
def test_agreement_is_silent_within_15_percent_and_says_by_how_much_and_why_outside(profiled, measured, device,
                                                                                    expected):
    ratio, note = agreement(profiled, measured, device, overhead=0.12)
    assert ratio == pytest.approx(profiled / measured)
    assert (expected in note) if expected else note == ""


def test_agreement_blames_a_changed_machine_when_iterations_timed_beside_the_profile_agree_with_it():
    ratio, note = agreement(40.0, 100.0, "cpu", overhead=0.1, unprofiled_ms=44.0)
    assert ratio == 0.4 and "60% below the timed median but within 15% of unprofiled iterations" in note
    assert "Python" in agreement(40.0, 100.0, "cpu", overhead=0.1, unprofiled_ms=95.0)[1]


def test_agreement_without_a_timed_median_says_so():
    ratio, note = agreement(10.0, None, "cpu", None)
    assert ratio is None and "no timed median" in note


def test_profile_rows_put_the_agreement_note_on_rows_of_a_phase_group_that_disagrees():
    times = {("inference", "layer1", "dense conv 3x3"): {"us": 3000.0, "calls": 1},
             ("inference", "layer1", "batch norm"): {"us": 1000.0, "calls": 1}}
    costs = {("inference", "layer1", "dense conv 3x3"): {"macs": 1000, "bytes": 500},
             ("inference", "layer1", "batch norm"): {"macs": 0, "bytes": 200}}
    prof = P.PhaseProfile(times, iterations=2, overhead=0.05, unprofiled_ms=7.5)
    batch_profile = P.BatchProfile(4, "cpu", {"inference": prof}, costs, 10.0, 5.0)
    rows = profile_rows(batch_profile, {"latency_ms_median": 8.0, "variant": "v"})
    assert [r["op_class"] for r in rows] == ["dense conv 3x3", "batch norm"]
    conv = rows[0]
    assert conv["ms"] == 3.0 and conv["share"] == 0.75 and conv["mac_share"] == 1.0
    assert conv["achieved_gflop_s"] == pytest.approx(2 * 1000 * 4 / 3e-3 / 1e9)
    assert conv["arithmetic_intensity"] == 8.0
    assert conv["agreement"] == 0.5 and "50% less" in conv["agreement_note"]
    assert set(conv) == set(PROFILE_COLUMNS)


# --------------------------------------------------------------- real torch
def test_profiling_a_real_model_attributes_every_phase_and_its_macs_add_up():
    config = get_preset("resnet20")
    model = build_model(config)
    settings = {"device": "cpu", "speed": True, "train_step": True, "precision": "fp32"}
    measured = {"variant": "resnet20", "latency_ms_median": 1.0, "train_step_ms_median": 1.0}
    profiled = P.profile_batch(model, config, settings, measured, 2, torch.contiguous_format, contextlib.nullcontext)
    rows = profile_rows(profiled, measured)
    df = pd.DataFrame(rows)
    assert set(df["phase"]) == {"inference", "train_forward", "train_backward", "train_optimizer"}
    assert df[df.phase == "inference"]["macs"].sum() == model_complexity(config).macs
    for phase in ("inference", "train_forward", "train_backward"):
        part = df[df.phase == phase]
        assert part["share"].sum() == pytest.approx(1.0)
        convs = part[part.op_class == "dense conv 3x3"]
        assert set(convs["stage"]) == {"stem", "layer1", "layer2", "layer3"} and (convs["ms"] > 0).all(), phase
    assert df["profiler_overhead"].notna().all() and (df["peak_gflop_s"] > 0).all()


# ----------------------------------------------------------- runner and files
def _profiled_grid(**extra):
    raw = {"name": "p", "defaults": {"preset": "resnet20", "device": "cpu", "batch_sizes": [2], "warmup": 0,
                                     "repeats": 2, "train_step": False, **extra},
           "matrix": {"cardinality": [1]}}
    return expand_grid(raw, "p.yaml")


def test_profile_true_leaves_the_cell_id_of_profile_false_unchanged():
    assert _profiled_grid().cells[0].cell_id == _profiled_grid(profile=False).cells[0].cell_id
    assert _profiled_grid(profile=True).cells[0].cell_id != _profiled_grid().cells[0].cell_id


def test_a_profiled_cell_writes_its_profile_rows_beside_the_result_csv(tmp_path):
    out = tmp_path / "run.csv"
    summary = run_grid(_profiled_grid(profile=True), str(out), executor=SerialExecutor(), progress=False,
                       command=["test"], log=lambda m: None)
    assert summary.ok and not any(PROFILE_ROWS_KEY in r for r in summary.rows)
    ppath = profile_path(str(out))
    assert read_header(ppath) == PROFILE_COLUMNS
    prof = profile_report.load_profiles([ppath])
    assert set(prof["run_id"]) == {summary.rows[0]["run_id"]}
    assert set(prof["phase"]) == {"inference"}
    assert prof["macs"].sum() == summary.rows[0]["macs"]


def test_the_report_renders_the_profile_section_and_figures(tmp_path):
    csv = str(tmp_path / "run.csv")
    run_grid(_profiled_grid(profile=True), csv, executor=SerialExecutor(), progress=False, command=["t"],
             log=lambda m: None)
    from bench.analysis.reports import write_report

    report = open(write_report([csv], str(tmp_path / "plots"))).read()
    assert "## Where the time goes (profile)" in report and "Largest gap: " in report
    pngs = sorted(f for f in os.listdir(tmp_path / "plots") if f.startswith("profile-"))
    assert any(f.endswith("-shares.png") for f in pngs) and any(f.endswith("-roofline.png") for f in pngs)


# ------------------------------------------------------------------ analysis
def _table(time, macs):
    return pd.DataFrame({"time_share": time, "mac_share": macs}, index=list(OP_CLASSES[:len(time)]))


def test_largest_gap_names_the_class_whose_time_most_exceeds_its_mac_share():
    sentence = profile_report.largest_gap(_table([0.30, 0.20, 0.48, 0.02], [0.70, 0.09, 0.21, 0.0]))
    # conv 1x1's gap is wider (-40 pp) but it is the fast side; grouped 3x3 takes 27 pp more time than MACs
    assert sentence == "grouped conv 3x3: 21% of MACs, 48% of time"
    assert profile_report.largest_gap(_table([0.48, 0.52], [0.69, 0.31])) == "dense conv 3x3: 31% of MACs, 52% of time"


def test_largest_gap_keeps_a_decimal_where_whole_percentages_would_hide_the_gap():
    assert profile_report.largest_gap(_table([0.104, 0.896], [0.098, 0.902])) == \
        "conv 1x1: 9.8% of MACs, 10.4% of time"


def test_load_profiles_rejects_a_file_that_is_not_a_profile_csv(tmp_path):
    bad = tmp_path / "x.profile.csv"
    bad.write_text("cell_id,ms\nabc,1\n")
    with pytest.raises(Exception, match=r"x.profile.csv: run_id: column missing"):
        profile_report.load_profiles([str(bad)])


# ------------------------------------------------------------------------ CLI
def test_parse_model_takes_a_preset_and_fields_as_pairs_or_key_value():
    from bench.profile_cli import parse_model

    assert parse_model(["resnext29_32x4d", "width_multiplier", "0.25", "stem_width=16", "cardinality", "1"]) == \
        {"preset": "resnext29_32x4d", "width_multiplier": 0.25, "stem_width": 16, "cardinality": 1}


@pytest.mark.parametrize("argv, message", [
    (["resnet20", "cardinallity", "2"], "<command line>: cardinallity: expected a setting name"),
    (["resnet20", "cardinality=0"], "cardinality"),
    (["resnet20", "--out", "x.txt"], "--out x.txt: expected a path ending in .csv"),
    (["resnet20", "repeats=3"], "repeats: a measurement setting"),
    pytest.param(["resnet20", "--device", "cuda"], "--device cuda: torch sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")),
])
def test_profile_command_rejects_bad_input_with_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(["profile", *argv] + ([] if "--device" in argv else ["--device", "cpu"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_profile_command_refuses_to_overwrite_its_out_without_force(tmp_path, capsys):
    out = tmp_path / "p.csv"
    out.write_text("keep me")
    assert cli.main(["profile", "resnet20", "--device", "cpu", "--out", str(out)]) == 2
    assert out.read_text() == "keep me" and "--force" in capsys.readouterr().err


@pytest.mark.slow
def test_profile_command_prints_the_class_table_and_writes_the_csv(tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert cli.main(["profile", "resnet20", "--batch-size", "2", "--device", "cpu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| dense conv 3x3 |" in text and "largest gap: " in text and "inference" in text and "train step" in text
    assert read_header(str(out)) == PROFILE_COLUMNS


def test_the_reference_holds_the_generated_profile_column_table():
    from bench.results.profile_schema import markdown_table

    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "reference.md"), encoding="utf-8") as f:
        assert markdown_table() in f.read()


def _rows(cls, ms, macs, nbytes, batch=128):
    """Profile rows of one inference group: per class ms, MACs per image, bytes per batch."""
    return pd.DataFrame({"op_class": cls, "ms": ms, "macs": macs, "bytes": nbytes, "batch_size": batch})


def test_a_class_right_of_the_ridge_is_compute_bound_in_the_rooflines_terms_at_its_share_of_the_peak():
    # peak 100 GFLOP/s, 25 GB/s: ridge at 2 MACs/byte. Grouped 3x3: 1e6 MACs x 128 / 4e7 bytes = 3.2 MACs/byte,
    # 2 x 1.28e8 MACs in 25.6 ms = 10 GFLOP/s = 10% of the peak; conv 1x1: 1 MAC/byte, 2.56e8 FLOPs in 51.2 ms
    # = 5 GFLOP/s against the 2 x 1 x 25 = 50 GFLOP/s its bytes allow: 10% of the bandwidth roof
    rows = _rows(["grouped conv 3x3", "conv 1x1", "batch norm"], [25.6, 51.2, 20.0], [10 ** 6, 10 ** 6, 0],
                 [4 * 10 ** 7, 128 * 10 ** 6, 10 ** 8])
    sentence = profile_report.roofline_sentence(profile_report.class_table(rows), 100.0, 25.0)
    assert sentence == ("Roofline (ridge at 2 MACs/byte): conv 1x1 at 1 MACs/byte, left of the ridge: memory-bound "
                        "in the roofline's terms, reaching 10.0% of the 50 GFLOP/s its bytes allow at 25 GB/s; "
                        "grouped conv 3x3 at 3.2 MACs/byte, right of the ridge: compute-bound in the roofline's "
                        "terms, but reaching 10.0% of the 100 GFLOP/s peak")


def test_a_class_within_10_percent_of_the_ridge_is_just_right_of_it():
    rows = _rows(["grouped conv 3x3"], [25.6], [10 ** 6], [6 * 10 ** 7])  # 2.13 MACs/byte, ridge 2
    sentence = profile_report.roofline_sentence(profile_report.class_table(rows), 100.0, 25.0)
    assert "grouped conv 3x3 at 2.13 MACs/byte, just right of the ridge: compute-bound" in sentence


def test_no_roofline_sentence_without_a_probed_roof_or_a_class_with_macs_and_time():
    rows = _rows(["conv 1x1", "batch norm"], [0.1, 9.9], [10 ** 6, 0], [10 ** 6, 10 ** 6])
    table = profile_report.class_table(rows)
    assert profile_report.roofline_sentence(table, None, 25.0) is None
    assert profile_report.roofline_sentence(table, 100.0, 25.0) is None  # conv 1x1 has 1% of the time


def test_the_committed_profile_calls_nothing_memory_bound_right_of_its_ridge():
    df = profile_report.load_profiles(["results/studies/cpu-cardinality/profile/pair.profile.csv"])
    for _, _, rows in profile_report.groups(df):
        table = profile_report.class_table(rows)
        knee = profile_report.ridge(rows["peak_gflop_s"].iloc[0], rows["bandwidth_gb_s"].iloc[0])
        sentence = profile_report.roofline_sentence(table, rows["peak_gflop_s"].iloc[0], rows["bandwidth_gb_s"].iloc[0])
        for clause in sentence.split(": ", 1)[1].split("; "):
            cls = clause.split(" at ")[0]
            right = table.loc[cls, "intensity"] > knee
            assert ("compute-bound" in clause) == right and ("memory-bound" in clause) == (not right)
