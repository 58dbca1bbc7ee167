"""Device-aware recipe defaults: what `auto` becomes on a CPU and a GPU, and bf16 only where the CPU has it."""
import pytest

from bench.grid import expand_grid
from bench.measure import cpu
from bench.train.recipe import DEVICE_DEFAULTS, for_device, resolve


def test_auto_fields_take_the_cpu_recipe_that_reached_the_documented_accuracy():
    config = for_device(resolve(None), "cpu", native_bf16=False)
    assert (config.batch_size, config.lr, config.crop_padding, config.tta_flip) == (128, 0.4, 2, True)
    assert config.precision == "fp32"


def test_auto_fields_keep_the_gpu_recipe():
    config = for_device(resolve(None), "cuda", native_bf16=True)
    assert (config.batch_size, config.lr, config.crop_padding, config.tta_flip) == (512, 0.2, 4, False)
    assert config.precision == "bf16"


def test_cpu_precision_auto_is_bf16_only_with_native_bf16():
    assert for_device(resolve(None), "cpu", native_bf16=True).precision == "bf16"
    assert for_device(resolve(None), "cpu", native_bf16=False).precision == "fp32"
    # unknown (grid expansion): left for the training machine to decide
    assert for_device(resolve(None), "cpu").precision == "auto"


def test_explicit_values_stay_exactly_as_written():
    written = {"batch_size": 512, "lr": 0.2, "crop_padding": 4, "tta_flip": False, "precision": "fp32"}
    config = for_device(resolve(written), "cpu", native_bf16=True)
    assert {k: getattr(config, k) for k in written} == written


@pytest.mark.parametrize("field,value", [("batch_size", "big"), ("lr", "fast"), ("crop_padding", -1),
                                         ("tta_flip", "yes")])
def test_auto_fields_still_reject_bad_values_naming_auto_as_an_option(field, value):
    with pytest.raises(ValueError, match=f"^{field}: expected auto or "):
        resolve({field: value})


def test_cpu_flags_with_avx512_bf16_or_amx_count_as_native_bf16(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert "avx512_bf16" in cpu.cpu_flags(str(info))
    assert cpu.native_bf16(cpu.cpu_flags(str(info)), max_isa="")
    assert cpu.native_bf16({"amx_bf16", "avx2"}, max_isa="")
    assert not cpu.native_bf16({"avx2", "avx512f", "avx512_vnni"}, max_isa="")


def test_a_onednn_isa_cap_below_bf16_makes_bf16_emulated():
    assert not cpu.native_bf16({"avx512_bf16"}, max_isa="SSE41")
    assert cpu.native_bf16({"avx512_bf16"}, max_isa="avx512_core_bf16")


def test_an_unreadable_cpuinfo_assumes_nothing_native(tmp_path):
    assert cpu.cpu_flags(str(tmp_path / "missing")) == frozenset()


def _cell(train, device):
    grid = expand_grid({"include": [{"preset": "resnet20", "device": device, "train": train}]}, cuda_available=False)
    return grid.cells[0]


def test_grid_cells_resolve_auto_per_device_and_gpu_ids_hash_the_old_values():
    gpu_auto, gpu_old = _cell({"epochs": 1}, "cuda"), _cell({"epochs": 1, **DEVICE_DEFAULTS["cuda"]}, "cuda")
    assert gpu_auto.train["batch_size"] == 512 and gpu_auto.cell_id == gpu_old.cell_id
    cpu_auto = _cell({"epochs": 1}, "cpu")
    assert cpu_auto.train["batch_size"] == 128 and cpu_auto.train["tta_flip"] is True
    assert cpu_auto.train["precision"] == "auto"  # resolved where training runs, recorded as train_precision
    assert cpu_auto.cell_id != _cell({"epochs": 1, **DEVICE_DEFAULTS["cuda"]}, "cpu").cell_id


def test_train_cell_records_the_precision_it_trained_with(monkeypatch):
    from torch import nn

    from bench.train import training

    monkeypatch.setattr(cpu, "native_bf16", lambda: False)

    def factory():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    row = training.train_cell(factory, {"dataset": "synthetic", "train_subset": 64, "test_subset": 32,
                                        "epochs": 1, "bn_recalibration": 0}, device="cpu")
    assert row["train_precision"] == "fp32" and row["train_batch_size"] == 64
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    row = training.train_cell(factory, {"dataset": "synthetic", "train_subset": 64, "test_subset": 32,
                                        "epochs": 1, "bn_recalibration": 0}, device="cpu")
    assert row["train_precision"] == "bf16"
