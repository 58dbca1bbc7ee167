"""The training recipe: every hyperparameter in one structure, units in comments.

A grid's ``train:`` block overrides these fields per cell; the resolved
recipe is written to the sidecar and its key fields to every row.
:func:`resolve` type-checks every field and raises ``ValueError("<field>:
expected ...")`` so the grid loader can name the file and key path.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, TypeVar, Union

from bench import choices
from bench.checks import Check, auto, boolean, choice, integer, is_number, number, optional, shown

Normalize = Tuple[Tuple[float, float, float], Tuple[float, float, float]]
T = TypeVar("T")
Auto = Union[T, str]  # a value, or "auto": chosen per device by for_device()

CIFAR10_MEAN_STD: Normalize = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "cifar10"  # cifar10 | synthetic (procedural, offline)
    data_root: str = "data"  # folder holding cifar-10-batches-py/
    download: bool = True  # fetch CIFAR-10 (checksum verified) when the folder is missing and the machine is online
    train_subset: Optional[int] = None  # images drawn (seeded) from the training set, validation included (None = all)
    test_subset: Optional[int] = None  # images drawn (seeded) from the test set (None = all)
    val_size: int = 0  # images held out of the training images for validation
    # schedule
    epochs: float = 5  # passes over the training images (fractions allowed)
    batch_size: Auto[int] = "auto"  # images per step; auto: 512 on GPU, 128 on CPU (more steps pay off there)
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adam
    lr: Auto[float] = "auto"  # peak learning rate, per step (not scaled by batch size); auto: 0.2 GPU, 0.4 CPU
    momentum: float = 0.9  # SGD momentum (adam: beta1)
    nesterov: bool = True  # Nesterov momentum for SGD
    weight_decay: float = 5e-4  # L2 coefficient on conv/linear weights only (not BN, not biases)
    label_smoothing: float = 0.1  # cross-entropy label smoothing, 0-1
    warmup_epochs: float = 1.0  # linear warm-up from 0 to lr, epochs (at most 30% of the schedule)
    schedule: str = "linear"  # after warm-up: linear | cosine (both to 0 at the end) | constant
    ema: Optional[float] = None  # per-step decay of an exponential moving average of the weights (None = off)
    tta_flip: Auto[bool] = "auto"  # average test predictions over the image and its mirror; auto: on CPU only
    bn_recalibration: int = 2048  # training images (unaugmented) that re-estimate BatchNorm statistics before
    #   each evaluation (0 = keep the running averages, which lag badly in schedules of a few dozen steps)
    # augmentation (on the device, per batch)
    crop_padding: Auto[int] = "auto"  # random translation of up to this many px, zero fill (0 = none); auto: 4 GPU,
    #   2 CPU (a 5-epoch CPU schedule is too short to profit from the stronger augmentation)
    flip: bool = True  # random horizontal flip
    normalize: Normalize = CIFAR10_MEAN_STD  # (mean, std) per RGB channel, on [0, 1] pixels
    resize: Optional[int] = None  # train/test size after on-device bilinear interpolation, px (None = 32)
    # numerics
    precision: str = "auto"  # auto (bf16 on GPU and on CPUs with native bf16, else fp32) | fp32 | bf16 | fp16
    channels_last: Union[str, bool] = "auto"  # auto (on GPU) | true | false
    eval_batch_size: int = 1000  # images per evaluation forward pass
    # repetition and reporting
    seeds: int = 1  # seeds trained (seed, seed+1, ...); mean and sample std reported (was `repeats`)
    seed: int = 0  # first seed: data subset, model init, augmentation and order
    target_acc: Optional[float] = None  # test accuracy for time_to_target_s, fraction 0-1
    eval_every: float = 1.0  # with target_acc: evaluate every this many epochs (excluded from train time)
    deterministic: Auto[bool] = "auto"  # deterministic kernels; auto: on CPU (exact, and free there), off on GPU
    #   (deterministic cuDNN switches autotuning off and picks slower kernels: a time to target would time that)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# Old spellings still read (grids and sidecars written before the rename), with a one-line note.
# `repeats` meant the seeds here and the timed iterations in a cell: now only the latter.
RENAMED = {"repeats": "seeds"}
_noted: set = set()

# Warm-up never takes more than this share of the steps, so a shortened
# schedule (quick mode: 1 epoch) still decays to 0.
MAX_WARMUP_FRACTION = 0.3


# ------------------------------------------------------------------ checkers
# The generic checks live in bench/checks.py, shared with the grid loader;
# the ones below know about recipes.
def _real(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> Check:
    """:func:`bench.checks.number`, kept as a float: TrainConfig's float fields hold floats (``epochs: 2`` is 2.0)."""
    check = number(low, high, low_open, high_open)
    return lambda v: float(check(v))


def _path(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a folder path, got {shown(v)}")
    return v


def _channels_last(v: Any) -> Union[str, bool]:
    if v == "auto" or isinstance(v, bool):
        return v
    raise ValueError(f"expected auto, true or false, got {shown(v)}")


def _normalize(v: Any) -> Normalize:
    expected = f"expected [[mean R, G, B], [std R, G, B]] on [0, 1] pixels (std > 0), got {shown(v)}"
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(expected)
    out = []
    for part in v:
        if not isinstance(part, (list, tuple)) or len(part) != 3 or not all(is_number(x) for x in part):
            raise ValueError(expected)
        out.append(tuple(float(x) for x in part))
    if not all(s > 0 for s in out[1]):
        raise ValueError(expected)
    return (out[0], out[1])  # type: ignore[return-value]


_CHECKS: Dict[str, Check] = {
    "dataset": choice(*choices.DATASETS),
    "data_root": _path,
    "download": boolean,
    "train_subset": optional(integer(1)),
    "test_subset": optional(integer(1)),
    "val_size": integer(0),
    "epochs": _real(0, low_open=True),
    "batch_size": auto(integer(1)),
    "optimizer": choice(*choices.OPTIMIZERS),
    "lr": auto(_real(0, low_open=True)),
    "momentum": _real(0, 1, high_open=True),
    "nesterov": boolean,
    "weight_decay": _real(0),
    "label_smoothing": _real(0, 1, high_open=True),
    "warmup_epochs": _real(0),
    "schedule": choice(*choices.SCHEDULES),
    "ema": optional(_real(0, 1, low_open=True, high_open=True)),
    "tta_flip": auto(boolean),
    "bn_recalibration": integer(0),
    "crop_padding": auto(integer(0)),
    "flip": boolean,
    "normalize": _normalize,
    "resize": optional(integer(8)),
    "precision": choice(*choices.TRAIN_PRECISIONS),
    "channels_last": _channels_last,
    "eval_batch_size": integer(1),
    "seeds": integer(1),
    "seed": integer(0),
    "target_acc": optional(_real(0, 1, low_open=True)),
    "eval_every": _real(0, low_open=True),
    "deterministic": auto(boolean),
}
assert set(_CHECKS) == set(TRAIN_FIELDS), "every TrainConfig field needs a checker"


def resolve(overrides: Optional[Dict[str, Any]]) -> TrainConfig:
    """A :class:`TrainConfig` with ``overrides`` applied, every value type-checked.

    Raises ``ValueError("<field>: expected ...")`` for an unknown key or a bad value.
    Accepts the output of :meth:`TrainConfig.to_dict` (a resolved recipe round-trips).
    """
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"expected a mapping of training settings, got {shown(overrides)}")
    overrides = dict(overrides or {})
    written = {}  # field -> the key the user wrote, for the error message
    for old, new in RENAMED.items():
        if old in overrides:
            value = overrides.pop(old)
            if new not in overrides:  # both given (a --quick merge): the new key wins
                overrides[new], written[new] = value, old
            if old not in _noted:
                _noted.add(old)
                print(f"note: train.{old} is now train.{new}; the old key still loads", file=sys.stderr)
    unknown = sorted(set(overrides) - set(TRAIN_FIELDS), key=str)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown training setting; known: {', '.join(TRAIN_FIELDS)}")
    values = {}
    for key, value in overrides.items():
        try:
            values[key] = _CHECKS[key](value)
        except ValueError as e:
            raise ValueError(f"{written.get(key, key)}: {e}") from None
    config = TrainConfig(**values)
    if config.optimizer == "sgd" and config.nesterov and config.momentum == 0:
        # torch refuses this only when the optimiser is built, i.e. in the middle of a sweep
        raise ValueError("nesterov: true needs momentum above 0, got momentum: 0; "
                         "set nesterov: false or a positive momentum")
    if config.train_subset is not None and config.val_size >= config.train_subset:
        raise ValueError(f"val_size: expected fewer than train_subset ({config.train_subset}) images, "
                         f"got {config.val_size}")
    return config


# What "auto" means per device. GPU: large batches keep the device busy. CPU:
# the recipe of benchmarks/train_cifar.py, which reaches 82.5% with resnet20 in
# 5 epochs on 2 cores (docs/training.md): 4x the steps, and weaker
# augmentation that a schedule this short can still fit, with flip TTA.
DEVICE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "cuda": {"batch_size": 512, "lr": 0.2, "crop_padding": 4, "tta_flip": False, "deterministic": False},
    "cpu": {"batch_size": 128, "lr": 0.4, "crop_padding": 2, "tta_flip": True, "deterministic": True},
}
AUTO_FIELDS = tuple(DEVICE_DEFAULTS["cpu"])


def for_device(config: TrainConfig, device: str, native_bf16: Optional[bool] = None) -> TrainConfig:
    """``config`` with every ``auto`` field replaced by ``device``'s value; explicit values stay as written.

    ``precision: auto`` becomes bf16 on a GPU, and on a CPU bf16 where
    ``native_bf16`` (the CPU has bf16 instructions, :mod:`bench.measure.cpu`)
    is true, else fp32. With ``native_bf16=None`` it stays ``auto``: the grid
    is expanded before the training machine is known, and cell ids hash the
    recipe as written (``precision: auto`` predates this function).
    """
    defaults = DEVICE_DEFAULTS["cuda" if device == "cuda" else "cpu"]
    changes: Dict[str, Any] = {k: v for k, v in defaults.items() if getattr(config, k) == "auto"}
    if config.precision == "auto" and native_bf16 is not None:
        changes["precision"] = "bf16" if device == "cuda" or native_bf16 else "fp32"
    return dataclasses.replace(config, **changes) if changes else config


# --quick: tuned for signal per second on a 2-core CPU. The old 2,000 images
# at batch 128 (15 steps) left real CIFAR-10 at chance (10-15%). 4,000 images
# at batch 64 (62 steps), warm-up over the first 30%, then linear decay (one
# seed each, 1,000 test images, +-1.4 points): resnet20 31.8% at lr 0.05
# (35.1% at 0.1, 25.9% at 0.4, 11.4% at 0.8); the quarter-width ResNeXt-29
# 32x4d 28.5% at 0.05 (22.3% at 0.1, chance at 0.2), its 1x64d 24.5% at 0.05.
# 0.05 is the lr that keeps every family above chance.
QUICK_RECIPE: Dict[str, Any] = {
    "train_subset": 4000, "test_subset": 1000, "val_size": 0, "epochs": 1, "batch_size": 64,
    "warmup_epochs": 0.3, "seeds": 1, "resize": None,
    "tta_flip": False, "bn_recalibration": 512,  # evaluation kept cheap beside ~4,000 training images
}
QUICK_SGD_LR = 0.05


def quick_overrides(train: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What ``--quick`` changes in a recipe (``train``, as written) so a CPU finishes in seconds per cell.

    Subsets and epochs already smaller stay. SGD gets the lr that suits the
    quick batch; Adam keeps its own (its scale is another, e.g. the
    article's 1e-3). Warm-up is capped at 30% of
    the steps, so the 1-epoch schedule still decays.
    """
    train = train or {}
    out = dict(QUICK_RECIPE)
    for key in ("train_subset", "test_subset", "epochs"):  # shrink, never grow (grids/quick.yaml: 1,000 images)
        if is_number(train.get(key)) and train[key] < out[key]:
            out[key] = train[key]
    if train.get("optimizer", "sgd") == "sgd":
        out["lr"] = QUICK_SGD_LR
    return out
