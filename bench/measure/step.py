"""The harness's one timed training step: timed by the cell, profiled by :mod:`bench.measure.profile`.

SGD with momentum on cross-entropy, autocast to the cell's precision. fp16
scales the loss with a ``GradScaler`` as fp16 training must (its inf check
reads a flag back from the device each step: that cost is part of an fp16
step). With ``phases`` on, forward, backward and optimizer run in
``phase::`` scopes the profiler attributes by; off (the timed loop), no
scope is opened, so the timed step carries no profiler bookkeeping.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Optional

import torch
from torch import nn

PHASE = "phase::"


def train_step_fn(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                  autocast: Callable[[], ContextManager[Any]], precision: str = "fp32",
                  run_model: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                  phases: bool = False) -> Callable[[], None]:
    """A step with its own optimizer (momentum state made on the first call); ``run_model`` is the compiled model."""
    forward = run_model if run_model is not None else model  # (an nn.Module has no truth value to rely on)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(x.device.type, enabled=precision == "fp16")
    loss_fn = nn.CrossEntropyLoss()

    def scope(name: str) -> ContextManager[Any]:
        return torch.profiler.record_function(PHASE + name) if phases else contextlib.nullcontext()

    def step() -> None:
        with scope("train_forward"), autocast():
            loss = loss_fn(forward(x), labels)
        with scope("train_backward"):
            scaler.scale(loss).backward()
        with scope("train_optimizer"):
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
    return step
