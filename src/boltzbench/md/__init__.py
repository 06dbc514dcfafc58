"""Molecular dynamics with OpenMM: systems, MD runs and the batched energy bridge.

Nothing in this package imports torch except :mod:`boltzbench.md.bridge`, so
the bridge's worker processes start without it.
"""
