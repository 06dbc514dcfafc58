"""The report package: budget sweep table and figure, structure figures' dispatch
on the target hooks, output hashes and PNG provenance (the leaderboard itself:
tests/test_aggregate.py)."""

import json

import pytest
import torch

from boltzbench.io import write_json
from boltzbench.report import output_hashes
from boltzbench.report.figures import save_figure
from boltzbench.report.structure import structured_kind
from boltzbench.report.sweep import sweep_figure, sweep_frame
from boltzbench.targets import build_target
from boltzbench.targets.base import Target


def _metrics(path, method, seed, energy, **metrics):
    doc = {
        "target": "t",
        "method": method,
        "seed": seed,
        "n_samples": 100,
        "metrics": metrics,
        "cost": {"total_n_energy": energy, "budget": 2.0 * energy},
    }
    return str(write_json(doc, path / f"{method}_{seed}.json", {}))


def test_sweep_frame_and_figure(tmp_path):
    members = {
        "m-budget100": {"method": "m", "budget": 100},
        "m-budget1000": {"method": "m", "budget": 1000},
        "w-budget100": {"method": "w", "budget": 100},
    }
    files = [
        _metrics(tmp_path, "m-budget1000", 0, 500.0, w2=1.0),
        _metrics(tmp_path, "m-budget100", 0, 50.0, w2=3.0),
        _metrics(tmp_path, "m-budget100", 1, 60.0, w2=5.0),
        _metrics(tmp_path, "w-budget100", 0, 80.0, w2=2.0, w2_reweighted=1.5),
    ]
    floor = {"target": "t", "seed": 0, "replicates": [{"w2": 0.5, "w2_reweighted": 0.6}] * 2}
    floors = [str(write_json(floor, tmp_path / "floor.json", {}))]
    frame = sweep_frame(files, floors, members)
    assert list(frame[["base_method", "budget"]].itertuples(index=False, name=None)) == [
        ("m", 100),
        ("m", 1000),
        ("w", 100),
    ]
    assert frame.w2_mean.tolist()[:2] == [4.0, 1.0] and frame.w2_floor.iloc[0] == 0.5
    fig = sweep_figure(frame, "t", "w2")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert {"m (raw)", "w (reweighted)"} <= set(labels)
    out = tmp_path / "sweep.png"
    save_figure(fig, str(out), {"step": "budget_sweep"})
    from PIL import Image

    assert json.loads(Image.open(out).text["boltzbench"]) == {"step": "budget_sweep"}
    hashes = output_hashes({"figure": str(out), "provenance": "not read"})
    assert set(hashes) == {"figure"} and len(hashes["figure"]["sha256"]) == 64


class _Field(Target):
    dim = 4
    lattice_shape = (2, 2)

    def field(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 2, 2)


@pytest.mark.parametrize(
    "target,kind",
    [
        (build_target({"kind": "dw4"}), "particles"),
        (build_target({"kind": "phi4", "params": {"L": 4}}), "lattice"),
        (_Field(), "lattice"),
        (build_target({"kind": "gmm40"}), None),
        (build_target({"kind": "u1", "params": {"L": 4}}), "gauge"),
    ],
)
def test_structure_figures_follow_the_declared_hooks(target, kind):
    assert structured_kind(target) == kind
