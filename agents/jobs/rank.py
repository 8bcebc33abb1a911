"""`python run.py eval-wm --wm DIR --policies P ...`: a world model as a policy evaluator.

Every policy runs the same N episodes twice from the same start states: in the
real simulator (`env.reset(seed)`) and in the world model served as an
`ImaginedEnv` from those starts' observations (mean predictions, the task's
horizon), by `agents.jobs.evaluate.evaluate`, as `run.py eval` measures one agent. A
model that ranks policies as the simulator does can choose among them without the simulator: the
report gives the Pearson correlation of the mean returns, their Spearman rank
correlation (Pearson of the ranks, ties sharing their mean rank), the regret@1
(the real return lost by taking the model's favourite instead of the best policy:
the best real mean return minus the favourite's, 0 when the model picks the best),
and a scatter plot of imagined against real return.

A policy is an agent checkpoint (any kind, World Action Models' model directories
included), or `expert:STD`, the task's scripted expert with white Gaussian noise
of that std on every action (`expert:0` is the expert itself): a ladder of
quality from one controller. Every policy acts with its exploration noise where
it has one (`expert:STD`) and deterministically otherwise; the noise is drawn
from one seeded generator per run, so the real and the imagined run of a policy
see the same noise sequence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agents.base import Agent
from agents.base import load as load_agent
from agents.expert_agent import ExpertAgent
from agents.jobs.evaluate import evaluate, make_eval_env
from sim.data.atomic import write_json_atomic
from world_models import pictures
from world_models.base import checkpoint_path, read_checkpoint
from world_models.base import from_checkpoint as wm_from_checkpoint
from world_models.evaluate import EvalWMCfg


def make_policy_agent(spec: str, env) -> tuple[Agent, float | None]:
    """(agent, noise std or None) of a `--policies` entry."""
    if spec.startswith("expert:"):
        try:
            std = float(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(
                f"policy {spec!r}: expert:STD takes a number, e.g. expert:0.5"
            ) from None
        if std < 0:
            raise ValueError(f"policy {spec!r}: the noise std must be >= 0")
        return ExpertAgent.for_env(env, noise_std=std), std
    if not Path(spec).exists():
        raise ValueError(f"policy {spec!r}: no such agent checkpoint (or expert:STD)")
    agent = load_agent(spec)
    if (agent.obs_dim, agent.action_dim) != (env.observation_dim, env.action_dim):
        raise ValueError(
            f"policy {spec}: acts on ({agent.obs_dim} obs, {agent.action_dim} "
            f"actions), {env.name} has ({env.observation_dim}, "
            f"{env.action_dim})"
        )
    return agent, None


def ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks, tied values sharing their mean rank."""
    order = values.argsort()
    r = torch.empty_like(values, dtype=torch.float64)
    r[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    for v in values.unique():
        tied = values == v
        r[tied] = r[tied].mean()
    return r


def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation; None where one side is constant (undefined)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = (a.pow(2).sum() * b.pow(2).sum()).sqrt()
    return float((a * b).sum() / denom) if denom > 0 else None


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman rank correlation; None where one side is constant."""
    return pearson(ranks(a.double()), ranks(b.double()))


def regret_at_1(real: torch.Tensor, imagined: torch.Tensor) -> float:
    """The best real return minus the real return of the policy the model rates
    highest (policies tied at the top of the imagined returns: their mean)."""
    favourites = imagined == imagined.max()
    return float(real.max() - real[favourites].double().mean())


def score_policy(cfg: EvalWMCfg, i: int, spec: str) -> dict[str, Any]:
    """Real and imagined mean return of the i-th policy, on an env and a model of its
    own (so that policies can be scored in separate processes, as Ray tasks)."""
    ckpt = read_checkpoint(cfg.wm)
    model = wm_from_checkpoint(ckpt, cfg.wm).to(cfg.device)
    env = make_eval_env(ckpt.get("env_args"), cfg.task, cfg.episodes, seed=cfg.seed)
    try:
        agent, std = make_policy_agent(spec, env)
        result = evaluate(
            agent.to(cfg.device),
            env,
            model,
            cfg.seed,
            noise_seed=None if std is None else cfg.seed + i,
        )
    finally:
        env.close()
    row = {
        "policy": spec,
        "real_return": result["real_return"]["mean"],
        "imagined_return": result["imagined_return"]["mean"],
        "task": env.name,
        "steps": result["steps"],
    }
    if "real_success_rate" in result:
        row["real_success_rate"] = result["real_success_rate"]
    return row


def _score_all(cfg: EvalWMCfg) -> list[dict[str, Any]]:
    """Every policy's row, one after another or as Ray tasks (`--ray`)."""
    if not cfg.ray:
        rows = []
        for i, spec in enumerate(cfg.policies):
            rows.append(score_policy(cfg, i, spec))
            if cfg.progress:
                r = rows[-1]
                print(f"  {spec}: real {r['real_return']:.1f}, imagined {r['imagined_return']:.1f}")
        return rows
    from agents.jobs.ray_collect import RETRIES, connect, submit

    ray = connect(cfg.ray_address, "eval-wm --policies --ray", cfg.device, cfg.worker_gpus)
    calls = [(cfg, i, spec) for i, spec in enumerate(cfg.policies)]
    return ray.get(
        submit(ray, score_policy, calls, gpus=cfg.worker_gpus, device=cfg.device, retries=RETRIES)
    )


def rank_policies(cfg: EvalWMCfg) -> dict[str, Any]:
    """Real and imagined returns of every policy, their correlations and the plot."""
    if len(cfg.policies) < 2:
        raise ValueError("--policies needs at least 2 policies to correlate")
    if cfg.worker_gpus and not cfg.ray:
        raise ValueError("--worker-gpus reserves GPUs for Ray tasks: it needs --ray")
    ckpt = read_checkpoint(cfg.wm)
    model = wm_from_checkpoint(ckpt, cfg.wm)
    if model.sees_pixels:
        raise ValueError("--policies: policies act on state vectors; this model sees frames")
    if not model.predicts_obs:
        raise ValueError(
            f"--policies: policies act on observations; the {model.kind} model predicts "
            "none (it has no decoder), so it cannot run them in imagination"
        )
    rows = _score_all(cfg)
    task, steps = [(row.pop("task"), row.pop("steps")) for row in rows][0]  # the same for all
    real = torch.tensor([r["real_return"] for r in rows])
    imag = torch.tensor([r["imagined_return"] for r in rows])
    out = cfg.out or checkpoint_path(cfg.wm).parent / "eval"  # as eval-wm's default
    out.mkdir(parents=True, exist_ok=True)
    plot = out / "policies.png"
    n = cfg.episodes
    pictures.plot_scatter(
        plot,
        real.tolist(),
        imag.tolist(),
        [r["policy"] for r in rows],
        title=f"{task}: {n} episodes per policy",
    )
    report = {
        "wm": str(cfg.wm),
        "task": task,
        "episodes": n,
        "seed": cfg.seed,
        "steps": steps,
        "policies": rows,
        "pearson": pearson(real, imag),
        "spearman": spearman(real, imag),
        "regret_at_1": regret_at_1(real, imag),
        "favourite": rows[int(imag.argmax())]["policy"],
        "plot": str(plot),
    }
    write_json_atomic(out / "policies.json", report)
    return report


def run_rank_policies(cfg: EvalWMCfg) -> dict[str, Any]:
    report = rank_policies(cfg)
    pear, spear = (
        f"{v:.3f}" if v is not None else "undefined (a constant side)"
        for v in (report["pearson"], report["spearman"])
    )
    print(
        f"eval-wm: {len(report['policies'])} policies on {report['task']}, "
        f"{report['episodes']} episodes each: Pearson {pear}, Spearman {spear} "
        f"(imagined vs real return), regret@1 {report['regret_at_1']:.1f} "
        f"(the model's favourite: {report['favourite']})"
    )
    print(f"  {report['plot']}, {Path(report['plot']).with_name('policies.json')}")
    return report
