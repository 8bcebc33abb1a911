"""World model as a policy evaluator: rank correlations against scipy's, and
`eval-wm --policies` runs every policy in the real simulator and in the model from
the same starts, with the same noise, into policies.json and policies.png."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

import envs
import world_models
from agents.expert_agent import ExpertAgent
from agents.jobs.collect import CollectCfg, collect
from agents.jobs.evaluate import run_episodes
from agents.jobs.rank import pearson, rank_policies, ranks, regret_at_1, spearman
from sim.data.atomic import read_json
from world_models.evaluate import EvalWMCfg
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.models.ensemble import EnsembleCfg
from world_models.train import TrainWMCfg, train_world_model


def test_correlations_match_scipy():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(12, generator=gen, dtype=torch.float64)
    b = a + 0.5 * torch.randn(12, generator=gen, dtype=torch.float64)
    b[3] = b[7]  # a tie
    x, y = a.numpy(), b.numpy()
    assert pearson(a, b) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(a, torch.ones(12)) is None
    torch.testing.assert_close(
        ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])),
        torch.tensor([3.5, 1.0, 3.5, 2.0], dtype=torch.float64),
    )


def test_regret_at_1_is_the_real_return_lost_by_the_models_favourite():
    real = torch.tensor([10.0, 50.0, 30.0])
    assert regret_at_1(real, torch.tensor([1.0, 9.0, 5.0])) == 0.0  # it picks the best
    assert regret_at_1(real, torch.tensor([1.0, 5.0, 9.0])) == 20.0
    assert regret_at_1(real, torch.tensor([9.0, 5.0, 9.0])) == 30.0  # a tie: their mean, 20


def test_eval_wm_policies_reports_real_and_imagined_returns(tmp_path):
    collect(
        CollectCfg(
            task="cartpole_swingup",
            num_envs=4,
            episodes=4,
            episode_length=60,
            policy="expert+noise",
            out=tmp_path / "data",
            progress=False,
        )
    )
    small = EnsembleCfg(hidden=32, layers=2, members=2, elites=1)
    train_world_model(
        TrainWMCfg(
            data=tmp_path / "data", out=tmp_path / "wm", epochs=1, ensemble=small, progress=False
        )
    )
    policies = ("expert:0", "expert:0.5", "expert:2")
    report = rank_policies(
        EvalWMCfg(wm=tmp_path / "wm", policies=policies, episodes=3, seed=4, progress=False)
    )
    assert [row["policy"] for row in report["policies"]] == list(policies)
    assert -1 <= report["spearman"] <= 1 and -1 <= report["pearson"] <= 1
    real = [row["real_return"] for row in report["policies"]]
    imagined = [row["imagined_return"] for row in report["policies"]]
    favourite = imagined.index(max(imagined))
    assert report["favourite"] == policies[favourite]
    assert report["regret_at_1"] == pytest.approx(max(real) - real[favourite])
    assert len({row["real_return"] for row in report["policies"]}) == 3
    assert (tmp_path / "wm" / "eval" / "policies.png").stat().st_size > 1000
    assert read_json(tmp_path / "wm" / "eval" / "policies.json") == report
    # the real return is the policy's own, from the seed's starts, with its seeded noise
    env = envs.make("cartpole_swingup", num_envs=3, episode_length=60)
    agent = ExpertAgent.for_env(env, noise_std=0.5)
    real, _, _ = run_episodes(
        agent, env, env.reset(seed=4), noise=torch.Generator().manual_seed(4 + 1)
    )
    assert report["policies"][1]["real_return"] == pytest.approx(real.mean().item(), rel=1e-6)
    # and so is the imagined one: from the very same start states, row by row, for
    # every policy (not only the first), with the same noise
    imagined = ImaginedEnv.from_env(
        world_models.load(tmp_path / "wm"),
        env,
        ImaginedEnvCfg(num_envs=3, seed=4, episode_length=60, sample=False),
    )
    imag, _, _ = run_episodes(
        agent, imagined, imagined.reset(), noise=torch.Generator().manual_seed(4 + 1)
    )
    assert report["policies"][1]["imagined_return"] == pytest.approx(imag.mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 policies"):
        rank_policies(EvalWMCfg(wm=tmp_path / "wm", policies=("expert:0",)))
    with pytest.raises(ValueError, match="expert:STD takes a number"):
        rank_policies(EvalWMCfg(wm=tmp_path / "wm", policies=("expert:x", "expert:0")))
    with pytest.raises(ValueError, match="--worker-gpus .* needs --ray"):
        rank_policies(
            EvalWMCfg(wm=tmp_path / "wm", policies=("expert:0", "expert:1"), worker_gpus=1.0)
        )
    with pytest.raises(ValueError, match="no such agent checkpoint"):
        rank_policies(EvalWMCfg(wm=tmp_path / "wm", policies=("nowhere", "expert:0")))
