"""``boltzbench compare A B``: do two leaderboards agree within their seed spreads?

Where bitwise reproduction across machines is not possible (see
:mod:`boltzbench.reproducible`), the promise is statistical: a rerun elsewhere
lands within the seed spread. This module checks that promise, cell by cell, on
two ``leaderboard.csv`` files. A cell is one (target, method, metric); of each
file it reads only the triple ``<metric>_mean``, ``<metric>_std`` (sample std
over seeds) and ``<metric>_n`` (seeds where the metric was finite). With
Δ = mean_A − mean_B and the Welch standard error of the difference of two means

    SE = sqrt(std_A² / n_A + std_B² / n_B)

(Welch 1947, Biometrika 34:28) a cell is

``exact``
    equal as the leaderboard prints it: mean to 3 and std to 2 significant
    digits, the same n;
``n/a``
    otherwise, when either side has no spread (n < 2);
``agree`` / ``DISAGREE``
    |Δ| ≤ k·SE or not (k = 3 by default);
``one-sided``
    a mean on one side only (the metric was finite on no seed of the other).

With k = 3 and normal seed-to-seed scatter, two runs of the same distribution
disagree in a given cell with probability about 0.3 % (a little more with few
seeds, where the t distribution has heavier tails), so across hundreds of cells
a few isolated disagreements are expected.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Side", "Cell", "Comparison", "CompareError", "compare", "classify", "render"]

#: the leaderboard's printed precision (significant digits of mean and std)
MEAN_DIGITS, STD_DIGITS = 3, 2
#: status order in the printed table: problems first
ORDER = ("DISAGREE", "one-sided", "n/a", "agree", "exact")


class CompareError(ValueError):
    """Bad input: a missing or malformed file, or nothing to compare."""


@dataclass(frozen=True)
class Side:
    """One leaderboard's mean, sample std and seed count of a cell."""

    mean: float
    std: float
    n: int

    def printed(self) -> str:
        """The cell as the leaderboard prints it (n included)."""
        std = f" ± {self.std:.{STD_DIGITS}g}" if self.n >= 2 else ""
        return f"{self.mean:.{MEAN_DIGITS}g}{std} (n={self.n})"


@dataclass(frozen=True)
class Cell:
    """One (target, method, metric): both sides, the status and z = |Δ| / SE (nan if none)."""

    target: str
    method: str
    metric: str
    a: Side | None
    b: Side | None
    status: str
    z: float


@dataclass
class Comparison:
    """Every cell of the rows and metrics the two files share, and what only one has."""

    cells: list[Cell]
    rows_only: dict[str, list[str]] = field(default_factory=dict)
    metrics_only: dict[str, list[str]] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.cells)

    @property
    def exit_status(self) -> int:
        """0 when every comparable cell agrees, else 1."""
        return int(any(c.status in ("DISAGREE", "one-sided") for c in self.cells))


Board = dict[tuple[str, str], dict[str, Side | None]]


def _side(row: dict[str, str], metric: str) -> Side | None:
    """The cell's side, or None when its mean is empty or not finite."""

    def number(col: str) -> float:
        text = row.get(col, "").strip()
        return float(text) if text else math.nan

    mean, std, n = number(f"{metric}_mean"), number(f"{metric}_std"), number(f"{metric}_n")
    if not math.isfinite(mean):
        return None
    return Side(mean, std, 0 if math.isnan(n) else int(n))


def read_board(path: str | Path) -> tuple[Board, list[str]]:
    """``{(target, method): {metric: Side | None}}`` and the metrics of a leaderboard CSV."""
    path = Path(path)
    if not path.is_file():
        raise CompareError(f"no such file: {path}")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = set(rows[0]) if rows else set()
    metrics = sorted(
        c.removesuffix("_mean")
        for c in columns
        if c.endswith("_mean") and {c[:-5] + "_std", c[:-5] + "_n"} <= columns
    )
    if not {"target", "method"} <= columns or not metrics:
        raise CompareError(f"{path}: not a leaderboard (target, method, <metric>_mean/_std/_n)")
    board: Board = {}
    for row in rows:
        key = (row["target"], row["method"])
        if key in board:
            raise CompareError(f"{path}: row {key[0]}/{key[1]} appears twice")
        board[key] = {m: _side(row, m) for m in metrics}
    return board, metrics


def classify(a: Side | None, b: Side | None, sigma: float = 3.0) -> tuple[str, float]:
    """(status, z = |Δ| / SE) of one cell; see the module docstring.

    z is nan where SE is undefined (n < 2 on a side); both sides None gives ("", nan).
    """
    if a is None or b is None:
        return ("", math.nan) if a is b else ("one-sided", math.nan)
    diff, se = abs(a.mean - b.mean), _se(a, b)
    z = diff / se if se > 0 or math.isnan(se) else (0.0 if diff == 0 else math.inf)
    if a.printed() == b.printed():
        return "exact", z
    if math.isnan(se):
        return "n/a", math.nan
    return ("agree" if diff <= sigma * se else "DISAGREE"), z


def _se(a: Side, b: Side) -> float:
    """Welch's standard error of mean_A − mean_B; nan when a side has n < 2 or no std."""
    if min(a.n, b.n) < 2:
        return math.nan
    return math.sqrt(a.std**2 / a.n + b.std**2 / b.n)


def _only(a: Iterable, b: Iterable) -> list:
    return sorted(set(a) - set(b))


def compare(
    path_a: str | Path, path_b: str | Path, sigma: float = 3.0, metrics: list[str] | None = None
) -> Comparison:
    """Compare two leaderboard CSVs cell by cell (optionally only ``metrics``)."""
    if not sigma > 0:
        raise CompareError(f"sigma must be positive, got {sigma}")
    (board_a, metrics_a), (board_b, metrics_b) = read_board(path_a), read_board(path_b)
    common = [m for m in metrics_a if m in metrics_b]
    if metrics is not None:
        unknown = [m for m in metrics if m not in common]
        if unknown:
            raise CompareError(f"metric(s) not in both files: {', '.join(unknown)}")
        common = [m for m in common if m in metrics]
    rows = [k for k in board_a if k in board_b]
    if not rows or not common:
        raise CompareError(f"{path_a} and {path_b} share no (target, method) row or metric")
    cells = []
    for (target, method), metric in ((k, m) for k in rows for m in common):
        a, b = board_a[target, method][metric], board_b[target, method][metric]
        status, z = classify(a, b, sigma)
        if status:
            cells.append(Cell(target, method, metric, a, b, status, z))
    rows_only = {str(path_a): _only(board_a, board_b), str(path_b): _only(board_b, board_a)}
    metrics_only = {
        str(path_a): _only(metrics_a, metrics_b),
        str(path_b): _only(metrics_b, metrics_a),
    }
    return Comparison(
        cells,
        {p: [f"{t}/{m}" for t, m in keys] for p, keys in rows_only.items() if keys},
        {p: names for p, names in metrics_only.items() if names},
    )


def _table(cells: list[Cell]) -> list[str]:
    """Fixed-width lines: status, row, metric, both sides, |Δ| and z = |Δ|/SE."""
    head = ("status", "target/method", "metric", "A", "B", "|Δ|", "|Δ|/SE")
    rows = [head] + [
        (
            c.status,
            f"{c.target}/{c.method}",
            c.metric,
            c.a.printed() if c.a else "-",
            c.b.printed() if c.b else "-",
            f"{abs(c.a.mean - c.b.mean):.3g}" if c.a and c.b else "-",
            "-" if math.isnan(c.z) else f"{c.z:.2f}",
        )
        for c in cells
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render(result: Comparison, sigma: float = 3.0, brief: bool = False) -> list[str]:
    """The table (problems first, largest z first) and a summary."""
    cells = sorted(result.cells, key=lambda c: (ORDER.index(c.status), -_finite(c.z)))
    if brief:
        cells = [c for c in cells if c.status in ("DISAGREE", "one-sided")]
    lines = _table(cells) if cells else []
    counts = ", ".join(f"{result.count(s)} {s}" for s in reversed(ORDER))
    lines += ["", f"{len(result.cells)} cells: {counts} (agree: |Δ| ≤ {sigma:g}·SE)"]
    for path, rows in result.rows_only.items():
        lines.append(f"rows only in {path}: {', '.join(rows)}")
    for path, metrics in result.metrics_only.items():
        lines.append(f"metrics only in {path}: {', '.join(metrics)}")
    return lines


def _finite(z: float) -> float:
    return -1.0 if math.isnan(z) else z
