"""``boltzbench status``: which results are stale after a config or code change, and why.

A thin wrapper around Snakemake's dry run: ``snakemake --dry-run ARGS`` (ARGS
pass through unchanged: ``--configfile``, ``--directory``, ``-s`` …), whose
``reason:`` of every planned job is rewritten as a readable cause:

* *params changed*: each changed value of the job's params, as a dotted key
  (``params.n_burnin: 20 → 21``). Snakemake records params as bare values, so
  a key is the path inside a changed value (a method's or target's spec, the
  resolved config), not the param's name;
* *code changed*: a changed 64-hex param is the rule's ``source`` param, the
  hash of the boltzbench modules its step imports (``workflow/rules/common.smk``),
  so an edit of ``src/boltzbench`` shows up in Snakemake as a params change;
* *upstream job reruns*, *missing*, *input newer than output* …

A job that reruns because an upstream job does is reported with that cause
only: Snakemake checks its params only when nothing upstream has changed.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StaleJob", "stale_jobs", "parse_dry_run", "explain", "explain_params", "status"]

#: the longest a dry run may take before `boltzbench status` gives up
DRY_RUN_TIMEOUT_S = 900

#: Snakemake's reason clauses (snakemake.jobs.Reason.__str__) and what boltzbench prints
CLAUSES = {
    "Missing output files": "missing",
    "Incomplete output files": "incomplete (its job was killed)",
    "Updated input files": "input newer than the output",
    "Input files updated by another job": "upstream job reruns",
    "Set of input files has changed since last execution": "the set of input files changed",
    "Code has changed since last execution": "rule code changed",
    "Params have changed since last execution": "params changed",
    "Software environment definition has changed since last execution": "software env changed",
    "Forced execution": "forced",
}
_SPLIT = re.compile("; (?=" + "|".join(map(re.escape, CLAUSES)) + ")")
_PARAMS = re.compile(r"before: (?P<before>.*?) now: (?P<now>.*)$")
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass
class StaleJob:
    """One job a dry run plans: its rule, wildcards, outputs and explained reasons."""

    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def parse_dry_run(text: str) -> list[StaleJob]:
    """The jobs of ``snakemake --dry-run`` output (``rule X:`` blocks)."""
    jobs: list[StaleJob] = []
    for line in text.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            jobs.append(StaleJob(m.group(1)))
        elif jobs and (m := re.match(r"^\s+(output|wildcards|reason): (.*)$", line)):
            key, value = m.groups()
            if key == "output":
                jobs[-1].outputs = value.split(", ")
            elif key == "wildcards":
                jobs[-1].wildcards = dict(kv.split("=", 1) for kv in value.split(", "))
            else:
                jobs[-1].reasons = explain(value)
    return jobs


def explain(reason: str) -> list[str]:
    """Snakemake's ``reason:`` text as one readable line per cause."""
    lines = []
    for clause in _SPLIT.split(reason.strip()):
        head, _, rest = clause.partition(":")
        name = CLAUSES.get(head.strip())
        if name == "params changed":
            lines += _explain_params_clause(rest)
        elif name:
            lines.append(f"{name}: {rest.strip()}" if rest.strip() else name)
        else:
            lines.append(clause)
    return lines


def _explain_params_clause(text: str) -> list[str]:
    m = _PARAMS.search(text)
    if not m:
        return [f"params changed: {text.strip()}"]
    return explain_params(_literals(m["before"]), _literals(m["now"]))


def _literals(text: str) -> list[Any]:
    """Snakemake's comma-joined param reprs, parsed back (unparseable text kept as is)."""
    text = text.strip()
    if text == "<nothing exclusive>":
        return []
    out, start = [], 0
    for end in [i for i, ch in enumerate(text) if ch == ","] + [len(text)]:
        try:
            out.append(ast.literal_eval(text[start:end].strip()))
            start = end + 1
        except (ValueError, SyntaxError):
            continue
    return out + ([text[start:]] if start < len(text) else [])


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and bool(_HASH.fullmatch(value))


def explain_params(before: list[Any], now: list[Any]) -> list[str]:
    """Readable changes between the params values only before and only now."""
    lines = []
    old_code, new_code = [v for v in before if _is_hash(v)], [v for v in now if _is_hash(v)]
    if old_code or new_code:
        lines.append(
            "code changed: param `source`, the hash of the boltzbench modules the step "
            f"imports, {_abbrev(old_code)} → {_abbrev(new_code)}"
        )
    old = [v for v in before if not _is_hash(v)]
    new = [v for v in now if not _is_hash(v)]
    for a, b in _pairs(old, new):
        lines += [f"params changed: {d}" for d in _diff(a, b)]
    return lines


def _abbrev(hashes: list[str]) -> str:
    return ", ".join(h[:12] for h in hashes) or "none"


_MISSING = object()


def _pairs(old: list[Any], new: list[Any]) -> list[tuple[Any, Any]]:
    """Old and new values paired: dicts by the most shared keys, others by type, in order."""
    pairs, new = [], list(new)
    for a in old:
        same = [b for b in new if type(b) is type(a)]
        if isinstance(a, dict) and same:
            same.sort(key=lambda b: -len(set(a) & set(b)))
        b = same[0] if same else _MISSING
        if same:
            new.remove(b)
        pairs.append((a, b))
    return pairs + [(_MISSING, b) for b in new]


def _diff(a: Any, b: Any, key: str = "") -> list[str]:
    """``key: old → new`` for every leaf that differs between ``a`` and ``b``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b), key=str)
            for d in _diff(a.get(k, _MISSING), b.get(k, _MISSING), f"{key}.{k}" if key else k)
        ]
    if a == b:
        return []
    show = lambda v: "(absent)" if v is _MISSING else repr(v)  # noqa: E731
    return [f"{key or 'value'}: {show(a)} → {show(b)}"]


def stale_jobs(snakemake_args: list[str]) -> list[StaleJob]:
    """The jobs ``snakemake --dry-run ARGS`` plans (rules without outputs left out)."""
    cmd = [sys.executable, "-m", "snakemake", "--dry-run", *snakemake_args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=DRY_RUN_TIMEOUT_S)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    return [job for job in parse_dry_run(out.stdout + out.stderr) if job.outputs]


def format_job(job: StaleJob) -> list[str]:
    wildcards = ", ".join(f"{k}={v}" for k, v in job.wildcards.items())
    lines = [f"rule {job.rule}" + (f" [{wildcards}]" if wildcards else "")]
    lines += [f"    output {o}" for o in job.outputs]
    return lines + [f"    why: {r}" for r in job.reasons]


def status(snakemake_args: list[str]) -> int:
    """Print every stale output and why; the exit status is Snakemake's (0 if it ran)."""
    try:
        jobs = stale_jobs(snakemake_args)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    if not jobs:
        print("boltzbench status: every output is up to date (nothing to run)")
        return 0
    n = sum(len(j.outputs) for j in jobs)
    print(f"boltzbench status: {len(jobs)} jobs would rerun, {n} outputs are stale:")
    for job in jobs:
        print("\n".join(format_job(job)))
    return 0
