"""BC -> RL: the cloned policy becomes an SB3 PPO policy that acts exactly as it
does, the critic's warm-up leaves the actor as it was, and `run.py finetune` runs
from a cloned agent and a world model to scores in the real simulator."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs
from agents.base import load, read_checkpoint, save
from agents.bc import BcAgent, TrainBCCfg, train_bc
from agents.jobs.collect import CollectCfg, collect
from agents.jobs.evaluate import evaluate, make_eval_env
from agents.jobs.finetune import (
    FinetuneCfg,
    _actor,
    bc_to_ppo,
    fine_tune,
    group_advantages,
    grpo,
    model_rollouts,
    run_finetune,
)
from agents.sb3_agents import Standardize
from sim.data.atomic import read_json
from sim.data.dataset import Dataset
from sim.data.loader import EpisodeData
from world_models import base as wm_base
from world_models.base import load as load_world_model
from world_models.imagined_env import ImaginedEnv
from world_models.models.ensemble import EnsembleCfg, EnsembleDynamics
from world_models.train import TrainWMCfg, train_world_model


def _bc(obs_dim: int = 6, action_dim: int = 2) -> BcAgent:
    torch.manual_seed(0)
    bc = BcAgent(obs_dim, action_dim, {"hidden": 32, "layers": 2})
    bc.set_normalization(torch.randn(500, obs_dim) * torch.arange(1.0, obs_dim + 1) + 3.0)
    bc.log_std.data = torch.tensor([-0.7, -1.2])
    return bc


def test_the_ppo_policy_acts_as_the_cloned_one():
    bc = _bc()
    ppo = bc_to_ppo(bc)
    obs = torch.randn(300, 6) * 4 + 3
    noise = torch.randn(300, 2)
    torch.testing.assert_close(ppo.act(obs), bc.act(obs), rtol=0, atol=1e-5)
    torch.testing.assert_close(ppo.act(obs, noise), bc.act(obs, noise), rtol=0, atol=1e-5)
    # the same Gaussian: PPO's log-likelihood of an action is the BC policy's
    dist = ppo.policy.get_distribution(obs)
    actions = torch.rand(300, 2) * 2 - 1
    sigma = bc.log_std.exp()
    expected = (
        -((actions - bc.mean(obs)) ** 2) / (2 * sigma**2) - bc.log_std - 0.5 * math.log(2 * math.pi)
    ).sum(-1)
    torch.testing.assert_close(dist.log_prob(actions), expected.detach(), rtol=1e-4, atol=1e-4)
    # an exploration std of one's own replaces the fitted one
    wide = bc_to_ppo(bc, log_std=0.0)
    torch.testing.assert_close(wide.policy.log_std.detach(), torch.zeros(2))
    torch.testing.assert_close(wide.act(obs), bc.act(obs), rtol=0, atol=1e-5)


def test_the_value_net_sees_the_cloned_policys_standardised_inputs(tmp_path):
    bc = _bc()
    ppo = bc_to_ppo(bc, value_hidden=(16,))
    policy = ppo.policy
    assert isinstance(policy.features_extractor, Standardize) and policy.share_features_extractor
    obs = torch.randn(50, 6) * 4 + 3
    scaled = (obs - bc.obs_mean) / bc.obs_std
    with torch.no_grad():
        torch.testing.assert_close(policy.extract_features(obs), scaled)
        value = policy.value_net(policy.mlp_extractor.forward_critic(scaled))
        torch.testing.assert_close(policy.predict_values(obs), value)
    # the standardisation is part of the saved policy: a loaded one acts the same
    save(ppo, tmp_path / "agent.pt")
    again = load(tmp_path / "agent.pt")
    torch.testing.assert_close(again.act(obs), bc.act(obs), rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(again.policy.predict_values(obs), value)


def test_critic_warmup_leaves_the_actor_as_it_was(tmp_path):
    env = envs.make("cartpole_balance", num_envs=4, episode_length=50)
    bc = BcAgent(env.observation_dim, env.action_dim, {"hidden": 16, "layers": 2})
    agent = bc_to_ppo(bc, value_hidden=(16,))
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    cfg = FinetuneCfg(
        agent=tmp_path,
        wm=tmp_path,
        out=tmp_path,
        critic_warmup=64,
        n_steps=16,
        batch_size=32,
        n_epochs=2,
    )
    tuned = fine_tune(agent, env, 0, cfg, "warmup")
    after = tuned.policy.state_dict()
    actor = {
        n for n, p in tuned.policy.named_parameters() if any(p is q for q in _actor(tuned.policy))
    }
    assert actor and all(torch.equal(after[n], before[n]) for n in actor)
    value = [n for n in after if "value_net" in n]
    assert any(not torch.equal(after[n], before[n]) for n in value)
    # afterwards everything trains
    tuned = fine_tune(tuned, env, 64, cfg, "warmup")
    assert any(not torch.equal(tuned.policy.state_dict()[n], before[n]) for n in actor)


@pytest.fixture(scope="module")
def push_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    collect(
        CollectCfg(
            task="push",
            num_envs=4,
            episodes=4,
            episode_length=40,
            policy="expert+noise",
            out=root / "data",
            progress=False,
        )
    )
    train_bc(TrainBCCfg(data=root / "data", out=root / "bc", hidden=32, epochs=3, progress=False))
    small = EnsembleCfg(hidden=32, layers=2, members=2, elites=2)
    train_world_model(
        TrainWMCfg(data=root / "data", out=root / "wm", epochs=1, ensemble=small, progress=False)
    )
    cfg = FinetuneCfg(
        agent=root / "bc",
        wm=root / "wm",
        out=root / "out",
        imagined_steps=256,
        real_steps=128,
        critic_warmup=64,
        num_envs=8,
        real_envs=4,
        horizon=20,
        start_states=16,
        n_steps=16,
        batch_size=32,
        n_epochs=2,
        episodes=4,
        value_hidden=(16,),
        meter_every=100,
        meter_episodes=4,
    )
    return cfg, run_finetune(cfg)


def test_finetune_scores_bc_and_both_fine_tuned_policies(push_run):
    cfg, report = push_run
    assert read_json(cfg.out / "report.json") == report
    bc = load(cfg.agent)
    # the BC score is the agent's own on the evaluation starts
    env = envs.make("push", num_envs=cfg.episodes, episode_length=40)
    own = evaluate(bc, env, seed=cfg.eval_seed)
    assert report["bc"]["return"] == pytest.approx(own["real_return"]["mean"], rel=1e-6)
    assert report["bc"]["success_rate"] == own["real_success_rate"]
    for name in ("imagined", "real"):
        tuned = load(cfg.out / f"agent_{name}.pt")
        assert tuned.kind == "ppo"
        obs = env.reset(seed=3)
        assert not torch.allclose(tuned.act(obs), bc.act(obs))  # PPO moved it
        assert 0 <= report[name]["success_rate"] <= 1
        score = evaluate(tuned, env, seed=cfg.eval_seed)
        assert report[name]["return"] == pytest.approx(score["real_return"]["mean"], rel=1e-6)
    assert report["imagined"]["real_steps"] == 0
    assert report["real"]["real_steps"] == cfg.real_steps + cfg.critic_warmup
    gain = 100 * (report["imagined"]["success_rate"] - report["bc"]["success_rate"])
    assert report["success_gain_points"] == pytest.approx(gain)
    assert (cfg.out / "tb").is_dir()


def test_the_meter_reads_the_policy_in_the_model_and_in_the_sim_and_changes_nothing(
    push_run, tmp_path
):
    cfg, report = push_run
    readings = report["meter"]
    assert [r["step"] for r in readings] == [0, 128, 256]  # rollouts of 16 x 8 transitions
    env = make_eval_env(read_checkpoint(cfg.agent)["env_args"], None, cfg.meter_episodes)
    wm = load_world_model(cfg.wm)
    for reading, agent in ((readings[0], cfg.agent), (readings[-1], cfg.out / "agent_imagined.pt")):
        own = evaluate(load(agent), env, wm, seed=cfg.meter_seed)
        assert reading["real_return"] == pytest.approx(own["real_return"]["mean"], rel=1e-4)
        assert reading["imagined_return"] == pytest.approx(own["imagined_return"]["mean"], rel=1e-4)
        assert reading["gap"] == pytest.approx(reading["imagined_return"] - reading["real_return"])
        assert reading["reward_bias"] == pytest.approx(
            own["model_error"]["reward_bias"], rel=1e-3, abs=1e-5
        )
        assert 0 <= reading["real_success_rate"] <= 1
    assert (cfg.out / "meter.png").stat().st_size > 0
    # the real-sim run is read too, against the real steps it spent (its warm-up's too)
    real = report["real"]["meter"]
    assert [(r["step"], r["real_steps"]) for r in real] == [(0, 64), (128, 192)]
    assert (cfg.out / "real_steps.png").stat().st_size > 0
    logged = EventAccumulator(str(cfg.out / "tb" / "meter")).Reload()
    assert [e.step for e in logged.Scalars("meter/imagined_return")] == [0, 128, 256]
    # a run without the meter trains exactly the same policy
    quiet = run_finetune(dataclasses.replace(cfg, out=tmp_path / "quiet", meter_every=0))
    assert "meter" not in quiet and not (tmp_path / "quiet" / "meter.png").exists()
    for name in ("imagined", "real"):
        metered = load(cfg.out / f"agent_{name}.pt").policy.state_dict()
        plain = load(tmp_path / "quiet" / f"agent_{name}.pt").policy.state_dict()
        assert all(torch.equal(metered[k], plain[k]) for k in metered)


def test_bad_inputs_are_named(push_run, tmp_path):
    cfg, _ = push_run
    with pytest.raises(ValueError, match="behaviour-cloned"):
        run_finetune(FinetuneCfg(agent=cfg.out / "agent_real.pt", wm=cfg.wm, out=tmp_path))
    with pytest.raises(ValueError, match="imagined_steps must be >= 0"):
        run_finetune(FinetuneCfg(agent=cfg.agent, wm=cfg.wm, out=tmp_path, imagined_steps=-1))
    other = tmp_path / "cartpole"
    collect(
        CollectCfg(
            task="cartpole_swingup",
            num_envs=2,
            episodes=2,
            episode_length=20,
            out=other,
            progress=False,
        )
    )
    small = EnsembleCfg(hidden=16, layers=1, members=1, elites=1)
    train_world_model(
        TrainWMCfg(
            data=other,
            out=tmp_path / "wm",
            epochs=1,
            ensemble=small,
            test_fraction=0.0,
            progress=False,
        )
    )
    with pytest.raises(ValueError, match="dims"):
        run_finetune(FinetuneCfg(agent=cfg.agent, wm=tmp_path / "wm", out=tmp_path))
    with pytest.raises(ValueError, match="--penalty must be >= 0"):
        run_finetune(FinetuneCfg(agent=cfg.agent, wm=cfg.wm, out=tmp_path, penalty=-0.5))
    single = EnsembleCfg(hidden=16, layers=1, members=2, elites=1)
    train_world_model(
        TrainWMCfg(
            data=cfg.agent.parent / "data",
            out=tmp_path / "single",
            epochs=1,
            ensemble=single,
            progress=False,
        )
    )
    with pytest.raises(ValueError, match="--penalty 1.0: the ensemble model has a single elite"):
        run_finetune(
            FinetuneCfg(agent=cfg.agent, wm=tmp_path / "single", out=tmp_path, penalty=1.0)
        )
    assert not (tmp_path / "report.json").exists()


def test_an_out_that_holds_anything_is_refused_and_left_alone(push_run, tmp_path):
    cfg, report = push_run
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "agent_real.pt").write_bytes(b"the user's own agent")
    with pytest.raises(ValueError, match=f"--out {theirs}: is not empty"):
        run_finetune(dataclasses.replace(cfg, out=theirs))
    assert [p.name for p in theirs.iterdir()] == ["agent_real.pt"]
    assert (theirs / "agent_real.pt").read_bytes() == b"the user's own agent"
    with pytest.raises(ValueError, match="is not empty"):  # nor over a finished run's files
        run_finetune(dataclasses.replace(cfg))
    assert read_json(cfg.out / "report.json") == report


def test_group_advantages_are_relative_to_their_group():
    adv = group_advantages(torch.tensor([1.0, 3.0, 10.0, 10.0, 0.0, 4.0]), 2)
    h = 1 / math.sqrt(2.0)  # groups (1, 3) and (0, 4): +-1 and +-2 over stds sqrt 2, sqrt 8
    expected = torch.tensor([-h, h, 0.0, 0.0, -h, h])  # equal returns: no advantage
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.ones(6), 4)


def test_grpo_moves_the_policy_towards_higher_group_returns(tmp_path):
    """A bandit-like check: the reward is -(a - 0.5)^2 per step; starting from a
    cloned policy that acts near -0.3, GRPO must move its actions towards 0.5."""
    torch.manual_seed(1)
    bc = BcAgent(3, 1, {"hidden": 16, "layers": 1})
    bc.log_std.data.fill_(math.log(0.3))
    with torch.no_grad():
        bc.net[-1].weight.zero_()
        bc.net[-1].bias.fill_(-0.3)

    def rollouts(policy, std, gen):
        obs = torch.randn(16, 5, 3, generator=gen)
        with torch.no_grad():
            mean = policy.mean(obs.reshape(-1, 3)).reshape(16, 5, 1)
        actions = mean + std * torch.randn(mean.shape, generator=gen)
        return obs, actions, -((actions.clamp(-1, 1) - 0.5) ** 2).sum(-1)

    cfg = FinetuneCfg(
        agent=tmp_path,
        wm=tmp_path,
        out=tmp_path,
        group_size=4,
        learning_rate=3e-3,
        grpo_epochs=4,
        grpo_batch=32,
    )
    tuned = grpo(bc, rollouts, 30, cfg)
    probe = torch.randn(64, 3)
    assert bc.act(probe).mean() == pytest.approx(-0.3, abs=1e-6)  # the original is untouched
    assert tuned.act(probe).mean() > 0.3
    torch.testing.assert_close(tuned.log_std, bc.log_std)
    assert (tmp_path / "tb" / "grpo").is_dir()


def _grpo(push_cfg: FinetuneCfg, out, **settings) -> FinetuneCfg:
    """A small GRPO fine-tuning of the push run's agent in its model: iterations of
    2 groups x 2 rollouts x 10 steps (40 transitions)."""
    small = dict(groups=2, group_size=2, horizon=10, episodes=4, grpo_batch=16)
    return FinetuneCfg(
        agent=push_cfg.agent, wm=push_cfg.wm, out=out, algo="grpo", **{**small, **settings}
    )


def test_finetune_with_grpo_in_imagination_and_in_the_real_sim(push_run, tmp_path):
    cfg, _ = push_run
    run = _grpo(cfg, tmp_path / "grpo", imagined_steps=80, real_steps=40, start_states=8)
    report = run_finetune(run)
    assert report["imagined"]["steps"] == 80 and report["real"]["real_steps"] == 40
    assert [r["step"] for r in report["meter"]] == [0, 80]  # before and after
    bc = load(cfg.agent)
    obs = envs.make("push", num_envs=4, episode_length=40).reset(seed=3)
    for name in ("imagined", "real"):
        tuned = load(run.out / f"agent_{name}.pt")
        assert tuned.kind == "bc" and not torch.allclose(tuned.act(obs), bc.act(obs))
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        run_finetune(
            FinetuneCfg(agent=cfg.agent, wm=cfg.wm, out=tmp_path, algo="grpo", group_size=1)
        )
    with pytest.raises(ValueError, match="unknown algo"):
        run_finetune(FinetuneCfg(agent=cfg.agent, wm=cfg.wm, out=tmp_path, algo="sac"))


def test_the_penalty_takes_the_models_disagreement_off_each_reward():
    torch.manual_seed(0)
    wm = EnsembleDynamics(6, 2, {"members": 3, "elites": 3, "hidden": 16, "layers": 1}).eval()
    bc, starts, std = _bc(), torch.randn(4, 6), torch.full((2,), 0.3)
    obs, actions, rewards = model_rollouts(wm, starts, bc, std, 5, torch.Generator().manual_seed(1))
    penalised = model_rollouts(wm, starts, bc, std, 5, torch.Generator().manual_seed(1), 2.0)
    torch.testing.assert_close(penalised[1], actions)  # the same steps ...
    state, spread = wm.encode(starts), []
    for t in range(5):
        out = wm.next(state, actions[:, t].clamp(-1.0, 1.0))
        spread.append(out.disagreement)
        state = out.state
    spread = torch.stack(spread, 1)
    assert spread.min() > 0
    torch.testing.assert_close(penalised[2], rewards - 2.0 * spread)  # ... lower rewards


def test_grpo_starts_from_recorded_states_with_start_data(push_run, tmp_path):
    cfg, _ = push_run
    run = _grpo(
        cfg,
        tmp_path / "branched",
        imagined_steps=40,
        real_steps=0,
        start_data=cfg.agent.parent / "data",
        penalty=1.0,
    )
    report = run_finetune(run)
    assert report["imagined"]["steps"] == 40 and "real" not in report
    assert report["config"]["start_data"] == str(cfg.agent.parent / "data")


def test_cotraining_refits_the_model_on_the_policys_real_episodes(push_run, tmp_path):
    cfg, _ = push_run
    source = cfg.agent.parent / "data"
    index_before = (source / "index.json").read_bytes()
    model_before = (cfg.wm / "model.pt").read_bytes()
    run = _grpo(
        cfg,
        tmp_path / "cotrain",
        imagined_steps=120,
        real_steps=0,
        meter_every=40,
        meter_episodes=2,
        cotrain_episodes=2,
        cotrain_every=40,
        cotrain_epochs=1,
    )
    report = run_finetune(run)
    rounds = report["cotrain"]["rounds"]
    assert [r["step"] for r in rounds] == [40, 80]  # iterations of 40 transitions; none at 0
    # the run's dataset: the source's 4 episodes, then each round's 2 of the policy's
    data = Dataset(run.out / "data")
    assert data.episodes == list(range(8))
    old = Dataset(source)
    for e in old.episodes:  # copied as they were
        for key, value in old.episode(e).items():
            np.testing.assert_array_equal(data.episode(e)[key], value)
    new = [data.length(e) for e in range(4, 8)]
    assert [r["real_steps"] for r in rounds] == [sum(new[:2]), sum(new)]
    assert report["imagined"]["real_steps"] == sum(new)
    assert data.env_args["policy"] == "finetune"
    # each round's model was refitted from the one before, on all of the data
    for k in range(2):
        wm = wm_base.read_checkpoint(run.out / "wm" / f"round_{k:03d}")
        assert wm["data"] == str(run.out / "data") and wm["kind"] == "ensemble"
        start = cfg.wm / "model.pt" if k == 0 else run.out / "wm" / "round_000" / "model.pt"
        assert wm["train"]["init"] == str(start)
    # the meter reads the refitted model: after a round, the real steps spent by then
    assert [(r["step"], r["real_steps"]) for r in report["meter"]] == [
        (0, 0),
        (40, rounds[0]["real_steps"]),
        (80, rounds[1]["real_steps"]),
        (120, rounds[1]["real_steps"]),
    ]
    assert (source / "index.json").read_bytes() == index_before  # the user's files: as they were
    assert (cfg.wm / "model.pt").read_bytes() == model_before
    with pytest.raises(ValueError, match="no dataset there .* --cotrain-data"):
        run_finetune(
            dataclasses.replace(run, out=tmp_path / "x", cotrain_data=tmp_path / "nowhere")
        )


def test_meter_keep_best_keeps_the_policy_of_the_best_reading(push_run, tmp_path):
    cfg, _ = push_run
    run = _grpo(
        cfg,
        tmp_path / "best",
        imagined_steps=160,
        real_steps=80,
        meter_every=40,
        meter_episodes=2,
        meter_keep="best",
        learning_rate=3e-3,  # policies that differ from reading to reading
    )
    report = run_finetune(run)
    env = make_eval_env(read_checkpoint(cfg.agent)["env_args"], None, 2)
    wm = load_world_model(cfg.wm)
    for name, readings in (("imagined", report["meter"]), ("real", report["real"]["meter"])):
        # push has a goal: the highest real success rate, the first of equals
        best = readings[
            max(range(len(readings)), key=lambda i: (readings[i]["real_success_rate"], -i))
        ]
        assert report[name]["kept_at"] == best["step"]
        kept = evaluate(load(run.out / f"agent_{name}.pt"), env, wm, seed=run.meter_seed)
        assert kept["real_return"]["mean"] == pytest.approx(best["real_return"], rel=1e-5)
        steps_read = len(readings) * 2 * kept["steps"]  # every reading's 2 real episodes
        assert report[name]["real_steps_read"] == steps_read
    assert report["imagined"]["real_steps"] == report["imagined"]["real_steps_read"]
    assert report["real"]["real_steps"] == 80 + report["real"]["real_steps_read"]
    with pytest.raises(ValueError, match="unknown --meter-keep"):
        run_finetune(dataclasses.replace(run, out=tmp_path / "x", meter_keep="first"))


def test_the_success_bonus_pays_a_head_that_is_refitted_with_the_model(push_run, tmp_path):
    cfg, _ = push_run
    run = _grpo(
        cfg,
        tmp_path / "bonus",
        imagined_steps=80,
        real_steps=40,
        meter_every=40,
        meter_episodes=2,
        cotrain_episodes=2,
        cotrain_every=40,
        cotrain_epochs=1,
        success_bonus=1.0,
    )
    report = run_finetune(run)
    head = report["success_head"]
    assert head["data"] == str(cfg.agent.parent / "data")  # fitted on the model's data
    assert 0.0 <= head["success_share"] <= 1.0 and head["val_steps"] > 0
    # each round refits it on the run's dataset, as it refits the model
    rounds = report["cotrain"]["rounds"]
    assert len(rounds) == 1 and rounds[0]["success_head"]["data"] == str(run.out / "data")
    saved = torch.load(run.out / "success_head.pt")
    assert set(saved) >= {"obs_mean", "obs_std"}
    # the meter reads the imagined success rate beside the real one, in both runs
    for reading in report["meter"] + report["real"]["meter"]:
        assert 0.0 <= reading["imagined_success_rate"] <= 1.0
        assert 0.0 <= reading["real_success_rate"] <= 1.0
    assert report["config"]["success_bonus"] == 1.0
    # PPO in the imagined env takes up the head too
    ppo = dataclasses.replace(
        cfg, out=tmp_path / "ppo", imagined_steps=64, real_steps=0, success_bonus=0.5
    )
    assert run_finetune(ppo)["success_head"]["val_steps"] > 0
    with pytest.raises(ValueError, match="success_bonus must be >= 0"):
        run_finetune(dataclasses.replace(run, out=tmp_path / "x", success_bonus=-1.0))


def test_ppo_branches_from_recorded_states_and_each_rounds_own(push_run, tmp_path, monkeypatch):
    cfg, _ = push_run
    pools = []
    use_starts = ImaginedEnv.use_starts

    def spy(env, starts):
        pools.append(starts.clone())
        use_starts(env, starts)

    monkeypatch.setattr(ImaginedEnv, "use_starts", spy)
    source = cfg.agent.parent / "data"
    run = dataclasses.replace(
        cfg,
        out=tmp_path / "branched",
        imagined_steps=256,
        real_steps=0,
        start_data=source,
        horizon=8,
        meter_every=0,
        cotrain_episodes=2,
        cotrain_every=128,
        cotrain_epochs=1,
    )
    report = run_finetune(run)
    assert len(report["cotrain"]["rounds"]) == 1 and len(pools) == 1
    # the recorded observations, then the round's 2 episodes' (40 steps each)
    recorded = EpisodeData(source).data["obs"].float()
    torch.testing.assert_close(pools[0][: len(recorded)], recorded)
    data = Dataset(run.out / "data")
    new = [torch.from_numpy(data.episode(e)["obs"]) for e in (4, 5)]
    torch.testing.assert_close(pools[0][len(recorded) :], torch.cat(new).float())


def test_meter_patience_stops_a_run_whose_real_score_does_not_improve(push_run, tmp_path):
    cfg, _ = push_run
    # a learning rate of 0: the policy never changes, so no reading beats the first
    run = _grpo(
        cfg,
        tmp_path / "stop",
        imagined_steps=200,
        real_steps=0,
        meter_every=40,
        meter_episodes=2,
        meter_patience=2,
        learning_rate=0.0,
    )
    report = run_finetune(run)
    # read at 0, 40 and 80 (two readings no better than the first): stopped at 80
    assert [r["step"] for r in report["meter"]] == [0, 40, 80]
    assert report["imagined"]["steps"] == 80
    ppo = dataclasses.replace(
        cfg,
        out=tmp_path / "ppo",
        imagined_steps=0,
        real_steps=512,
        meter_every=128,
        meter_episodes=2,
        meter_patience=1,
        learning_rate=0.0,
    )
    real = run_finetune(ppo)["real"]
    assert [r["step"] for r in real["meter"]] == [0, 128]
    assert real["real_steps"] == 128 + cfg.critic_warmup + 2 * 2 * 40  # two readings' episodes
    with pytest.raises(ValueError, match="meter-patience .* needs a meter"):
        run_finetune(dataclasses.replace(run, out=tmp_path / "x", meter_every=0))
