"""Samples made elsewhere: the file format, its reader and its checks.

A sampler trained in another codebase is scored from one file, by
``boltzbench score`` or by a method ``kind: external`` in the pipeline. The
file is an ``.npz`` archive (``numpy.savez``) or a Zarr store (a directory):

==============  ==========  ====================================================
key             shape       meaning
==============  ==========  ====================================================
``x``           (n, dim)    the samples, in the target's coordinates (required)
``log_weight``  (n,)        unnormalized log importance weights (optional)
``log_q``       (n,)        log density of the sampler at ``x`` (optional)
``energy``      (n,)        reduced energies E(x) in k_BT (optional; checked)
``n_energy``    ()          declared target energy evaluations, fit + sample
``n_grad``      ()          declared target gradient evaluations, fit + sample
``seconds``     ()          declared wall seconds, fit + sample
``device``      ()          declared hardware, a string (e.g. ``"1x A100"``)
==============  ==========  ====================================================

Declared costs are 0-d arrays in an ``.npz`` and root attributes (or 0-d
arrays) in a Zarr store. Each is optional; boltzbench did not count them, so
the stores and the leaderboard mark them *declared*.

:func:`load_samples` checks the file against the target and raises an
:class:`ExternalSamplesError` that says what is wrong: a missing file or
``x``; an unknown key (a typo such as ``log_weights``); ``x`` not of shape
(n, dim) for the target's dim; a per-row array whose length is not n; a
declared cost that is negative or not a number; and energies that disagree
with the target's own (:func:`check_energies`: beyond :data:`ENERGY_TOL`, the
error names the first rows and the likely cause, e.g. LJ's factor ½ or
kJ/mol instead of k_BT). Rows whose x or target energy is not finite are
kept, never dropped: they are counted (``n_nonfinite_rows``) and flow into
the metrics' invalid-row accounting (``nonfinite_fraction``, histogram and
mode metrics), as a method's failed draws do.
"""

from __future__ import annotations

import logging
import math
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzbench.core import SampleSet
from boltzbench.hashing import hash_path
from boltzbench.targets.base import Target

__all__ = [
    "ExternalSamplesError",
    "FileInfo",
    "inspect_file",
    "check_layout",
    "check_energies",
    "load_samples",
    "ROW_KEYS",
    "COST_KEYS",
    "ENERGY_TOL",
]

log = logging.getLogger(__name__)

#: per-row arrays: shape (n, dim) for x, (n,) for the others
ROW_KEYS = ("x", "log_weight", "log_q", "energy")
#: declared costs and their kinds
COST_KEYS = {"n_energy": "count", "n_grad": "count", "seconds": "seconds", "device": "text"}
#: energies agree when |E_file − E_target| ≤ ENERGY_TOL · max(1, |E_target|) (k_BT)
ENERGY_TOL = 1e-3
#: rows named in an energy-mismatch error
SHOWN_ROWS = 5
#: rows per call of the target's energy
BATCH = 8192


class ExternalSamplesError(ValueError):
    """A sample file that boltzbench cannot score; the message says why."""


class _Npz:
    """An ``.npz`` archive, read one member at a time."""

    format = "npz"

    def __init__(self, path: Path):
        self.path = path

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each member's shape, from its header only (no data is read)."""
        out = {}
        with zipfile.ZipFile(self.path) as archive:
            for member in archive.namelist():
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    out[member.removesuffix(".npy")] = tuple(read(f)[0])
        return out

    def array(self, name: str) -> np.ndarray:
        with np.load(self.path, allow_pickle=False) as archive:
            return archive[name]

    def attrs(self) -> dict[str, Any]:
        return {}


class _Zarr:
    """A Zarr store: arrays at its root, declared costs as root attributes."""

    format = "zarr"

    def __init__(self, path: Path):
        self.path = path

    @cached_property
    def group(self):
        import zarr

        return zarr.open_group(self.path, mode="r")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(arr.shape) for name, arr in self.group.arrays()}

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self.group[name][...])

    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)


def _open(path: Path) -> _Npz | _Zarr:
    if not path.exists():
        raise ExternalSamplesError(
            f"no sample file at {str(path)!r} (a relative path is read from the working "
            "directory of the workflow or command)"
        )
    if not path.is_dir() and path.suffix != ".npz":
        raise ExternalSamplesError(f"{path}: not an .npz file or a Zarr store (a directory)")
    return _Zarr(path) if path.is_dir() else _Npz(path)


def _read_header(reader: _Npz | _Zarr) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    """(shapes, attrs) of a sample file; ExternalSamplesError when it cannot be read."""
    try:
        return reader.shapes(), reader.attrs()
    except Exception as err:  # a corrupt archive or store: say which file
        raise ExternalSamplesError(
            f"{reader.path}: unreadable ({type(err).__name__}: {err})"
        ) from None


@dataclass(frozen=True)
class FileInfo:
    """What a sample file holds, read without its per-row data.

    ``shapes``: ``{key: shape}`` of its per-row arrays; ``declared``: its
    declared costs (``n_energy``, ``n_grad`` int, ``seconds`` float, ``device`` str).
    """

    path: Path
    format: str
    shapes: dict[str, tuple[int, ...]]
    declared: dict[str, Any]


def _declared_value(key: str, value: Any, path: Path) -> Any:
    """A declared cost, checked: a count is a non-negative integer, seconds a
    non-negative number, the device a string."""
    kind = COST_KEYS[key]
    if isinstance(value, np.ndarray | np.generic):
        value = value.item()
    if kind == "text":
        if not isinstance(value, str):
            raise ExternalSamplesError(f"{path}: '{key}' must be a string, got {value!r}")
        return value
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and value >= 0
    if kind == "count":
        ok = ok and float(value).is_integer()
    if not ok:
        what = "a non-negative integer" if kind == "count" else "a non-negative number"
        raise ExternalSamplesError(f"{path}: declared '{key}' must be {what}, got {value!r}")
    return int(value) if kind == "count" else float(value)


def inspect_file(path: str | Path) -> FileInfo:
    """Open a sample file and check its keys and declared costs (not its rows)."""
    path = Path(path)
    reader = _open(path)
    shapes, attrs = _read_header(reader)
    if "x" not in shapes:
        raise ExternalSamplesError(
            f"{path}: missing key 'x' (the samples, shape (n, dim)); keys present: "
            f"{', '.join(sorted(shapes)) or '(none)'}"
        )
    unknown = sorted(set(shapes) - set(ROW_KEYS) - set(COST_KEYS))
    if unknown:
        raise ExternalSamplesError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
            f"{', '.join([*ROW_KEYS, *COST_KEYS])}"
        )
    raw = {k: v for k, v in attrs.items() if k in COST_KEYS}
    for key in set(shapes) & set(COST_KEYS):
        if shapes[key] != ():
            raise ExternalSamplesError(
                f"{path}: declared '{key}' must be a scalar (0-d array), got shape {shapes[key]}"
            )
        raw[key] = reader.array(key)
    declared = {k: _declared_value(k, v, path) for k, v in sorted(raw.items())}
    rows = {k: s for k, s in shapes.items() if k in ROW_KEYS}
    return FileInfo(path, reader.format, rows, declared)


def check_layout(info: FileInfo, dim: int, target_name: str = "the target") -> int:
    """Raise unless ``x`` is (n, dim) and every other per-row array is (n,); returns n."""
    x = info.shapes["x"]
    if len(x) != 2:
        raise ExternalSamplesError(f"{info.path}: 'x' must be 2-D (n, dim), got shape {x}")
    if x[1] != dim:
        raise ExternalSamplesError(
            f"{info.path}: 'x' has {x[1]} columns, but {target_name} has dim {dim} "
            "(x must be in the target's own coordinates)"
        )
    if x[0] == 0:
        raise ExternalSamplesError(f"{info.path}: 'x' has no rows")
    for key in ROW_KEYS[1:]:
        if key in info.shapes and info.shapes[key] != (x[0],):
            raise ExternalSamplesError(
                f"{info.path}: '{key}' has shape {info.shapes[key]}, expected ({x[0]},): "
                "one value per row of 'x'"
            )
    return x[0]


def _energy_hint(given: torch.Tensor, target: torch.Tensor) -> str:
    """The likely cause of disagreeing finite energies: an offset, a ratio, or neither."""
    if given.numel() == 0:
        return "non-finite energies where the target's are finite (or the reverse)"
    diff = given - target
    if float(diff.std()) <= ENERGY_TOL * max(1.0, abs(float(diff.mean()))) or diff.numel() == 1:
        return (
            f"the file's energies differ from the target's by about {float(diff.mean()):.6g} "
            "k_BT (another zero of energy, or one row)"
        )
    big = target.abs() > 1e-8
    ratio = given[big] / target[big]
    if ratio.numel() > 1 and float(ratio.std()) <= ENERGY_TOL * abs(float(ratio.mean())):
        return (
            f"the file's energies are {float(ratio.mean()):.6g} × the target's: another unit "
            "or convention (LJ's factor ½ on the pair sum, kJ/mol instead of k_BT, another "
            "temperature)"
        )
    return "a different energy function (another force field, or other parameters)"


def check_energies(
    given: torch.Tensor,
    target: torch.Tensor,
    where: str,
    tol: float = ENERGY_TOL,
    checked: torch.Tensor | None = None,
) -> None:
    """Raise unless the file's energies ``given`` match the target's at every row.

    Rows agree when |ΔE| ≤ tol · max(1, |E_target|) k_BT, or when both are the
    same non-finite value. Both ``(n,)`` float64; ``checked`` (bool ``(n,)``,
    default all) selects the rows compared (the caller leaves out rows with
    non-finite x). The error names the first :data:`SHOWN_ROWS` disagreeing
    rows (0-based) with both energies, and a likely cause.
    """
    close = (given - target).abs() <= tol * target.abs().clamp(min=1.0)
    same = (given == target) | (given.isnan() & target.isnan())
    agree = close | same
    if checked is not None:
        agree |= ~checked
    bad = torch.nonzero(~agree).reshape(-1)
    if bad.numel() == 0:
        return
    rows = ", ".join(
        f"{int(i)} (file {float(given[i]):.6g}, target {float(target[i]):.6g})"
        for i in bad[:SHOWN_ROWS]
    )
    more = f" and {bad.numel() - SHOWN_ROWS} more" if bad.numel() > SHOWN_ROWS else ""
    both = torch.isfinite(given[bad]) & torch.isfinite(target[bad])
    hint = _energy_hint(given[bad][both], target[bad][both])
    n = given.numel() if checked is None else int(checked.sum())
    raise ExternalSamplesError(
        f"{where}: 'energy' disagrees with the target's own energy at {bad.numel()} of {n} "
        f"rows (tolerance |ΔE| ≤ {tol:g}·max(1, |E|) k_BT); rows {rows}{more}. "
        f"Likely cause: {hint}"
    )


def _target_energy(target: Target, x: torch.Tensor) -> torch.Tensor:
    """The target's energy of every row with finite x (NaN elsewhere), float64 ``(n,)``."""
    finite = torch.isfinite(x).all(dim=-1)
    energy = torch.full((x.shape[0],), math.nan, dtype=torch.float64, device=x.device)
    rows = torch.nonzero(finite).reshape(-1)
    with torch.no_grad():
        for chunk in rows.split(BATCH):
            energy[chunk] = target.energy(x[chunk]).detach().to(torch.float64)
    return energy


def _tensor(reader: _Npz | _Zarr, key: str, n: int, device: torch.device) -> torch.Tensor:
    """The first ``n`` rows of array ``key`` as float64 on ``device``."""
    arr = reader.array(key)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ExternalSamplesError(
            f"{reader.path}: '{key}' must hold real numbers, got dtype {arr.dtype}"
        )
    return torch.as_tensor(np.asarray(arr[:n], dtype=np.float64), device=device)


def load_samples(
    path: str | Path,
    target: Target,
    n: int | None = None,
    tol: float = ENERGY_TOL,
    target_name: str = "the target",
) -> SampleSet:
    """The first ``n`` rows (all rows when None) of a sample file, checked against
    ``target`` (see the module docstring), as a float64 :class:`SampleSet`.

    ``energy`` is the target's own (NaN at rows with non-finite x); the file's
    energies, when given, are checked against it (:func:`check_energies`).
    ``target`` may be a counting target: its count is then what the check cost.
    ``attrs`` record the file (``external_path``, ``external_sha256``,
    ``external_format``, ``external_n_rows``), ``energy_checked``,
    ``n_nonfinite_rows`` (x or energy not finite), ``n_nonfinite_log_weight``
    (counted as zero weight by the metrics) and the declared costs as
    ``declared_<key>``.
    """
    info = inspect_file(path)
    n_rows = check_layout(info, int(target.dim), target_name)
    reader = _open(info.path)
    used = n_rows if n is None else min(n, n_rows)
    device = torch.empty(0).device  # the default device (a job's torch.device mode)
    x = _tensor(reader, "x", used, device)
    energy = _target_energy(target, x)
    given = {k: _tensor(reader, k, used, device) for k in ROW_KEYS[1:] if k in info.shapes}
    if "energy" in given:
        finite_x = torch.isfinite(x).all(dim=-1)
        where = f"{info.path} on {target_name}"
        check_energies(given["energy"], energy, where, tol, checked=finite_x)
    return SampleSet(
        x=x,
        energy=energy,
        log_weight=given.get("log_weight"),
        log_q=given.get("log_q"),
        attrs=_attrs(info, n_rows, energy, x, given),
    )


def _attrs(
    info: FileInfo, n_rows: int, energy: torch.Tensor, x: torch.Tensor, given: dict
) -> dict[str, Any]:
    """The sample set's record of its file, its checks and its declared costs."""
    invalid = ~(torch.isfinite(energy) & torch.isfinite(x).all(dim=-1))
    lw = given.get("log_weight")
    attrs = {
        "external_path": str(info.path),
        "external_sha256": hash_path(info.path),
        "external_format": info.format,
        "external_n_rows": int(n_rows),
        "energy_checked": int("energy" in given),
        "n_nonfinite_rows": int(invalid.sum()),
        "n_nonfinite_log_weight": 0 if lw is None else int((~torch.isfinite(lw)).sum()),
    }
    attrs.update({f"declared_{k}": v for k, v in info.declared.items()})
    if attrs["n_nonfinite_rows"] or attrs["n_nonfinite_log_weight"]:
        log.warning(
            "%s: %d of %d rows have non-finite x or energy (kept: the metrics count them as "
            "invalid), %d non-finite log weights (zero weight)",
            info.path,
            attrs["n_nonfinite_rows"],
            x.shape[0],
            attrs["n_nonfinite_log_weight"],
        )
    return attrs
