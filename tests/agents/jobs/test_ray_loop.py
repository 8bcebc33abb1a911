"""Ray in the closed loop (marker `ray`, extra `dist`): collection by Ray workers gives
the run one process gives, in its data and its returns; `--seeds`
runs the seeds as Ray tasks, each equal to the same seed run alone, and summarises
them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.data.dataset import Dataset, read_index

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import TINY, _run  # noqa: E402


def _returns(out: Path) -> list[float]:
    summary = json.loads((out / "summary.json").read_text())
    return [r["real_return"] for r in summary["curve"]]


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("alone") / "run"
    _run(out)  # TINY: seed 3
    return out


def test_ray_workers_collect_what_the_loop_collects_alone(alone, tmp_path):
    out = tmp_path / "ray"
    proc = _run(out, "--ray", "--workers", "2")
    assert "iter 3/3" in proc.stdout, proc.stdout + proc.stderr
    assert read_index(out / "data")["workers"] == "workers"  # recorded by Ray workers
    a, b = Dataset(alone / "data"), Dataset(out / "data")
    assert a.episodes == b.episodes == list(range(6))
    for e in a.episodes:  # the agent's episodes to float rounding: a worker runs them at
        x, y = a.episode(e), b.episode(e)  # other rows of its batch (measured 3e-8)
        exact = e < 2  # the first iteration's noise policy: bit for bit
        for k in x:
            same = np.array_equal(x[k], y[k]) if exact else np.allclose(x[k], y[k], atol=1e-5)
            assert same, (e, k)
    assert _returns(out) == pytest.approx(_returns(alone), rel=1e-6, abs=1e-6)


def test_seeds_run_as_ray_tasks_and_are_summarised(alone, tmp_path):
    out = tmp_path / "seeds"
    proc = _run(out, "--seeds", "3", "4", "--ray")
    assert "seeds 3, 4: final real return" in proc.stdout, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [3, 4] and summary["finished"]
    finals = [_returns(out / f"seed_{s}")[-1] for s in (3, 4)]
    assert summary["final_real_return"]["values"] == finals
    assert summary["final_real_return"]["mean"] == pytest.approx(sum(finals) / 2)
    lo, hi = summary["final_real_return"]["ci95"]
    assert lo <= summary["final_real_return"]["mean"] <= hi
    assert _returns(out / "seed_3") == pytest.approx(_returns(alone), rel=1e-6, abs=1e-6)
    assert "--seed" in " ".join(TINY)  # (the TINY run's own --seed is overridden per seed)
