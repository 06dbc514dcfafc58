"""Run every benchmark in this folder (``make bench``); results go to ``out/``."""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCHMARKS = (
    "bench_zarr",
    "bench_mala",
    "bench_flow",
    "bench_dag",
    "bench_startup",
    "bench_overhead",
    "bench_md",
    "bench_bridge",
    "bench_reference",
    "bench_diffusion",
    "bench_flow_matching",
    "bench_reproducible",
    "bench_blackjax",
    "bench_hot_paths",
)

for name in BENCHMARKS:
    print(f"== {name}")
    importlib.import_module(f"benchmarks.{name}").main()
