"""``boltzbench status`` (stale outputs and why) and ``snakemake --report``.

The pipeline tests use the micro run of tests/test_audit.py (one run per session).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml

from boltzbench.cli import main
from boltzbench.status import explain, parse_dry_run

REPO = Path(__file__).resolve().parent.parent
MICRO = REPO / "tests/configs/micro.yaml"
CODE = "code changed: param `source`, the hash of the boltzbench modules the step imports"


def test_explain_names_changed_keys_code_and_upstream():
    before = "'" + "a" * 64 + "',300,{'kind': 'mala', 'params': {'n_burnin': 20, 'x': 'u, v'}}"
    now = "'" + "b" * 64 + "',301,{'kind': 'mala', 'params': {'n_burnin': 21, 'x': 'u, v'}}"
    reason = (
        "Params have changed since last execution: Union of exclusive params before and now "
        f"across all output: before: {before} now: {now} ; "
        "Input files updated by another job: results/a.zarr, results/b.zarr"
    )
    assert explain(reason) == [
        f"{CODE}, aaaaaaaaaaaa → bbbbbbbbbbbb",
        "params changed: value: 300 → 301",
        "params changed: params.n_burnin: 20 → 21",
        "upstream job reruns: results/a.zarr, results/b.zarr",
    ]
    assert explain("Missing output files: results/x.json") == ["missing: results/x.json"]


def test_parse_dry_run_blocks():
    text = """
[Tue Nov 24 20:53:30 2026]
rule evaluate:
    input: results/g/mala/seed0/samples.zarr
    output: results/g/mala/seed0/metrics.json
    jobid: 2
    reason: Missing output files: results/g/mala/seed0/metrics.json
    wildcards: target=g, method=mala, seed=0
localrule all:
    input: results/leaderboard.csv
    reason: Input files updated by another job: results/leaderboard.csv
"""
    evaluate, everything = parse_dry_run(text)
    assert evaluate.rule == "evaluate" and evaluate.wildcards == {
        "target": "g",
        "method": "mala",
        "seed": "0",
    }
    assert evaluate.outputs == ["results/g/mala/seed0/metrics.json"]
    assert evaluate.reasons == ["missing: results/g/mala/seed0/metrics.json"]
    assert everything.rule == "all" and everything.outputs == []


# -- a real run ---------------------------------------------------------------


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from test_audit import micro_run

    return micro_run(tmp_path_factory)


def status_of(micro: Path, config: Path, capsys) -> tuple[int, str]:
    args = ["-s", str(REPO / "Snakefile"), "--directory", str(micro), "--configfile", str(config)]
    code = main(["status", *args])
    return code, capsys.readouterr().out


def jobs_of(out: str) -> list[tuple[str, str, list[str]]]:
    """(rule, wildcards, why lines) of each job ``boltzbench status`` printed."""
    jobs = []
    for line in out.splitlines():
        if m := re.match(r"^rule (\w+)(?: \[(.*)\])?$", line):
            jobs.append((m[1], m[2] or "", []))
        elif line.startswith("    why: "):
            jobs[-1][2].append(line.removeprefix("    why: "))
    return jobs


@pytest.mark.pipeline
def test_status_of_an_unchanged_run(micro, capsys):
    code, out = status_of(micro, MICRO, capsys)
    assert code == 0 and "every output is up to date" in out, out


@pytest.mark.pipeline
def test_status_after_a_config_change_reports_exactly_the_dependent_chain(micro, capsys, tmp_path):
    cfg = yaml.safe_load(MICRO.read_text())
    cfg["methods"]["mala"]["params"]["n_burnin"] = 6
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    code, out = status_of(micro, changed, capsys)
    assert code == 0, out
    jobs = {(rule, wc): why for rule, wc, why in jobs_of(out)}
    chain = "target=gauss, method=mala, seed=0"
    expected = {("train", chain), ("sample", chain), ("evaluate", chain)}
    assert set(jobs) == expected | {("aggregate", ""), ("figures", "")}, out
    assert jobs[("train", chain)] == ["params changed: params.n_burnin: 5 → 6"]
    assert jobs[("sample", chain)] == ["upstream job reruns: results/gauss/mala/seed0/model.zarr"]
    assert "10 outputs are stale" in out  # 1 + 1 + 1 + 2 figures + 5 of aggregate


@pytest.mark.pipeline
def test_report_has_leaderboard_figures_runtimes_and_config(micro):
    from test_pipeline import snakemake

    snakemake(micro, MICRO, "--report", str(micro / "report.html"))
    html = (micro / "report.html").read_text()
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html)[1])
    files = {f for cat in categories.values() for sub in cat.values() for f in sub}
    assert {
        "results/leaderboard.csv",
        "results/leaderboard.html",
        "results/config.resolved.yaml",
        "results/figures/gauss_samples.png",
        "results/figures/training_curves.png",
    } <= files, categories
    assert "Runtimes of jobs." in html and '"rule": "train", "runtime"' in html
    uri = re.search(r"filename=config\.resolved\.yaml;base64,([A-Za-z0-9+/=]+)", html)[1]
    resolved = yaml.safe_load(base64.b64decode(uri))
    assert resolved["methods"]["mala"]["params"]["n_burnin"] == 5
    assert resolved["checkpoint"] and resolved["results_dir"] == "results"  # defaults filled in
