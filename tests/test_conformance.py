"""Conformance suites that walk the target and method registries.

Every registered entry must pass :func:`boltzbench.testing.check_target` or
:func:`boltzbench.testing.check_method`, the checks a user runs on an entry of
their own; a new entry is one file, one registration and a passing suite. (The
metric registry is walked in test_metrics.py, the checker itself is tested in
test_testing.py.)
"""

import pytest
from helpers import sampling_methods

from boltzbench.methods import METHODS
from boltzbench.targets import TARGETS
from boltzbench.testing import check_method, check_target


@pytest.mark.parametrize("name", TARGETS.names())
def test_target_conformance(name):
    check_target(TARGETS.build(name), name)  # every target builds with no arguments


#: registered methods without a long loop to checkpoint (SMC anneals in one call)
NO_CHECKPOINT = {"smc"}


@pytest.mark.parametrize("name", sampling_methods())
def test_method_conformance(name):
    cls = METHODS.get(name)
    report = check_method(cls(**cls.fast_params))["Gaussian"]
    skipped = {check for check, result in report.items() if result != "passed"}
    expected = ({"checkpoint"} if name in NO_CHECKPOINT else set()) | (
        set() if cls.weighted else {"weights", "log_z"}
    )
    assert skipped == expected, report


@pytest.mark.parametrize("name", METHODS.names())
def test_method_refuses_unknown_params(name):
    with pytest.raises(Exception, match="no_such_param"):
        METHODS.build(name, no_such_param=1)


def test_a_method_whose_costs_are_declared_is_skipped(capsys):
    report = check_method(METHODS.build("external", path="made_elsewhere.npz"))
    assert report["*"]["*"].startswith("skipped: its costs are declared")
    assert "skipped" in capsys.readouterr().out
