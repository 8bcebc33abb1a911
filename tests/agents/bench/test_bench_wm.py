"""The imagined-env bench times every model it is given."""

from __future__ import annotations

from agents.bench.wm import run_wm_bench
from world_models.base import save_atomic
from world_models.models.ensemble import EnsembleDynamics


def test_two_models_of_one_kind_are_both_timed(tmp_path, capsys):
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for path in paths:
        model = EnsembleDynamics(3, 1, {"members": 2, "elites": 1, "hidden": 8, "layers": 1})
        save_atomic(model.checkpoint(), path)
    result = run_wm_bench("pendulum_swingup", 8, 3, 1, paths, seed=0)
    assert len(result["imagined"]) == 2 and all(r > 0 for r in result["imagined"].values())
    assert capsys.readouterr().out.count("i/h") == 2
