"""The TD-MPC2-style latent model: its parts against their definitions (SimNorm,
two-hot regression, the squashed Gaussian prior), gradients kept apart, target
Q-functions, training on real collected data (consistency falls, the reward
beats a constant), exact reloads and resume, the latent imagined env, eval-wm's
reward-only report, and MPPI with the model's own value and policy prior."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import envs
import world_models
from agents import base
from agents.dreamer import DreamerAgent
from agents.jobs.evaluate import evaluate
from agents.jobs.loop import LoopCfg, run_loop
from agents.mppi import MppiAgent
from sim.data.loader import EpisodeData
from world_models.base import read_checkpoint
from world_models.evaluate import EvalWMCfg, evaluate_world_model
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.models.ensemble import EnsembleDynamics
from world_models.models.tdmpc2 import TdMpc2, TdMpc2Cfg, simnorm, soft_ce, two_hot, two_hot_inv
from world_models.train import TrainWMCfg, train_world_model

TINY = {"latent": 32, "hidden": 64, "enc_hidden": 64, "num_q": 3}


def _windows(obs_dim=5, act_dim=1, b=16, length=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(b, length, obs_dim, generator=g),
        "next_obs": torch.randn(b, length, obs_dim, generator=g),
        "actions": torch.rand(b, length, act_dim, generator=g) * 2 - 1,
        "rewards": torch.rand(b, length, generator=g),
        "terminated": torch.zeros(b, length, dtype=torch.bool),
        "mask": torch.ones(b, length, dtype=torch.bool),
    }


def test_simnorm_latents_lie_on_simplices():
    model = TdMpc2(5, 1, TINY)
    z = model.encode(torch.randn(7, 5) * 10)
    groups = z.reshape(7, -1, 8)
    assert z.shape == (7, 32) and (groups >= 0).all()
    torch.testing.assert_close(groups.sum(-1), torch.ones(7, 4))
    step = model.next(z, torch.rand(7, 1) * 2 - 1)
    torch.testing.assert_close(step.state.reshape(7, -1, 8).sum(-1), torch.ones(7, 4))
    assert torch.equal(step.obs, step.state)  # no decoder: the latent is the observation
    assert not model.predicts_obs and model.plans and model.state_dim == 32
    x = torch.randn(3, 16)
    torch.testing.assert_close(simnorm(x, 8), torch.softmax(x.view(3, 2, 8), -1).view(3, 16))
    with pytest.raises(ValueError, match="multiple of simnorm_dim"):
        TdMpc2(5, 1, {**TINY, "latent": 30})


def test_two_hot_regression_matches_its_definition():
    x = torch.tensor([0.0, 0.3, 1.0, -2.5, 40.0, 1e6, -1e6])
    target = two_hot(x, 101, -10.0, 10.0)
    assert target.shape == (7, 101) and ((target > 0).sum(-1) <= 2).all()
    torch.testing.assert_close(target.sum(-1), torch.ones(7))
    centres = torch.linspace(-10, 10, 101)
    # the expected bin is symlog(x) (clipped to [-10, 10]); symexp of it is x
    expected = (target * centres).sum(-1)
    torch.testing.assert_close(expected, (torch.sign(x) * torch.log1p(x.abs())).clamp(-10, 10))
    back = two_hot_inv(torch.log(target.clamp_min(1e-30)), -10.0, 10.0)
    torch.testing.assert_close(back[:5], x[:5], rtol=1e-4, atol=1e-4)
    logits = torch.randn(7, 101)
    torch.testing.assert_close(
        soft_ce(logits, x, -10.0, 10.0), F.cross_entropy(logits, target, reduction="none")
    )


def test_policy_prior_is_a_squashed_gaussian():
    model = TdMpc2(5, 2, TINY)
    with torch.no_grad():  # a wide prior, so the tanh correction matters
        model.pi[-1].bias.fill_(0.3)
    z = model.encode(torch.randn(64, 5))
    g = torch.Generator().manual_seed(0)
    action, mean, log_prob = model._policy(z, g)
    mu, raw = model.pi(z).chunk(2, -1)
    std = (-10 + 6 * (torch.tanh(raw) + 1)).exp()
    base = torch.distributions.Normal(mu, std)
    squashed = torch.distributions.TransformedDistribution(
        base, [torch.distributions.TanhTransform(cache_size=1)]
    )
    inner = torch.atanh(action.clamp(-0.999, 0.999))
    ok = action.abs().amax(-1) < 0.99  # away from the 1e-6 guard of the log-det
    ref = squashed.log_prob(torch.tanh(inner)).sum(-1)
    torch.testing.assert_close(log_prob[ok], ref[ok], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(mean, torch.tanh(mu))
    assert torch.equal(model.policy(z), torch.tanh(mu).detach())
    a1 = model.policy(z, torch.Generator().manual_seed(3))
    a2 = model.policy(z, torch.Generator().manual_seed(3))
    assert torch.equal(a1, a2) and (a1.abs() <= 1).all()


def test_gradients_are_kept_apart_and_targets_follow():
    torch.manual_seed(0)
    model = TdMpc2(5, 1, TINY).train()
    batch = _windows()
    loss, scalars = model.loss(batch)
    assert torch.isfinite(loss) and {"consistency", "reward", "value", "pi_loss"} <= set(scalars)
    # the policy's term reaches the policy prior only
    zs = torch.stack([model._encode(batch["obs"][:, 0])] * 4, 1)
    pi_loss, _ = model._policy_loss(zs.detach(), batch["mask"].float(), 0.5 ** torch.arange(4.0))
    pi_loss.backward()
    pi = {id(p) for p in model.pi.parameters()}
    for p in model.parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == (id(p) in pi)
    # encoder at 0.3 x lr, the prior with Adam's eps 1e-5
    groups = model.param_groups(1e-3)
    assert groups[0]["lr"] == pytest.approx(3e-4) and groups[2]["eps"] == 1e-5
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # target Q-functions move by tau toward the trained ones
    with torch.no_grad():
        model.qs.w2.add_(1.0)
    before = model.qs.target_w2.clone()
    model.after_step()
    torch.testing.assert_close(model.qs.target_w2, before + 0.01 * (model.qs.w2 - before))


def test_model_terms_do_not_reach_the_policy_prior():
    """With the same weights and random draws, the policy prior's gradient is the same
    whether the model's terms weigh 0 or their defaults: none of it comes from them."""
    batch = _windows(seed=2)
    full = TdMpc2(5, 1, TINY).train()
    zero = {k: 0.0 for k in ("consistency_coef", "reward_coef", "value_coef", "termination_coef")}
    alone = TdMpc2(5, 1, {**TINY, **zero}).train()
    alone.load_state_dict(full.state_dict())
    grads = []
    for model in (full, alone):
        torch.manual_seed(5)
        loss, _ = model.loss(batch)
        grads.append(torch.autograd.grad(loss, list(model.pi.parameters())))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in grads[0])


def _train(out: Path, data: Path, steps: int, epochs: int = 2, **settings) -> dict:
    cfg = TrainWMCfg(
        data=data,
        model="tdmpc2",
        out=out,
        epochs=epochs,
        steps_per_epoch=steps,
        patience=epochs,
        progress=False,
        # a higher learning rate than TD-MPC2's 3e-4, to learn in 120 steps
        tdmpc2=TdMpc2Cfg(**{**TINY, "batch_size": 32, "lr": 1e-3, **settings}),
    )
    return cfg, train_world_model(cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, swingup_data):
    torch.set_num_threads(1)
    return _train(tmp_path_factory.mktemp("tdmpc2") / "wm", swingup_data, steps=40, epochs=3)


def test_learns_consistency_and_reward_on_real_data(trained):
    """On windows of held-out real swing-up episodes: the one-step latent consistency
    error, over the spread of the target latents (so a collapsed latent cannot look
    consistent), falls far below the untrained model's; the predicted reward beats
    the best constant (the rewards' mean)."""
    cfg, report = trained
    assert report["open_loop"]["model"] == {}  # no observation error, and it says so
    assert "observation error not available" in report["open_loop_note"]
    model = world_models.load(cfg.out)
    ckpt = read_checkpoint(cfg.out / "model.pt")
    torch.manual_seed(0)
    untrained = TdMpc2(5, 1, ckpt["config"]).eval()
    stats = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("obs_")}
    untrained.load_state_dict(stats, strict=False)  # the same inputs, no learning
    data = EpisodeData(cfg.data, sequence_length=3)
    episodes = torch.tensor(report["test_episodes"])
    batch = data.__getitems__(torch.isin(data.episode_of, episodes).nonzero().squeeze(-1))
    obs, action, nxt = batch["obs"][:, 0], batch["actions"][:, 0], batch["next_obs"][:, 0]

    def consistency(m: TdMpc2) -> float:
        target = m.encode(nxt)
        error = ((m.next(m.encode(obs), action).state - target) ** 2).sum(-1).mean()
        return float(error / target.var(0).sum())

    before, after = consistency(untrained), consistency(model)
    assert after < 0.1 * before, (before, after)
    step = model.next(model.encode(obs), action)
    rewards = batch["rewards"][:, 0]
    model_mse = float(((step.reward - rewards) ** 2).mean())
    constant_mse = float(rewards.var())
    assert model_mse < 0.3 * constant_mse, (model_mse, constant_mse)
    # the report's reward error (after 8 observed steps, over the reward's variance)
    assert report["open_loop"]["reward_model"][1] < 0.3


def test_reload_and_resume(trained):
    cfg, report = trained
    model = world_models.load(cfg.out / "model.pt", kind="tdmpc2")
    again = world_models.load(cfg.out)
    obs, act = torch.randn(6, 5), torch.rand(6, 1) * 2 - 1
    z = model.encode(obs)
    assert torch.equal(z, again.encode(obs))
    for x, y in zip(model.next(z, act), again.next(z, act), strict=True):
        assert torch.equal(x, y)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(model.value(z, g1), again.value(z, g2))
    assert torch.equal(model.policy(z), again.policy(z))
    state = model.state_dict()
    assert "qs.target_w0" in state and "q_scale" in state  # targets and scale are saved
    assert not torch.equal(state["qs.target_w0"], state["qs.w0"])  # they lag the weights
    resumed = train_world_model(
        TrainWMCfg(**{**cfg.__dict__, "epochs": report["epochs"] + 1, "resume": True})
    )
    assert resumed["epochs"] == report["epochs"] + 1


def test_imagined_env_serves_the_latent(trained):
    cfg, _ = trained
    model = world_models.load(cfg.out)
    env = ImaginedEnv.from_dataset(
        model, cfg.data, ImaginedEnvCfg(num_envs=4, episode_length=5, termination="never")
    )
    assert env.latent_obs and env.observation_dim == 32
    assert env.observation_space.shape == (32,)
    obs = env.reset()
    torch.testing.assert_close(obs.reshape(4, -1, 8).sum(-1), torch.ones(4, 4))
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(torch.zeros(4, 1))
    assert truncated.all() and info["final_obs"].shape == (4, 32)
    with pytest.raises(ValueError, match="predicts no observations"):
        ImaginedEnv.from_dataset(
            model, cfg.data, ImaginedEnvCfg(), termination=lambda o: o[:, 0] > 1
        )


def test_eval_wm_reports_the_reward_and_no_observation_error(trained, tmp_path):
    cfg, _ = trained
    report = evaluate_world_model(
        EvalWMCfg(
            wm=cfg.out,
            starts=8,
            horizons=(1, 5),
            video_starts=2,
            out=tmp_path / "eval",
            progress=False,
        )
    )
    assert report["state_error"]["model"] == {} and report["state_error"]["ratio"] == {}
    assert set(report["state_error"]["copy_last"]) == {"1", "5"}  # the baselines are real
    assert report["reward_error"]["nmse"]["1"] < 1.0  # beats the mean
    assert any("observation error not available" in n for n in report["notes"])
    assert "video" not in report["artifacts"] and "plot" not in report["artifacts"]


def test_mppi_plans_with_the_models_value_and_prior(trained):
    cfg, _ = trained
    model = world_models.load(cfg.out)
    small = {"horizon": 3, "samples": 32, "elites": 8, "policy_samples": 4, "iterations": 2}
    planner = MppiAgent.build(model, **small)
    assert planner.model_value and planner.value_agent is None
    obs = torch.randn(3, 5)
    action = planner.act(obs)
    assert action.shape == (3, 1) and (action.abs() <= 1).all()
    # the same plan from the latent (what acts in the model's imagined env)
    twin = MppiAgent.build(model, **small)
    assert torch.equal(twin.act_latent(model.encode(obs)), action)
    # the returns carry the model's value at the horizon
    seqs = torch.zeros(3, 2, 3, 1)
    without = MppiAgent.build(model, **small, model_value=False)
    assert not torch.allclose(planner.returns(obs, seqs), without.returns(obs, seqs))
    # what cannot work is refused
    with pytest.raises(ValueError, match="policy prior"):
        MppiAgent.build(EnsembleDynamics(5, 1, {"members": 2, "elites": 1}), policy_samples=2)
    with pytest.raises(ValueError, match="cannot score its states"):
        MppiAgent.build(model, DreamerAgent(5, 1))
    with pytest.raises(ValueError, match="discount"):
        MppiAgent.build(model, gamma=0.9)


def test_imagined_return_needs_a_planner_over_the_same_model(trained):
    cfg, _ = trained
    model = world_models.load(cfg.out)
    env = envs.make("cartpole_swingup", 2, episode_length=20, action_repeat=2)
    planner = MppiAgent.build(model, horizon=3, samples=16, elites=4, iterations=1)
    report = evaluate(planner, env, model, seed=7)
    assert set(report) >= {"real_return", "imagined_return", "gap"}
    with pytest.raises(ValueError, match="cannot act in its imagination"):
        evaluate(DreamerAgent(5, 1), env, model, seed=7)
    other = TdMpc2(5, 1, model.config)
    with pytest.raises(ValueError, match="plans over another model"):
        evaluate(MppiAgent.build(other, horizon=2, samples=8, elites=2), env, model, seed=7)
    env.close()


def test_the_loop_refuses_agents_that_need_observations(tmp_path):
    with pytest.raises(ValueError, match="use --agent mppi"):
        run_loop(LoopCfg(model="tdmpc2", agent="dreamer", out=tmp_path / "run", progress=False))


@pytest.mark.slow(seconds=30)
def test_the_loop_runs_with_the_latent_model(tmp_path):
    """Two iterations of the closed loop with the latent model and its planner, the
    model trained on across them at a ratio to the data (13 s on the 2-core machine;
    no video: it adds minutes of offscreen rendering)."""
    cfg = LoopCfg(
        model="tdmpc2",
        agent="mppi",
        budget=400,
        episode_length=100,
        episodes_per_iter=2,
        wm_train_ratio=0.05,  # 100 agent steps per iteration: 5 gradient steps
        eval_episodes=2,
        video_steps=0,
        out=tmp_path / "run",
        progress=False,
    )
    cfg.tdmpc2 = TdMpc2Cfg(**TINY, batch_size=32)
    cfg.mppi_tdmpc2.samples, cfg.mppi_tdmpc2.elites, cfg.mppi_tdmpc2.policy_samples = 16, 4, 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: more threads than free cores only spin
    try:
        summary = run_loop(cfg)
    finally:
        torch.set_num_threads(threads)
    assert summary["finished"] and summary["model"] == "tdmpc2"
    assert all(math.isfinite(r["imagined_return"]) for r in summary["curve"])
    # one model trained on across the iterations: its optimiser went 5 + 5 steps
    last = read_checkpoint(tmp_path / "run" / "wm" / "iter_001" / "last.pt")
    assert {int(s["step"]) for s in last["optimizer"]["state"].values()} == {10}
    acting = base.load(tmp_path / "run" / "agent.pt")
    assert acting.kind == "mppi" and acting.model_value and acting.value_agent is None
