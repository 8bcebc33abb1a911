"""Model-free RL in the real simulator: Stable-Baselines3 SAC or PPO on a task.

`python run.py train-rl --task walker_walk --sb3.algo sac --steps 100000
[--randomize.mass-scale 0.7 1.3 ...]` trains with SB3's defaults (`agents.sb3_agents`)
on the batched env (SB3's VecEnv, `envs.sb3`), with domain randomization drawn per
episode where `--randomize.*` asks for it. Every `eval_every` env steps the
deterministic policy is scored on the task's nominal physics from fixed starts
(`eval_seed`, as `run.py eval` scores it) and the agent is saved: `agent.pt`
(with the env_args of the task it trained on, so `eval`, `collect --policy` and
`transfer` take it), `summary.json` (the curve), TensorBoard under `tb/`.
`agent.pt` and `summary.json` are replaced atomically at each evaluation; a run
that stops keeps its last evaluated agent (the replay buffer and optimisers are
not kept: a new run starts from scratch). On `--backend isaaclab` (in Isaac Lab's
environment), which holds one simulation per process, the training env is closed
for each evaluation and built again after it, its episodes going on from the next
seed.

Env steps are control steps (an agent step is `action_repeat` of them), as in the
closed loop, so the curves of both read on one axis.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import envs
from agents import base
from agents.jobs.collect import CollectCfg, env_args
from agents.jobs.evaluate import evaluate
from agents.sb3_agents import Sb3Cfg, Sb3Learner
from sim.data.atomic import write_json_atomic
from sim.randomization import RandomizationCfg


@dataclass
class TrainRLCfg:
    """SB3 SAC or PPO in the real simulator, optionally with domain randomization."""

    task: str = "cartpole_swingup"
    """Task name (see `envs.list_tasks()`)."""
    backend: str = "mujoco"
    """Physics backend."""
    steps: int = 100_000
    """Env steps [control steps] to train for."""
    num_envs: int = 1
    """Parallel envs SB3 steps (SAC: 1, its default; PPO gathers n_steps from each)."""
    action_repeat: int = 2
    """Control steps per agent step (the closed loop's default)."""
    episode_length: int | None = None
    """Override the task's episode length [control steps]."""
    randomize: RandomizationCfg = field(default_factory=RandomizationCfg)
    """Domain randomization of the training episodes (the evaluation stays nominal)."""
    eval_every: int = 10_000
    """Env steps between evaluations (and saves of agent.pt)."""
    eval_episodes: int = 10
    """Episodes of each evaluation."""
    eval_seed: int = 1000
    """Seed of the evaluation's start states."""
    seed: int = 0
    """Seed of SB3 and of the training episodes."""
    out: Path | None = None
    """Output directory (default: runs/rl/<task>-<algo>-<date>-<time>)."""
    init: Path | None = None
    """Start from this agent's weights (an SB3 agent of --sb3.algo: a train-rl or loop
    agent.pt), with a fresh replay buffer and optimisers: fine-tuning, e.g. a
    nominal-physics agent with --randomize.*."""
    sb3: Sb3Cfg = field(default_factory=Sb3Cfg)
    """SB3's settings (--sb3.algo sac or ppo); its seed is --seed."""
    progress: bool = True
    """Print a line at each evaluation."""


def run_train_rl(cfg: TrainRLCfg) -> dict[str, Any]:
    """Entry point of `python run.py train-rl`."""
    for name in ("steps", "num_envs", "action_repeat", "eval_every", "eval_episodes"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    out = Path(cfg.out or f"runs/rl/{cfg.task}-{cfg.sb3.algo}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    settings = {"action_repeat": cfg.action_repeat}
    if cfg.episode_length is not None:
        settings["episode_length"] = cfg.episode_length
    # Isaac Lab holds one simulation per process: there the training env is closed for
    # each evaluation and built again after it (with the next seed of its episodes)
    one_sim = cfg.backend == "isaaclab"

    def training_env(k: int):
        return envs.make(
            cfg.task,
            cfg.num_envs,
            cfg.backend,
            seed=cfg.seed + k,
            randomization=cfg.randomize,
            **settings,
        )

    env = training_env(0)
    args = env_args(CollectCfg(task=cfg.task, backend=cfg.backend, seed=cfg.seed), env)
    config = json.loads(json.dumps(asdict(cfg), default=str))
    sb3 = dataclasses.replace(cfg.sb3, seed=cfg.seed, tensorboard_log=out / "tb")
    learner = Sb3Learner(None if cfg.init is None else base.load(cfg.init), env, sb3)
    curve: list[dict[str, Any]] = []
    start, steps = time.perf_counter(), 0
    try:
        while steps < cfg.steps:
            chunk = min(cfg.eval_every, cfg.steps - steps)
            agent = learner.learn(max(1, chunk // cfg.action_repeat))
            steps = learner.num_timesteps * cfg.action_repeat
            if one_sim:
                env.close()
                env = None
            eval_env = envs.make(
                cfg.task, cfg.eval_episodes, cfg.backend, seed=cfg.eval_seed, **settings
            )
            try:
                report = evaluate(agent, eval_env, seed=cfg.eval_seed)
            finally:
                eval_env.close()
            if one_sim and steps < cfg.steps:
                env = training_env(len(curve) + 1)
                learner.set_env(env)
            curve.append(
                {
                    "env_steps": steps,
                    "real_return": report["real_return"]["mean"],
                    "real_return_std": report["real_return"]["std"],
                    "wall_s": time.perf_counter() - start,
                }
            )
            base.save(agent, out / "agent.pt", env_args=args)
            summary = {"config": config, "curve": curve}
            write_json_atomic(out / "summary.json", summary)
            if cfg.progress:
                last = curve[-1]
                print(
                    f"  {cfg.sb3.algo} {cfg.task} seed {cfg.seed}: {steps:,} env steps, return "
                    f"{last['real_return']:.1f}, {last['wall_s']:.0f} s",
                    flush=True,
                )
    finally:
        if env is not None:
            env.close()
    last = curve[-1]
    print(
        f"{cfg.task}: {cfg.sb3.algo} real return {last['real_return']:.1f} after "
        f"{last['env_steps']:,} env steps ({last['wall_s']:.0f} s); agent: {out / 'agent.pt'}"
    )
    return summary
