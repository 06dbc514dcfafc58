"""``boltzbench export``: one archive of a run, with the sha256 of every file in it.

What goes in is what the run's results rest on, found by walking the provenance
chains (:mod:`boltzbench.audit`) from the run's roots:

* ``leaderboard.provenance.json``: the leaderboard tables and the resolved config
  it wrote, every metrics file and noise floor it read and, through their
  recorded inputs, every sample set, model and reference store (MD replicas
  included);
* the budget sweep's ``budget_sweep.provenance.json``, where the run has one;
* the figures (``figures/*.png``), which record their inputs in their PNG text.

Logs, checkpoints and the leftovers of other configs are not in it. A run whose
chains do not verify is not exported: the error lists what failed.

Each file keeps the path the artifacts record (relative to the workflow's
working directory, e.g. ``results/gauss/mala/seed0/samples.zarr/x/c/0/0``), so
that once the archive is unpacked in any directory every recorded link resolves
there. ``MANIFEST.json`` at the archive's root lists every file with its sha256
and size; it is itself an artifact of step ``export`` (provenance attrs, sealed
by ``data_hash``) whose inputs are the roots. ``boltzbench audit DIR`` on the
unpacked archive checks every file against the manifest and then walks the
chains from the manifest (:func:`boltzbench.audit.audit`).
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path, PurePath

from boltzbench.audit import LEADERBOARD, MANIFEST, PROVENANCE_SUFFIX, Auditor, problems
from boltzbench.hashing import content_files, hash_path
from boltzbench.io import atomic_path, read_json, write_json
from boltzbench.provenance import provenance_attrs

__all__ = ["export", "run_files", "ExportError", "FORMAT", "ARCHIVE_MODES"]

#: the ``format`` of a manifest this module writes
FORMAT = "boltzbench-export/1"
#: archive suffixes and the tarfile mode that writes each
ARCHIVE_MODES = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.xz": "w:xz"}
MAX_SHOWN = 20  # problems listed in an ExportError


class ExportError(Exception):
    """The run cannot be exported (no leaderboard, a chain that does not verify…)."""


def _archive_mode(out: Path) -> str:
    for suffix, mode in ARCHIVE_MODES.items():
        if out.name.endswith(suffix):
            return mode
    raise ExportError(f"the archive must end in {', '.join(ARCHIVE_MODES)}, got {out}")


def working_directory(results: Path) -> Path:
    """The workflow's working directory: ``results`` less the ``results_dir`` that the
    leaderboard recorded for its own table (``results/leaderboard.csv``)."""
    board = results / LEADERBOARD
    if not board.is_file():
        raise ExportError(f"no {LEADERBOARD} in {results}: export needs a finished run")
    try:
        recorded = PurePath(read_json(board)["outputs"]["csv"]["path"])
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(f"{board} records no leaderboard table: {err!r}") from None
    if recorded.is_absolute() or ".." in recorded.parts:
        raise ExportError(f"{board} records {recorded}: only relative paths can move")
    table = Path(os.path.abspath(results / recorded.name))
    return table.parents[len(recorded.parts) - 1]


def roots(results: Path, workdir: Path) -> dict[str, str]:
    """The run's roots, ``{role: path relative to workdir}`` (role: the name in results)."""
    found = sorted(results.glob(f"*{PROVENANCE_SUFFIX}")) + sorted(results.glob("figures/*.png"))
    return {
        f.relative_to(results).as_posix(): _relative(Path(os.path.abspath(f)), workdir)
        for f in found
    }


def _relative(path: Path, workdir: Path) -> str:
    """``path`` as a path in the archive; an error outside the working directory."""
    rel = Path(os.path.normpath(path))
    try:
        return rel.relative_to(workdir).as_posix()
    except ValueError:
        raise ExportError(f"{path} lies outside the run's directory {workdir}") from None


def _verified_nodes(workdir: Path, run_roots: dict[str, str]) -> Auditor:
    """Walk and verify every root's chain; an error if anything fails."""
    auditor = Auditor(workdir)
    for rel in run_roots.values():
        auditor.artifact(workdir / rel)
    bad = problems(auditor)
    absolute = [
        f"{node.path}: records the absolute path {lk.recorded_path} ({lk.role})"
        for node in auditor.nodes.values()
        for lk in node.links
        if Path(lk.recorded_path).is_absolute()
    ]
    if bad or absolute:
        lines = [*bad, *absolute]
        more = f"\n  … and {len(lines) - MAX_SHOWN} more" if len(lines) > MAX_SHOWN else ""
        shown = "\n  ".join(lines[:MAX_SHOWN])
        raise ExportError(f"the run does not verify, so it is not exported:\n  {shown}{more}")
    return auditor


def run_files(results: str | Path) -> tuple[Path, dict[str, str], list[str]]:
    """(working directory, roots, every file of the run as a path relative to it).

    A store contributes each of its files but Snakemake's ``.snakemake_timestamp``.
    """
    results = Path(results)
    workdir = working_directory(results)
    run_roots = roots(results, workdir)
    auditor = _verified_nodes(workdir, run_roots)
    files: set[str] = set()
    for node in auditor.nodes.values():
        path = Path(os.path.normpath(node.path))
        inside = content_files(path) if path.is_dir() else [path] if path.is_file() else []
        files.update(_relative(f, workdir) for f in inside)
    return workdir, run_roots, sorted(files)


def _manifest(workdir: Path, run_roots: dict[str, str], files: list[str], path: Path) -> None:
    """Write MANIFEST.json to ``path``: every file's sha256 and size, sealed, with the
    roots as the export step's inputs."""
    listed = {
        name: {"sha256": hash_path(workdir / name), "bytes": (workdir / name).stat().st_size}
        for name in files
    }
    config = {"roots": run_roots, "n_files": len(listed)}
    attrs = provenance_attrs("export", config, None, run_roots, directory=workdir)
    write_json({"format": FORMAT, "files": listed}, path, attrs)


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A member without the exporting user's name and ids, readable by all."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def export(results: str | Path, out: str | Path) -> tuple[Path, int]:
    """Write the archive ``out`` of the run in ``results``; (its path, files in it).

    ``out`` ends in ``.tar``, ``.tar.gz`` (``.tgz``) or ``.tar.xz``; it is written
    atomically. Raises :class:`ExportError` for a run that cannot be exported.
    """
    out = Path(out)
    mode = _archive_mode(out)
    workdir, run_roots, files = run_files(results)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as partial:
        manifest = Path(tmp) / MANIFEST
        _manifest(workdir, run_roots, files, manifest)
        with tarfile.open(partial, mode) as tar:
            tar.add(manifest, arcname=MANIFEST, filter=_anonymous)
            for name in files:
                tar.add(workdir / name, arcname=name, recursive=False, filter=_anonymous)
    return out, len(files) + 1
