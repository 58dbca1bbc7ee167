"""YAML grids: load, validate and expand into cells.

A grid names a matrix the way CI build matrices do::

    name: cardinality           # optional; defaults to the file name
    description: ...            # optional
    defaults: {...}             # settings applied to every cell
    matrix: {key: [v1, v2]}     # cartesian product of the lists
    exclude: [{key: v1}]        # drop matrix cells matching every key given
    include: [{...}]            # extra cells (defaults + the entry)
    sample: {...}               # a design space: n cells drawn at random (bench/space.py)
    quick: {...}                # settings applied on top under --quick; cells: N keeps the first N cells
    compare: all-pairs          # the accuracy comparisons `report` tests (bench/results/compare_spec.py)

Every problem is found before any work starts and reported as one line that
names the file, the key path and what was expected (:class:`GridError`).
The YAML itself is read as untrusted (:func:`parse_yaml`): safe tags only, a
key written twice in a mapping refused, aliases bounded in what they expand
to, a leading UTF-8 BOM ignored; a refused value is printed cut short.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import yaml

from models import MODEL_FIELDS, ModelConfig, get_preset, model_complexity, preset_fields
from models.iso import match_bottleneck_width

from bench import choices
from bench.checks import Check, auto, boolean, choice, integer, number, optional, shown
from bench.train import recipe
from bench.errors import GridError
from bench.results.compare_spec import parse_compare
from bench.space import SampleReport, draw_samples, parse_space

TOP_LEVEL_KEYS = ("name", "description", "defaults", "matrix", "include", "exclude", "sample", "quick", "compare")


# ----------------------------------------------------------------- field types
# The generic checks (integer, number, choice, ...) live in bench/checks.py,
# shared with the training recipe; the ones below know about grids.
_positive = number(0, low_open=True)


def _int_list(v):
    if isinstance(v, list) and v:
        try:
            return [integer(1)(x) for x in v]
        except ValueError:
            pass  # the whole list is named below, not just the bad element
    raise ValueError(f"expected a non-empty list of positive integers, got {shown(v)}")


def _preset(v):
    if not isinstance(v, str):
        raise ValueError(f"expected a preset name, got {shown(v)}")
    try:
        preset_fields(v)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    return v


_MATCH_FORMS = "{preset: NAME}, {value: NUMBER} or model fields of the reference (e.g. {cardinality: 1})"


def _match(v):
    """The iso-complexity target: a preset, a number, or the cell itself with some fields changed."""
    if isinstance(v, str):
        v = {"preset": v}
    if not isinstance(v, dict):
        raise ValueError(f"expected {_MATCH_FORMS}, plus metric: macs|params; got {shown(v)}")
    fields = {k for k in v if k not in ("preset", "value", "metric")}
    for key in fields:
        if key not in ARCHITECTURE_FIELDS or key in ("preset", "match"):
            raise ValueError(f"unknown key {shown(key)}; expected {_MATCH_FORMS}")
        SETTINGS[key].check(v[key])
    forms = ("preset" in v) + ("value" in v) + bool(fields)
    if forms != 1:
        raise ValueError(f"expected exactly one of {_MATCH_FORMS}")
    if "preset" in v:
        _preset(v["preset"])
    if "value" in v:
        _positive(v["value"])
    metric = v.get("metric", "macs")
    choice("macs", "params")(metric)
    return {**v, "metric": metric}


def _train(v):
    if v is None or v is False:
        return None
    if v is True:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"expected a mapping of training settings, true or null, got {shown(v)}")
    recipe.resolve(v)  # raises ValueError naming the bad key
    return dict(v)


@dataclass(frozen=True)
class Field:
    check: Check
    default: Any
    help: str
    # A setting added after result files already existed leaves cell ids alone
    # while it holds its default, so old CSVs still resume and baselines still
    # match: its id-neutral value (normally the default) is omitted from the hash.
    added_later: bool = False


# Model fields default to None: the preset (or ModelConfig) supplies the value.
MODEL_SETTINGS: Dict[str, Field] = {
    "preset": Field(optional(_preset), None, "named model from the registry"),
    "block": Field(optional(choice(*choices.BLOCKS)), None, " | ".join(choices.BLOCKS)),
    "depth": Field(optional(integer(1)), None, "network depth (18..152 imagenet; 6n+2 / 9n+2 cifar)"),
    "blocks": Field(optional(_int_list), None, "explicit blocks per stage"),
    "cardinality": Field(optional(integer(1)), None, "groups of the 3x3 conv"),
    "bottleneck_width": Field(optional(auto(integer(1))), None, "width per group d, or auto (needs match)"),
    "match": Field(optional(_match), None, "iso-complexity target for bottleneck_width: auto"),
    "width_multiplier": Field(optional(_positive), None, "multiplier on stage widths"),
    "stem": Field(optional(choice(*choices.STEMS)), None, " | ".join(choices.STEMS)),
    "layout": Field(optional(choice(*choices.LAYOUTS)), None, "stage layout (default: the stem)"),
    "stem_width": Field(optional(integer(1)), None, "stem output channels"),
    "num_classes": Field(optional(integer(1)), None, "classifier outputs"),
    "input_size": Field(optional(integer(1)), None, "input height = width, px"),
    "pretrained": Field(choice(True, False, "if_available"), False,
                        "load torchvision weights: true | false | if_available"),
    "freeze_backbone": Field(boolean, False, "train only the classifier"),
}

MEASURE_SETTINGS: Dict[str, Field] = {
    "device": Field(choice(*choices.DEVICE_SETTINGS), "auto", " | ".join(choices.DEVICE_SETTINGS)),
    "batch_sizes": Field(_int_list, [1, 32], "batch sizes to time (throughput curve)"),
    "precision": Field(choice(*choices.PRECISIONS), "fp32",
                       " | ".join(choices.PRECISIONS) + " (autocast)"),
    "tf32": Field(boolean, False, "allow TF32 for fp32 on GPU"),
    "memory_format": Field(choice(*choices.MEMORY_FORMATS), "contiguous", "tensor layout"),
    "compile": Field(boolean, False, "torch.compile the model (compile time reported apart)"),
    "warmup": Field(integer(0), 5, "untimed iterations before timing"),
    "repeats": Field(auto(integer(1)), "auto", "timed iterations, or auto (until stable or max_time_s)"),
    "max_time_s": Field(_positive, 2.0, "time budget per timed loop for repeats: auto, s"),
    "threads": Field(optional(integer(1)), None, "CPU threads (default: torch's)"),
    "speed": Field(boolean, True, "measure inference latency/throughput"),
    "train_step": Field(boolean, True, "measure the training-step time"),
    "oom_backoff": Field(boolean, True, "retry smaller batches after running out of GPU memory"),
    "train": Field(_train, None, "training settings (see bench/train/recipe.py), or null for none"),
    "profile": Field(boolean, False, "profile extra untimed iterations: time by stage and operator class "
                     "(RUN.profile.csv)", added_later=True),
    "cpu_allocator": Field(choice(*choices.CPU_ALLOCATORS), "tuned",
                           "CPU heap allocator: tuned (large buffers stay in the process; jemalloc/tcmalloc if "
                           "preloaded) | system (glibc defaults); one per process",
                           added_later=True),
    "cuda_graphs": Field(boolean, False, "GPU inference: capture one forward in a CUDA graph, time its replays "
                         "(launch cost gone); ignored with a note on the CPU", added_later=True),
}

SETTINGS: Dict[str, Field] = {**MODEL_SETTINGS, **MEASURE_SETTINGS}
# Model settings that change the architecture (not the task or the weights).
ARCHITECTURE_FIELDS = frozenset(MODEL_SETTINGS) - {"num_classes", "input_size", "pretrained", "freeze_backbone"}

# What --quick does to every cell: a CPU-sized run.
QUICK_SETTINGS = {"device": "cpu", "warmup": 2, "repeats": 10, "max_time_s": 1.0, "compile": False}
QUICK_MAX_BATCH = 8


# ----------------------------------------------------------------------- cells
@dataclass
class Cell:
    """One resolved point of the grid: a model plus how to measure it."""

    index: int
    origin: str
    model: ModelConfig
    preset: Optional[str]
    settings: Dict[str, Any]  # measurement settings (MEASURE_SETTINGS keys), resolved
    pretrained: Any = False
    freeze_backbone: bool = False
    cell_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.cell_id:
            self.cell_id = _hash(self.identity())

    def identity(self) -> Dict[str, Any]:
        """Everything that determines the cell's numbers (hashed into the id).

        Where the data lives is not part of it: the same CIFAR-10 in another
        folder gives the same cell.
        """
        settings = {k: v for k, v in self.settings.items()
                    if not (k in SETTINGS and SETTINGS[k].added_later and v == SETTINGS[k].default)}
        if settings.get("train") is not None:  # hashed under its old name `repeats`, so ids stay as they were
            settings["train"] = {("repeats" if k == "seeds" else k): v for k, v in settings["train"].items()
                                 if k != "data_root"}
        return {
            "model": {k: v for k, v in self.model.to_dict().items() if k != "name"},
            "pretrained": self.pretrained,
            "freeze_backbone": self.freeze_backbone,
            "settings": settings,
        }

    @property
    def variant_id(self) -> str:
        """The architecture alone (model fields and input size): shared by every cell that builds it."""
        return _hash({k: v for k, v in self.model.to_dict().items() if k != "name"})

    @property
    def variant(self) -> str:
        return self.model.label()

    @property
    def train(self) -> Optional[Dict[str, Any]]:
        return self.settings.get("train")

    def to_dict(self) -> Dict[str, Any]:
        return {"index": self.index, "origin": self.origin, "cell_id": self.cell_id, "preset": self.preset,
                "variant": self.variant, "model": self.model.to_dict(), "pretrained": self.pretrained,
                "freeze_backbone": self.freeze_backbone, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Cell":
        return cls(index=d["index"], origin=d["origin"], model=ModelConfig(**d["model"]), preset=d["preset"],
                   settings=d["settings"], pretrained=d["pretrained"], freeze_backbone=d["freeze_backbone"],
                   cell_id=d["cell_id"])


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class Grid:
    path: str
    name: str
    description: str
    cells: List[Cell]
    raw: Dict[str, Any]
    duplicates: int = 0  # cells dropped because an earlier cell resolved identically
    sampling: Optional[SampleReport] = None  # how the sample: section's draws fared

    def to_dict(self) -> Dict[str, Any]:
        out = {"path": self.path, "name": self.name, "description": self.description,
               "source": self.raw, "cells": [c.to_dict() for c in self.cells]}
        if self.sampling is not None:
            out["sampling"] = self.sampling.to_dict()
        return out


# --------------------------------------------------------------------- loading
def load_grid(path: str, quick: bool = False, device: Optional[str] = None,
              cuda_available: Optional[bool] = None, data_root: Optional[str] = None) -> Grid:
    """Read, validate and expand a grid file. Raises :class:`GridError`."""
    raw = _read_yaml(path)
    return expand_grid(raw, path, quick=quick, device=device, cuda_available=cuda_available, data_root=data_root)


def _read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise GridError(path, "", "no such grid file")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a BOM an editor added is not part of the grid
            data = parse_yaml(f.read(), path)
    except (OSError, UnicodeDecodeError) as e:
        raise GridError(path, "", f"cannot read: {e}") from None
    if not isinstance(data, dict):
        raise GridError(path, "", f"expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}, "
                                  f"got {type(data).__name__}")
    return data


# What YAML aliases may add to a document, in values (scalars, lists, mappings) beyond the ones the
# file writes out. Sharing a train block among a few thousand cells stays far below it; a
# "billion laughs" (aliases of aliases, 10^9 values from a few lines) is refused before anything
# walks it: printed, hashed or copied, it would exhaust memory.
MAX_ALIAS_EXPANSION = 1_000_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        first: Dict[Any, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges are meant to be overridden
            key = self.construct_object(key_node)
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {shown(key)} (first at line {first[key].line + 1}); "
                                f"write each key once", key_node.start_mark)
            first[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as Python values, for every YAML the harness reads; :class:`GridError` naming ``source``.

    Safe tags only, no key twice in a mapping, aliases expanding to at most
    :data:`MAX_ALIAS_EXPANSION` values beyond the file's own.
    """
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            written, expanded = _node_counts(node)
            if expanded - written > MAX_ALIAS_EXPANSION:
                raise GridError(source, "", f"YAML aliases expand its {written:,} values to {expanded:,}, more "
                                            f"than {MAX_ALIAS_EXPANSION:,} beyond the ones written (an alias "
                                            f"bomb?); write the values out")
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise GridError(source, where, f"malformed YAML: {problem}") from None
    except RecursionError:
        raise GridError(source, "", "YAML nested too deeply") from None
    finally:
        loader.dispose()


def _node_counts(root: yaml.Node) -> Tuple[int, int]:
    """(values written, values after expanding aliases) of a composed YAML document, without expanding it.

    An alias is the same node object met again, so each node's expanded size is computed once.
    """
    sizes: Dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a recursive alias (`&a [*a]`) counts once: PyYAML builds it as a cycle
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = []
            sizes[id(node)] = 1 + sum(size(child) for child in children)
        return sizes[id(node)]

    expanded = size(root)
    return len(sizes), expanded


def expand_grid(raw: Dict[str, Any], path: str = "<grid>", quick: bool = False, device: Optional[str] = None,
                cuda_available: Optional[bool] = None, data_root: Optional[str] = None) -> Grid:
    """Validate a parsed grid mapping and expand it into resolved cells."""
    name, description = _check_header(raw, path)
    if "compare" in raw:  # checked here, read by `report` from the sidecar's copy of the grid source
        try:
            parse_compare(raw["compare"])
        except ValueError as e:
            raise GridError(path, "compare", str(e)) from None
    defaults = _settings_block(raw.get("defaults"), path, "defaults")
    quick_block, quick_cells = _quick_block(raw.get("quick"), path)
    entries = _matrix_entries(raw.get("matrix"), raw.get("exclude"), path)
    entries += [(f"include[{i}]", entry) for i, entry in enumerate(_entry_list(raw.get("include"), path, "include"))]
    sampled, sampling = _sample_entries(raw.get("sample"), defaults, path)
    entries += sampled
    if not entries:
        raise GridError(path, "matrix", "the grid has no cells: give a matrix, an include list or a sample section")
    cells, duplicates = _build_cells(entries, defaults, quick_block, path, quick=quick, device=device,
                                     cuda_available=cuda_available, data_root=data_root)
    if quick and quick_cells is not None:  # the first N: grids list cells in priority order
        cells = cells[:quick_cells]
    return Grid(path, name, description, cells, raw, duplicates, sampling)


def _quick_block(raw: Any, path: str) -> Tuple[Dict[str, Any], Optional[int]]:
    """The quick: section's settings, and its ``cells: N`` (run only the first N cells under --quick)."""
    if isinstance(raw, dict) and "cells" in raw:
        raw = dict(raw)
        try:
            n = integer(1)(raw.pop("cells"))
        except ValueError as e:
            raise GridError(path, "quick.cells", f"{e} (the number of cells run under --quick)") from None
        return _settings_block(raw, path, "quick"), n
    return _settings_block(raw, path, "quick"), None


def _check_header(raw: Dict[str, Any], path: str) -> Tuple[str, str]:
    """Top-level keys known; the grid's name and description."""
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise GridError(path, str(key), f"unknown key{_suggest(key, TOP_LEVEL_KEYS)}; "
                                            f"expected one of {', '.join(TOP_LEVEL_KEYS)}")
    name = raw.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not name:
        raise GridError(path, "name", f"expected a non-empty string, got {shown(name)}")
    description = raw.get("description", "") or ""
    if not isinstance(description, str):
        raise GridError(path, "description", f"expected a string, got {shown(description)}")
    return name, description


Entry = Tuple[str, Dict[str, Any]]  # (origin, settings the entry sets)


def _matrix_entries(matrix: Any, exclude: Any, path: str) -> List[Entry]:
    """The cartesian product of the matrix's lists, less the excluded combinations."""
    if matrix is None:
        if exclude is not None:
            raise GridError(path, "exclude", "has no matrix to exclude cells from")
        return []
    if not isinstance(matrix, dict):
        raise GridError(path, "matrix", f"expected a mapping of setting -> list of values, got {shown(matrix)}")
    if not matrix:
        raise GridError(path, "matrix", "is empty; give at least one setting with a list of values")
    axes = []
    for key, values in matrix.items():
        _known(key, path, f"matrix.{key}")
        if not isinstance(values, list) or not values:
            raise GridError(path, f"matrix.{key}", f"expected a non-empty list of values, got {shown(values)}")
        for i, v in enumerate(values):
            _check_value(key, v, path, f"matrix.{key}[{i}]")
        axes.append([(key, v) for v in values])
    excludes = _entry_list(exclude, path, "exclude")
    entries = []
    for combo in itertools.product(*axes):
        entry = dict(combo)
        if any(all(entry.get(k, _MISSING) == v for k, v in ex.items()) for ex in excludes):
            continue
        desc = ", ".join(f"{k}={v}" for k, v in combo)
        entries.append((f"matrix ({desc})", entry))
    if not entries:
        raise GridError(path, "exclude", "removes every cell of the matrix")
    return entries


def _sample_entries(raw: Any, defaults: Dict[str, Any], path: str) -> Tuple[List[Entry], Optional[SampleReport]]:
    """The design space's accepted draws (see :mod:`bench.space`), resolved on top of the defaults."""
    if raw is None:
        return [], None
    found = parse_space(raw, path, check=lambda k, v, kp: _check_value(k, v, path, kp),
                        known=lambda k, kp: _known(k, path, kp))

    def resolve(draw: Dict[str, Any]) -> ModelConfig:
        try:
            return _resolve_model(_entry_settings(defaults, draw), path, "sample")
        except GridError as e:  # an impossible combination: the sampler rejects the draw
            raise ValueError(str(e)) from None

    return draw_samples(found, path, resolve)


def _entry_settings(defaults: Dict[str, Any], entry: Dict[str, Any]) -> Dict[str, Any]:
    if "preset" in entry:
        # A cell that names its own preset means that model: the defaults'
        # architecture fields (written for the other cells) do not apply.
        return {**{k: v for k, v in defaults.items() if k not in ARCHITECTURE_FIELDS}, **entry}
    return {**defaults, **entry}


def _build_cells(entries: List[Entry], defaults: Dict[str, Any], quick_block: Dict[str, Any], path: str,
                 quick: bool, device: Optional[str], cuda_available: Optional[bool],
                 data_root: Optional[str]) -> Tuple[List[Cell], int]:
    """Resolve every entry into a cell; cells identical to an earlier one are dropped (and counted)."""
    cells: List[Cell] = []
    seen = set()
    duplicates = 0
    recipes: Dict[str, Dict[str, Any]] = {}  # resolved once per distinct train mapping (a 10k-sample dry run)
    for origin, entry in entries:
        settings = _entry_settings(defaults, entry)
        if quick:
            settings = _shrink(settings, quick_block)
        if device and device != "auto":
            settings["device"] = device
        if data_root and settings.get("train") is not None:
            settings["train"] = {**settings["train"], "data_root": data_root}
        cell = _resolve_cell(len(cells), origin, settings, path, cuda_available, recipes)
        if cell.cell_id in seen:
            duplicates += 1
            continue
        seen.add(cell.cell_id)
        cells.append(cell)
    return cells, duplicates


_MISSING = object()


def _suggest(key: Any, choices) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known(key: Any, path: str, keypath: str) -> None:
    if key not in SETTINGS:
        if key in MODEL_FIELDS:  # a ModelConfig field not settable from grids (e.g. name)
            raise GridError(path, keypath, "cannot be set in a grid")
        raise GridError(path, keypath, f"unknown setting{_suggest(key, SETTINGS)}; "
                                       f"known settings: {', '.join(SETTINGS)}")


def _check_value(key: str, value: Any, path: str, keypath: str) -> Any:
    try:
        return SETTINGS[key].check(value)
    except ValueError as e:
        raise GridError(path, keypath, str(e)) from None


def _settings_block(block: Any, path: str, keypath: str) -> Dict[str, Any]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise GridError(path, keypath, f"expected a mapping of settings, got {shown(block)}")
    out = {}
    for key, value in block.items():
        _known(key, path, f"{keypath}.{key}")
        out[key] = _check_value(key, value, path, f"{keypath}.{key}")
    return out


def _entry_list(entries: Any, path: str, keypath: str) -> List[Dict[str, Any]]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise GridError(path, keypath, f"expected a list of mappings, got {shown(entries)}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry:
            raise GridError(path, f"{keypath}[{i}]", f"expected a non-empty mapping of settings, got {shown(entry)}")
        out.append(_settings_block(entry, path, f"{keypath}[{i}]"))
    return out


def _shrink(settings: Dict[str, Any], quick_block: Dict[str, Any]) -> Dict[str, Any]:
    """--quick: a CPU-sized version of the cell (small batches, few repeats, tiny training)."""
    out = {**settings, **QUICK_SETTINGS}
    sizes = sorted({b for b in settings.get("batch_sizes", SETTINGS["batch_sizes"].default) if b <= QUICK_MAX_BATCH})
    out["batch_sizes"] = sizes or [1]
    if settings.get("train") is not None:
        out["train"] = {**settings["train"], **recipe.quick_overrides(settings["train"])}
    out.update(quick_block)
    return out


def _resolve_model(settings: Dict[str, Any], path: str, where: str) -> ModelConfig:
    """The model a cell's settings describe (the iso-complexity width solved)."""
    overrides = {k: settings[k] for k in MODEL_FIELDS if k in SETTINGS and settings.get(k) is not None}
    preset = settings.get("preset")
    # An explicit depth replaces a preset's blocks and vice versa.
    if "blocks" in overrides and "depth" not in overrides:
        overrides["depth"] = None
    if "depth" in overrides and "blocks" not in overrides:
        overrides["blocks"] = None
    match = settings.get("match")
    auto_width = overrides.get("bottleneck_width") == "auto"
    if auto_width and not match:
        raise GridError(path, where, "bottleneck_width: auto needs match: {preset: NAME, metric: macs|params}")
    if match and not auto_width:
        raise GridError(path, where, "match: only used with bottleneck_width: auto")
    try:
        if auto_width:
            probe = _config(preset, {**overrides, "bottleneck_width": 64})
            target = _match_target(match, probe)
            overrides["bottleneck_width"] = match_bottleneck_width(probe, target, match["metric"])
        return _config(preset, overrides)
    except ValueError as e:
        raise GridError(path, where, str(e)) from None
    except OverflowError:  # width_multiplier: 1e308 makes infinite channels
        raise GridError(path, where, "the model's sizes overflow (channels beyond any integer); "
                                     "lower width_multiplier or the widths") from None


def _resolve_cell(index: int, origin: str, settings: Dict[str, Any], path: str,
                  cuda_available: Optional[bool], recipes: Optional[Dict[str, Dict[str, Any]]] = None) -> Cell:
    where = f"cell {index} from {origin}"
    config = _resolve_model(settings, path, where)
    preset = settings.get("preset")
    measure = {k: settings.get(k, f.default) for k, f in MEASURE_SETTINGS.items()}
    measure["batch_sizes"] = list(measure["batch_sizes"])
    measure["device"] = _resolve_device(measure["device"], cuda_available)
    if measure["train"] is not None:
        measure["train"] = _resolved_recipe(measure["train"], measure["device"], {} if recipes is None else recipes)
    pretrained = settings.get("pretrained", False)
    if pretrained and not preset:
        raise GridError(path, where, "pretrained: needs a preset (torchvision weights exist for the "
                                     "ImageNet presets only)")
    return Cell(index, origin, config, preset, measure, pretrained, settings.get("freeze_backbone", False))


def _resolved_recipe(train: Dict[str, Any], device: str, cache: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    # The device's values replace "auto" (batch size, lr, ...) here, so the id hashes
    # what will run: GPU cells keep their old ids, CPU cells on the new CPU recipe get new ones.
    key = device + json.dumps(train, sort_keys=True, default=str)
    if key not in cache:
        cache[key] = recipe.for_device(recipe.resolve(train), device).to_dict()
    return dict(cache[key])  # a flat mapping of immutable values: a shallow copy is a full one


def _config(preset: Optional[str], overrides: Dict[str, Any]) -> ModelConfig:
    if preset:
        return get_preset(preset, **overrides)
    return ModelConfig(**{k: v for k, v in overrides.items() if v is not None})


def _match_target(match: Dict[str, Any], probe: ModelConfig) -> float:
    if "value" in match:
        return float(match["value"])
    if "preset" in match:
        # The reference is evaluated on the same task (classes, input size) as the cell.
        ref = get_preset(match["preset"], num_classes=probe.num_classes, input_size=probe.input_size)
    else:
        changes = {k: v for k, v in match.items() if k != "metric"}
        ref = probe.replace(**changes)
    return getattr(model_complexity(ref), match["metric"])


def _resolve_device(device: str, cuda_available: Optional[bool]) -> str:
    if device != "auto":
        return device
    if cuda_available is None:
        import torch
        cuda_available = torch.cuda.is_available()
    return "cuda" if cuda_available else "cpu"
