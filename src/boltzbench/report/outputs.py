"""What a report job wrote: the sha256 of each output, for its provenance file."""

from __future__ import annotations

from boltzbench.hashing import hash_path

__all__ = ["output_hashes"]


def output_hashes(outputs: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{role: {"path", "sha256"}}`` of every output but the provenance file itself."""
    return {
        role: {"path": str(p), "sha256": hash_path(p)}
        for role, p in outputs.items()
        if role != "provenance"
    }
