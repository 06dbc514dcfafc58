"""Conformance checks a user can run on a method, target or metric of their own.

In the spirit of scikit-learn's ``check_estimator``::

    from boltzbench.testing import check_method
    check_method(MyMethod(n_steps=20))

Each ``check_*`` runs a registry of small checks on tiny inputs and raises
:class:`ConformanceError` (an AssertionError) whose message names the method,
target or metric, the check that failed and why. boltzbench's own test suite is
these functions parametrized over its registries.
"""

from boltzbench.testing.common import ConformanceError, typical_points
from boltzbench.testing.methods import METHOD_CHECKS, check_method
from boltzbench.testing.metrics import METRIC_CHECKS, check_metric
from boltzbench.testing.targets import TARGET_CHECKS, check_target

__all__ = [
    "ConformanceError",
    "check_method",
    "check_target",
    "check_metric",
    "METHOD_CHECKS",
    "TARGET_CHECKS",
    "METRIC_CHECKS",
    "typical_points",
]
