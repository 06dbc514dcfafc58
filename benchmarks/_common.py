"""Shared helpers of the benchmark scripts: print a table and write JSON."""

from __future__ import annotations

import json
import platform
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def write_result(name: str, result: dict) -> Path:
    """Print ``result`` as a two-column table and write it to ``out/<name>.json``."""
    result = {**result, "host": platform.node(), "cpu": platform.processor() or platform.machine()}
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path
