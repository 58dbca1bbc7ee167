"""Turn a cell into result rows: the columns every row of a cell shares, and failure rows."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from models import ModelConfig
from models.summary import architecture_summary

from bench.errors import one_line
from bench.grid import Cell
from bench.results.schema import empty_row


def architecture_columns(config: ModelConfig) -> Dict[str, Any]:
    """Per-stage channels and strides: what a detection neck (an FPN over C2..C5) needs."""
    stages = architecture_summary(config).stages
    return {
        "stage_channels": "-".join(str(s.channels) for s in stages),
        "stage_strides": "-".join(str(s.stride) for s in stages),
        "feature_dim": config.feature_dim,
        "groups": config.cardinality,
    }


def cell_columns(cell: Cell, device_name: Optional[str] = None) -> Dict[str, Any]:
    """The columns that do not depend on the measurement (model, settings, architecture)."""
    m = cell.model
    s = cell.settings
    row = empty_row()
    row.update({
        "cell_id": cell.cell_id,
        "variant_id": cell.variant_id,
        "variant": cell.variant,
        "preset": cell.preset or "",
        "family": m.family(),
        "block": m.block,
        "depth": m.total_depth,
        "blocks": "-".join(str(b) for b in m.stage_blocks()),
        "cardinality": m.cardinality,
        "bottleneck_width": m.bottleneck_width,
        "width_multiplier": m.width_multiplier,
        "stem": m.stem,
        "layout": m.layout,
        "num_classes": m.num_classes,
        "input_size": m.input_size,
        "pretrained": "none",
        "device": s["device"],
        "device_name": device_name,
        "precision": s["precision"],
        "tf32": s["tf32"] if s["device"] == "cuda" and s["precision"] == "fp32" else None,
        "memory_format": s["memory_format"],
        "compile": s["compile"],
        "threads": s.get("threads"),
    })
    row.update(architecture_columns(m))
    return row


def failure_rows(cell: Cell, status: str, message: str, device_name: Optional[str] = None) -> List[Dict[str, Any]]:
    """One row recording why a cell produced no measurements.

    What is known without measuring is filled in: the analytic counts, and
    the batch size when the cell asked for only one, so a failed cell still
    sits in the right place in a table or plot.
    """
    from models import model_complexity

    row = cell_columns(cell, device_name)
    row["status"] = status
    row["error"] = one_line(message, 500)  # one line, bounded
    try:
        counts = model_complexity(cell.model)
        row.update(params=counts.params, macs=counts.macs, activations=counts.acts)
    except Exception:  # noqa: BLE001 - a config the counter cannot handle: the row records the failure anyway
        pass
    batches = cell.settings.get("batch_sizes") or []
    if len(batches) == 1:
        row.update(batch_size=batches[0], requested_batch_size=batches[0])
    return [row]
