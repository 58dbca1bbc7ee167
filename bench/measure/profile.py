"""Where the time of one model goes: torch.profiler joined with analytic per-layer MACs and bytes.

How ops are attributed (no guessing from op names where the model can say it):

* **Forward.** Forward hooks put every leaf layer (conv, BN, ReLU, pooling,
  linear) and every residual block inside a ``record_function`` scope named
  ``prof::STAGE|CLASS``; an operator belongs to its nearest enclosing scope.
  Ops inside a block but outside its layers are the residual add (``aten::add``)
  or "other". The class of a conv comes from the layer itself (kernel, groups).
* **Backward.** The autograd engine runs each node under an
  ``autograd::engine::evaluate_function: XBackward0`` event that carries the
  sequence number of the forward op that created the node; the forward op
  with that number (the last one: the counter advances right after a node is
  made) gives the scope. ``AccumulateGrad`` and the loss land in ``other``.
* **Time.** On CPU the operators' self CPU time; on CUDA the self device
  time, i.e. the kernels each op launched. Scope markers' own time (Python
  and hook overhead) is left out, so the profiled total is operator time.
* **Only CPU-side events count.** On CUDA, kineto also lists each kernel and
  a copy of every ``record_function`` range that encloses kernel launches, on
  the GPU timeline with the same name (``device_type`` CUDA). Counted as
  markers they doubled the iterations and halved every per-iteration time;
  a phase marked any other number of times than the profiled iterations is
  a :class:`ProfileError`, not a number.

The profiled iterations run after the timed loop, never inside it, with the
hooks installed only for them. MACs come from :mod:`models.complexity`'s
per-layer formulas applied to the shapes the layers saw, and must add up
exactly to the model's analytic MACs (else :class:`ProfileError`).
"""
from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from models import ModelConfig, model_complexity
from models import complexity as analytic

from bench.measure.kineto import quiet_profiler
from bench.measure.step import PHASE, train_step_fn
from bench.measure.timing import make_timer

SCOPE = "prof::"
BACKWARD_NODE = "autograd::engine::evaluate_function: "
ADD_OPS = frozenset({"aten::add", "aten::add_"})
BLOCK = "block"  # scope class of a residual block: its own ops are the add (or "other")
STEM_MODULES = frozenset({"conv1", "bn1", "relu", "maxpool"})
HEAD_MODULES = frozenset({"avgpool", "fc"})
PROFILED_ITERATIONS = 5
OVERHEAD_ITERATIONS = 3
Key = Tuple[str, str, str]  # phase, stage, op class


class ProfileError(RuntimeError):
    """The profile cannot be trusted (MACs that do not add up, an unknown layer)."""


# ------------------------------------------------------------------ classes
def conv_class(kernel: int, groups: int, stage: str) -> str:
    """The operator class of a conv layer."""
    if kernel == 1:
        return "conv 1x1"
    if kernel == 7 and stage == "stem":
        return "conv 7x7 stem"
    if kernel == 3:
        return "grouped conv 3x3" if groups > 1 else "dense conv 3x3"
    return "other"


def layer_class(module: nn.Module, stage: str) -> Optional[str]:
    """The class of a leaf layer; ``BLOCK`` for a residual block; None for containers and no-ops."""
    if isinstance(module, nn.Conv2d):
        return conv_class(module.kernel_size[0], module.groups, stage)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batch norm"
    if isinstance(module, nn.ReLU):
        return "ReLU"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return "pooling"
    if isinstance(module, nn.Linear):
        return "linear"
    if type(module).__name__ in ("Bottleneck", "BasicBlock"):
        return BLOCK
    return None


def stage_of(qualified_name: str) -> str:
    top = qualified_name.split(".")[0]
    if top.startswith("layer"):
        return top
    if top in STEM_MODULES:
        return "stem"
    if top in HEAD_MODULES:
        return "head"
    return "other"


# ------------------------------------------------------------ analytic costs
@dataclass
class LayerCost:
    """One layer call's analytic work: MACs per image, bytes per batch, forward and backward."""

    stage: str
    op_class: str
    macs: int = 0
    bytes: int = 0
    backward_macs: int = 0
    backward_bytes: int = 0


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _param_bytes(module: nn.Module, element_size: Optional[int] = None) -> int:
    tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    return sum(t.numel() * (element_size or t.element_size()) for t in tensors if t.dim() > 0)


def layer_cost(module: nn.Module, stage: str, op_class: str, x: torch.Tensor, out: torch.Tensor) -> LayerCost:
    """MACs (per image) and bytes (per batch) of one call, from models.complexity's per-layer formulas."""
    cost = LayerCost(stage, op_class)
    act_in, act_out = _nbytes(x), _nbytes(out)
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if isinstance(module, nn.Conv2d):
            c, size = analytic.conv(x.shape[-1], module.in_channels, module.out_channels, module.kernel_size[0],
                                    module.stride[0], module.groups)
            if x.shape[-1] != x.shape[-2] or size != out.shape[-1] or module.bias is not None:
                raise ProfileError(f"{stage} {op_class}: a layer models.complexity does not describe "
                                   f"(input {tuple(x.shape)}, output {tuple(out.shape)})")
        else:
            c = analytic.linear(module.in_features, module.out_features)
        weights = _param_bytes(module, out.element_size())  # autocast computes with weights in the output dtype
        cost.macs = c.macs
        cost.bytes = weights + act_in + act_out
        grads = int(x.requires_grad) + int(module.weight.requires_grad)
        cost.backward_macs = c.macs * grads
        # read grad_out and the saved input; write the gradients asked for (input: also reads the weights)
        cost.backward_bytes = act_out + act_in + (2 * weights + act_in) * x.requires_grad \
            + weights * module.weight.requires_grad
    else:  # memory-bound layers: read the input, write the output; backward reads two, writes one
        cost.bytes = _param_bytes(module) + act_in + act_out
        cost.backward_bytes = act_out + 2 * act_in
    return cost


def residual_add_cost(stage: str, out: torch.Tensor) -> LayerCost:
    """``out += identity``: read two tensors, write one; backward passes the gradient on (and sums it)."""
    n = _nbytes(out)
    return LayerCost(stage, "residual add", bytes=3 * n, backward_bytes=3 * n)


# ------------------------------------------------------------------- scopes
class Scopes:
    """Forward hooks that open a ``record_function`` scope per layer and block, and record their costs.

    Installed only around the profiled iterations; ``recording`` turns the
    cost bookkeeping on for one pass.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.costs: List[LayerCost] = []
        self.recording = False
        self._handles: List[Any] = []
        self._open: List[Any] = []

    def __enter__(self) -> "Scopes":
        for name, module in self.model.named_modules():
            if not name:
                continue
            stage = stage_of(name)
            cls = layer_class(module, stage)
            if cls is None:
                continue
            label = f"{SCOPE}{stage}|{cls}"
            self._handles.append(module.register_forward_pre_hook(functools.partial(self._enter, label)))
            self._handles.append(module.register_forward_hook(functools.partial(self._exit, stage, cls)))
        # Ops in the model's own forward (flatten) run after the last stage: the head's.
        self._handles.append(self.model.register_forward_pre_hook(functools.partial(self._enter, f"{SCOPE}head|other")))
        self._handles.append(self.model.register_forward_hook(lambda m, i, o: self._pop()))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        while self._open:
            self._pop()

    def _enter(self, label: str, module: nn.Module, inputs: Tuple[Any, ...]) -> None:
        scope = torch.profiler.record_function(label)
        scope.__enter__()
        self._open.append(scope)

    def _pop(self) -> None:
        self._open.pop().__exit__(None, None, None)

    def _exit(self, stage: str, cls: str, module: nn.Module, inputs: Tuple[Any, ...], out: Any) -> None:
        self._pop()
        if not self.recording:
            return
        if cls == BLOCK:
            self.costs.append(residual_add_cost(stage, out))
        else:
            self.costs.append(layer_cost(module, stage, cls, inputs[0], out))


def costs_by_key(costs: Iterable[LayerCost], batch: int) -> Dict[Key, Dict[str, int]]:
    """Per (phase, stage, class): MACs per image and bytes per batch; the train phases from the same pass."""
    out: Dict[Key, Dict[str, int]] = {}
    for c in costs:
        for phase, macs, nbytes in (("inference", c.macs, c.bytes), ("train_forward", c.macs, c.bytes),
                                    ("train_backward", c.backward_macs, c.backward_bytes)):
            slot = out.setdefault((phase, c.stage, c.op_class), {"macs": 0, "bytes": 0})
            slot["macs"] += macs
            slot["bytes"] += nbytes
    return out


def check_macs(costs: Iterable[LayerCost], config: ModelConfig) -> int:
    """The per-layer MACs must add up to the model's analytic MACs exactly."""
    total = sum(c.macs for c in costs)
    expected = model_complexity(config).macs
    if total != expected:
        raise ProfileError(f"per-layer MACs add up to {total:,}, the model has {expected:,}: a layer was missed "
                           f"or counted twice")
    return total


def record_costs(model: nn.Module, config: ModelConfig, x: torch.Tensor,
                 autocast: Callable[[], ContextManager[Any]]) -> List[LayerCost]:
    """One training-mode forward with the hooks recording (gradients on, so backward costs know what is needed)."""
    was_training = model.training
    model.train()
    with Scopes(model) as scopes:
        scopes.recording = True
        with autocast():
            model(x)
    model.train(was_training)
    # a per-image count: the recording pass ran a whole batch, MACs do not depend on it
    check_macs(scopes.costs, config)
    return scopes.costs


# -------------------------------------------------------------- attribution
def _ancestry(event: Any) -> Iterator[Any]:
    node = event
    while node is not None:
        yield node
        node = getattr(node, "cpu_parent", None)


def _scope_of(event: Any) -> Tuple[Optional[Any], Optional[str], Optional[Any]]:
    """(phase marker event, nearest layer scope label, nearest backward-node event) of an event."""
    phase = scope = node = None
    for e in _ancestry(event):
        name = e.name
        if scope is None and name.startswith(SCOPE):
            scope = name[len(SCOPE):]
        elif node is None and name.startswith(BACKWARD_NODE):
            node = e
        elif name.startswith(PHASE):
            phase = e
            break
    return phase, scope, node


def _backward_phase_at(t: float, phases: Sequence[Any]) -> Optional[Any]:
    """The backward phase marker whose time range holds ``t``.

    On CUDA the autograd engine runs backward on its own device thread, where
    no phase scope is open: a backward node there belongs to the backward
    phase that was running when it started.
    """
    for p in phases:
        if p.name == PHASE + "train_backward" and p.time_range.start <= t <= p.time_range.end:
            return p
    return None


def _resolve(scope: Optional[str], op_name: str) -> Tuple[str, str]:
    if scope is None:
        return "other", "other"
    stage, cls = scope.split("|", 1)
    if cls == BLOCK:
        cls = "residual add" if op_name in ADD_OPS else "other"
    return stage, cls


def event_time_us(event: Any, device: str) -> float:
    """Self time of an op: its kernels' time on CUDA, its CPU time on CPU, in us."""
    if device == "cuda":
        value = getattr(event, "self_device_time_total", None)
        if value is None:  # torch < 2.4 named it after CUDA
            value = getattr(event, "self_cuda_time_total", 0.0)
        return float(value)
    return float(event.self_cpu_time_total)


def _on_host(event: Any) -> bool:
    """A CPU-side event. On CUDA, kineto also lists the kernels and a copy of each ``record_function``
    range that encloses kernel launches, on the GPU timeline with the same name: those copies must not
    count as iterations or scopes (kernel time reaches an op through its ``self_device_time_total``)."""
    kind = getattr(event, "device_type", None)
    return kind is None or kind == torch.autograd.DeviceType.CPU


def attribute(events: Sequence[Any], device: str,
              iterations: Optional[int] = None) -> Dict[Key, List[Dict[str, float]]]:
    """Self times (us) and op calls per (phase, stage, class), one entry per profiled iteration.

    ``events`` are torch.profiler ``FunctionEvent`` objects or anything with
    their ``name``, ``cpu_parent``, ``sequence_nr``, ``time_range``,
    ``device_type`` and self-time attributes (the tests use fakes, including
    for the CUDA branch). Only CPU-side events count. An iteration is one
    opening of a phase scope; each key's list has one entry per iteration of
    its phase (0 where an iteration had none). With ``iterations`` given, a
    phase marked any other number of times is a :class:`ProfileError`.
    """
    ordered = sorted((e for e in events if _on_host(e)), key=lambda e: e.time_range.start)
    phases = [e for e in ordered if e.name.startswith(PHASE)]
    iteration: Dict[int, int] = {}  # id(phase marker) -> its index among the markers of its phase
    counts: Dict[str, int] = {}
    for p in phases:
        iteration[id(p)] = counts.get(p.name, 0)
        counts[p.name] = counts.get(p.name, 0) + 1
    wrong = {name: n for name, n in counts.items() if iterations is not None and n != iterations}
    if wrong:
        raise ProfileError("; ".join(f"{name} marked {n} times in {iterations} profiled iterations"
                                     for name, n in sorted(wrong.items())))
    info = []
    for e in ordered:
        phase, scope, node = _scope_of(e)
        if phase is None and node is not None:
            phase = _backward_phase_at(node.time_range.start, phases)
        info.append((e, phase, scope, node))
    forward_scope: Dict[int, Tuple[str, str]] = {}  # sequence number -> (stage, class) of the forward op
    for e, phase, scope, _ in info:
        if phase is not None and phase.name == PHASE + "train_forward" and e.sequence_nr is not None \
                and e.sequence_nr >= 0 and not e.name.startswith((SCOPE, PHASE)):
            forward_scope[e.sequence_nr] = _resolve(scope, e.name)  # the last op with a number made the node
    totals: Dict[Key, List[Dict[str, float]]] = {}
    for e, phase, scope, node in info:
        if phase is None or e.name.startswith((SCOPE, PHASE)):
            continue  # outside the profiled phases, or a marker whose own time is Python overhead
        name = phase.name[len(PHASE):]
        if name == "train_backward":
            stage, cls = forward_scope.get(node.sequence_nr if node is not None else -1, ("other", "other"))
            is_op = node is e
        else:
            stage, cls = _resolve(scope, e.name)
            is_op = e.cpu_parent is not None and e.cpu_parent.name.startswith((SCOPE, PHASE))
        per_iteration = totals.setdefault((name, stage, cls), [{"us": 0.0, "calls": 0}
                                                               for _ in range(counts[phase.name])])
        slot = per_iteration[iteration[id(phase)]]
        slot["us"] += event_time_us(e, device)
        slot["calls"] += int(is_op)
    return totals


def median_iteration(per_iteration: Dict[Key, List[Dict[str, float]]]) -> Dict[Key, Dict[str, float]]:
    """Per key, the median over iterations: one slow iteration on a shared machine does not skew a class."""
    return {k: {"us": statistics.median(v["us"] for v in its), "calls": statistics.median(v["calls"] for v in its)}
            for k, its in per_iteration.items()}


# --------------------------------------------------------------- the device
@functools.lru_cache(maxsize=None)
def probe_device(device: str, precision: str = "fp32") -> Tuple[float, float]:
    """(peak GFLOP/s from a square matmul, bandwidth GB/s from a copy): best of a few, outside any timed loop."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    if device == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # CPUs have no fast fp16 matmul; autocast on CPU uses bf16
    n, copy_elems = (8192, 1 << 28) if device == "cuda" else (1024, 1 << 24)
    timer = make_timer(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    src = torch.empty(copy_elems, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    mm = min(timer.time_block(lambda: torch.mm(a, b), 1) for _ in range(5))
    cp = min(timer.time_block(lambda: dst.copy_(src), 1) for _ in range(5))
    peak = 2 * n ** 3 / (mm / 1e3) / 1e9
    bandwidth = 2 * _nbytes(src) / (cp / 1e3) / 1e9  # read + write
    return peak, bandwidth


# ----------------------------------------------------------------- profiling
@dataclass
class PhaseProfile:
    times: Dict[Key, Dict[str, float]] = field(default_factory=dict)  # per iteration: median us and calls
    iterations: int = 0
    overhead: Optional[float] = None
    unprofiled_ms: Optional[float] = None  # median wall time of the unprofiled iterations run beside the profile


def _profiler(device: str):
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return torch.profiler.profile(activities=activities)


def profile_phases(fn: Callable[[], object], model: nn.Module, device: str,
                   iterations: int = PROFILED_ITERATIONS) -> PhaseProfile:
    """Profile ``iterations`` calls of ``fn`` (which opens its own ``phase::`` scopes) with the layer scopes on.

    Also measures the profiler's overhead on wall time: unprofiled calls
    before and after the profiled ones, so a drifting machine biases it less.
    """
    timer = make_timer(device)
    plain = [timer.time_block(fn, 1) for _ in range(OVERHEAD_ITERATIONS)]
    with Scopes(model):
        fn()  # one call with the hooks on before profiling: first-call costs stay out
        timer.synchronize()
        with quiet_profiler(torch.cuda.is_available()), _profiler(device) as prof:
            profiled = [timer.time_block(fn, 1) for _ in range(iterations)]
    plain += [timer.time_block(fn, 1) for _ in range(OVERHEAD_ITERATIONS)]
    overhead = statistics.median(profiled) / statistics.median(plain) - 1
    return PhaseProfile(median_iteration(attribute(prof.events(), device, iterations)), iterations, overhead,
                        statistics.median(plain))


def inference_fn(model: nn.Module, x: torch.Tensor, autocast: Callable[[], ContextManager[Any]]) -> Callable[[], None]:
    def infer() -> None:
        with torch.profiler.record_function(PHASE + "inference"), torch.inference_mode(), autocast():
            model(x)
    return infer


@dataclass
class BatchProfile:
    """One cell at one batch size: profiled times per phase group, analytic work, the device's roof."""

    batch: int
    device: str
    profiles: Dict[str, PhaseProfile]  # "inference" and/or "train"
    costs: Dict[Key, Dict[str, int]]
    peak_gflop_s: float
    bandwidth_gb_s: float


def profile_batch(model: nn.Module, config: ModelConfig, settings: Dict[str, Any], measured: Dict[str, Any],
                  batch: int, memory_format: Any, autocast: Callable[[], ContextManager[Any]]) -> BatchProfile:
    """Profile one cell at one batch size: inference and, when the step was timed, the training step.

    ``measured`` is the cell's result row at this batch size (a step is
    profiled only when it was timed, so there is a median to check against).
    """
    device = settings["device"]
    size = config.input_size
    x = torch.randn(batch, config.in_channels, size, size, device=device).contiguous(memory_format=memory_format)
    costs = costs_by_key(record_costs(model, config, x, autocast), batch)
    profiles: Dict[str, PhaseProfile] = {}
    if settings.get("speed", True):
        model.eval()
        profiles["inference"] = profile_phases(inference_fn(model, x, autocast), model, device)
    if settings.get("train_step", True) and measured.get("train_step_ms_median") is not None:
        model.train()
        labels = torch.randint(0, config.num_classes, (batch,), device=device)
        step = train_step_fn(model, x, labels, autocast, settings.get("precision", "fp32"), phases=True)
        profiles["train"] = profile_phases(step, model, device)
        model.zero_grad(set_to_none=True)
        model.eval()
    peak, bandwidth = probe_device(device, settings.get("precision", "fp32"))
    return BatchProfile(batch, device, profiles, costs, peak, bandwidth)
