"""``boltzbench compare``: the Welch criterion, the statuses and the exit codes on
small hand-made leaderboards."""

from __future__ import annotations

import math

import pytest

from boltzbench.cli import main
from boltzbench.compare import Side, classify, compare, render

HEADER = (
    "target,method,n_seeds,w2_mean,w2_std,w2_n,w2_floor,"
    "log_z_error_mean,log_z_error_std,log_z_error_n"
)


def _board(path, rows: list[str], header: str = HEADER):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_welch_standard_error_of_the_issue_cell():
    """GMM-40 FAB W2 of issue 13: 3.78 ± 0.77 vs 3.88 ± 0.53, 5 seeds each.

    SE = sqrt((0.5929 + 0.2809) / 5) = sqrt(0.17476) = 0.418043; z = 0.1 / SE = 0.239210.
    """
    status, z = classify(Side(3.78, 0.77, 5), Side(3.88, 0.53, 5))
    assert status == "agree"
    assert z == pytest.approx(0.239210, rel=1e-5)


@pytest.mark.parametrize(("mean_b", "status"), [(12.99, "agree"), (13.01, "DISAGREE")])
def test_just_inside_and_just_outside_k_se(mean_b, status, tmp_path):
    """SE = sqrt(2² / 4 + 0² / 3) = 1 exactly, so k·SE = 3: |Δ| = 2.99 agrees, 3.01 does not."""
    a = _board(tmp_path / "a.csv", ["gmm40,fab,4,10,2,4,,0.5,0.1,4"])
    b = _board(tmp_path / "b.csv", [f"gmm40,fab,3,{mean_b},0,3,,0.5,0.1,3"])
    result = compare(a, b, sigma=3.0, metrics=["w2"])
    (cell,) = result.cells
    assert (cell.target, cell.method, cell.metric, cell.status) == ("gmm40", "fab", "w2", status)
    assert cell.z == pytest.approx(abs(mean_b - 10), rel=1e-12)
    assert result.exit_status == (status == "DISAGREE")
    # the printed row leads with the status and reports z to two decimals
    row = render(result)[1]
    assert row.startswith(status) and row.endswith(f"{abs(mean_b - 10):.2f}")


@pytest.mark.parametrize(
    ("a", "b", "status"),
    [
        (Side(3.781, 0.77, 5), Side(3.779, 0.771, 5), "exact"),  # "3.78 ± 0.77" both
        (Side(3.786, 0.77, 5), Side(3.774, 0.77, 5), "agree"),  # 3.79 vs 3.77
        (Side(3.781, 0.77, 5), Side(3.779, 0.77, 4), "agree"),  # same print, other n
        (Side(3.0, 0.0, 1), Side(5.0, 0.5, 5), "n/a"),  # no spread on A
        (Side(3.0, 0.0, 1), Side(3.0, 0.0, 1), "exact"),  # one seed each, same value
        (Side(2.0, 0.0, 3), Side(2.5, 0.0, 3), "DISAGREE"),  # no spread, different means
        (Side(2.0, 0.1, 3), None, "one-sided"),
        (None, None, ""),
    ],
)
def test_statuses(a, b, status):
    assert classify(a, b)[0] == status


def test_sigma_changes_the_verdict():
    """|Δ| = 1, SE = sqrt(0.5² / 2 + 0.5² / 2) = 0.5: z = 2 agrees at k = 3, not at k = 1.5."""
    a, b = Side(1.0, 0.5, 2), Side(2.0, 0.5, 2)
    assert classify(a, b, 3.0) == ("agree", pytest.approx(2.0))
    assert classify(a, b, 1.5)[0] == "DISAGREE"


def test_rows_metrics_and_exit_codes(tmp_path, capsys):
    """Problems are listed first; rows and metrics of one file only are named."""
    a = _board(
        tmp_path / "a.csv",
        ["gmm40,fab,5,3.78,0.77,5,1.0,0.019,0.01,5,0.5,0.1,5", "gmm40,mle,5,4.21,1.0,5,1.0,,,0,,,"],
        header=HEADER + ",ess_mean,ess_std,ess_n",
    )
    b = _board(
        tmp_path / "b.csv",
        [
            "gmm40,fab,5,3.88,0.53,5,1.0,0.011,0.002,5",
            "gmm40,mle,5,3.43,0.37,5,1.0,0.2,0.1,5",
            "manywell,flow,5,1,0.1,5,1.0,0.024,0.01,5",
        ],
    )
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("one-sided") and "gmm40/mle" in out[1]  # log Z only in B
    assert f"rows only in {b}: manywell/flow" in out
    assert f"metrics only in {a}: ess" in out
    # 0.019 vs 0.011: SE = sqrt((1e-4 + 4e-6) / 5) = 0.004561, z = 1.754 → agree;
    # MLE W2 4.21 ± 1 vs 3.43 ± 0.37: SE = sqrt((1 + 0.1369) / 5) = 0.47683, z = 1.636
    summary = next(line for line in out if line.startswith("4 cells"))
    assert "0 exact, 3 agree, 0 n/a, 1 one-sided, 0 DISAGREE" in summary
    assert main(["compare", str(a), str(b), "--metrics", "w2"]) == 0
    assert main(["compare", str(a), str(b), "--metrics", "w2", "--sigma", "1.5"]) == 1


@pytest.mark.parametrize(
    "case", ["missing file", "no common rows", "not a leaderboard", "unknown metric", "sigma"]
)
def test_bad_input_exits_2(case, tmp_path, capsys):
    a = _board(tmp_path / "a.csv", ["gmm40,fab,5,3.78,0.77,5,,0.019,0.01,5"])
    b = _board(tmp_path / "b.csv", ["gmm40,fab,5,3.88,0.53,5,,0.011,0.002,5"])
    args = {
        "missing file": [str(a), str(tmp_path / "none.csv")],
        "no common rows": [str(a), str(_board(tmp_path / "c.csv", ["mw,smc,5,1,1,5,,1,1,5"]))],
        "not a leaderboard": [str(a), str(_board(tmp_path / "d.csv", ["1,2"], "x,y"))],
        "unknown metric": [str(a), str(b), "--metrics", "w2,mmd"],
        "sigma": [str(a), str(b), "--sigma", "0"],
    }[case]
    assert main(["compare", *args]) == 2
    assert capsys.readouterr().err.startswith("boltzbench compare:")


def test_identical_boards_are_exact(tmp_path, capsys):
    a = _board(tmp_path / "a.csv", ["gmm40,fab,5,3.78,0.77,5,,0.019,0.01,5"])
    assert main(["compare", str(a), str(a), "--brief"]) == 0
    out = capsys.readouterr().out
    assert "2 cells: 2 exact, 0 agree" in out and "status" not in out  # no table: no problem
    assert math.isnan(classify(Side(1.0, 0.0, 1), Side(1.0, 0.0, 1))[1])
