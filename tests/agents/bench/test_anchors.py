"""The published DMC anchors: the table loads, covers every task each source publishes,
holds the source's numbers, and its means and 95% intervals are what they should be."""

from __future__ import annotations

import csv
import gzip
import json
import math

import numpy as np
import pytest

from agents.bench.anchors import (
    SOURCES,
    TABLE,
    TASKS,
    anchor_at,
    build_table,
    grid,
    load_anchors,
    mean_ci95,
    read_rows,
    read_sources,
    t975,
)

NO_QUADRUPED_OR_HUMANOID = {t for t in TASKS if not t.startswith(("quadruped", "humanoid"))}
PUBLISHED = {
    "tdmpc2": set(TASKS),
    "dreamerv3": set(TASKS),
    "sac": set(TASKS),
    "dreamerv3_paper": NO_QUADRUPED_OR_HUMANOID,
}

# 100k env-step means of issue 26 (TD-MPC2 repository, results/<method>/<task>.csv)
ISSUE_MEANS_100K = {
    "tdmpc2": dict(
        cartpole_swingup=839,
        pendulum_swingup=724,
        reacher_easy=937,
        reacher_hard=414,
        walker_walk=962,
        cheetah_run=519,
    ),
    "dreamerv3": dict(
        cartpole_swingup=677,
        pendulum_swingup=699,
        reacher_easy=872,
        reacher_hard=813,
        walker_walk=630,
        cheetah_run=336,
    ),
    "sac": dict(
        cartpole_swingup=835,
        pendulum_swingup=96,
        reacher_easy=540,
        reacher_hard=161,
        walker_walk=708,
        cheetah_run=310,
    ),
}


def test_the_table_loads_small_and_names_its_sources():
    assert TABLE.stat().st_size < 300_000
    rows = read_rows()
    assert len(rows) > 4000
    assert read_sources() == SOURCES
    curves = load_anchors()
    for (method, task), c in curves.items():
        assert method in SOURCES and task in TASKS
        assert np.all(np.diff(c.steps) > 0) and c.steps.dtype == np.int64
        assert c.returns.shape == (len(c.steps), len(c.seeds))
        assert not c.returns.flags.writeable
        assert np.nanmin(c.returns) >= 0 and np.nanmax(c.returns) <= 1000
        assert not np.isnan(c.returns).all(axis=1).any(), (method, task)  # no empty step


def test_every_method_has_every_task_it_publishes():
    curves = load_anchors()
    for method, tasks in PUBLISHED.items():
        assert {t for m, t in curves if m == method} == tasks, method
    seeds = {m: {c.seeds for (mm, _), c in curves.items() if mm == m} for m in PUBLISHED}
    assert seeds == {
        "tdmpc2": {(1, 2, 3)},
        "dreamerv3": {(1, 2, 3)},
        "sac": {(1, 2, 3)},
        "dreamerv3_paper": {(0, 1, 2, 3, 4)},
    }


def test_the_table_covers_the_published_range_on_the_grid():
    curves = load_anchors()
    tdmpc2 = curves["tdmpc2", "walker_walk"].steps.tolist()
    assert tdmpc2 == [*range(0, 1_000_001, 100_000), *range(1_500_000, 4_000_001, 500_000)]
    assert curves["tdmpc2", "humanoid_run"].steps[-1] == 14_000_000
    assert curves["dreamerv3", "walker_walk"].steps[-1] == 3_900_000  # last published step
    paper = curves["dreamerv3_paper", "walker_walk"].steps.tolist()
    assert paper == [*range(10_000, 100_001, 10_000), *range(150_000, 450_001, 50_000), 490_000]
    assert grid(1_000_000)[:12] == [0, 10_000, 20_000, *range(30_000, 110_000, 10_000), 150_000]
    assert grid(2_000_000)[-3:] == [1_000_000, 1_500_000, 2_000_000]


@pytest.mark.parametrize(
    ("method", "task", "step", "by_seed"),
    [
        # nicklashansen/tdmpc2 results/{tdmpc2,dreamerv3,sac}/walker-walk.csv
        ("tdmpc2", "walker_walk", 100_000, {1: 966.7, 2: 947.7, 3: 971.3}),
        ("dreamerv3", "walker_walk", 100_000, {1: 669.2, 2: 651.8, 3: 569.4}),
        ("sac", "walker_walk", 100_000, {1: 917.8, 2: 509.6, 3: 697.1}),
        ("tdmpc2", "ball_in_cup_catch", 100_000, {1: 986.7, 2: 983.7, 3: 973.3}),
        ("tdmpc2", "humanoid_run", 4_000_000, {1: 390.6, 2: 459.8, 3: 533.0}),
        ("tdmpc2", "humanoid_run", 14_000_000, {1: 542.2, 2: 603.5, 3: 664.6}),
        ("dreamerv3", "humanoid_walk", 100_000, {2: 0.6}),
        # danijar/dreamerv3 scores/dmc_proprio-dreamerv3.json.gz, rounded to 0.1
        ("dreamerv3_paper", "walker_walk", 100_000, {0: 297.6, 1: 522.7, 2: 306.0, 3: 713.5}),
        ("dreamerv3_paper", "cartpole_swingup", 490_000, {0: 872.3, 1: 840.8, 4: 841.6}),
    ],
)
def test_spot_values_are_the_sources(method, task, step, by_seed):
    c = load_anchors()[method, task]
    row = c.returns[list(c.steps).index(step)]
    for seed, value in by_seed.items():
        assert row[c.seeds.index(seed)] == value, (seed, value)


def test_the_100k_means_are_those_of_the_issue():
    for method, means in ISSUE_MEANS_100K.items():
        for task, mean in means.items():
            a = anchor_at(method, task, 100_000)
            assert a.n_seeds == 3
            assert abs(a.mean - mean) <= 0.5, (method, task, a.mean, mean)
    # the project's docs quote DreamerV3's own cartpole_swingup point at 100k as 528
    assert round(anchor_at("dreamerv3_paper", "cartpole_swingup", 100_000).mean) == 528


def test_the_interval_is_a_t_interval_over_seeds():
    a = anchor_at("tdmpc2", "walker_walk", 100_000)
    x = np.array([966.7, 947.7, 971.3])
    assert a.mean == pytest.approx(x.mean())
    assert a.ci95 == pytest.approx(4.302653 * x.std(ddof=1) / math.sqrt(3))
    assert a.low < a.mean < a.high
    assert mean_ci95([1.0, 2.0, 3.0, math.nan]) == pytest.approx((2.0, 4.302653 / 3**0.5, 3))


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for dof in (*range(1, 40), 50, 100, 1000):
        assert t975(dof) == pytest.approx(stats.t.ppf(0.975, dof), abs=2e-6), dof
    with pytest.raises(ValueError):
        t975(0)


def test_one_seed_has_an_undefined_interval():
    a = anchor_at("dreamerv3", "humanoid_walk", 100_000)  # one of 3 seeds published there
    assert a.n_seeds == 1 and a.mean == 0.6
    assert math.isnan(a.ci95) and math.isnan(a.low) and math.isnan(a.high)
    assert math.isnan(mean_ci95([5.0]).ci95)
    with pytest.raises(ValueError):
        mean_ci95([math.nan])


def test_a_step_off_the_table_needs_interpolation():
    with pytest.raises(KeyError, match=r"nearest: \[0, 100000\]"):
        anchor_at("tdmpc2", "walker_walk", 50_000)
    a = anchor_at("tdmpc2", "walker_walk", 50_000, interpolate=True)
    c = load_anchors()["tdmpc2", "walker_walk"]
    assert a.mean == pytest.approx(c.returns[:2].mean(axis=0).mean())
    with pytest.raises(KeyError, match="outside"):
        anchor_at("dreamerv3_paper", "walker_walk", 0, interpolate=True)
    with pytest.raises(KeyError, match="no anchor"):
        anchor_at("dreamerv3_paper", "humanoid_run", 100_000)


def test_build_reads_both_layouts(tmp_path):
    """The builder on stand-ins of both repositories' files: their task names, the grid
    and the curve's last step, the rounding, and both headers."""
    tdmpc2, dreamerv3 = tmp_path / "tdmpc2", tmp_path / "dreamerv3"
    for method in ("tdmpc2", "dreamerv3", "sac"):
        folder = tdmpc2 / "results" / method
        folder.mkdir(parents=True)
        for task in TASKS:
            name = "cup-catch" if task == "ball_in_cup_catch" else task.replace("_", "-")
            with open(folder / f"{name}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["step", "reward", "seed"])
                for step in (0, 100_000, 120_000, 1_100_000, 1_200_000):
                    for seed in (1, 2):
                        w.writerow([step, step / 1e4 + seed, seed])
    runs = [
        dict(task="dmc_walker_walk", method="dreamerv3", seed=s, xs=[1e4, 2e4, 1.6e5],
             ys=[1.26, 2.0, 3.0])
        for s in range(2)
    ]  # fmt: skip
    (dreamerv3 / "scores").mkdir(parents=True)
    with gzip.open(dreamerv3 / "scores" / "dmc_proprio-dreamerv3.json.gz", "wt") as f:
        json.dump(runs, f)
    out = tmp_path / "anchors.csv"
    assert build_table(tdmpc2, dreamerv3, out) == 60 * 6 + 6
    try:
        assert read_sources(out) == SOURCES
        curves = load_anchors(out)
        c = curves["tdmpc2", "ball_in_cup_catch"]
        assert c.steps.tolist() == [0, 100_000, 1_200_000] and c.seeds == (1, 2)
        assert c.returns[2].tolist() == [121.0, 122.0]
        p = curves["dreamerv3_paper", "walker_walk"]
        assert p.steps.tolist() == [10_000, 20_000, 160_000]
        assert p.returns[0].tolist() == [1.3, 1.3]
        assert {t for m, t in curves if m == "dreamerv3_paper"} == {"walker_walk"}
    finally:
        load_anchors.cache_clear()
