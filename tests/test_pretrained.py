"""Pretrained ImageNet weights: loading from the hub folder, classifier replacement, errors, freezing.

Each test writes its own checkpoint (torchvision's resnet18 with a fixed
seed, under torchvision's file name) into a temporary torch hub folder, so
nothing is downloaded and the real loading path runs.
"""
import functools
import os
import warnings

import pytest
import torch
import torchvision
from torch import nn

from bench.grid import expand_grid, load_grid
from bench.run.cell import build_for_cell, measure_cell
from models import build_model, get_preset
from models import pretrained
from models.pretrained import (OFFLINE_ENV, PretrainedWeightsMismatch, PretrainedWeightsUnavailable,
                               apply_pretrained, checkpoint_path, weights_for)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET18_WEIGHTS = "ResNet18_Weights.IMAGENET1K_V1"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub folder, no network; the previous hub folder is restored afterwards."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    monkeypatch.setenv(OFFLINE_ENV, "1")
    yield tmp_path
    torch.hub.set_dir(before)


@functools.lru_cache(maxsize=1)
def _reference_state():
    torch.manual_seed(1)
    return torchvision.models.resnet18().state_dict()


def _reference_resnet18():
    """torchvision's resnet18 with fixed random weights: stands in for the ImageNet file."""
    model = torchvision.models.resnet18()
    model.load_state_dict(_reference_state())
    return model.eval()


def _write_checkpoint(state, preset="resnet18"):
    path = checkpoint_path(weights_for(preset))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)
    return path


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_file_is_where_torch_hub_puts_it(hub):
    weights = weights_for("resnext50_32x4d")
    assert str(weights) == "ResNeXt50_32X4D_Weights.IMAGENET1K_V2"
    assert checkpoint_path(weights) == os.path.join(str(hub), "checkpoints", "resnext50_32x4d-1a0047aa.pth")


def test_fine_tuning_replaces_the_classifier_and_matches_torchvision_features(hub):
    reference = _reference_resnet18()
    _write_checkpoint(reference.state_dict())
    model = build_model(get_preset("resnet18", num_classes=10, input_size=32))
    own_fc = _snapshot(model.fc)

    assert apply_pretrained(model, "resnet18", True) == RESNET18_WEIGHTS

    # Every backbone tensor is the file's; the classifier is the model's own 10-way one.
    loaded = model.state_dict()
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    assert (model.fc.in_features, model.fc.out_features) == (512, 10)
    assert _same(model.fc.state_dict(), own_fc)

    # Same features as torchvision's own network with those weights.
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    reference.fc = nn.Identity()
    with torch.no_grad():
        ours = torch.flatten(model.avgpool(model.forward_features(x)), 1)
        assert torch.allclose(ours, reference(x), atol=1e-5)
        assert model(x).shape == (2, 10)


def test_the_articles_stacked_head_fails_where_the_replaced_one_works(hub):
    # The article stacks Linear(feature_dim, 10) on the 1000-way logits.
    stacked = nn.Sequential(_reference_resnet18(), nn.Linear(512, 10))
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        stacked(torch.randn(2, 3, 32, 32))
    _write_checkpoint(_reference_resnet18().state_dict())
    model = build_model(get_preset("resnet18", num_classes=10, input_size=32))
    apply_pretrained(model, "resnet18", True)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_1000_classes_load_strictly_including_the_classifier(hub):
    reference = _reference_resnet18()
    _write_checkpoint(reference.state_dict())
    model = build_model(get_preset("resnet18"))
    assert apply_pretrained(model, "resnet18", "if_available") == RESNET18_WEIGHTS
    assert _same(model.state_dict(), reference.state_dict())


def test_old_checkpoints_without_batchnorm_counters_load(hub):
    # Older torchvision files have no num_batches_tracked buffers.
    state = {k: v for k, v in _reference_resnet18().state_dict().items() if not k.endswith("num_batches_tracked")}
    _write_checkpoint(state)
    model = build_model(get_preset("resnet18", num_classes=10))
    assert apply_pretrained(model, "resnet18", True) == RESNET18_WEIGHTS
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


@pytest.mark.parametrize("damage, expected", [
    ("wrong_arch", r"layer1\.0\.conv1\.weight has shape \[64, 64, 1, 1\] in the file, \[64, 64, 3, 3\]"),
    ("missing", r"layer4\.1\.bn2\.running_var is missing from the file"),
    ("unexpected", r"1 unexpected key\(s\), e\.g\. extra\.weight"),
    ("not_a_state_dict", r"expected a state_dict"),
])
def test_a_mismatched_file_is_refused_before_anything_is_copied(hub, damage, expected):
    state = _reference_resnet18().state_dict()
    if damage == "wrong_arch":  # resnet50's weights under resnet18's file name
        state = torchvision.models.resnet50().state_dict()
    elif damage == "missing":
        del state["layer4.1.bn2.running_var"]
    elif damage == "unexpected":
        state["extra.weight"] = torch.zeros(3)
    else:
        state = [1, 2, 3]
    path = _write_checkpoint(state)
    model = build_model(get_preset("resnet18", num_classes=10, input_size=32))
    before = _snapshot(model)
    with pytest.raises(PretrainedWeightsMismatch, match=expected) as info:
        apply_pretrained(model, "resnet18", True, freeze_backbone=True)
    message = str(info.value)
    assert "\n" not in message and path in message
    assert _same(model.state_dict(), before)
    assert all(p.requires_grad for p in model.parameters())


def test_an_unreadable_file_names_itself(hub):
    path = checkpoint_path(weights_for("resnet18"))
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsMismatch, match="cannot read the weights file") as info:
        apply_pretrained(build_model(get_preset("resnet18")), "resnet18", True)
    assert path in str(info.value) and "\n" not in str(info.value)


def test_missing_weights_offline_required_is_a_one_line_error_with_the_exact_path(hub):
    model = build_model(get_preset("resnext50_32x4d", num_classes=10, input_size=32))
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        apply_pretrained(model, "resnext50_32x4d", True)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert os.path.join(str(hub), "checkpoints", "resnext50_32x4d-1a0047aa.pth") in message
    assert "https://download.pytorch.org/models/resnext50_32x4d-1a0047aa.pth" in message


def test_missing_weights_if_available_leaves_the_model_random_and_trainable(hub, monkeypatch):
    model = build_model(get_preset("resnet18", num_classes=10))
    before = _snapshot(model)
    monkeypatch.setattr(pretrained, "_warned", set())
    with pytest.warns(UserWarning, match="resnet18 stays randomly initialised"):
        assert apply_pretrained(model, "resnet18", "if_available", freeze_backbone=True) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process, not once per model built
        assert apply_pretrained(model, "resnet18", "if_available") is None
    assert _same(model.state_dict(), before)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_backbone_trains_only_the_classifier(hub):
    _write_checkpoint(_reference_resnet18().state_dict())
    model = build_model(get_preset("resnet18", num_classes=10, input_size=32))
    apply_pretrained(model, "resnet18", True, freeze_backbone=True)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["fc.bias", "fc.weight"]
    before = _snapshot(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.eval()  # keep BN statistics fixed so only the optimizer can change tensors
    nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    after = model.state_dict()
    changed = sorted(k for k in after if not torch.equal(after[k], before[k]))
    assert changed == ["fc.bias", "fc.weight"]


@pytest.mark.parametrize("preset, mode, expected", [
    ("resnet20", True, "torchvision has no weights for preset 'resnet20'"),
    ("resnet18", "yes", "expected true, false or if_available, got 'yes'"),
    ("resnet18", 1, "expected true, false or if_available, got 1"),
])
def test_bad_requests_are_value_errors(hub, preset, mode, expected):
    with pytest.raises(ValueError, match=expected):
        apply_pretrained(build_model(get_preset("resnet18")), preset, mode)


def test_false_does_nothing(hub):
    model = build_model(get_preset("resnet18"))
    before = _snapshot(model)
    assert apply_pretrained(model, "resnet18", False, freeze_backbone=True) is None
    assert _same(model.state_dict(), before)


def _cell(pretrained, freeze=False):
    raw = {"defaults": {"speed": False, "train_step": False, "device": "cpu"},
           "include": [{"preset": "resnet18", "num_classes": 10, "input_size": 32, "pretrained": pretrained,
                        "freeze_backbone": freeze}]}
    return expand_grid(raw, "test.yaml").cells[0]


def test_harness_cell_records_the_weights_in_the_pretrained_column(hub):
    reference = _reference_resnet18()
    _write_checkpoint(reference.state_dict())
    cell = _cell(True, freeze=True)
    model = build_for_cell(cell)
    assert model.pretrained_weights == RESNET18_WEIGHTS
    assert torch.equal(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert not model.conv1.weight.requires_grad and model.fc.weight.requires_grad
    (row,) = measure_cell(cell)
    assert row["status"] == "ok" and row["pretrained"] == RESNET18_WEIGHTS
    assert row["params"] == 11_181_642  # resnet18 with a 10-way classifier


def test_harness_cell_without_weights(hub):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (row,) = measure_cell(_cell("if_available"))
    assert row["pretrained"] == "none"
    with pytest.raises(PretrainedWeightsUnavailable, match="resnet18-f37072fd.pth"):
        measure_cell(_cell(True))


def test_seed_article_grid_is_the_articles_recipe():
    grid = load_grid(os.path.join(ROOT, "grids", "seed-article.yaml"), cuda_available=False)
    cells = {(c.preset, c.train["optimizer"]): c for c in grid.cells}
    assert sorted(cells) == [("resnet50", "adam"), ("resnet50", "sgd"), ("resnext50_32x4d", "adam"),
                             ("resnext50_32x4d", "sgd")]
    article = cells[("resnext50_32x4d", "adam")]
    assert article.pretrained is True and article.model.num_classes == 10 and article.model.input_size == 32
    t = article.train
    assert (t["lr"], t["batch_size"], t["epochs"], t["dataset"]) == (0.001, 64, 10, "cifar10")
    assert (t["schedule"], t["crop_padding"], t["flip"], t["weight_decay"]) == ("constant", 0, False, 0.0)
    assert [list(v) for v in t["normalize"]] == [[0.5] * 3, [0.5] * 3]
    assert t["tta_flip"] is False  # written out: the CPU default (flip TTA) is not the article's
    assert cells[("resnext50_32x4d", "sgd")].train["lr"] == 0.4  # the harness's default recipe (on a CPU)
    assert cells[("resnet50", "adam")].train == t

    quick = load_grid(os.path.join(ROOT, "grids", "seed-article.yaml"), quick=True)
    assert {c.pretrained for c in quick.cells} == {"if_available"}
    assert all(c.settings["device"] == "cpu" and c.train["epochs"] == 1 and c.train["train_subset"] == 4000
               for c in quick.cells)


def test_run_with_required_weights_missing_fails_before_any_work(hub, tmp_path, capsys):
    from bench.cli import main

    grid = tmp_path / "g.yaml"
    grid.write_text("include:\n  - {preset: resnet18, pretrained: true, num_classes: 10, input_size: 32}\n")
    out = tmp_path / "runs" / "r.csv"
    assert main(["--grid", str(grid), "--out", str(out), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {grid}: pretrained: ")
    assert checkpoint_path(weights_for("resnet18")) in err and "if_available" in err
    assert not out.exists()


def test_run_with_weights_in_place_passes_the_preflight(hub, tmp_path):
    from bench.cli import preflight_pretrained
    from bench.grid import expand_grid

    _write_checkpoint(_reference_state())
    grid = expand_grid({"include": [{"preset": "resnet18", "pretrained": True, "num_classes": 10}]}, "g.yaml",
                       cuda_available=False)
    preflight_pretrained(grid)  # no error: the file is there, no network needed
