"""The comparison family: which accuracy differences a study tests, declared before the data.

A grid's top-level ``compare:`` key (recorded in the sidecar as ``grid.compare``)
or ``benchmark.py report --compare`` names the family; the report runs Holm over
it and prints it. Forms, in YAML::

    compare: all-pairs                       # the default: every pair of trained variants
    compare: {cardinality: [1, 4, 8, 32]}    # every pair of these values of one setting; with 3 or
                                             # more values, also a trend test over their order
    compare: [[resnet20_w1.1, resnet26_w0.95], all-pairs]   # a list: variant pairs, mappings, all-pairs

and on the command line ``--compare all-pairs``, ``--compare cardinality=1,4,8,32``,
``--compare resnet20_w1.1:resnet26_w0.95`` (repeatable). Both parse to the same
normalised list of contrasts, which is what the sidecar stores:
``{"all_pairs": true}``, ``{"setting": s, "values": [...]}``, ``{"pair": [a, b]}``.
Lives with the result files because the grid (which writes it) and the
analysis (which reads it) both need it and may not import each other.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

ALL_PAIRS = "all-pairs"
# Settings a contrast may name: the model columns every result row carries.
SETTINGS = ("cardinality", "bottleneck_width", "width_multiplier", "depth", "block", "stem", "layout",
            "input_size", "family")
FORMS = ("'all-pairs', a mapping {setting: [value, value, ...]}, a [variant, variant] pair, "
         "or a list of those")

Contrast = Dict[str, Any]


def parse_compare(value: Any) -> List[Contrast]:
    """The normalised contrasts of a grid's ``compare:`` value; ValueError (one line) for anything else."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"expected {FORMS}, got an empty list")
    out: List[Contrast] = []
    for item in items:
        if item == ALL_PAIRS:
            out.append({"all_pairs": True})
        elif isinstance(item, dict) and item:
            out += [_setting(k, v) for k, v in item.items()]
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) and v for v in item):
            if item[0] == item[1]:
                raise ValueError(f"a pair compares two different variants, got {item!r}")
            out.append({"pair": list(item)})
        else:
            raise ValueError(f"expected {FORMS}, got {item!r}")
    return _unique(out)


def _setting(name: Any, values: Any) -> Contrast:
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; expected one of {', '.join(SETTINGS)}")
    if not isinstance(values, list) or len(values) < 2 or \
            not all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name}: expected a list of 2 or more values, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: a value is listed twice in {values!r}")
    return {"setting": name, "values": list(values)}


def parse_compare_arg(text: str) -> List[Contrast]:
    """One ``--compare`` argument: ``all-pairs``, ``SETTING=V1,V2,...`` or ``VARIANT_A:VARIANT_B``."""
    text = text.strip()
    if text == ALL_PAIRS:
        return [{"all_pairs": True}]
    if "=" in text:
        name, _, values = text.partition("=")
        return [_setting(name.strip(), [_scalar(v) for v in values.split(",") if v.strip()])]
    if ":" in text:
        a, _, b = text.partition(":")
        return parse_compare([[a.strip(), b.strip()]])
    raise ValueError("expected all-pairs, SETTING=V1,V2,... or VARIANT_A:VARIANT_B")


def _scalar(text: str) -> Any:
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _unique(contrasts: Sequence[Contrast]) -> List[Contrast]:
    seen, out = set(), []
    for c in contrasts:
        key = repr(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def merge(families: Sequence[Sequence[Contrast]]) -> List[Contrast]:
    """The union of several files' declared contrasts, each once."""
    return _unique([c for family in families for c in family])


def describe(contrasts: Sequence[Contrast]) -> str:
    """The family as the report prints it: ``all-pairs; cardinality 1, 4, 8, 32; a vs b``."""
    parts = []
    for c in contrasts:
        if c.get("all_pairs"):
            parts.append(ALL_PAIRS)
        elif "setting" in c:
            parts.append(f"{c['setting']} " + ", ".join(str(v) for v in c["values"]))
        else:
            parts.append(" vs ".join(c["pair"]))
    return "; ".join(parts)
