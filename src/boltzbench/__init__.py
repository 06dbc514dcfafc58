"""boltzbench: reproducible benchmarks for samplers of Boltzmann distributions.

Energies are reduced (in units of k_BT) everywhere inside the library, so that
p(x) = exp(-E(x)) / Z.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
