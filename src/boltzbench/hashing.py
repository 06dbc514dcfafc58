"""Content hashes and derived seeds.

* :func:`hash_path` hashes a file, or a directory store (a Zarr store) as the
  sorted list of (relative path, file bytes), so it is independent of mtimes.
* :func:`data_hash` hashes a directory store without its root metadata
  document (where its attrs live), so a store can record it in its own attrs;
  the consolidated copy of the arrays' metadata in that document is covered.
* :func:`source_hash` hashes the boltzbench source files (for provenance), and
  :func:`closure_hash` only the files a step imports (for Snakemake's params, so
  a code change reruns exactly the jobs it can affect).
* :func:`derive_seed` turns a tuple of names into a 63-bit seed, so every job's
  seed is a pure function of (stage, target, method, seed).
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "hash_path",
    "data_hash",
    "consolidated_metadata",
    "content_files",
    "hash_json",
    "source_hash",
    "module_closure",
    "closure_hash",
    "derive_seed",
    "PACKAGE_ROOT",
]

PACKAGE_ROOT = Path(__file__).resolve().parent
#: files inside a store that are not its content (Snakemake's directory-output marker)
IGNORED = frozenset({".snakemake_timestamp"})
#: a store's root metadata documents (zarr v3 and v2), which hold its attrs
ROOT_METADATA = frozenset({"zarr.json", ".zattrs", ".zgroup", ".zmetadata"})


def _update_with_file(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def content_files(path: str | Path) -> list[Path]:
    """Every file under the directory ``path``, sorted, but Snakemake's markers."""
    return sorted(p for p in Path(path).rglob("*") if p.is_file() and p.name not in IGNORED)


def _hash_tree(path: Path, skip: frozenset[str] = frozenset()) -> str:
    """sha256 of (relative path, bytes) of every file under ``path``, but ``skip``ped ones."""
    h = hashlib.sha256()
    for f in content_files(path):
        rel = str(f.relative_to(path))
        if rel in skip:
            continue
        h.update(rel.encode() + b"\0")
        _update_with_file(h, f)
        h.update(b"\0")
    return h.hexdigest()


def hash_path(path: str | Path) -> str:
    """sha256 of a file, or of every file under a directory (paths and bytes).

    Snakemake's ``.snakemake_timestamp`` marker inside directory outputs is not
    content and is skipped.
    """
    path = Path(path)
    if path.is_dir():
        return _hash_tree(path)
    h = hashlib.sha256()
    _update_with_file(h, path)
    return h.hexdigest()


def data_hash(path: str | Path) -> str:
    """sha256 of a directory store as :func:`hash_path`, without its root attrs.

    The root metadata document (zarr v3: ``zarr.json``) holds the store's attrs,
    so this hash can be recorded there: it covers every array's metadata and
    chunks, not the attrs. A store with consolidated metadata keeps a second
    copy of every array's metadata in that document, the copy a reader such as
    ``xarray.open_zarr`` uses; it is covered too, so an edit of either copy
    changes the hash. A store without consolidated metadata hashes as before.
    """
    path = Path(path)
    tree = _hash_tree(path, skip=ROOT_METADATA)
    consolidated = consolidated_metadata(path)
    if consolidated is None:
        return tree
    return hash_json({"tree": tree, "consolidated_metadata": consolidated})


def consolidated_metadata(path: str | Path) -> Any | None:
    """The arrays' metadata consolidated into a store's root document, without the
    root attrs; None if the store has none.

    zarr v3 keeps it in ``zarr.json`` under ``consolidated_metadata``; zarr v2 in
    ``.zmetadata``, whose ``metadata`` also copies the root ``.zattrs`` (left out).
    """
    path = Path(path)
    if (path / "zarr.json").is_file():
        return json.loads((path / "zarr.json").read_text()).get("consolidated_metadata")
    if (path / ".zmetadata").is_file():
        metadata = json.loads((path / ".zmetadata").read_text())["metadata"]
        return {k: v for k, v in metadata.items() if k != ".zattrs"}
    return None


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


@cache
def _module_file(name: str) -> Path | None:
    """The file of boltzbench module ``name``, or None outside the package."""
    parts = name.split(".")
    if parts[0] != "boltzbench":
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imported_modules(path: Path, name: str) -> frozenset[str]:
    """Every module name ``path`` imports (at any depth, so lazy imports count).

    Each file is parsed once per process: the closures of all a workflow's
    rules share most files, and the workflow computes one per job.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # importing a.b.c runs a/__init__ and a/b/__init__ too
    return frozenset(
        ".".join(m.split(".")[: i + 1]) for m in found for i in range(m.count(".") + 1)
    )


@cache
def module_closure(*modules: str) -> tuple[Path, ...]:
    """The boltzbench files ``modules`` import, transitively, found statically (AST).

    Lazy registry entries (``"boltzbench.methods.flow:FlowMethod"`` strings) are
    not followed: the rule adds the one method module it runs.
    """
    seen: dict[Path, None] = {}
    stack = list(modules)
    while stack:
        name = stack.pop()
        path = _module_file(name)
        if path is None or path in seen:
            continue
        seen[path] = None
        stack.extend(_imported_modules(path, name))
    return tuple(sorted(seen))


def closure_hash(*modules: str, extra_files: tuple[str, ...] = ()) -> str:
    """sha256 of the files in ``module_closure(*modules)`` plus ``extra_files``.

    The closure's part is computed once per process and set of ``modules`` (the
    workflow asks for it once per job, and its jobs share a few closures), so a
    process hashes the code as it found it first; ``extra_files`` are read each
    time.
    """
    h = _closure_digest(modules).copy()
    for f in extra_files:
        h.update(hash_path(f).encode())
    return h.hexdigest()


@cache
def _closure_digest(modules: tuple[str, ...]) -> Any:
    """The sha256 object fed with the files of ``module_closure(*modules)`` (copy it)."""
    h = hashlib.sha256()
    for f in module_closure(*modules):
        h.update(str(f.relative_to(PACKAGE_ROOT)).encode() + b"\0")
        _update_with_file(h, f)
    return h


def derive_seed(*keys: Any) -> int:
    """A 63-bit seed from ``keys`` (e.g. ``("train", "gmm40", "flow_mle", 0)``)."""
    digest = hashlib.sha256(canonical_json([str(k) for k in keys]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
