"""Pipeline steps: pure functions of (spec, input paths, seed) -> artifacts.

Each step is called by one thin rule script (``workflow/scripts``) through
:func:`boltzbench.steps.adapter.run_rule`, and never sees the ``snakemake``
object. Every artifact a step writes gets its provenance from
:func:`boltzbench.provenance.provenance_attrs`.
"""
