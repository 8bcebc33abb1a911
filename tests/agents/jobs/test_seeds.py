"""Multi-seed closed-loop runs (`--seeds`): the summary over the seeds' runs, its mean
and Student-t 95% confidence interval checked against scipy."""

from __future__ import annotations

import pytest
from scipy import stats

from agents.jobs.loop import Loop, LoopCfg
from agents.jobs.seeds import aggregate_seeds, mean_ci, run_seeds, seed_configs
from sim.data.atomic import read_json


@pytest.mark.parametrize("n", [2, 3, 5, 12, 31, 40])
def test_the_confidence_interval_is_students_t(n):
    values = [float((7 * i) % 11) + 0.5 * i for i in range(n)]
    got = mean_ci(values)
    mean, sem = stats.tmean(values), stats.sem(values)
    lo, hi = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    assert got["mean"] == pytest.approx(mean)
    assert got["std"] == pytest.approx(stats.tstd(values))
    half = (got["ci95"][1] - got["ci95"][0]) / 2
    assert sum(got["ci95"]) / 2 == pytest.approx(mean)
    if n <= 31:  # tabulated quantiles (to 3 decimals); beyond, the normal's 1.96
        assert half == pytest.approx((hi - lo) / 2, rel=2e-4)
    else:
        assert half == pytest.approx(1.96 * sem)
    assert mean_ci([4.0])["ci95"] != mean_ci([4.0])["ci95"]  # nan: one value has no spread


def _summary(final: float, curve: list[float], finished: bool = True) -> dict:
    return {
        "task": "t",
        "agent": "dreamer",
        "model": "ensemble",
        "finished": finished,
        "final_real_return": final,
        "best_real_return": max(curve),
        "final_gap": -final,
        "curve": [{"env_steps": 100 * (i + 1), "real_return": r} for i, r in enumerate(curve)],
    }


def test_the_seeds_summary_covers_the_iterations_every_run_finished(tmp_path):
    summaries = {4: _summary(3.0, [1.0, 3.0]), 2: _summary(5.0, [2.0, 4.0, 5.0], False)}
    out = aggregate_seeds(summaries, tmp_path)
    assert out == read_json(tmp_path / "summary.json")
    assert out["seeds"] == [2, 4] and not out["finished"]
    assert out["final_real_return"]["values"] == [5.0, 3.0]
    assert out["final_real_return"]["mean"] == 4.0
    assert [c["env_steps"] for c in out["curve"]] == [100, 200]
    assert out["curve"][1]["real_return"]["values"] == [4.0, 3.0]
    assert out["env_steps"] == 200
    assert out["runs"] == {"2": str(tmp_path / "seed_2"), "4": str(tmp_path / "seed_4")}


def test_each_seed_runs_into_its_own_directory(tmp_path):
    base, runs = seed_configs(LoopCfg(seeds=(0, 5), out=tmp_path, seed=9))
    assert base == tmp_path and sorted(runs) == [0, 5]
    assert runs[5].seed == 5 and runs[5].out == tmp_path / "seed_5" and runs[5].seeds == ()
    with pytest.raises(ValueError, match="repeats a seed"):
        seed_configs(LoopCfg(seeds=(1, 1), out=tmp_path))
    with pytest.raises(ValueError, match="--resume needs the --out"):
        seed_configs(LoopCfg(seeds=(1, 2), resume=True))


def test_gpu_reservations_are_refused_where_they_cannot_apply(tmp_path):
    with pytest.raises(ValueError, match="--worker-gpus .* needs --ray"):
        Loop(LoopCfg(worker_gpus=1.0, device="cuda", out=tmp_path / "run"))
    with pytest.raises(ValueError, match="--device cuda in Ray tasks needs --worker-gpus"):
        run_seeds(
            LoopCfg(seeds=(0, 1), ray=True, device="cuda", out=tmp_path / "seeds"), run_one=None
        )
    assert not list(tmp_path.iterdir())  # refused before anything was written
