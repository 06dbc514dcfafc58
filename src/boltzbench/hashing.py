"""Content hashes and derived seeds.

* :func:`hash_path` hashes a file, or a directory store (a Zarr store) as the
  sorted list of (relative path, file bytes), so it is independent of mtimes.
* :func:`data_hash` hashes a directory store without its root metadata
  document (where its attrs live), so a store can record it in its own attrs;
  the consolidated copy of the arrays' metadata in that document is covered.
  It is a BLAKE3 hash tree and its value carries its scheme (``"blake3:<hex>"``);
  :func:`legacy_data_hash` is the bare-hex sha256 seal of stores written before
  it, kept so they still verify (:func:`seal_hash` recomputes by the scheme of a
  recorded seal).
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
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import blake3

__all__ = [
    "hash_path",
    "data_hash",
    "file_digest",
    "legacy_data_hash",
    "seal_bytes",
    "seal_hash",
    "SEAL_SCHEME",
    "is_legacy_seal",
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
#: the scheme of every seal written now: its value reads ``"blake3:<hex>"``
SEAL_SCHEME = "blake3"


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


def seal_bytes(data: bytes) -> str:
    """``"blake3:<hex>"``: the seal of a byte string."""
    return f"{SEAL_SCHEME}:{blake3.blake3(data).hexdigest()}"


def file_digest(path: str | Path, threads: int | None = None) -> str:
    """BLAKE3 of one file's bytes (hex), memory-mapped and hashed on ``threads``
    threads (None: every core)."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO if threads is None else threads)
    h.update_mmap(path)
    return h.hexdigest()


def data_hash(path: str | Path, digests: Mapping[str, str] | None = None) -> str:
    """``"blake3:<hex>"``: the seal of a directory store, without its root attrs.

    ``<hex>`` is the BLAKE3 of the canonical JSON of ``{"files": [[relative
    path, BLAKE3 of the file's bytes], ...] (sorted by path),
    "consolidated_metadata": ...}``: every file of the store but its root
    metadata document (zarr v3: ``zarr.json``) and Snakemake's marker. That
    document holds the store's attrs, so this hash can be recorded there: it
    covers every array's metadata and chunks, not the attrs. A store with
    consolidated metadata keeps a second copy of every array's metadata in that
    document, the copy a reader such as ``xarray.open_zarr`` uses; it is covered
    too (None when there is none), so an edit of either copy changes the hash.

    Why BLAKE3 (a cryptographic hash, like sha256): sealing is a read of every
    byte a store holds, and sha256 (SHA-NI) alone took about 3× an ``np.save``
    of the same array; BLAKE3's SIMD tree hashes those bytes about 4× faster on
    one core and spreads over every core (README, *Stores at disk speed*).

    ``digests``: the :func:`file_digest` of files already hashed by their writer
    once written (relative path → hex; :func:`boltzbench.io.write_store` hashes
    each chunk while it writes the next), used for those files; every other file
    is hashed here.
    """
    path = Path(path)
    files = [str(f.relative_to(path)) for f in content_files(path)]
    known = digests or {}
    tree = {
        "files": [
            [f, known[f] if f in known else file_digest(path / f)]
            for f in files
            if f not in ROOT_METADATA
        ],
        "consolidated_metadata": consolidated_metadata(path),
    }
    return seal_bytes(canonical_json(tree).encode())


def legacy_data_hash(path: str | Path) -> str:
    """The store seal before :func:`data_hash` (a bare sha256 hex digest): one
    sequential sha256 over every file's (relative path, bytes) but the root
    documents, combined with the consolidated metadata when the store has it.
    Kept to verify stores sealed so."""
    path = Path(path)
    tree = _hash_tree(path, skip=ROOT_METADATA)
    consolidated = consolidated_metadata(path)
    if consolidated is None:
        return tree
    return hash_json({"tree": tree, "consolidated_metadata": consolidated})


def is_legacy_seal(recorded: str | None) -> bool:
    """Whether ``recorded`` is a seal of the legacy scheme (a bare hex digest)."""
    return recorded is not None and ":" not in recorded


def seal_hash(path: str | Path, recorded: str | None = None) -> str:
    """The seal of the store ``path`` now, by the scheme of the ``recorded`` seal:
    :func:`legacy_data_hash` for a bare hex digest, :func:`data_hash` otherwise."""
    return legacy_data_hash(path) if is_legacy_seal(recorded) else data_hash(path)


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
