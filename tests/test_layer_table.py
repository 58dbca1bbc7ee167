"""The layer table's measurement: each operator on tensors of its shape, rows appended, a build resumed."""
import csv
import os

import pytest
import torch

from bench.measure import layer_table as lt
from models import ModelConfig
from models.layers import distinct_layers, make_layer

SPEC = lt.TableSpec(batch=2, precision="fp32", memory_format="contiguous", threads=1, fingerprint_id="abc")
TINY = ModelConfig(block="basic", stem="cifar", blocks=(1, 1, 1), num_classes=10, input_size=8)


@pytest.mark.parametrize("layer, out_shape", [
    (make_layer("conv", 3, 2, 4, 8, 16, 9), (2, 16, 5, 5)),
    (make_layer("bn", 1, 1, 1, 8, 8, 6), (2, 8, 6, 6)),
    (make_layer("relu", 1, 1, 1, 8, 8, 6), (2, 8, 6, 6)),
    (make_layer("add", 1, 1, 1, 8, 8, 6), (2, 8, 6, 6)),
    (make_layer("maxpool", 3, 2, 1, 8, 8, 8), (2, 8, 4, 4)),
    (make_layer("avgpool", 4, 1, 1, 8, 8, 4), (2, 8, 1, 1)),
    (make_layer("flatten", 1, 1, 1, 8, 8, 1), (2, 8)),
    (make_layer("linear", 1, 1, 1, 8, 10, 1), (2, 10)),
])
def test_each_operator_runs_on_tensors_of_its_layers_shape(layer, out_shape):
    with torch.inference_mode():
        out = lt.operator(layer, layer.shape, 2, "channels_last" if layer.kind == "conv" else "contiguous")()
    assert tuple(out.shape) == out_shape


@pytest.mark.parametrize("name", ["resnext29_32x4d", "resnet18"])
def test_the_table_times_the_same_module_the_built_model_calls_for_each_shape(name):
    from models import build_model, get_preset
    from models.layers import inventory

    config = get_preset(name).replace(input_size=32)
    by_shape = {layer.shape: layer for layer, _ in inventory(config).layers}
    model, seen = build_model(config).eval(), {}

    def hook(module, inputs, _output):
        x = inputs[0]
        h = x.shape[-1] if x.dim() == 4 else 1
        c = module.in_channels if isinstance(module, torch.nn.Conv2d) else x.shape[1]
        kind = {torch.nn.Conv2d: "conv", torch.nn.BatchNorm2d: "bn", torch.nn.ReLU: "relu",
                torch.nn.MaxPool2d: "maxpool", torch.nn.AdaptiveAvgPool2d: "avgpool", torch.nn.Linear: "linear"}
        kind = kind.get(type(module))
        if kind is None:
            return
        # the layer of this kind, input channels and size (its stride, groups, kernel read from the table's module)
        match = [layer for layer in by_shape.values() if layer.kind == kind and layer.c_in == c and layer.size == h
                 and repr(lt._module(layer)) == repr(module)]
        seen[repr(module), c, h] = bool(match)

    for m in model.modules():
        if not list(m.children()):
            m.register_forward_hook(hook)
    with torch.inference_mode():
        model(torch.randn(1, 3, 32, 32))
    assert seen and all(seen.values()), [k for k, ok in seen.items() if not ok]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_build_times_every_distinct_shape_once_with_the_overhead_rows_and_raw_samples(tmp_path):
    path = str(tmp_path / "table.csv")
    layers = distinct_layers([TINY])
    assert lt.build_table(path, layers, SPEC, rounds=3, block_ms=0.0, chunk=8) == 0
    got = rows(path)
    assert [r["shape"] for r in got] == list(lt.OVERHEAD_SHAPES) + [layer.shape for layer in layers]
    assert all(r["rounds"] == "3" and len(r["samples_ms"].split()) == 3 and float(r["ms_median"]) > 0 for r in got)
    conv = next(r for r in got if r["shape"] == layers[0].shape)
    assert int(conv["macs"]) == layers[0].macs * SPEC.batch


def test_a_second_build_resumes_times_only_new_shapes_and_keeps_the_rows_written(tmp_path):
    path = str(tmp_path / "table.csv")
    layers = distinct_layers([TINY])
    lt.build_table(path, layers, SPEC, rounds=1, block_ms=0.0)
    before = open(path).read()
    assert lt.build_table(path, layers, SPEC, rounds=1, block_ms=0.0) == 0
    assert open(path).read() == before  # nothing timed again
    wider = distinct_layers([TINY.replace(num_classes=20)])
    lt.build_table(path, wider, SPEC, rounds=1, block_ms=0.0)
    after = open(path).read()
    assert after.startswith(before)
    assert [r["shape"] for r in rows(path)[len(rows(path)) - 1:]] == ["linear k1 s1 g1 c64>20 h1"]


def test_another_batch_or_machine_is_another_key_so_it_is_timed_anew(tmp_path):
    path = str(tmp_path / "table.csv")
    layers = distinct_layers([TINY])[:2]
    lt.build_table(path, layers, SPEC, rounds=1, block_ms=0.0)
    other = lt.TableSpec(1, "fp32", "contiguous", 1, "other-machine")
    lt.build_table(path, layers, other, rounds=1, block_ms=0.0)
    assert len(lt.read_keys(path)) == 2 * (len(layers) + len(lt.OVERHEAD_SHAPES))


def test_a_build_past_its_deadline_stops_after_the_chunk_and_says_how_many_are_left(tmp_path):
    path = str(tmp_path / "table.csv")
    layers = distinct_layers([TINY])
    total = len(layers) + len(lt.OVERHEAD_SHAPES)
    left = lt.build_table(path, layers, SPEC, rounds=1, block_ms=0.0, chunk=4, deadline=0.0)
    assert left == total - 4 and len(rows(path)) == 4


def test_a_symlink_at_the_table_path_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere.csv"
    target.write_text("precious\n")
    link = tmp_path / "table.csv"
    os.symlink(target, link)
    with pytest.raises(OSError):
        lt.append_rows(str(link), [])
    assert target.read_text() == "precious\n"


def test_a_file_that_is_not_a_layer_table_is_refused_before_anything_is_timed(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a layer table"):
        lt.build_table(str(path), distinct_layers([TINY]), SPEC)


def test_a_shape_asked_to_be_timed_again_gets_a_new_row_after_the_old_ones(tmp_path):
    path = str(tmp_path / "table.csv")
    layers = distinct_layers([TINY])[:3]
    lt.build_table(path, layers, SPEC, rounds=1, block_ms=0.0)
    before = rows(path)
    lt.build_table(path, layers, SPEC, rounds=1, block_ms=0.0, retime=[layers[1].shape])
    after = rows(path)
    assert after[:len(before)] == before and [r["shape"] for r in after[len(before):]] == [layers[1].shape]


def test_layout_rows_time_each_conv_as_called_and_already_blocked_side_by_side():
    layers = [make_layer("conv", 3, 2, 4, 8, 16, 9, 100), make_layer("conv", 1, 1, 1, 8, 16, 9, 10),
              make_layer("bn", 1, 1, 1, 8, 8, 9)]
    out = lt.time_layouts(layers, SPEC, rounds=2, block_ms=0.1)
    assert [(r["shape"], r["memory_format"]) for r in out] == [
        ("conv k3 s2 g4 c8>16 h9", "contiguous"), ("conv k3 s2 g4 c8>16 h9", "blocked"),
        ("conv k1 s1 g1 c8>16 h9", "contiguous"), ("conv k1 s1 g1 c8>16 h9", "blocked")]
    assert all(r["rounds"] == 2 and r["ms_median"] > 0 and r["macs"] == (100 if "k3" in r["shape"] else 10) * 2
               for r in out)


def test_the_blocked_convolution_computes_what_the_models_module_computes():
    layer = make_layer("conv", 3, 2, 4, 8, 16, 9)
    with torch.inference_mode():
        call = lt.blocked_conv(layer, 2)  # raises when the two disagree
        assert tuple(call().to_dense().shape) == (2, 16, 5, 5)
