"""The training recipe: every hyperparameter in one structure, units in comments.

A grid's ``train:`` block overrides these fields per cell; the resolved
recipe is written to the sidecar and its key fields to every row.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "cifar10"  # cifar10 | synthetic
    data_root: str = "data"  # folder holding cifar-10-batches-py/
    train_subset: Optional[int] = None  # images drawn from the training set (None = all)
    test_subset: Optional[int] = None  # images drawn from the test set (None = all)
    val_size: int = 0  # images held out of the training set for validation
    epochs: float = 5  # passes over the training set
    batch_size: int = 512  # images per step
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adam
    lr: float = 0.2  # peak learning rate (per step, not scaled by batch size)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True
    weight_decay: float = 5e-4  # L2 on conv/linear weights only (not BN, not bias)
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0  # linear warm-up from 0 to lr, epochs
    schedule: str = "linear"  # decay after warm-up: linear | cosine, to 0 at the end
    ema: Optional[float] = None  # EMA decay of weights per step (None = off)
    tta_flip: bool = False  # average predictions over a horizontal flip at test time
    crop_padding: int = 4  # random-crop padding, px (0 = no crop)
    flip: bool = True  # random horizontal flip
    normalize: Tuple[Tuple[float, float, float], Tuple[float, float, float]] = (
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # (mean, std) per channel, on [0, 1] pixels
    resize: Optional[int] = None  # train/test input size after on-device interpolation, px (None = 32)
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    channels_last: str = "auto"  # auto (on GPU) | true | false
    repeats: int = 1  # seeds trained; mean and std reported
    seed: int = 0  # first seed; repeats use seed, seed+1, ...
    target_acc: Optional[float] = None  # accuracy for time_to_target_s, fraction 0-1
    eval_every: float = 1.0  # evaluate on the test set every this many epochs (for time_to_target)
    deterministic: bool = True  # ask torch for deterministic kernels (recorded)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def resolve(overrides: Optional[Dict[str, Any]]) -> TrainConfig:
    """A :class:`TrainConfig` with the grid's overrides applied; ``ValueError`` names a bad key."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(TRAIN_FIELDS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown training setting; known: {', '.join(TRAIN_FIELDS)}")
    if "normalize" in overrides and overrides["normalize"] is not None:
        mean, std = overrides["normalize"]
        overrides["normalize"] = (tuple(mean), tuple(std))
    return TrainConfig(**overrides)


def quick_overrides() -> Dict[str, Any]:
    """What ``--quick`` changes in any recipe so a CPU finishes in seconds."""
    return {"train_subset": 2000, "test_subset": 500, "epochs": 1, "batch_size": 128, "repeats": 1}
