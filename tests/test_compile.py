"""Compiled kernels (boltzbench.mcmc.compiling) against eager ones.

A compiled run draws the same random numbers as an eager one (the draws stay
eager), so from one seed both give the same chains up to float rounding: the
tests assert positions equal within 1e-10 (float64) or 1e-4 (float32) after a
few steps, the same accept decisions, and identical evaluation counts (charged
by shape before the fused graph runs, non-finite energies noted lazily). The
fallback is exercised by making ``torch.compile`` fail: it must warn once per
compiled function and give the eager result exactly. Tiny dimensions, few
steps and shared shapes (6 chains of ManyWell-4) keep the compilation time
small: every compiled function is compiled once per shape and dtype.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from boltzbench.mcmc import annealing, compiling, hmc, mala, proposal, tempering
from boltzbench.targets.analytic import ManyWell
from boltzbench.targets.counting import BudgetExceeded, CountingTarget

pytestmark = pytest.mark.skipif(
    not compiling.supported(), reason="torch.compile is not supported here (no C++ compiler)"
)

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def _chains(dtype, compile, kind, steps=3, budget=None):
    """``steps`` MALA or HMC steps of 6 chains on ManyWell-4; the state, acceptances, counts."""
    target = CountingTarget(ManyWell(4).to(dtype), budget)
    potential = compiling.potential(target, compile)
    kernel = mala.build_kernel(compile) if kind == "mala" else hmc.build_kernel(compile=compile)
    args = (0.3,) if kind == "mala" else (0.2, 3)
    x0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(3), dtype=dtype)
    gen, state, accepted = torch.Generator().manual_seed(0), mala.init(x0, potential), []
    for _ in range(steps):
        state, info = kernel(gen, state, potential, *args)
        accepted.append(info.is_accepted)
    return state, torch.stack(accepted), target.counts


@pytest.mark.parametrize(
    "dtype, kind", [(torch.float64, "mala"), (torch.float32, "mala"), (torch.float64, "hmc")]
)
def test_compiled_chains_equal_eager(dtype, kind):
    fast, acc_fast, counts_fast = _chains(dtype, "true", kind)
    slow, acc_slow, counts_slow = _chains(dtype, "false", kind)
    tol = TOL[dtype]
    assert torch.equal(acc_fast, acc_slow)
    assert 0 < acc_slow.float().mean() < 1  # both accept and reject happen
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert counts_fast == counts_slow
    per_step = 1 if kind == "mala" else 3
    assert counts_slow.energy == counts_slow.grad == 6 * (1 + 3 * per_step)


def test_compiled_potential_respects_the_budget():
    # 6 chains: the start (6) and two MALA steps (12) fit in 20; the third step does not
    with pytest.raises(BudgetExceeded):
        _chains(torch.float64, "true", "mala", steps=3, budget=20)
    target = CountingTarget(ManyWell(4).double(), budget=20)
    evaluate = compiling.energy_and_grad(target, "true")
    evaluate(torch.zeros(18, 4, dtype=torch.float64))
    with pytest.raises(BudgetExceeded):
        evaluate(torch.zeros(3, 4, dtype=torch.float64))
    assert (target.counts.energy, target.counts.grad, target.exhausted) == (18, 18, True)


def test_compiled_step_is_one_fused_graph_on_a_counted_potential():
    potential = compiling.potential(CountingTarget(ManyWell(4).double()), "true")
    assert isinstance(potential, compiling.CountedPotential)
    state = mala.init(torch.zeros(6, 4, dtype=torch.float64), potential)
    mala.build_kernel("true")(torch.Generator().manual_seed(0), state, potential, 0.3)
    assert list(potential._fused) == [compiling._evaluate, mala.fused_step]
    assert all(f.is_compiled for f in potential._fused.values())


def test_compiled_energy_and_grad_counts_nonfinite_like_eager():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [torch.inf, 0.0, 0.0, 0.0]], dtype=torch.float64)
    fast, slow = (CountingTarget(ManyWell(4).double()) for _ in range(2))
    compiling.energy_and_grad(fast, "true")(x)
    slow.energy_and_grad(x)
    assert fast.counts == slow.counts
    assert slow.counts.nonfinite == 1


def test_parallel_tempering_and_smc_move_compiled_equal_eager():
    target = ManyWell(4).double()
    x0 = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    betas = tempering.geometric_ladder(3, 5.0)
    out = {}
    for switch in ("true", "false"):
        potential = proposal.potential_from(compiling.energy_and_grad(target, switch))
        kernel, gen = tempering.build_kernel(betas, "mala", switch), torch.Generator()
        state = tempering.init(x0, potential)
        gen.manual_seed(0)
        for _ in range(3):
            state, _ = kernel(gen, state, potential, torch.tensor([0.3, 0.4, 0.5]))
        path = annealing.gaussian_path(CountingTarget(target), 1.0, switch)
        settings = annealing.Annealing(n_moves=2, compile=switch)
        moved = annealing.temper_ends(x0[0], path(x0[0]), 0.5)
        moved, rate, _ = annealing.move(
            settings, path, 0.5, moved, torch.tensor(-1.0, dtype=torch.float64), gen
        )
        out[switch] = (state.position, moved.position, rate)
    for a, b in zip(out["true"], out["false"], strict=True):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-10, atol=1e-10)


def test_fallback_to_eager_warns_once_and_gives_the_eager_result(monkeypatch):
    def broken(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(compiling, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast, acc_fast, counts_fast = _chains(torch.float64, "true", "mala")
    slow, acc_slow, counts_slow = _chains(torch.float64, "false", "mala")
    names = [str(w.message).split(":")[0] for w in caught]
    assert sorted(names) == ["_evaluate on ManyWell", "fused_step on ManyWell"]
    assert all("running eager" in str(w.message) for w in caught)
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a, b)  # the eager code itself: bit for bit
    assert torch.equal(acc_fast, acc_slow) and counts_fast == counts_slow


def test_mala_method_compiled_gives_the_eager_samples():
    from boltzbench.methods.mala import MALA

    out = {}
    for switch in ("true", "false"):
        target = CountingTarget(ManyWell(4).double())
        method = MALA(6, 4, 2, 1, step_size=0.3, dtype="float64", compile=switch)
        out[switch] = (method.sample(target, 12, torch.Generator().manual_seed(2)), target.counts)
    fast, slow = out["true"][0], out["false"][0]
    torch.testing.assert_close(fast.x, slow.x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast.energy, slow.energy, rtol=1e-10, atol=1e-10)
    assert out["true"][1] == out["false"][1] and out["false"][1].energy == 6 * (1 + 4 + 2 + 2)
    assert MALA(compile="auto").get_params()["compile"] == "auto"
    with pytest.raises(ValueError, match="compile must be one of"):
        MALA(compile="yes")


def test_switch_values():
    assert compiling.resolve("false") is False and compiling.resolve(False) is False
    assert compiling.resolve("auto") is compiling.supported()
    assert compiling.resolve(True) is compiling.supported()
    target = ManyWell(4)
    assert compiling.energy_and_grad(target, "false") == target.energy_and_grad
    with pytest.raises(ValueError, match="compile must be one of"):
        compiling.resolve("yes")


@pytest.mark.parametrize("kernel", ["mala", "hmc"])
def test_mcmc_reference_and_pt_compiled_equal_eager(kernel):
    # 3 ensembles x 3 temperatures of ManyWell-4, 12 steps: warm-up adapts one eps per
    # replica, then median per temperature; the fused tempered steps must give the eager
    # chains (positions within 1e-10, float64) and the same counts and swap statistics
    from boltzbench.mcmc.reference import mcmc_reference

    out = {}
    for switch in ("true", "false"):
        target = CountingTarget(ManyWell(4).double())
        samples = mcmc_reference(
            target, 12, torch.Generator().manual_seed(4), n_chains=3, n_warmup=4,
            n_burnin=2, thinning=1, n_temps=3, t_max=5.0, step_size=0.3, kernel=kernel,
            n_leapfrog=2, rhat_max=float("inf"), compile=switch,
        )  # fmt: skip
        out[switch] = samples, target.counts
    (fast, counts_fast), (slow, counts_slow) = out["true"], out["false"]
    torch.testing.assert_close(fast.x, slow.x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast.energy, slow.energy, rtol=1e-10, atol=1e-10)
    for name in ("acceptance_mean", "swap_acceptance_mean"):
        assert fast.attrs[name] == pytest.approx(slow.attrs[name], abs=1e-10)
    assert 0 < slow.attrs["acceptance_mean"] < 1
    leapfrog = 2 if kernel == "hmc" else 1
    assert counts_fast == counts_slow and counts_slow.energy == 9 * (1 + 10 * leapfrog)


def test_pt_method_compile_switch():
    from boltzbench.methods.pt import ParallelTempering

    assert ParallelTempering(compile="auto").get_params()["compile"] == "auto"
    with pytest.raises(ValueError, match="compile must be one of"):
        ParallelTempering(compile="yes")
    fast = ParallelTempering(**ParallelTempering.fast_params, compile="true")
    slow = ParallelTempering(**ParallelTempering.fast_params, compile="false")
    a, b = (
        m.sample(ManyWell(4).double(), 16, torch.Generator().manual_seed(1)) for m in (fast, slow)
    )
    torch.testing.assert_close(a.x, b.x, rtol=1e-10, atol=1e-10)


def test_skipped_guards_still_pick_the_graph_of_each_signature():
    # guards are skipped only on a signature already run with them: alternating shapes,
    # dtypes and a Python number must each get their own graph's (exact) result
    fn = compiling.Compiled(lambda x, k: x * k + 1, "affine", fullgraph=True, skip_guards=True)
    f32, f64 = torch.float32, torch.float64
    inputs = [torch.arange(3, dtype=f32), torch.arange(5, dtype=f32), torch.arange(3, dtype=f64)]
    for _ in range(3):
        for x in inputs:
            for k in (2, 3):
                out = fn(x, k)
                assert out.dtype == x.dtype and torch.equal(out, x * k + 1)
    assert fn.is_compiled and len(fn._seen) == 6


def test_nonfinite_notes_collapse_and_count_exactly():
    target = CountingTarget(ManyWell(4).double())
    for i in range(600):  # collapses twice on the way
        target.note_nonfinite(torch.tensor(i % 3))
    assert len(target._pending) < 256
    assert target.counts.nonfinite == 200 * (0 + 1 + 2) and target._pending == []
