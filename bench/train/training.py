"""Short-schedule training of one cell: the accuracy axis of the benchmark.

:func:`train_cell` is the entry point ``bench.run.cell`` calls: it trains the
cell's model once per seed with the recipe (:class:`bench.train.recipe.TrainConfig`)
and returns schema columns (top-1 accuracy mean/std/per seed, training time
and throughput, time to a target accuracy) plus ``status`` and ``error``.

The whole dataset lives on the device; batches are augmented there
(:mod:`bench.train.augment`). The training clock (CUDA events on a GPU) covers data
pipeline, forward, backward and optimiser steps, and stops for evaluations.
Global torch state touched here (RNG, deterministic flags, cuDNN switches,
threads) is restored afterwards, so later cells' timings are unaffected.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

import torch
from torch import nn

from bench.measure import stats
from bench.measure.numerics import autocast_dtype
from bench.measure.timing import Stopwatch
from bench.train.augment import BatchPipeline
from bench.train.data import NUM_CLASSES, Split, TrainingData, prepare_data
from bench.errors import UserError
from bench.measure import cpu
from bench.results.image_schema import IMAGE_ROWS_KEY, image_row, test_set_id
from bench.train.recipe import MAX_WARMUP_FRACTION, TrainConfig, for_device, resolve

# On a GPU, reading the loss back every step would stall the pipeline; check this often instead
# (and always before an evaluation, so a NaN model is never evaluated). On CPU, every step.
CUDA_DIVERGENCE_CHECK_STEPS = 50
CPU_DIVERGENCE_CHECK_STEPS = 1
# Untimed steps on a throwaway copy of the model before the clock starts: on a GPU the first steps
# autotune cuDNN, load kernels and grow the allocator's pool, seconds a time to target should not
# count. The copy has its own optimizer and reads a batch without augmentation, so the trained model,
# its RNG streams and its accuracy are the same as without. None on the CPU: nothing there is lazy
# enough to matter, and the CPU's train_time_s stays comparable with earlier runs.
WARMUP_STEPS = {"cuda": 3, "cpu": 0}


# ------------------------------------------------------------------ recipe parts
def use_channels_last(setting: Any, device: str) -> bool:
    return device == "cuda" if setting == "auto" else bool(setting)


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Trainable parameters split so weight decay applies to conv/linear weights only.

    Parameters with fewer than 2 dimensions are BatchNorm scales and shifts and
    biases: decaying them only fights the normalisation, so they are exempt.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    if not decay and not no_decay:
        raise UserError("train: the model has no trainable parameters (is every parameter frozen?)")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = [g for g in param_groups(model, config.weight_decay) if g["params"]]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=(config.momentum, 0.999))
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def warmup_steps(config: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Warm-up length in steps: ``warmup_epochs``, at most 30% of the schedule."""
    return min(config.warmup_epochs * steps_per_epoch, MAX_WARMUP_FRACTION * total_steps)


def lr_factor(step: float, total_steps: int, warmup: float, schedule: str) -> float:
    """Multiplier on the peak lr at ``step`` (0 <= step <= total_steps).

    Linear warm-up from 0 to 1 over ``warmup`` steps, then ``linear`` or
    ``cosine`` decay to exactly 0 at ``total_steps`` (or ``constant``). The
    training loop evaluates it at the middle of each step (``s + 0.5``), so
    neither the first nor the last step is wasted at lr 0.
    """
    if warmup > 0 and step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    remaining = total_steps - warmup
    progress = 1.0 if remaining <= 0 else min(1.0, (step - warmup) / remaining)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


class WeightEma:
    """Exponential moving average of a model's weights and buffers, updated every step.

    The decay ramps up as ``min(decay, (1 + t) / (10 + t))`` so the average is
    not dominated by the random initialisation in a short schedule.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        self._float = [(e, s) for e, s in pairs if e.is_floating_point()]
        self._other = [(e, s) for e, s in pairs if not e.is_floating_point()]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if self._float:
            torch._foreach_lerp_([e for e, _ in self._float], [s for _, s in self._float], 1.0 - d)
        for e, s in self._other:
            e.copy_(s)


class Trainer:
    """One model's optimiser, loss, schedule, precision and EMA: ``step(x, y)`` does one update."""

    def __init__(self, model: nn.Module, config: TrainConfig, device: str, total_steps: int,
                 steps_per_epoch: int) -> None:
        self.model, self.config, self.device = model, config, device
        self.total_steps = total_steps
        self.warmup = warmup_steps(config, steps_per_epoch, total_steps)
        self.optimizer = make_optimizer(model, config)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.dtype = autocast_dtype(config.precision, device)
        self.scaler = torch.amp.GradScaler(device) if self.dtype is torch.float16 else None
        self.ema = WeightEma(model, config.ema) if config.ema else None
        self.steps_done = 0

    def lr_now(self) -> float:
        return self.config.lr * lr_factor(self.steps_done + 0.5, self.total_steps, self.warmup,
                                          self.config.schedule)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.dtype)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step; returns the (detached) loss."""
        lr = self.lr_now()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with self.autocast():
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.steps_done += 1
        return loss.detach()

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model


@torch.no_grad()
def score(model: nn.Module, batches: BatchPipeline, tta_flip: bool = False,
          dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Per-image top-1 correctness (bool, on the CPU, in ``batches``' order); flip TTA averages the logits."""
    was_training = model.training
    model.eval()
    hits = []
    ctx = contextlib.nullcontext() if dtype is None else torch.autocast(batches.images.device.type, dtype=dtype)
    with ctx:
        for x, y in batches:
            logits = model(x).float()
            if tta_flip:
                logits = logits + model(x.flip(3)).float()
            hits.append(logits.argmax(1) == y)
    model.train(was_training)
    return torch.cat(hits).cpu() if hits else torch.zeros(0, dtype=torch.bool)


def evaluate(model: nn.Module, batches: BatchPipeline, tta_flip: bool = False,
             dtype: Optional[torch.dtype] = None) -> float:
    """Top-1 accuracy (fraction) over every image of ``batches``."""
    return score(model, batches, tta_flip, dtype).sum().item() / len(batches.labels)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: BatchPipeline, max_images: int,
                          dtype: Optional[torch.dtype] = None) -> int:
    """Re-estimate every BatchNorm's running mean/var as the average over ``max_images`` images.

    Each batch's statistics count in proportion to its images, so the mean is
    the true mean over the images used whatever the batch sizes (the variance
    is the size-weighted average of the batches' variances).

    "Precise BN" (Wu & Johnson, 2021): the running averages (momentum 0.1)
    still remember the initialisation after a short schedule, which ruins
    eval-mode accuracy although the weights are fine. Only BN buffers change;
    each layer's momentum is restored. Returns the images used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or max_images <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
    model.train()
    used = 0
    ctx = contextlib.nullcontext() if dtype is None else torch.autocast(batches.images.device.type, dtype=dtype)
    with ctx:
        for x, _ in batches:
            x = x[:max_images - used]
            if x.shape[0] < 2:  # BN needs two images for a variance
                break
            # Weight each batch by its size, so a short last batch counts for its images only (momentum
            # None would weight every batch alike): new = old + b / (used + b) * (batch - old).
            for m in norms:
                m.momentum = x.shape[0] / (used + x.shape[0])
            model(x)
            used += x.shape[0]
            if used >= max_images:
                break
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return used


# --------------------------------------------------------------------- one seed
@dataclass
class EvalPoint:
    epoch: float
    step: int
    train_time_s: float  # training clock at this point (evaluations excluded)
    test_acc: float
    images: int = 0  # training images processed so far


@dataclass
class EpochPoint:
    """Progress at the end of an epoch (or of the schedule), for a console line."""

    seed: int
    epoch: int  # 1-based
    epochs: int  # epochs in the schedule, a fractional last one counted
    step: int
    total_steps: int
    loss: float  # mean training loss over the epoch's steps
    test_acc: Optional[float]  # when the epoch ended with an evaluation
    images: int  # training images so far
    wall_s: float  # since this seed started, evaluations included


@dataclass
class SeedResult:
    seed: int
    train_time_s: float
    images: int  # training images processed
    test_acc: Optional[float] = None
    val_acc: Optional[float] = None
    time_to_target_s: Optional[float] = None
    history: List[EvalPoint] = field(default_factory=list)
    diverged: Optional[str] = None  # why the run stopped, when the loss became NaN/inf
    correct: Optional[torch.Tensor] = None  # the final test evaluation's per-image correctness (bool)


@dataclass
class DeviceData:
    """A :class:`TrainingData` moved to the device once, shared by every seed of a cell."""

    train: Split
    val: Optional[Split]
    test: Split
    label: str

    @classmethod
    def from_data(cls, data: TrainingData, device: str) -> "DeviceData":
        def move(s: Optional[Split]) -> Optional[Split]:
            return None if s is None else Split(s.images.to(device), s.labels.to(device))
        return cls(move(data.train), move(data.val), move(data.test), data.label)  # type: ignore[arg-type]


def train_seed(model_factory: Callable[[], nn.Module], data: DeviceData, config: TrainConfig, device: str,
               seed: int, on_eval: Optional[Callable[[EvalPoint], None]] = None,
               on_epoch: Optional[Callable[[EpochPoint], None]] = None) -> SeedResult:
    """Train a fresh model with ``seed`` and evaluate it.

    The seed fixes the initialisation (the global RNG is seeded before
    ``model_factory`` runs; callers restore it, see :func:`isolated_state`),
    the batch order and the augmentation. With ``target_acc`` or ``on_eval``
    the test set is evaluated every ``eval_every`` epochs, off the clock.
    """
    config = for_device(config, device)  # callers that skip train_cell may pass auto fields
    return _SeedRun(model_factory, data, config, device, seed, on_eval, on_epoch).train()


def _evaluation_steps(config: TrainConfig, steps_per_epoch: int, total: int) -> Set[int]:
    """The steps after which the test set is evaluated: every ``eval_every`` epochs, and the last one."""
    steps = set()
    k = 1
    while round(k * config.eval_every * steps_per_epoch) < total:
        steps.add(round(k * config.eval_every * steps_per_epoch))
        k += 1
    steps.add(total)
    return steps


class _SeedRun:
    """One seed's training in steps: set up, loop (divergence check, evaluation, epoch report), finish.

    The loop's state lives here so that each step is a short method of its own.
    """

    def __init__(self, model_factory: Callable[[], nn.Module], data: DeviceData, config: TrainConfig, device: str,
                 seed: int, on_eval: Optional[Callable[[EvalPoint], None]],
                 on_epoch: Optional[Callable[[EpochPoint], None]]) -> None:
        self.data, self.config, self.device, self.seed = data, config, device, seed
        self.on_eval, self.on_epoch = on_eval, on_epoch
        torch.manual_seed(seed)  # before the factory runs: the seed fixes the initialisation
        memory_format = torch.channels_last if use_channels_last(config.channels_last, device) \
            else torch.contiguous_format
        model = model_factory().to(device=device, memory_format=memory_format)
        generator = torch.Generator(device=device).manual_seed(seed)
        self.common = dict(mean=config.normalize[0], std=config.normalize[1], size=config.resize,
                           memory_format=memory_format)
        self.train_batches = BatchPipeline(data.train.images, data.train.labels, config.batch_size, train=True,
                                           generator=generator, crop_padding=config.crop_padding, flip=config.flip,
                                           **self.common)
        self.steps_per_epoch = self.train_batches.steps_per_epoch
        self.total = max(1, round(config.epochs * self.steps_per_epoch))
        self.trainer = Trainer(model, config, device, self.total, self.steps_per_epoch)
        self.calibration = BatchPipeline(data.train.images, data.train.labels, self.train_batches.batch_size,
                                         train=False, **self.common)
        evaluating = config.target_acc is not None or on_eval is not None
        self.eval_steps = _evaluation_steps(config, self.steps_per_epoch, self.total) if evaluating else set()
        self.result = SeedResult(seed=seed, train_time_s=0.0, images=0)
        self.clock = Stopwatch(device)
        self.check_every = CUDA_DIVERGENCE_CHECK_STEPS if device == "cuda" else CPU_DIVERGENCE_CHECK_STEPS
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.epoch_loss, self.epoch_start = torch.zeros((), device=device), 0
        self.wall_start = 0.0

    def test_accuracy(self) -> float:
        """Test accuracy now; the per-image correctness is kept, so the last evaluation's is the final one's."""
        trainer = self.trainer
        recalibrate_batchnorm(trainer.eval_model, self.calibration, self.config.bn_recalibration, trainer.dtype)
        batches = BatchPipeline(self.data.test.images, self.data.test.labels, self.config.eval_batch_size,
                                train=False, **self.common)
        self.result.correct = score(trainer.eval_model, batches, self.config.tta_flip, trainer.dtype)
        return self.result.correct.sum().item() / len(batches.labels)

    def warm_up(self) -> None:
        """:data:`WARMUP_STEPS` steps of a copy of the model, off the clock; the real model is untouched."""
        steps = WARMUP_STEPS.get(self.device, 0)
        if not steps:
            return
        copy_trainer = Trainer(copy.deepcopy(self.trainer.model), self.config, self.device, self.total,
                               self.steps_per_epoch)
        x, y = next(iter(self.calibration))  # unaugmented: no draw from the training generator
        for _ in range(steps):
            copy_trainer.step(x, y)
        if self.device == "cuda":
            torch.cuda.synchronize()

    def train(self) -> SeedResult:
        self.warm_up()
        self.wall_start = time.perf_counter()
        self.clock.start()
        while self.trainer.steps_done < self.total:
            for x, y in self.train_batches:
                loss = self.trainer.step(x, y)
                self.result.images += x.shape[0]
                self.nonfinite |= ~torch.isfinite(loss)
                step = self.trainer.steps_done
                if self._diverged(step, loss):
                    return self.result
                if step in self.eval_steps:
                    self._evaluate(step)
                if self.on_epoch is not None:
                    self._track_epoch(step, loss)
                if step >= self.total:
                    break
        self._finish()
        return self.result

    def _diverged(self, step: int, loss: torch.Tensor) -> bool:
        """Stop the clock and record why when the loss has gone NaN/inf (read back only when a check is due)."""
        due = step % self.check_every == 0 or step == self.total or step in self.eval_steps
        if not (due and bool(self.nonfinite)):
            return False
        self.result.train_time_s = self.clock.stop()
        self.result.diverged = (f"seed {self.seed}: loss is not finite ({loss.item():g}) by step {step} of "
                                f"{self.total} (epoch {step / self.steps_per_epoch:.2f}); lower lr or check the model")
        return True

    def _evaluate(self, step: int) -> None:
        """Evaluate off the clock; note when the target accuracy is first reached."""
        elapsed = self.clock.stop()
        point = EvalPoint(epoch=step / self.steps_per_epoch, step=step, train_time_s=elapsed,
                          test_acc=self.test_accuracy(), images=self.result.images)
        self.result.history.append(point)
        target = self.config.target_acc
        if self.result.time_to_target_s is None and target is not None and point.test_acc >= target:
            self.result.time_to_target_s = elapsed
        if self.on_eval is not None:
            self.on_eval(point)
        if step < self.total:
            self.clock.start()

    def _track_epoch(self, step: int, loss: torch.Tensor) -> None:
        """Add up the epoch's loss on the device; report it at the epoch's end."""
        self.epoch_loss += loss.float()
        if step % self.steps_per_epoch == 0 or step == self.total:  # one host sync per epoch, only when someone listens
            epochs = math.ceil(self.total / self.steps_per_epoch)
            self.on_epoch(EpochPoint(self.seed, math.ceil(step / self.steps_per_epoch), epochs, step,
                                     self.total, self.epoch_loss.item() / (step - self.epoch_start),
                                     self.result.history[-1].test_acc if step in self.eval_steps else None,
                                     self.result.images, time.perf_counter() - self.wall_start))
            self.epoch_loss.zero_()
            self.epoch_start = step

    def _finish(self) -> None:
        """The training time, the final test accuracy (the last evaluation's, if at the end) and val accuracy."""
        result = self.result
        result.train_time_s = self.clock.total_s if self.total in self.eval_steps else self.clock.stop()
        result.test_acc = result.history[-1].test_acc if result.history else self.test_accuracy()
        if self.data.val is not None:
            val = BatchPipeline(self.data.val.images, self.data.val.labels, self.config.eval_batch_size,
                                train=False, **self.common)
            result.val_acc = evaluate(self.trainer.eval_model, val, self.config.tta_flip, self.trainer.dtype)


@contextlib.contextmanager
def isolated_state(device: str, deterministic: bool) -> Iterator[None]:
    """Seeded, optionally deterministic torch for training; every global switch restored on exit."""
    saved = {
        "det": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_det": torch.backends.cudnn.deterministic,
        "cudnn_bench": torch.backends.cudnn.benchmark,
        "threads": torch.get_num_threads(),
        "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    devices = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            if deterministic:
                # cuBLAS needs a fixed workspace to be deterministic, and torch reads the
                # setting once, when cuBLAS first runs: it is set only while CUDA has not
                # started (a run that timed cells first must export it before starting;
                # torch then warns on each cuBLAS op). warn_only: an op without a
                # deterministic kernel warns instead of failing the cell.
                if device != "cuda" or not torch.cuda.is_initialized():
                    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True, warn_only=True)
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
            yield
        finally:
            torch.use_deterministic_algorithms(saved["det"], warn_only=saved["warn_only"])
            torch.backends.cudnn.deterministic = saved["cudnn_det"]
            torch.backends.cudnn.benchmark = saved["cudnn_bench"]
            torch.set_num_threads(saved["threads"])
            if saved["cublas"] is None:
                os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
            else:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved["cublas"]


# ----------------------------------------------------------------- entry point
def train_cell(model_factory: Callable[[], nn.Module], train_settings: Dict[str, Any], *, device: str = "cpu",
               num_classes: int = NUM_CLASSES, input_size: int = 32,
               on_eval: Optional[Callable[[int, EvalPoint], None]] = None,
               on_epoch: Optional[Callable[[EpochPoint, int, int], None]] = None) -> Dict[str, Any]:
    """Train ``seeds`` seeds of a cell's model; schema columns plus ``status`` and ``error``.

    A NaN/inf loss stops that training and returns ``status: diverged`` (the
    sweep goes on); other failures propagate to the caller. ``on_eval(seed,
    point)`` is called after every evaluation (and turns them on);
    ``on_epoch(point, run, runs)`` after every epoch of seed ``run`` of ``runs``.
    """
    try:
        # auto fields take the device's values; precision auto asks this machine's CPU for bf16
        config = for_device(resolve(train_settings), device, device == "cuda" or cpu.native_bf16())
    except ValueError as e:
        raise UserError(f"train: {e}") from None
    if num_classes < NUM_CLASSES:
        raise UserError(f"train: the model has {num_classes} outputs; CIFAR-10 needs {NUM_CLASSES} "
                        f"(set num_classes: {NUM_CLASSES})")
    if input_size != (config.resize or 32):
        warnings.warn(f"the model is configured for {input_size} px inputs but trains on "
                      f"{config.resize or 32} px images; set train.resize: {input_size} to match", stacklevel=2)
    data = DeviceData.from_data(prepare_data(config), device)
    results: List[SeedResult] = []
    with isolated_state(device, config.deterministic):
        for seed in range(config.seed, config.seed + config.seeds):
            callback = None if on_eval is None else (lambda point, s=seed: on_eval(s, point))
            epoch_cb = None if on_epoch is None else (
                lambda point, i=seed - config.seed: on_epoch(point, i, config.seeds))
            results.append(train_seed(model_factory, data, config, device, seed, callback, epoch_cb))
            if results[-1].diverged:
                break
    return train_columns(config, data, results)


def train_columns(config: TrainConfig, data: DeviceData, results: List[SeedResult]) -> Dict[str, Any]:
    """A cell's training columns from its per-seed results: recipe, accuracy, time, ``status`` and ``error``."""
    row: Dict[str, Any] = {
        "dataset": data.label,
        "epochs": config.epochs,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "train_batch_size": min(config.batch_size, len(data.train)),
        "train_precision": config.precision,
        "resize": config.resize,
        "n_seeds": len(results),
        "seeds": ";".join(str(r.seed) for r in results),
        "target_acc": config.target_acc,
        "deterministic": config.deterministic,
        "status": "ok",
        "error": None,
    }
    diverged = [r for r in results if r.diverged]
    if diverged:
        row.update(status="diverged", error=diverged[0].diverged)
        return row
    accs = [r.test_acc for r in results]
    times = [r.train_time_s for r in results]
    test_set = test_set_id(data.test.labels.tolist())  # every seed is scored on the same images
    row.update({
        "top1_acc": stats.mean(accs),
        "top1_acc_std": stats.std(accs) if len(accs) > 1 else None,
        "top1_acc_seeds": ";".join(f"{a:.4f}" for a in accs),
        "test_images": len(data.test),
        # accuracy is correct / test_images exactly, so the counts are recovered without loss
        "top1_correct_seeds": ";".join(str(round(a * len(data.test))) for a in accs),
        "val_acc": stats.mean([r.val_acc for r in results]) if data.val is not None else None,
        "train_time_s": stats.mean(times),
        "train_img_s": sum(r.images for r in results) / sum(times) if sum(times) > 0 else None,
        IMAGE_ROWS_KEY: [image_row(r.seed, r.correct.tolist(), test_set)
                         for r in results if r.correct is not None],
    })
    reached = [r.time_to_target_s for r in results]
    # A mean over only the seeds that made it would flatter the recipe: all or nothing.
    row["time_to_target_s"] = stats.mean(reached) if config.target_acc is not None and None not in reached else None
    return row
