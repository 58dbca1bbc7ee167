"""The environment facts that make timings comparable between two runs.

A pure function of a sidecar's ``environment`` mapping: regression verdicts
need the comparison, not the capture code (which imports torch and NVML).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Dict


def fingerprint(env: Dict[str, Any], device: str = "cpu") -> Dict[str, Any]:
    """The environment facts that make timings comparable between two runs."""
    sw = env.get("software", {})
    fp = {"torch": sw.get("torch"), "cuda": sw.get("cuda"), "cudnn": sw.get("cudnn")}
    if device == "cuda" and env.get("gpus"):
        fp["device_name"] = env["gpus"][0].get("name")
        fp["driver"] = env["gpus"][0].get("driver")
    else:
        cpu = env.get("cpu", {})
        fp["device_name"] = cpu.get("cpu_model")
        # The model string hides the ISA; a sidecar from before these were recorded gives None, which
        # matches nothing recorded since: its timings are incomparable rather than wrongly compared.
        fp["cpu_capability"] = cpu.get("torch_cpu_capability")
        fp.update({f"isa_{name}": flag for name, flag in sorted((cpu.get("isa") or {}).items())})
        fp.update({name.lower(): value for name, value in sorted((cpu.get("isa_env") or {}).items())})
    return fp


def fingerprint_id(fp: Dict[str, Any]) -> str:
    """A short stable id of a fingerprint, for files keyed by machine (the layer table)."""
    text = json.dumps(fp, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
