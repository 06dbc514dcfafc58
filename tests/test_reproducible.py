"""The reproducible mode and the provenance that records what decides rounding.

The cross-machine effect of issue 13 is reproduced on one machine: the same
flow training under ATen's AVX2 kernels and under its portable ones
(``ATEN_CPU_CAPABILITY``) is what two CPUs of different instruction sets run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from boltzbench import reproducible as rep
from boltzbench.provenance import machine_info, provenance_attrs

REPO = Path(__file__).resolve().parent.parent

#: train a tiny reverse-KL flow in a fresh process; save its parameters, print what ran
WORKER = textwrap.dedent(
    """
    import ctypes, json, os, sys, torch
    torch.set_num_threads(1)
    from boltzbench.methods.flow import FlowMethod
    from boltzbench.reproducible import apply_torch, deterministic_state
    from boltzbench.targets.analytic import ManyWell
    apply_torch()
    method = FlowMethod(mode="reverse_kl", **FlowMethod.fast_params)
    method.fit(ManyWell(8), None, torch.Generator().manual_seed(0))
    flat = torch.cat([v.flatten().double() for v in method.model_state().values()])
    torch.save(flat, sys.argv[1])
    try:  # MKL's CNR branch: 1 off, 2 AUTO, 3 COMPATIBLE
        lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
        branch = ctypes.CDLL(lib).mkl_serv_cbwr_get(1)
    except (OSError, AttributeError):
        branch = None
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                      "mkl_cbwr_branch": branch, "deterministic": deterministic_state()}))
    """
)


def _clean_env() -> dict[str, str]:
    """This environment without the mode's variables, one thread, this checkout's src/."""
    env = {k: v for k, v in os.environ.items() if k not in rep.RECORDED}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def _train(path: Path, extra: dict[str, str]) -> tuple[dict, torch.Tensor]:
    env = _clean_env() | extra
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), torch.load(path)


def _differ(a: torch.Tensor, b: torch.Tensor) -> str:
    if torch.equal(a, b):
        return "bit-identical"
    return f"differ: max |Δθ| = {(a - b).abs().max().item():.3g} over {a.numel()} values"


@pytest.mark.slow
def test_mode_pins_kernels_and_reruns_bitwise(tmp_path):
    """Two runs in the mode are bit-identical, on ATen's DEFAULT kernels and MKL's
    COMPATIBLE branch; AVX2 vs DEFAULT kernels (two machines) are printed, not
    asserted: whether they differ depends on the torch build."""
    mode = rep.mode_environment(_clean_env())
    runs = {
        "avx2": _train(tmp_path / "avx2.pt", {"ATEN_CPU_CAPABILITY": "avx2"}),
        "default": _train(tmp_path / "default.pt", {"ATEN_CPU_CAPABILITY": "default"}),
        "mode 1": _train(tmp_path / "mode1.pt", mode),
        "mode 2": _train(tmp_path / "mode2.pt", mode),
    }
    for name, (info, _) in runs.items():
        print(f"{name}: {info}")
    for name in ("default", "mode 1", "mode 2"):
        assert runs[name][0]["capability"] == "DEFAULT"
    for name in ("mode 1", "mode 2"):
        assert runs[name][0]["deterministic"] == "warn_only"
        assert runs[name][0]["mkl_cbwr_branch"] in (None, 3)  # 3: COMPATIBLE, where MKL is
    assert runs["default"][0]["deterministic"] == "false"
    assert torch.equal(runs["mode 1"][1], runs["mode 2"][1])
    assert torch.isfinite(runs["mode 1"][1]).all()
    print("mode rerun:", _differ(runs["mode 1"][1], runs["mode 2"][1]))
    print("mode vs default kernels alone:", _differ(runs["mode 1"][1], runs["default"][1]))
    if runs["avx2"][0]["capability"] == "AVX2":
        print("AVX2 vs DEFAULT kernels:", _differ(runs["avx2"][1], runs["default"][1]))
    else:
        print("no AVX2 on this CPU: ATen ran", runs["avx2"][0]["capability"])


@pytest.mark.slow
def test_snakefile_applies_the_mode_before_torch(tmp_path):
    """``--config reproducible=true``: the Snakemake process (whose jobs inherit its
    environment) has the mode's variables, and the torch it imports runs DEFAULT kernels."""
    probe = (
        "import atexit, os, sys\n"
        "def show():\n"
        "    import torch\n"
        "    env = {k: os.environ.get(k) for k in ('ATEN_CPU_CAPABILITY', 'MKL_CBWR', "
        f"'{rep.MARKER}')}}\n"
        "    print('PROBE', env, torch.backends.cpu.get_cpu_capability())\n"
        "atexit.register(show)\n"
        "from snakemake.cli import main; sys.exit(main())\n"
    )
    cmd = [sys.executable, "-c", probe, "-n", "-s", str(REPO / "Snakefile")]
    cmd += ["--configfile", str(REPO / "tests/configs/micro.yaml"), "--cores", "1"]
    cmd += ["--directory", str(tmp_path), "--config", "reproducible=true"]
    out = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PROBE")), None)
    assert line is not None, out.stdout[-2000:] + out.stderr[-2000:]
    expected = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", rep.MARKER: "1"}
    assert line == f"PROBE {expected} DEFAULT"


def test_mode_environment_merges_glibc_tunables():
    env = rep.mode_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.cpu.hwcaps=-AVX"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.cpu.hwcaps=-FMA,-FMA4"
    assert rep.mode_environment({})["GLIBC_TUNABLES"] == "glibc.cpu.hwcaps=-FMA,-FMA4"
    target: dict[str, str] = {"MKL_CBWR": "AUTO", "HOME": "/h"}
    rep.apply_env(target)
    assert target["MKL_CBWR"] == "COMPATIBLE" and target["ATEN_CPU_CAPABILITY"] == "default"
    assert target["HOME"] == "/h" and rep.active(target) and not rep.active({})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [({"reproducible": True}, True), ({"reproducible": "yes"}, True), ({}, False)]
    + [({"reproducible": False}, False), ({"reproducible": "maybe"}, False)],
)
def test_requested_reads_the_raw_config_as_pydantic_does(raw, expected):
    assert rep.requested(raw) is expected


@pytest.fixture
def _restore_determinism():
    state = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(state, warn_only=warn)


def test_apply_torch_only_in_the_mode(monkeypatch, _restore_determinism):
    monkeypatch.delenv(rep.MARKER, raising=False)
    torch.use_deterministic_algorithms(False)
    assert rep.apply_torch() is False and rep.deterministic_state() == "false"
    monkeypatch.setenv(rep.MARKER, "1")
    other_kernels = torch.backends.cpu.get_cpu_capability() != "DEFAULT"  # not in the mode
    with pytest.warns(UserWarning, match="not DEFAULT") if other_kernels else nullcontext():
        assert rep.apply_torch() is True
    assert rep.deterministic_state() == "warn_only"


def test_provenance_records_what_decides_rounding(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("UNRELATED_VARIABLE", "x")
    attrs = provenance_attrs("train", {"a": 1}, 0)
    assert attrs["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert attrs["num_threads"] == str(torch.get_num_threads())
    env = json.loads(attrs["reproducibility_env"])
    assert env["MKL_CBWR"] == "COMPATIBLE" and "ATEN_CPU_CAPABILITY" not in env
    assert "UNRELATED_VARIABLE" not in env and env["deterministic_algorithms"] in (
        "true",
        "warn_only",
        "false",
    )
    if torch.backends.mkl.is_available():
        assert attrs["blas"].startswith("mkl 20")
    assert attrs["cpu_model"].endswith(")") and attrs["libc"]
    assert all(isinstance(attrs[k], str) for k in (*machine_info(), "num_threads"))


def test_audit_shows_the_cpu_capability(tmp_path):
    from boltzbench.audit import audit, render
    from boltzbench.io import write_json

    attrs = provenance_attrs("evaluate", {"n_eval": 10}, 0)
    path = write_json({"metrics": {"w2": 0.5}}, tmp_path / "m.json", attrs)
    lines = list(render(audit(path)[1]))
    info = machine_info()
    expected = f"cpu {info['cpu_model']} · ATen {info['torch_cpu_capability']} · {info['blas']}"
    assert any(line.strip().startswith(expected) for line in lines), lines
