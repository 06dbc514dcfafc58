"""The ``boltzbench`` command line.

``boltzbench list``              the registered targets, methods and metrics
``boltzbench validate CONFIG``   validate a config file (as the workflow does)
``boltzbench schema [--write]``  print (or write) the config JSON schema
``boltzbench run [ARGS...]``     run the pipeline: ``snakemake --cores all ARGS``
``boltzbench audit PATH [--row TARGET/METHOD] [--directory DIR]``
                                 print and verify the provenance chain of an artifact,
                                 or of an unpacked export (its directory): every file
                                 against its manifest, then the chains (exit status 1
                                 if any recorded hash does not match)
``boltzbench export RESULTS OUT``
                                 write one archive (OUT: .tar, .tar.gz, .tgz, .tar.xz)
                                 of the run in RESULTS: leaderboard, metrics, sample
                                 sets, models, references, resolved config, figures,
                                 provenance, and MANIFEST.json with every file's sha256
``boltzbench status [ARGS...]``  which outputs are stale and why (a Snakemake dry run
                                 with ARGS, e.g. --configfile C --directory D)
``boltzbench score --config CONFIG --target NAME FILE [--seed S] [--name M]``
                                 score a file of samples made elsewhere (.npz or Zarr,
                                 see boltzbench.external) on a target, beside the
                                 noise floor (exit status 2 for bad input)
``boltzbench compare A B [--sigma K] [--metrics M1,M2] [--brief]``
                                 do two leaderboard.csv files agree within their seed
                                 spreads, cell by cell (|Δ mean| ≤ K·SE, Welch SE; exit
                                 status 0 if every comparable cell agrees, 1 if not,
                                 2 for bad input)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

__all__ = ["main", "SCHEMA_PATH"]

SCHEMA_PATH = Path("workflow/schemas/config.schema.json")


def _list(_: argparse.Namespace) -> int:
    from boltzbench.methods import METHODS
    from boltzbench.metrics import METRICS
    from boltzbench.targets import TARGETS

    for registry in (TARGETS, METHODS, METRICS):
        print(f"{registry.kind}s: {', '.join(registry.names())}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from boltzbench.config import ConfigError, validate_config

    try:
        cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    print(
        f"{args.config}: valid ({len(cfg.targets)} targets, {len(cfg.methods)} methods, "
        f"{len(cfg.seeds)} seeds)"
    )
    return 0


def schema_text() -> str:
    from boltzbench.config import config_schema

    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"


def _schema(args: argparse.Namespace) -> int:
    if args.write:
        SCHEMA_PATH.write_text(schema_text())
        print(f"wrote {SCHEMA_PATH}")
    else:
        print(schema_text(), end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    return subprocess.call(["snakemake", "--cores", "all", *args.snakemake_args])


def _audit(args: argparse.Namespace) -> int:
    from boltzbench.audit import audit, problems, render

    try:
        auditor, root = audit(args.path, args.row, args.directory)
    except (ValueError, FileNotFoundError) as err:
        print(f"boltzbench audit: {err}", file=sys.stderr)
        return 2
    print("\n".join(render(root)))
    bad = problems(auditor)
    n = sum(node.sha256 is not None for node in auditor.nodes.values())
    if not bad:
        print(f"\naudit: {n} files, every recorded hash verified")
        return 0
    print(f"\naudit: {n} files, {len(bad)} problem(s):")
    print("\n".join(f"  {line}" for line in bad))
    return 1


def _export(args: argparse.Namespace) -> int:
    from boltzbench.export import ExportError, export
    from boltzbench.hashing import hash_path

    try:
        out, n = export(args.results, args.out)
    except (ExportError, FileNotFoundError) as err:
        print(f"boltzbench export: {err}", file=sys.stderr)
        return 2
    size = out.stat().st_size / 2**20
    print(f"wrote {out}: {n} files, {size:.1f} MiB, sha256 {hash_path(out)}")
    print(f"to verify it: mkdir run && tar -xf {out} -C run && boltzbench audit run")
    return 0


def _status(args: argparse.Namespace) -> int:
    from boltzbench.status import status

    return status(args.snakemake_args)


def _compare(args: argparse.Namespace) -> int:
    from boltzbench.compare import CompareError, compare, render

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        result = compare(args.a, args.b, args.sigma, metrics)
    except CompareError as err:
        print(f"boltzbench compare: {err}", file=sys.stderr)
        return 2
    print("\n".join(render(result, args.sigma, args.brief)))
    return result.exit_status


def _score(args: argparse.Namespace) -> int:
    from boltzbench.config import ConfigError, validate_config
    from boltzbench.external import ExternalSamplesError
    from boltzbench.steps.score import ScoreError, score_file

    try:
        cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
        report = score_file(cfg, args.target, args.file, args.seed, args.name)
    except (ConfigError, ExternalSamplesError, ScoreError, OSError) as err:
        print(f"boltzbench score: {err}", file=sys.stderr)
        return 2
    print("\n".join(render_score(report)))
    return 0


#: metrics of a score report shown only as counts in its header, not in its table
_SCORE_HIDDEN = ("n_eval_samples", "n_eval_reference")


def _number(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _score_header(report) -> list[str]:
    """The file, its rows and checks, its declared costs and the reference used."""
    from boltzbench.external import ENERGY_TOL

    a = report.attrs
    declared = {k.removeprefix("declared_"): v for k, v in a.items() if k.startswith("declared_")}
    lw = a.get("n_nonfinite_log_weight", 0)
    energies = (
        f"checked against the target's (|ΔE| ≤ {ENERGY_TOL:g}·max(1, |E|) k_BT): they agree"
        if a.get("energy_checked")
        else "none in the file (the target's own are used)"
    )
    return [
        f"boltzbench score: {report.path} on target {report.target!r} (seed {report.seed})",
        f"  file: {a['external_format']}, sha256 {a['external_sha256']}",
        f"  rows: {a['external_n_rows']} in the file, the first {report.n_rows} scored "
        f"(sampling.n_samples = {report.n_samples})",
        f"  non-finite rows: {a['n_nonfinite_rows']} (kept: the metrics count them as invalid)"
        + (f"; non-finite log weights: {lw} (zero weight)" if lw else ""),
        f"  energies: {energies}",
        "  declared costs (not counted by boltzbench): "
        + (", ".join(f"{k} {v}" for k, v in declared.items()) or "none"),
        f"  reference: {report.reference}; N_eval = {report.n_eval}; noise floor: "
        f"{report.replicates} perfect samplers of {report.n_samples} rows",
    ]


def render_score(report) -> list[str]:
    """A score report as text: its header, then metric, value, floor and reading."""
    from boltzbench.report import verdict

    rows = [("metric", "value", "noise floor (mean ± std, n)", "reading")]
    for name, value in report.metrics.items():
        if name in _SCORE_HIDDEN:
            continue
        f = report.floor.get(name)
        floor = "-" if f is None else f"{f.mean:.4g} ± {f.std:.2g} ({f.n})"
        reading = "" if f is None else verdict(f.excess_sigma(value))
        rows.append((name, _number(value), floor, reading))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3] for r in rows]
    return [*_score_header(report), "", *(line.rstrip() for line in table)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="boltzbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list registered targets, methods and metrics").set_defaults(
        func=_list
    )
    p = sub.add_parser("validate", help="validate a config file")
    p.add_argument("config")
    p.set_defaults(func=_validate)
    p = sub.add_parser("schema", help="print or write the config JSON schema")
    p.add_argument("--write", action="store_true", help=f"write {SCHEMA_PATH}")
    p.set_defaults(func=_schema)
    p = sub.add_parser("run", help="run the pipeline with snakemake --cores all")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_run)
    p = sub.add_parser("audit", help="print and verify the provenance chain of an artifact")
    p.add_argument(
        "path",
        help="a store, metrics/JSON file, figure or leaderboard file, or an unpacked export",
    )
    p.add_argument("--row", help="with a leaderboard: only the row TARGET/METHOD (every seed)")
    p.add_argument(
        "--directory", help="the workflow's working directory (default: found from PATH)"
    )
    p.set_defaults(func=_audit)
    p = sub.add_parser("export", help="write one archive of a run, with a manifest of sha256")
    p.add_argument("results", help="the run's results directory (with leaderboard.provenance.json)")
    p.add_argument("out", help="the archive to write: .tar, .tar.gz, .tgz or .tar.xz")
    p.set_defaults(func=_export)
    p = sub.add_parser("status", help="which outputs are stale and why (snakemake dry run)")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_status)
    p = sub.add_parser("score", help="score a file of samples made elsewhere beside the floor")
    p.add_argument("file", help="an .npz file or a Zarr store (see boltzbench.external)")
    p.add_argument("--config", required=True, help="the config naming the target")
    p.add_argument("--target", required=True, help="the target's name in the config")
    p.add_argument("--seed", type=int, help="the seed of the reference rows and floor")
    p.add_argument(
        "--name",
        default="external",
        help="the method name that seeds the draw of rows scored (a pipeline method's name "
        "reproduces its metrics)",
    )
    p.set_defaults(func=_score)
    p = sub.add_parser("compare", help="do two leaderboards agree within their seed spreads")
    p.add_argument("a", help="leaderboard.csv of one run")
    p.add_argument("b", help="leaderboard.csv of the other run")
    p.add_argument(
        "--sigma", type=float, default=3.0, help="agree when |Δ mean| ≤ SIGMA·SE (default 3)"
    )
    p.add_argument("--metrics", help="only these metrics, comma-separated (e.g. w2,log_z_error)")
    p.add_argument("--brief", action="store_true", help="list only the cells that do not agree")
    p.set_defaults(func=_compare)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not hasattr(args, "snakemake_args"):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:  # REMAINDER takes no leading option: `status -s Snakefile ...`
        args.snakemake_args = unknown + args.snakemake_args
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
