"""Every method runs on every molecular and physical target (conformance).

Each method, with its fast settings, fits (a maximum-likelihood flow on
points near the target's base location, standing in for reference data) and
draws 64 samples of DW-4, LJ-13, φ⁴ and alanine dipeptide in internal
coordinates: :func:`boltzbench.testing.check_method`'s ``samples`` check (shapes
and dtypes, the energies it reports are the target's own at its samples, every
evaluation is counted).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from helpers import sampling_methods, typical_points

from boltzbench.methods import METHODS
from boltzbench.targets import build_target
from boltzbench.testing import check_method

NEW_TARGETS = {
    "dw4": {"kind": "dw4"},
    "lj13": {"kind": "lj", "params": {"n_particles": 13}},
    "phi4": {"kind": "phi4"},
    "aldp": {"kind": "aldp", "params": {"solvent": "vacuum", "coordinates": "internal"}},
}
#: small steps where the base location is a sharp minimum
STEP = {"dw4": 0.1, "lj13": 0.01, "phi4": 0.1, "aldp": 0.002}


#: constructor parameters that set a length scale (of steps, starts or bases)
SCALES = ("step_size", "init_scale", "base_scale", "sigma")


def _method(kind: str, target: str, reverse_kl: bool):
    cls = METHODS.get(kind)
    params = dict(cls.fast_params)
    accepted = inspect.signature(cls).parameters
    params.update({k: STEP[target] for k in SCALES if k in accepted})
    if kind == "flow":
        params["mode"] = "reverse_kl" if reverse_kl else "mle"
    if kind == "snf":  # both the energy-trained and the data-trained variant
        params["loss"] = "kl" if reverse_kl else "ml"
    if "flow_params" in accepted:  # a flow proposal, trained on the stand-in data
        params["flow_params"] = {**params["flow_params"], "mode": "mle"}
    return cls(**params)


CASES = [(t, k, rkl) for t in NEW_TARGETS for k in sampling_methods() for rkl in (False, True)]
CASES = [c for c in CASES if c[2] is False or c[1] in ("flow", "snf")]


@pytest.mark.parametrize("target_name, kind, reverse_kl", CASES)
def test_method_runs_on_new_target(target_name, kind, reverse_kl):
    target = build_target(NEW_TARGETS[target_name]).double()
    method = _method(kind, target_name, reverse_kl)
    data = typical_points(target, 256, torch.Generator().manual_seed(0), noise=0.01)
    check_method(method, [target], data=data, checks=["samples"])
