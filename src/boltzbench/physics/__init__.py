"""Physics shared by targets and tests: analytic equations of state and reference values.

:mod:`boltzbench.physics.lj_eos`: the Lennard-Jones equation of state of
Johnson, Zollweg & Gubbins 1993 (U/N, P, A/N of the full, untruncated fluid).
"""

__all__: list[str] = []
