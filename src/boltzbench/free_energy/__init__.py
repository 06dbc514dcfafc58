"""Free-energy differences as a task: ΔF between two thermodynamic states, in k_BT.

* :mod:`~boltzbench.free_energy.alchemical` — the λ-path U_λ = U_vac + λ U_GB of
  alanine dipeptide (vacuum → OBC2 implicit solvent);
* :mod:`~boltzbench.free_energy.window` — one λ-window's MD, checkpointed;
* :mod:`~boltzbench.free_energy.estimators` — FEP, BAR, MBAR (pymbar);
* :mod:`~boltzbench.free_energy.targeted` — targeted FEP/BAR with a learned flow map;
* :mod:`~boltzbench.free_energy.solvation` — the task: reference and estimates;
* :mod:`~boltzbench.free_energy.table` — the results table.

Nothing is imported here: OpenMM, torch and pymbar load with the submodules.
"""

__all__: list[str] = []
