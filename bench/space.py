"""Design spaces: the ``sample:`` section of a grid.

A grid's matrix lists the cells; a design space describes a *distribution* of
models and draws ``n`` of them, as pycls's "Designing Network Design Spaces"
does::

    sample:
      seed: 0
      n: 48
      settings:                               # one distribution per setting
        cardinality: {choice: [1, 2, 4, 8, 16, 32]}
        bottleneck_width: {log_uniform: [4, 64]}   # rounded: an integer setting
        depth: {choice: [20, 29, 38]}
        stem_width: {int: [8, 32]}                  # inclusive
      constraints:                            # analytic counts, [low, high] inclusive
        macs: [20e6, 60e6]
      group_by: cardinality                   # how the EDF report groups the samples

Draws come from Python's :class:`random.Random` (stable across Python versions
for an integer seed), settings in sorted name order, so a sample depends only on
the seed and the space, not on how the YAML is ordered, and growing ``n`` keeps
the earlier samples. Each draw is resolved on top of the grid's defaults and
kept only if its *analytic* counts (:func:`models.model_complexity`, no model
built) meet every constraint and its architecture is not already in the sample:
rejection sampling, with the acceptance rate reported. This module knows
nothing of grids; :mod:`bench.grid` passes it the setting checks and the
resolver.
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from models import ModelConfig, model_complexity

from bench.errors import GridError

SPACE_KEYS = ("seed", "n", "settings", "constraints", "group_by", "max_tries")
DISTRIBUTIONS = ("choice", "int", "uniform", "log_uniform")
CONSTRAINTS = {"macs": "macs", "params": "params", "activations": "acts"}  # name -> Complexity field
DEFAULT_GROUP_BY = "cardinality"
# A space that accepts nothing in this many draws is refused at once (with what the draws looked like).
ZERO_ACCEPTANCE_TRIES = 2000
# A space whose current run of rejections is this many times longer than the mean number of draws per accepted
# sample so far has run dry (nearly every draw is a duplicate): a run of 20 mean gaps has probability about
# e^-20 while the acceptance rate holds, so this refuses an exhausted space, not an unlucky one.
STALL_FACTOR = 20
# Draws are floats: beyond 2^53 a rounded draw cannot reach every integer, and counts derived from such a
# setting overflow a float (a width of 1e300 makes 1e600 MACs).
MAX_INTEGER_BOUND = 2 ** 53
MAX_N = 1_000_000  # a dry run lists ~2,000 cells a second: beyond this a space is not a grid


def default_max_tries(n: int) -> int:
    """Draws allowed before a space that accepts too rarely is refused."""
    return 50 * n + ZERO_ACCEPTANCE_TRIES


@dataclass(frozen=True)
class Distribution:
    """One setting's distribution. ``integer``: draws are rounded (the setting takes integers)."""

    kind: str
    values: Tuple[Any, ...]
    integer: bool = False

    def draw(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return self.values[rng.randrange(len(self.values))]
        lo, hi = self.values
        if self.kind == "int":
            return rng.randint(lo, hi)
        if self.kind == "uniform":
            x = rng.uniform(lo, hi)
        else:  # log_uniform: uniform in log space, so 4..8 is as likely as 32..64
            x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return int(round(x)) if self.integer else x


@dataclass(frozen=True)
class Space:
    seed: int
    n: int
    distributions: Dict[str, Distribution]
    constraints: Dict[str, Tuple[float, float]]
    group_by: str = DEFAULT_GROUP_BY
    max_tries: int = 0


@dataclass
class SampleReport:
    """How the rejection sampler fared: what the run's sidecar and the dry run report."""

    n: int
    tries: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)  # constraint name (or "invalid", "duplicate") -> draws

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.tries if self.tries else 0.0

    def describe(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common())
        return (f"sampled {self.accepted} of {self.tries} draws (acceptance {self.acceptance_rate:.1%})"
                + (f"; rejected: {why}" if why else ""))

    def to_dict(self) -> Dict[str, Any]:
        return {"n": self.n, "tries": self.tries, "accepted": self.accepted,
                "acceptance_rate": self.acceptance_rate, "rejected": dict(self.rejected)}


# --------------------------------------------------------------------- parsing
def parse_space(raw: Any, path: str, check: Callable[[str, Any, str], Any], known: Callable[[str, str], None]) -> Space:
    """Validate a ``sample:`` mapping; ``check(key, value, keypath)`` and ``known(key, keypath)`` are the grid's
    setting checks (they raise :class:`GridError`)."""
    where = "sample"
    if not isinstance(raw, dict):
        raise GridError(path, where, f"expected a mapping with keys {', '.join(SPACE_KEYS)}, got {raw!r}")
    for key in raw:
        if key not in SPACE_KEYS:
            raise GridError(path, f"{where}.{key}", f"unknown key; expected one of {', '.join(SPACE_KEYS)}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GridError(path, f"{where}.seed", f"expected an integer >= 0, got {seed!r}")
    n = raw.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise GridError(path, f"{where}.n", f"expected the number of samples, an integer from 1 to {MAX_N:,}, "
                                            f"got {n!r}")
    max_tries = raw.get("max_tries", default_max_tries(n))
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < n:
        raise GridError(path, f"{where}.max_tries", f"expected an integer >= n ({n}), got {max_tries!r}")
    settings = raw.get("settings")
    if not isinstance(settings, dict) or not settings:
        raise GridError(path, f"{where}.settings", f"expected a mapping of setting -> distribution, got {settings!r}")
    dists = {}
    for key, spec in settings.items():
        known(key, f"{where}.settings.{key}")
        if key in ("train", "match"):
            raise GridError(path, f"{where}.settings.{key}", "cannot be sampled; set it in defaults")
        dists[key] = _distribution(key, spec, path, f"{where}.settings.{key}", check)
    constraints = {name: _bounds(value, path, f"{where}.constraints.{name}")
                   for name, value in _constraint_items(raw.get("constraints"), path)}
    group_by = raw.get("group_by", DEFAULT_GROUP_BY)
    if not isinstance(group_by, str):
        raise GridError(path, f"{where}.group_by", f"expected a setting name, got {group_by!r}")
    known(group_by, f"{where}.group_by")
    return Space(seed, n, dists, constraints, group_by, max_tries)


def _constraint_items(raw: Any, path: str) -> List[Tuple[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise GridError(path, "sample.constraints", f"expected a mapping like {{macs: [40e6, 60e6]}}, got {raw!r}")
    for name in raw:
        if name not in CONSTRAINTS:
            raise GridError(path, f"sample.constraints.{name}",
                            f"unknown constraint; expected one of {', '.join(CONSTRAINTS)}")
    return list(raw.items())


def _number(x: Any) -> Optional[float]:
    """A YAML number; also '40e6', which YAML 1.1 reads as a string."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return None
    return None


def _bounds(value: Any, path: str, keypath: str) -> Tuple[float, float]:
    pair = [_number(x) for x in value] if isinstance(value, list) and len(value) == 2 else None
    if pair is None or None in pair or not all(math.isfinite(x) for x in pair):
        raise GridError(path, keypath, f"expected [low, high], two numbers, got {value!r}")
    lo, hi = pair
    if lo < 0 or hi <= 0 or lo > hi:
        raise GridError(path, keypath, f"impossible constraint [{value[0]}, {value[1]}]: "
                                       "expected 0 <= low <= high and high > 0")
    return lo, hi


def _distribution(key: str, spec: Any, path: str, keypath: str, check: Callable[[str, Any, str], Any]) -> Distribution:
    forms = "one of {choice: [...]}}, {int: [lo, hi]}, {uniform: [lo, hi]}, {log_uniform: [lo, hi]}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise GridError(path, keypath, f"expected {forms}, got {spec!r}")
    kind, values = next(iter(spec.items()))
    keypath = f"{keypath}.{kind}"
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise GridError(path, keypath, f"expected a non-empty list of values, got {values!r}")
        return Distribution(kind, tuple(check(key, v, f"{keypath}[{i}]") for i, v in enumerate(values)))
    bounds = [_number(x) for x in values] if isinstance(values, list) and len(values) == 2 else None
    if bounds is None or None in bounds or not all(map(math.isfinite, bounds)) or bounds[0] > bounds[1]:
        raise GridError(path, keypath, f"expected [low, high], two finite numbers with low <= high, got {values!r}")
    lo, hi = bounds
    if kind == "log_uniform" and lo <= 0:
        raise GridError(path, keypath, f"expected low > 0 (a log scale), got {values!r}")
    if kind == "int":
        if lo != int(lo) or hi != int(hi):
            raise GridError(path, keypath, f"expected two integers, got {values!r}")
        lo, hi = int(lo), int(hi)
    integer = kind == "int" or _takes_integers(key, check)
    if integer and max(abs(lo), abs(hi)) > MAX_INTEGER_BOUND:
        raise GridError(path, keypath, f"expected bounds within +-2^53 for an integer setting (a float draw cannot "
                                       f"reach every integer beyond), got {values!r}")
    # both ends must be valid values of the setting (e.g. cardinality >= 1)
    for end, x in (("low", lo), ("high", hi)):
        check(key, int(round(x)) if integer else x, f"{keypath} ({end} end)")
    return Distribution(kind, (lo, hi), integer)


def space_size(space: Space) -> Optional[int]:
    """An upper bound on the distinct draws of ``space`` (choices x integers in each range); None when a
    setting is continuous. Constraints and architectures that coincide only lower the true count."""
    size = 1
    for dist in space.distributions.values():
        if dist.kind == "choice":
            size *= len(dist.values)
        elif dist.kind == "int":
            size *= dist.values[1] - dist.values[0] + 1
        elif dist.integer:
            size *= int(round(dist.values[1])) - int(round(dist.values[0])) + 1
        else:
            return None
    return size


def _takes_integers(key: str, check: Callable[[str, Any, str], Any]) -> bool:
    """An integer setting (cardinality, widths, depth) refuses 2.5 and accepts 2."""
    try:
        check(key, 2.5, "")
        return False
    except GridError:
        return True


# -------------------------------------------------------------------- sampling
def architecture_key(config: ModelConfig) -> Tuple[Any, ...]:
    """What the built network is (stage plans, stem, head): two drawn widths that round to the same
    channels are the same model and count once."""
    return (config.block, config.stem, config.layout, config.resolved_stem_width(), config.stages(),
            config.num_classes, config.input_size, config.in_channels)


def draw_samples(space: Space, path: str, resolve: Callable[[Dict[str, Any]], ModelConfig],
                 ) -> Tuple[List[Tuple[str, Dict[str, Any]]], SampleReport]:
    """``n`` accepted draws as (origin, settings) grid entries, and the sampler's report.

    ``resolve(draw)`` returns the model the draw makes on top of the grid's
    defaults, raising ``ValueError`` for an impossible one (a rejection,
    counted as ``invalid``)."""
    size = space_size(space)
    if size is not None and size < space.n:
        raise GridError(path, "sample.n", f"n={space.n:,} exceeds the {size:,} distinct draws the settings allow "
                                          "(choices x integers in each range); lower n or widen the settings")
    rng = random.Random(space.seed)
    report = SampleReport(space.n)
    keys = sorted(space.distributions)
    entries: List[Tuple[str, Dict[str, Any]]] = []
    seen = set()
    ranges: Dict[str, List[float]] = {}
    last = 0  # the try that found the latest sample
    while report.accepted < space.n:
        if report.tries >= space.max_tries or _stalled(report, last):
            raise GridError(path, "sample", _refusal(space, report, ranges, report.tries - last))
        report.tries += 1
        draw = {k: space.distributions[k].draw(rng) for k in keys}
        verdict = _judge(draw, resolve, space, seen, ranges)
        if verdict:
            report.rejected[verdict] += 1
            continue
        report.accepted += 1
        last = report.tries
        desc = ", ".join(f"{k}={_short(v)}" for k, v in draw.items())
        entries.append((f"sample[{report.accepted - 1}] ({desc})", draw))
    return entries, report


def _stalled(report: SampleReport, last: int) -> bool:
    """No new sample for ZERO_ACCEPTANCE_TRIES draws and for STALL_FACTOR mean gaps (see STALL_FACTOR)."""
    gap = report.tries - last
    mean_gap = last / report.accepted if report.accepted else 0
    return gap >= max(ZERO_ACCEPTANCE_TRIES, STALL_FACTOR * mean_gap)


def _judge(draw: Dict[str, Any], resolve: Callable[[Dict[str, Any]], ModelConfig], space: Space,
           seen: set, ranges: Dict[str, List[float]]) -> Optional[str]:
    """None to accept the draw, else the reason it is rejected."""
    try:
        config = resolve(draw)
    except ValueError:
        return "invalid"
    cost = model_complexity(config)
    for name, (lo, hi) in space.constraints.items():
        value = getattr(cost, CONSTRAINTS[name])
        span = ranges.setdefault(name, [value, value])
        span[0], span[1] = min(span[0], value), max(span[1], value)
        if not lo <= value <= hi:
            return name
    # the measurement settings drawn (if any) make a distinct cell of the same model
    key = (architecture_key(config),
           json.dumps({k: v for k, v in draw.items() if k not in _MODEL_KEYS}, sort_keys=True, default=str))
    if key in seen:
        return "duplicate"
    seen.add(key)
    return None


_MODEL_KEYS = frozenset(f.name for f in ModelConfig.__dataclass_fields__.values()) | {"preset"}


def _refusal(space: Space, report: SampleReport, ranges: Dict[str, List[float]], gap: int) -> str:
    spans = "; ".join(f"{name} ranged {lo:.4g}..{hi:.4g} against [{space.constraints[name][0]:.4g}, "
                      f"{space.constraints[name][1]:.4g}]" for name, (lo, hi) in ranges.items())
    why_stop = "max_tries" if report.tries >= space.max_tries else f"none new in the last {gap} draws"
    head = (f"no draw was accepted in {report.tries} tries" if not report.accepted else
            f"only {report.accepted} of n={space.n} distinct samples after {report.tries} tries ({why_stop})")
    why = ", ".join(f"{k} {v}" for k, v in report.rejected.most_common())
    return f"{head}; rejected: {why}" + (f"; {spans}" if spans else "") + \
        "; widen the distributions or the constraints, or lower n"


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
