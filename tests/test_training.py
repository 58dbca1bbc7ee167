"""The recipe, the schedule, the optimiser set-up and train_cell on tiny data (CPU)."""
import math
import warnings

import pytest
import torch
from torch import nn

from bench.train import training
from bench.grid import expand_grid
from bench.run.cell import measure_cell
from bench.train.recipe import TRAIN_FIELDS, TrainConfig, quick_overrides, resolve
from bench.results.image_schema import IMAGE_ROWS_KEY, decode_bits
from bench.results.schema import COLUMNS
from models import ModelConfig, build_model

from test_data import write_cifar

TINY_MODEL = ModelConfig(block="basic", depth=8, stem="cifar", num_classes=10, input_size=32, width_multiplier=0.5)
# 4 steps of 50 images: a few seconds on a small CPU
TINY = {"dataset": "synthetic", "train_subset": 200, "test_subset": 100, "epochs": 1, "batch_size": 50,
        "lr": 0.1, "eval_batch_size": 100}


def tiny_model() -> nn.Module:
    return build_model(TINY_MODEL)


def train(**overrides):
    return training.train_cell(tiny_model, {**TINY, **overrides}, device="cpu")


# --------------------------------------------------------------------- recipe
def test_defaults_round_trip_and_normalize_lists_become_tuples():
    config = resolve(None)
    assert config == TrainConfig()
    assert resolve(config.to_dict()) == config
    custom = resolve({"normalize": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], "optimizer": "adam", "lr": 1e-3})
    assert custom.normalize == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert resolve(custom.to_dict()) == custom


BAD_VALUES = [
    ("dataset", "imagenet"), ("data_root", 3), ("download", "yes"), ("train_subset", 0), ("test_subset", 2.5),
    ("val_size", -1), ("epochs", 0), ("epochs", "5"), ("batch_size", True), ("optimizer", "lamb"), ("lr", -0.1),
    ("momentum", 1.0), ("nesterov", 1), ("weight_decay", -1e-4), ("label_smoothing", 1.0),
    ("warmup_epochs", -1), ("schedule", "step"), ("ema", 1.0), ("tta_flip", "no"), ("bn_recalibration", 1.5),
    ("crop_padding", -4),
    ("flip", None), ("normalize", [[0.5, 0.5], [0.5, 0.5]]), ("normalize", [[0, 0, 0], [1, 0, 1]]),
    ("resize", 4), ("precision", "fp8"), ("channels_last", "yes"), ("eval_batch_size", 0), ("seeds", 0),
    ("seed", -1), ("target_acc", 1.5), ("eval_every", 0), ("deterministic", "true"), ("lr", float("nan")),
]


@pytest.mark.parametrize("field,value", BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_every_field_is_type_checked(field, value):
    with pytest.raises(ValueError) as info:
        resolve({field: value})
    assert str(info.value).startswith(f"{field}: expected")


def test_every_field_has_a_bad_value_case_and_unknown_keys_are_named():
    assert {f for f, _ in BAD_VALUES} == set(TRAIN_FIELDS)
    with pytest.raises(ValueError, match="^epoch: unknown training setting"):
        resolve({"epoch": 3})
    with pytest.raises(ValueError, match="^val_size: expected fewer than train_subset"):
        resolve({"train_subset": 100, "val_size": 100})


def test_quick_overrides_shrink_any_recipe():
    written = TrainConfig(epochs=30, batch_size=512, lr=0.4, val_size=5000, seeds=5).to_dict()
    quick = resolve({**written, **quick_overrides(written)})
    assert quick.epochs == 1 and quick.seeds == 1 and quick.train_subset <= 4000 and quick.val_size == 0
    assert quick.batch_size == 64 and quick.lr == 0.05  # many small steps: ~62 in the one epoch


def test_quick_overrides_never_grow_a_recipe():
    written = {"dataset": "synthetic", "train_subset": 1000, "test_subset": 500, "epochs": 0.5}
    quick = quick_overrides(written)
    assert (quick["train_subset"], quick["test_subset"], quick["epochs"]) == (1000, 500, 0.5)


def test_quick_overrides_keep_adams_learning_rate():
    written = {"optimizer": "adam", "lr": 0.001}
    assert "lr" not in quick_overrides(written)
    assert resolve({**written, **quick_overrides(written)}).lr == 0.001


def test_bad_train_settings_reach_the_user_as_one_line():
    from bench.errors import UserError

    with pytest.raises(UserError, match="^train: lr: expected auto or a number"):
        training.train_cell(tiny_model, {"lr": "fast"}, device="cpu")


# ------------------------------------------------------------------- schedule
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_warms_up_then_decays_to_zero(schedule):
    total, warmup = 100, 20.0
    f = [recipe_factor(s + 0.5, total, warmup, schedule) for s in range(total)]
    assert f[0] < 0.05 and all(b > a for a, b in zip(f[:19], f[1:20]))  # rising during warm-up
    assert max(f) == pytest.approx(1.0, abs=0.03) and f.index(max(f)) in (19, 20)
    assert all(b < a for a, b in zip(f[20:], f[21:]))  # falling after it
    assert 0 < f[-1] < 0.02 and recipe_factor(total, total, warmup, schedule) == 0.0
    assert recipe_factor(warmup, total, warmup, schedule) == 1.0


def recipe_factor(step, total, warmup, schedule):
    return training.lr_factor(step, total, warmup, schedule)


def test_schedule_midpoints_and_warmup_cap():
    # linear decay: halfway between the end of warm-up and the end, the factor is 1/2
    assert training.lr_factor(60, 100, 20, "linear") == pytest.approx(0.5)
    assert training.lr_factor(60, 100, 20, "cosine") == pytest.approx(0.5)
    assert training.lr_factor(80, 100, 20, "constant") == 1.0
    # a warm-up of 1 epoch in a 1-epoch schedule is capped at 30% of the steps
    config = resolve({"warmup_epochs": 1.0, "epochs": 1})
    assert training.warmup_steps(config, steps_per_epoch=10, total_steps=10) == pytest.approx(3.0)
    assert training.warmup_steps(resolve({"warmup_epochs": 0.5}), 10, 50) == 5.0


def test_trainer_applies_the_schedule_to_the_optimizer():
    config = resolve({**TINY, "lr": 0.4, "warmup_epochs": 0.25})
    trainer = training.Trainer(tiny_model(), config, "cpu", total_steps=8, steps_per_epoch=8)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    lrs = []
    for _ in range(8):
        trainer.step(x, y)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    expected = [0.4 * training.lr_factor(s + 0.5, 8, 2.0, "linear") for s in range(8)]
    assert lrs == pytest.approx(expected)
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.4 / 12)


# ---------------------------------------------------------- weight decay groups
def test_weight_decay_skips_batchnorm_and_biases():
    model = tiny_model()
    model.fc.bias.requires_grad_(True)
    model.layer1[0].conv1.weight.requires_grad_(False)  # frozen: not optimised at all
    decay, no_decay = training.param_groups(model, 5e-4)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert ids([model.bn1.weight, model.bn1.bias, model.fc.bias]) <= ids(no_decay["params"])
    assert ids([model.conv1.weight, model.fc.weight]) <= ids(decay["params"])
    assert id(model.layer1[0].conv1.weight) not in ids(decay["params"]) | ids(no_decay["params"])

    # and the optimiser really behaves so: with zero gradients only decayed weights move
    optimizer = training.make_optimizer(model, resolve({"weight_decay": 0.1, "lr": 0.5}))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    assert not torch.equal(after["conv1.weight"], before["conv1.weight"])
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    # BN scales start at 1, so decay would have moved them
    for name in ("bn1.weight", "bn1.bias", "fc.bias", "layer1.0.conv1.weight"):
        assert torch.equal(after[name], before[name]), name


def test_batchnorm_recalibration_gives_the_plain_average_and_keeps_momentum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    model(torch.randn(2, 3, 32, 32))
    images = torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8)
    batches = training.BatchPipeline(images, torch.zeros(60, dtype=torch.int64), 20, train=False,
                                     mean=(0.5,) * 3, std=(0.25,) * 3)
    model.eval()
    assert training.recalibrate_batchnorm(model, batches, 40) == 40
    bn = model[1]
    assert bn.momentum == 0.1 and not model.training
    with torch.no_grad():
        feats = [model[0](x) for x, _ in list(batches)[:2]]
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    expected_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)


# ----------------------------------------------------------------- train_cell
class NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean((2, 3))) * float("nan")


def test_nan_output_stops_training_as_diverged():
    result = training.train_cell(NaNModel, TINY, device="cpu")
    assert result["status"] == "diverged"
    assert "seed 0: loss is not finite" in result["error"] and "step 1 of 4" in result["error"]
    assert result.get("top1_acc") is None
    assert result["dataset"] == "synthetic"


def test_huge_learning_rate_diverges_without_batchnorm():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    result = training.train_cell(Plain, {**TINY, "lr": 1e12, "warmup_epochs": 0, "label_smoothing": 0.0,
                                         "epochs": 3}, device="cpu")
    assert result["status"] == "diverged", result


def test_training_is_deterministic_on_cpu_and_restores_global_state():
    torch.manual_seed(123)
    rng = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    a = train(seed=3)
    b = train(seed=3)
    assert a["status"] == "ok" and a["top1_acc"] == b["top1_acc"] and a["seeds"] == "3"
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == deterministic

    # the same seed gives the same weights, step for step
    def weights(seed):
        data = training.DeviceData.from_data(training.prepare_data(resolve(TINY)), "cpu")
        kept = {}

        def factory():
            kept["model"] = tiny_model()
            return kept["model"]

        training.train_seed(factory, data, resolve(TINY), "cpu", seed)
        return torch.cat([p.detach().flatten() for p in kept["model"].parameters()])

    assert torch.equal(weights(1), weights(1)) and not torch.equal(weights(1), weights(2))


def test_reported_accuracy_matches_an_independent_evaluation():
    """torchvision's Normalize and a plain loop over the test images give the same top-1."""
    from torchvision.transforms import Normalize

    config = resolve(TINY)
    data = training.DeviceData.from_data(training.prepare_data(config), "cpu")
    kept = {}

    def factory():
        kept["model"] = tiny_model()
        return kept["model"]

    result = training.train_seed(factory, data, config, "cpu", seed=0)
    model = kept["model"].eval()
    norm = Normalize(*config.normalize)
    correct = 0
    with torch.no_grad():
        for image, label in zip(data.test.images, data.test.labels):
            logits = model(norm(image.float() / 255)[None])
            correct += int(logits.argmax(1).item() == label.item())
    assert result.test_acc == correct / len(data.test.labels)
    assert 0.1 < result.test_acc  # above chance after 4 steps: the model learnt something


def test_seeds_report_mean_std_and_per_seed_values():
    result = train(seeds=2, seed=5, val_size=50)
    assert result["n_seeds"] == 2 and result["seeds"] == "5;6"
    per_seed = [float(a) for a in result["top1_acc_seeds"].split(";")]
    assert len(per_seed) == 2 and result["top1_acc"] == pytest.approx(sum(per_seed) / 2, abs=1e-4)
    assert result["top1_acc_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / math.sqrt(2), abs=1e-4)
    assert 0 <= result["val_acc"] <= 1
    assert result["train_batch_size"] == 50 and result["epochs"] == 1
    # 150 training images (200 - 50 held out), 3 steps of 50 per seed
    assert result["train_img_s"] == pytest.approx(2 * 150 / (2 * result["train_time_s"]), rel=1e-6)
    single = train()
    assert single["top1_acc_std"] is None and single["val_acc"] is None


def test_time_to_target_and_evaluations_off_the_clock():
    points = []
    reached = training.train_cell(tiny_model, {**TINY, "epochs": 2, "target_acc": 0.01, "eval_every": 0.5},
                                  device="cpu", on_eval=lambda seed, p: points.append(p))
    assert [p.epoch for p in points] == [0.5, 1.0, 1.5, 2.0]
    assert [p.step for p in points] == [2, 4, 6, 8]
    assert reached["time_to_target_s"] == pytest.approx(points[0].train_time_s)
    assert 0 < points[0].train_time_s < points[-1].train_time_s == pytest.approx(reached["train_time_s"])
    assert reached["top1_acc"] == points[-1].test_acc and reached["target_acc"] == 0.01
    never = train(target_acc=1.0)
    assert never["time_to_target_s"] is None


def test_ema_tta_bf16_and_channels_last_run_on_cpu():
    result = train(ema=0.9, tta_flip=True, precision="bf16", channels_last=True, schedule="cosine")
    assert result["status"] == "ok" and 0 <= result["top1_acc"] <= 1
    adam = train(optimizer="adam", lr=1e-3, normalize=[[0.5] * 3, [0.5] * 3], crop_padding=0, flip=False)
    assert adam["status"] == "ok" and adam["optimizer"] == "adam" and adam["lr"] == 1e-3


def test_cifar_subset_dataset_column(tmp_path):
    write_cifar(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = training.train_cell(tiny_model, {**TINY, "dataset": "cifar10", "data_root": str(tmp_path),
                                                  "train_subset": 150, "test_subset": 40}, device="cpu")
    assert result["dataset"] == "cifar10-subset-150-test-40" and result["status"] == "ok"


def test_train_cell_contract_through_measure_cell():
    grid = expand_grid({"include": [{
        "block": "basic", "depth": 8, "stem": "cifar", "num_classes": 10, "input_size": 32,
        "width_multiplier": 0.5, "device": "cpu", "speed": False, "train_step": False,
        "train": {**TINY, "seeds": 2}}]}, "tiny.yaml", cuda_available=False)
    (cell,) = grid.cells
    rows = measure_cell(cell)
    assert len(rows) == 1
    row = rows[0]
    image_rows = row.pop(IMAGE_ROWS_KEY)
    assert set(row) <= set(COLUMNS)
    assert row["status"] == "ok" and row["dataset"] == "synthetic" and row["n_seeds"] == 2
    # one per-image row per seed, whose set bits are the seed's correct count
    assert [r["seed"] for r in image_rows] == [0, 1]
    assert ";".join(str(r["correct_images"]) for r in image_rows) == row["top1_correct_seeds"]
    assert [int(decode_bits(r["correct"], r["test_images"]).sum()) for r in image_rows] == \
        [r["correct_images"] for r in image_rows]
    assert len({r["test_set"] for r in image_rows}) == 1
    assert 0 <= row["top1_acc"] <= 1 and row["train_time_s"] > 0 and row["train_img_s"] > 0
    assert row["optimizer"] == "sgd" and row["train_batch_size"] == 50 and row["seeds"] == "0;1"


def test_result_keys_are_schema_columns():
    result = train()
    assert set(result) - set(COLUMNS) == {IMAGE_ROWS_KEY}  # the per-image rows travel beside the columns
    assert {"dataset", "top1_acc", "train_time_s", "status", "error"} <= set(result)


@pytest.mark.slow
def test_quick_grid_recipe_learns_the_synthetic_data():
    """grids/quick.yaml's recipe (1000 images, 1 epoch, batch 100, lr 0.1) is clearly above chance."""
    from models import get_preset

    settings = {"dataset": "synthetic", "train_subset": 1000, "test_subset": 500, "epochs": 1,
                "batch_size": 100, "lr": 0.1, "seed": 0}
    result = training.train_cell(lambda: build_model(get_preset("resnet20")), settings, device="cpu")
    assert result["top1_acc"] > 0.3


def test_the_runner_writes_each_seeds_test_image_correctness_beside_the_csv(tmp_path):
    from bench.results.image_schema import IMAGE_COLUMNS, images_path
    from bench.run.runner import run_grid
    import csv
    grid = expand_grid({"include": [{
        "block": "basic", "depth": 8, "stem": "cifar", "num_classes": 10, "input_size": 32,
        "width_multiplier": 0.5, "device": "cpu", "speed": False, "train_step": False,
        "train": {**TINY, "seeds": 2}}]}, "tiny.yaml", cuda_available=False)
    out = tmp_path / "r.csv"
    run_grid(grid, str(out), progress=False, log=lambda m: None)
    (row,) = list(csv.DictReader(open(out)))
    images = list(csv.DictReader(open(images_path(str(out)))))
    assert list(images[0]) == IMAGE_COLUMNS
    assert [(r["run_id"], r["cell_id"], r["seed"]) for r in images] == \
        [(row["run_id"], row["cell_id"], "0"), (row["run_id"], row["cell_id"], "1")]
    assert ";".join(r["correct_images"] for r in images) == row["top1_correct_seeds"]
    bits = [decode_bits(r["correct"], int(r["test_images"])) for r in images]
    assert [int(b.sum()) for b in bits] == [int(r["correct_images"]) for r in images]


# ------------------------------------------------ GPU defaults (issue 21)
def test_deterministic_auto_is_on_for_the_cpu_and_off_for_a_gpu_and_the_row_says_which():
    from bench.train.recipe import for_device

    assert for_device(resolve(None), "cpu").deterministic is True
    assert for_device(resolve(None), "cuda").deterministic is False
    assert for_device(resolve({"deterministic": True}), "cuda").deterministic is True  # as written stays
    assert train()["deterministic"] is True and "deterministic" in COLUMNS


def test_warm_up_steps_train_a_copy_off_the_clock_and_leave_the_trained_model_bit_identical(monkeypatch):
    # Proves: the warm-up runs WARMUP_STEPS steps on a copy (its own optimizer, an unaugmented batch), so the
    # trained weights, the RNG streams and the accuracy are those of a run without it. Only a GPU shows the
    # seconds of cuDNN autotuning and kernel loading it keeps out of train_time_s.
    data = training.DeviceData.from_data(training.prepare_data(resolve(TINY)), "cpu")
    steps = []
    real_step = training.Trainer.step
    monkeypatch.setattr(training.Trainer, "step", lambda self, x, y: steps.append(1) or real_step(self, x, y))

    def trained():
        kept = {}

        def factory():
            kept["model"] = tiny_model()
            return kept["model"]

        result = training.train_seed(factory, data, resolve(TINY), "cpu", 5)
        return torch.cat([p.detach().flatten() for p in kept["model"].parameters()]), result.test_acc

    plain_weights, plain_acc = trained()
    plain_steps = len(steps)
    monkeypatch.setitem(training.WARMUP_STEPS, "cpu", 3)
    warm_weights, warm_acc = trained()
    assert len(steps) - plain_steps == plain_steps + 3
    assert torch.equal(plain_weights, warm_weights) and plain_acc == warm_acc
