"""The solvation free energy of alanine dipeptide: vacuum → OBC2 implicit solvent.

ΔF = F_implicit − F_vacuum = −log(Z_1 / Z_0) in k_BT along U_λ = U_vac + λ U_GB
(:mod:`boltzbench.free_energy.alchemical`), from K λ-windows of MD
(:mod:`boltzbench.free_energy.window`), each window's frames decorrelated by
the statistical inefficiency of its U_GB series
(:func:`boltzbench.free_energy.estimators.decorrelated`).

* The reference: MBAR over every window (:func:`reference`).
* From the end states only (windows λ = 0 and λ = 1): exponential FEP forward
  (vacuum frames, w_F = U_GB / k_BT) and reverse (implicit frames, w_R =
  −U_GB / k_BT, negated to give F_1 − F_0), BAR on both, and the learned
  estimators of :mod:`boltzbench.free_energy.targeted` (flows fitted to the
  first half of each end window's frames, works on the decorrelated frames of
  the second half): targeted FEP and targeted BAR.

Each estimate's cost: the MD steps behind its frames (equilibration included)
and the energy evaluations it adds to them (:class:`Row`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
import xarray as xr

from boltzbench.free_energy.estimators import Estimate, bar, decorrelated, fep, mbar
from boltzbench.free_energy.targeted import MapSettings, fit_map, targeted_estimates
from boltzbench.free_energy.window import Window, reduced_matrix
from boltzbench.md.system import kT

__all__ = ["Row", "window_dataset", "reference", "end_state_rows", "estimate_rows"]

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One estimate of ΔF (k_BT) with its standard error and its cost.

    ``md_steps``: integrator steps (one force evaluation each) of the windows it
    reads; ``extra_evaluations``: energy evaluations it adds (a frame's energy at
    another state, a mapped point's energy); ``n_samples``: frames it uses.
    """

    estimator: str
    delta_f_kT: float
    sigma_kT: float
    n_samples: int
    md_steps: int
    extra_evaluations: int

    @property
    def energy_evaluations(self) -> int:
        return self.md_steps + self.extra_evaluations

    def as_dict(self) -> dict:
        return {**asdict(self), "energy_evaluations": self.energy_evaluations}


def window_dataset(window: Window, lambdas) -> xr.Dataset:
    """A window's frames (dims frame, atom, spatial) and its MBAR columns u (lambda, frame)."""
    lam = np.asarray(lambdas, dtype=np.float64)
    ds = xr.Dataset(
        {
            "positions_nm": (("frame", "atom", "spatial"), window.positions_nm),
            "u_vac_kJ": ("frame", window.u_vac_kJ),
            "u_gb_kJ": ("frame", window.u_gb_kJ),
            "u_kT": (("lambda", "frame"), window.reduced(lam)),
        },
        coords={"lambda": lam},
    )
    units = {"positions_nm": "nm", "u_vac_kJ": "kJ/mol", "u_gb_kJ": "kJ/mol"}
    units["u_kT"] = "k_BT: (U_vac + lambda U_GB) / (R T) at every lambda of the grid"
    for name, unit in units.items():
        ds[name].attrs["units"] = unit
    ds.attrs.update({f"md_{k}" if k in window.stats else k: v for k, v in window.stats.items()})
    ds.attrs.update({k.rstrip("_"): v for k, v in asdict(window.settings).items()})
    return ds


def _steps(ds: xr.Dataset) -> int:
    return int(ds.attrs["equilibration_steps"]) + int(ds.attrs["production_steps"])


def _kept(ds: xr.Dataset) -> np.ndarray:
    return decorrelated(ds["u_gb_kJ"].values)


def reference(windows: list[xr.Dataset], temperature_K: float) -> Row:
    """MBAR's f(λ=1) − f(λ=0) over every window's decorrelated frames."""
    lambdas = windows[0]["lambda"].values
    kept = [_kept(ds) for ds in windows]
    u_kn = np.concatenate(
        [
            reduced_matrix(
                ds["u_vac_kJ"].values[i], ds["u_gb_kJ"].values[i], lambdas, temperature_K
            )
            for ds, i in zip(windows, kept)
        ],
        axis=1,
    )
    n_k = np.array([len(i) for i in kept])
    df, ddf = mbar(u_kn, n_k)
    n = int(n_k.sum())
    steps = sum(_steps(ds) for ds in windows)
    return Row("mbar", float(df[-1]), float(ddf[-1]), n, steps, n * (len(lambdas) - 1))


def _works(ds: xr.Dataset, idx: np.ndarray, temperature_K: float) -> np.ndarray:
    return ds["u_gb_kJ"].values[idx] / kT(temperature_K)


def end_state_rows(vac: xr.Dataset, imp: xr.Dataset, temperature_K: float) -> list[Row]:
    """FEP forward, FEP reverse and BAR from the decorrelated end-state frames."""
    i0, i1 = _kept(vac), _kept(imp)
    w_f, w_r = _works(vac, i0, temperature_K), -_works(imp, i1, temperature_K)
    forward, reverse, both = fep(w_f), fep(w_r), bar(w_f, w_r)
    reverse = Estimate(-reverse.delta_f, reverse.sigma, reverse.n)
    s0, s1 = _steps(vac), _steps(imp)
    return [
        _row("fep_forward", forward, s0, len(i0)),
        _row("fep_reverse", reverse, s1, len(i1)),
        _row("bar", both, s0 + s1, len(i0) + len(i1)),
    ]


def _row(name: str, e: Estimate, steps: int, extra: int) -> Row:
    return Row(name, e.delta_f, e.sigma, e.n, steps, extra)


def _targets(temperature_K: float):
    from boltzbench.targets.aldp import AlanineDipeptide

    return [
        AlanineDipeptide(solvent, temperature_K, coordinates="internal")
        for solvent in ("vacuum", "implicit")
    ]


def targeted_rows(
    vac: xr.Dataset, imp: xr.Dataset, temperature_K: float, settings: MapSettings
) -> list[Row]:
    """Targeted FEP and BAR with flows fitted to each end window's first half."""
    t_vac, t_imp = _targets(temperature_K)
    split = [ds.sizes["frame"] // 2 for ds in (vac, imp)]
    z = [
        t_vac.to_coordinates(torch.from_numpy(ds["positions_nm"].values)).double()
        for ds in (vac, imp)
    ]
    fmap = fit_map(z[0][: split[0]], z[1][: split[1]], settings)
    held = [s + _kept(ds.isel(frame=slice(s, None))) for ds, s in zip((vac, imp), split)]
    est, _ = targeted_estimates(fmap, t_vac.energy, t_imp.energy, z[0][held[0]], z[1][held[1]])
    t_vac.close(), t_imp.close()
    s0, s1, n0, n1 = _steps(vac), _steps(imp), len(held[0]), len(held[1])
    return [
        _row("tfep_flow", est["tfep"], s0 + s1, 2 * n0),
        _row("tbar_flow", est["tbar"], s0 + s1, 2 * (n0 + n1)),
    ]


def estimate_rows(
    windows: list[xr.Dataset], temperature_K: float, settings: MapSettings | None
) -> list[Row]:
    """The MBAR reference first, then every estimator (the learned ones unless
    ``settings`` is None); windows in increasing λ, the first λ = 0, the last λ = 1."""
    rows = [reference(windows, temperature_K)]
    rows += end_state_rows(windows[0], windows[-1], temperature_K)
    if settings is not None:
        rows += targeted_rows(windows[0], windows[-1], temperature_K, settings)
    for r in rows:
        log.info(
            "%s: ΔF = %.4f ± %.4f k_BT (%d samples)",
            r.estimator,
            r.delta_f_kT,
            r.sigma_kT,
            r.n_samples,
        )
    return rows
