"""``boltzbench audit``: an artifact's provenance chain, verified against the disk.

Every artifact records the sha256 of each input it read (provenance attr
``inputs``), so the chain metric ← sample set ← model ← reference data can be
walked from any artifact. For each artifact on the way the audit prints its
content hash, config hash, source hash, git commit, package versions, seed,
host, SLURM job id and times, the CPU, ATen's CPU capability, the BLAS and the
thread count, and checks:

``data_hash``
    the seal the writer put in its attrs (see :mod:`boltzbench.io`) against
    the content on disk now: catches an edited or corrupted array chunk or
    metrics value, even with nothing downstream (an artifact sealed before
    BLAKE3 records ``data_sha256`` and is checked by that scheme);
``config_sha256``
    against the hash of the recorded ``config``;
``sha256`` recorded downstream
    every consumer's record of this artifact's hash (of all its bytes, attrs
    included) against :func:`boltzbench.hashing.hash_path` of the file now:
    catches any edit, attrs included, and a missing input.

A leaderboard (``leaderboard.{csv,md,html}`` or ``leaderboard.provenance.json``)
is audited through its provenance file: the hashes of the files it wrote, and
of every metrics and noise-floor file it read, optionally only one row's
(``row="gmm40/mala"``: the metrics files of every seed of that row and the
target's noise floor). The budget sweep's ``budget_sweep.provenance.json``
records the files it wrote the same way. Inputs made outside boltzbench (the
sample file of a method ``kind: external``) carry no provenance and are
verified by their sha256 only.

An archive written by ``boltzbench export`` and unpacked elsewhere is audited
through its ``MANIFEST.json`` (give the directory or the manifest): every file
against the sha256 the manifest lists (a changed, missing or unlisted file is
named), and the manifest, itself an artifact of step ``export``, through the
chains of the run's roots (leaderboard, budget sweep, figures) it records as its
inputs. Recorded paths are relative to the workflow's working directory:
``directory`` (for an archive: where it was unpacked), or else the first of the
current directory and the audited file's parents under which they exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boltzbench.hashing import content_files, hash_json, hash_path
from boltzbench.io import (
    DATA_HASH,
    LEGACY_DATA_HASH,
    read_attrs,
    read_json,
    recompute_data_hash,
    recorded_seal,
)

__all__ = [
    "Auditor",
    "Check",
    "Node",
    "Link",
    "audit",
    "render",
    "problems",
    "manifest_checks",
    "LEADERBOARD",
    "MANIFEST",
]

#: the provenance file of a leaderboard, beside leaderboard.{csv,md,html}
LEADERBOARD = "leaderboard.provenance.json"
#: a provenance file that records the files its step wrote (``outputs``)
PROVENANCE_SUFFIX = ".provenance.json"
#: the manifest at the root of an archive written by ``boltzbench export``
MANIFEST = "MANIFEST.json"
#: what each step's artifact is called in the chain
LABELS = {
    "reference": "reference data",
    "train": "model",
    "sample": "sample set",
    "evaluate": "metrics",
    "noise_floor": "noise floor",
    "aggregate": "leaderboard",
    "figures": "figure",
    "budget_sweep": "budget sweep",
    "export": "export manifest",
}
#: input roles of files made outside boltzbench (``Method.input_files``: the sample
#: file of a method ``kind: external``), which carry no provenance: verified by hash only
FOREIGN_INPUTS = frozenset({"external_samples"})
SHORT = 16  # hex digits of a hash shown in the chain (the summary shows them whole)


@dataclass
class Check:
    """One verification: ``name`` (what was compared), ``ok`` and a readable ``detail``;
    ``where``: the file it is about, when not the artifact that holds the check."""

    name: str
    ok: bool
    detail: str
    where: Path | None = None


@dataclass
class Node:
    """One artifact on disk: its content hash, attrs, own checks and recorded inputs."""

    path: Path
    sha256: str | None = None
    attrs: dict[str, Any] | None = None
    checks: list[Check] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)

    @property
    def label(self) -> str:
        step = (self.attrs or {}).get("boltzbench_step", "")
        return LABELS.get(step, step or "file")


@dataclass
class Link:
    """A consumer's record ``{role: {path, sha256}}`` of one input, and that input."""

    role: str
    recorded_path: str
    recorded_sha256: str
    node: Node
    check: Check


def _short(h: str | None) -> str:
    return (h or "-")[:SHORT]


def _self_check(path: Path, attrs: dict[str, Any]) -> Check | None:
    """The artifact's own seal against its content now (None for a figure)."""
    recorded = recorded_seal(attrs)
    actual = recompute_data_hash(path, recorded)
    if actual is None:
        return None
    if recorded is None:
        return Check(DATA_HASH, False, "not recorded: the artifact cannot be self-verified")
    name = DATA_HASH if DATA_HASH in attrs else LEGACY_DATA_HASH
    if recorded != actual:
        detail = f"recorded {recorded}, recomputed {actual}: data edited or corrupted"
        return Check(name, False, detail)
    return Check(name, True, "ok")


def _config_check(attrs: dict[str, Any]) -> Check | None:
    if "config" not in attrs:
        return None
    actual = hash_json(json.loads(attrs["config"]))
    if attrs.get("config_sha256") != actual:
        detail = f"recorded {attrs.get('config_sha256')}, hash of the recorded config {actual}"
        return Check("config_sha256", False, detail)
    return Check("config_sha256", True, "ok")


def _json_attr(value: Any) -> dict[str, Any]:
    """A nested attr: stored as canonical JSON in a store, as a dict elsewhere."""
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def _recorded(value: Any) -> dict[str, dict[str, str]]:
    """An ``inputs`` or ``outputs`` record ``{role: {"path", "sha256"}}``."""
    records = _json_attr(value)
    for role, rec in records.items():
        if not (isinstance(rec, dict) and {"path", "sha256"} <= set(rec)):
            raise ValueError(f"record {role!r} has no path and sha256: {rec!r}")
    return records


def leaderboard_provenance(path: Path) -> Path | None:
    """The provenance file of a leaderboard file, or None if ``path`` is not one."""
    if path.name == LEADERBOARD or (path.name.startswith("leaderboard.") and path.is_file()):
        return path.with_name(LEADERBOARD)
    return None


def row_filter(row: str) -> Callable[[str], bool]:
    """Roles of one leaderboard row ``target/method``: its metrics (every seed),
    the target's noise floor and the leaderboard's own outputs."""
    target, _, method = row.partition("/")
    if not target or not method:
        raise ValueError(f"a row is TARGET/METHOD (e.g. gmm40/mala), got {row!r}")
    return lambda role: (
        role.startswith((f"metrics:{row}/seed", "output:", f"noise_floor:{target}/seed"))
    )


class Auditor:
    """Walks and verifies the provenance chain; every artifact is read and hashed once."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = None if directory is None else Path(directory)
        self.nodes: dict[Path, Node] = {}

    def resolve(self, recorded: str, consumer: Path) -> Path:
        """The file a recorded (workflow-relative) path names."""
        p = Path(recorded)
        if p.is_absolute():
            return p
        if self.directory is not None:
            return self.directory / p
        bases = [Path.cwd(), *consumer.resolve().parents]
        return next((b / p for b in bases if (b / p).exists()), Path.cwd() / p)

    def artifact(self, path: Path, select: Callable[[str], bool] | None = None) -> Node:
        """The audited node of ``path`` and, recursively, of its recorded inputs."""
        key = path.resolve()
        if key in self.nodes:
            return self.nodes[key]
        node = self.nodes[key] = Node(path)
        if not path.exists():  # the consumer's link reports it
            return node
        node.sha256 = hash_path(path)
        try:
            node.attrs = read_attrs(path)
            checks = (_self_check(path, node.attrs), _config_check(node.attrs))
            records = {**_recorded(node.attrs.get("inputs")), **self._outputs(path)}
        except Exception as err:  # a corrupted metadata document, a foreign file
            node.checks.append(Check("attrs", False, f"unreadable: {type(err).__name__}: {err}"))
            return node
        node.checks += [c for c in checks if c is not None]
        links = [self.link(r, rec, path) for r, rec in records.items() if not select or select(r)]
        # the chain first (samples <- model <- ...), reference data last
        node.links = sorted(links, key=lambda lk: (lk.node.label == LABELS["reference"], lk.role))
        return node

    def _outputs(self, path: Path) -> dict[str, dict[str, str]]:
        """The files a leaderboard (or the budget sweep) wrote, as roles ``output:<name>``."""
        if not path.name.endswith(PROVENANCE_SUFFIX):
            return {}
        return {f"output:{k}": v for k, v in _recorded(read_json(path).get("outputs")).items()}

    def link(self, role: str, record: dict[str, str], consumer: Path) -> Link:
        path = self.resolve(record["path"], consumer)
        if role.startswith("output:") or role in FOREIGN_INPUTS:  # verified by hash only
            node = self.nodes.setdefault(path.resolve(), Node(path))
            node.sha256 = hash_path(path) if path.exists() else None
        else:
            node = self.artifact(path)
        return Link(role, record["path"], record["sha256"], node, _link_check(record, node))


def _link_check(record: dict[str, str], node: Node) -> Check:
    if node.sha256 is None:
        return Check("sha256", False, f"is {record['sha256']}, but the file is missing")
    if node.sha256 != record["sha256"]:
        detail = f"is {record['sha256']}, on disk {node.sha256}: changed since it was read"
        return Check("sha256", False, detail)
    return Check("sha256", True, "ok")


def archive_manifest(path: Path) -> Path | None:
    """The manifest of an unpacked export: ``path`` itself, or the one in it."""
    if path.name == MANIFEST and path.is_file():
        return path
    if path.is_dir() and (path / MANIFEST).is_file():
        return path / MANIFEST
    return None


def manifest_checks(manifest: Path) -> list[Check]:
    """Every file of an unpacked export against the sha256 its manifest lists.

    One failed check per file that is changed, missing or not listed (Snakemake's
    ``.snakemake_timestamp`` markers aside); one passed check if every file verifies.
    """
    root = manifest.parent
    try:
        listed = {name: rec["sha256"] for name, rec in read_json(manifest)["files"].items()}
    except Exception as err:
        return [Check("manifest", False, f"unreadable: {type(err).__name__}: {err}")]
    failed = [c for name, sha in sorted(listed.items()) if (c := _file_check(root, name, sha))]
    unlisted = [f for f in content_files(root) if f.relative_to(root).as_posix() not in listed]
    failed += [
        Check("manifest", False, "does not list this file", f) for f in unlisted if f != manifest
    ]
    return failed or [Check("manifest", True, f"{len(listed)} files verified")]


def _file_check(root: Path, name: str, recorded: str) -> Check | None:
    """A listed file against its sha256; None if it verifies."""
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return Check("manifest", False, f"lists {name!r}, which is not a path inside the archive")
    path = root / name
    if not path.is_file():
        return Check("manifest", False, f"sha256 {recorded}, but the file is missing", path)
    actual = hash_path(path)
    if actual != recorded:
        detail = f"sha256 {recorded}, on disk {actual}: changed since the export"
        return Check("manifest", False, detail, path)
    return None


def _audit_archive(manifest: Path, directory: str | Path | None) -> tuple[Auditor, Node]:
    """The manifest's file checks, then the chain from the roots it records."""
    auditor = Auditor(directory if directory is not None else manifest.parent)
    root = auditor.artifact(manifest)
    root.checks += manifest_checks(manifest)
    return auditor, root


def audit(
    path: str | Path, row: str | None = None, directory: str | Path | None = None
) -> tuple[Auditor, Node]:
    """Audit ``path`` (a store, a metrics or JSON file, a figure, a leaderboard file,
    or an unpacked export: its directory or its ``MANIFEST.json``).

    ``row`` (``"target/method"``) restricts a leaderboard audit to that row.
    Returns the auditor (every node, by resolved path) and the root node.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such artifact: {path}")
    board = leaderboard_provenance(path)
    if row is not None and board is None:
        raise ValueError(f"--row needs a leaderboard file, got {path}")
    manifest = archive_manifest(path)
    if manifest is not None:
        return _audit_archive(manifest, directory)
    auditor = Auditor(directory)
    select = None if row is None else row_filter(row)
    root = auditor.artifact(board or path, select)
    if select is not None and not any(lk.role.startswith("metrics:") for lk in root.links):
        raise ValueError(f"no row {row!r} in {board}")
    return auditor, root


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it lies under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def problems(auditor: Auditor) -> list[str]:
    """One line per failed check: the bad artifact and what mismatched."""
    out = []
    for node in auditor.nodes.values():
        out += [
            f"{_shown(c.where or node.path)}: {c.name} {c.detail}" for c in node.checks if not c.ok
        ]
        for lk in node.links:
            if not lk.check.ok:
                out.append(_link_problem(node, lk))
    return out


def _link_problem(consumer: Node, lk: Link) -> str:
    where = f"{_shown(lk.node.path)}: sha256 recorded by {_shown(consumer.path)} ({lk.role})"
    hint = ""
    seal = next((c for c in lk.node.checks if c.name in (DATA_HASH, LEGACY_DATA_HASH)), None)
    if seal is not None and seal.ok:
        hint = f"; its {seal.name} verifies, so its attrs or metadata were changed"
    return f"{where}: {lk.check.detail}{hint}"


def _describe(node: Node, packages_above: dict[str, str]) -> Iterator[str]:
    """The provenance lines of one artifact."""
    a = node.attrs or {}
    ok = {c.name: True for c in node.checks}
    for c in node.checks:
        ok[c.name] &= c.ok
    checks = " · ".join(f"{name} {'ok' if good else 'FAILED'}" for name, good in ok.items())
    yield f"sha256 {_short(node.sha256)} · {checks or 'no checks'}"
    if not a:
        return
    dirty = " (dirty)" if a.get("git_dirty") == "true" else ""
    yield (
        f"step {a.get('boltzbench_step', '-')} · boltzbench {a.get('boltzbench_version', '-')}"
        f" · config {_short(a.get('config_sha256'))} · source {_short(a.get('source_sha256'))}"
        f" · git {str(a.get('git_commit', '-'))[:12]}{dirty}"
    )
    seed = a.get("seed", -1)
    yield (
        f"seed {'-' if seed == -1 else seed} · host {a.get('host', '-')}"
        f" · SLURM job {a.get('slurm_job_id') or '-'}"
        f" · {a.get('started_at', '-')} → {a.get('finished_at', '-')}"
    )
    if "torch_cpu_capability" in a:
        yield (
            f"cpu {a.get('cpu_model', '-')} · ATen {a['torch_cpu_capability']} · "
            f"{a.get('blas', '-')} · {a.get('libc', '-')} · {a.get('num_threads', '-')} threads"
        )
    packages = _json_attr(a.get("packages"))
    if packages and packages == packages_above:
        yield "packages as above"
    elif packages:
        yield "packages " + ", ".join(f"{k} {v}" for k, v in sorted(packages.items()))


def _link_status(lk: Link) -> str:
    recorded = f"recorded sha256 {_short(lk.recorded_sha256)}"
    if lk.check.ok:
        return f"{recorded} matches"
    if lk.node.sha256 is None:
        return f"{recorded}: FAILED, file missing"
    return f"{recorded}: FAILED, on disk {_short(lk.node.sha256)}"


def render(
    node: Node,
    indent: str = "",
    head: str | None = None,
    seen: set[Path] | None = None,
    packages_above: dict[str, str] | None = None,
) -> Iterator[str]:
    """The chain below ``node`` as indented text; an artifact shown before is named only."""
    seen = set() if seen is None else seen
    head = head if head is not None else f"{node.label} {_shown(node.path)}"
    key = node.path.resolve()
    if key in seen or (node.attrs is None and not node.checks):
        yield indent + head + (" (shown above)" if key in seen and node.attrs else "")
        return
    seen.add(key)
    yield indent + head
    inner = indent + "    "
    first, *rest = _describe(node, packages_above or {})
    failed = [
        f"FAILED {c.name}: " + (f"{_shown(c.where)}: " if c.where else "") + c.detail
        for c in node.checks
        if not c.ok
    ]
    yield from (inner + line for line in [first, *failed, *rest])
    packages = _json_attr((node.attrs or {}).get("packages"))
    for lk in node.links:
        child = f"← {lk.role}: {lk.node.label} {_shown(lk.node.path)} ({_link_status(lk)})"
        yield from render(lk.node, inner, child, seen, packages)
