"""The environment facts that make timings comparable between two runs.

A pure function of a sidecar's ``environment`` mapping: regression verdicts
need the comparison, not the capture code (which imports torch and NVML).
"""
from __future__ import annotations

from typing import Any, Dict


def fingerprint(env: Dict[str, Any], device: str = "cpu") -> Dict[str, Any]:
    """The environment facts that make timings comparable between two runs."""
    sw = env.get("software", {})
    fp = {"torch": sw.get("torch"), "cuda": sw.get("cuda"), "cudnn": sw.get("cudnn")}
    if device == "cuda" and env.get("gpus"):
        fp["device_name"] = env["gpus"][0].get("name")
        fp["driver"] = env["gpus"][0].get("driver")
    else:
        fp["device_name"] = env.get("cpu", {}).get("cpu_model")
    return fp
