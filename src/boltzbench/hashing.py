"""Content hashes and derived seeds.

* :func:`hash_path` hashes a file, or a directory store (a Zarr store) as the
  sorted list of (relative path, file bytes), so it is independent of mtimes.
* :func:`source_hash` hashes the boltzbench source files.
* :func:`derive_seed` turns a tuple of names into a 63-bit seed, so every job's
  seed is a pure function of (stage, target, method, seed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["hash_path", "hash_json", "source_hash", "derive_seed", "PACKAGE_ROOT"]

PACKAGE_ROOT = Path(__file__).resolve().parent


def _update_with_file(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def hash_path(path: str | Path) -> str:
    """sha256 of a file, or of every file under a directory (paths and bytes)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode() + b"\0")
            _update_with_file(h, f)
            h.update(b"\0")
    else:
        _update_with_file(h, path)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def source_hash(parts: tuple[str, ...] | None = None) -> str:
    """sha256 of boltzbench's ``.py`` files; ``parts`` restricts it to subpackages.

    ``parts`` names entries under ``src/boltzbench`` (e.g. ``("targets",
    "methods")``); top-level modules (``io.py``, ``provenance.py``…) are always
    included, since every step uses them.
    """
    files = sorted(PACKAGE_ROOT.glob("*.py"))
    for part in parts if parts is not None else [p.name for p in PACKAGE_ROOT.iterdir()]:
        sub = PACKAGE_ROOT / part
        if sub.is_dir():
            files += sorted(sub.rglob("*.py"))
    h = hashlib.sha256()
    for f in dict.fromkeys(files):
        h.update(str(f.relative_to(PACKAGE_ROOT)).encode() + b"\0")
        _update_with_file(h, f)
    return h.hexdigest()


def derive_seed(*keys: Any) -> int:
    """A 63-bit seed from ``keys`` (e.g. ``("train", "gmm40", "flow_mle", 0)``)."""
    digest = hashlib.sha256(canonical_json([str(k) for k in keys]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
