"""The closed loop's steps: collect, fit the world model, improve in imagination, evaluate.

`run.py` strings them together (`closed_loop`); this module holds what each step
does and what survives a crash. An iteration k:

1. **collect** `episodes_per_iter` episodes into the run's dataset: iteration 0
   with temporally correlated noise (an AR(1) process, `noise_std`), later ones
   with the agent exploring (its own noise, drawn from each episode's seed);
2. **fit** the world model on everything collected, fine-tuning iteration k-1's
   model (`wm/iter_<k>/`, `train-wm`'s files; no test episodes: the real
   simulator is the loop's test, and the open-loop errors it records are on the
   validation episodes, beside the copy-last and constant-velocity baselines); or,
   with `wm_train_ratio`, going on with its training (optimiser and statistics
   carried on) for a number of gradient steps proportional to the new data;
3. **improve** the policy in imagination, from start states drawn from the
   dataset: `dreamer`, `updates` actor-critic updates (`agents.dreamer`); with
   `reset_every` (5 by default), every k-th iteration but the last a fresh
   actor-critic also learns (`reset_updates`) and takes over unless the going one
   does better in the next iteration's collection, which the two share
   (`reset_judge`);
   `mppi`, the same actor-critic, whose critic then serves as the terminal value
   of an MPPI planner over the world model, which is what acts (TD-MPC style);
   over a model that carries its own value and policy prior (`tdmpc2`, trained
   with them in step 2) nothing is learned here: the planner uses the model's
   value and prior (settings `mppi_tdmpc2`, TD-MPC2's planner made lighter). Such a model
   predicts no observations, so it serves the `mppi` agent only;
   `sac` / `ppo`, Stable-Baselines3 on an `ImaginedEnv` of the new model
   (`sb3_steps` imagined transitions, MBPO style, replay buffer kept across
   iterations);
4. **evaluate** the deterministic policy in the real sim from fixed start states
   (`eval_seed`), and in the world model from the same starts; write the
   side-by-side video (`eval/iter_<k>/video.mp4`: row 0's first episode, real
   beside imagined, labelled with the step and the return so far, panes
   `video_size` px high drawn by the simulator at that size; none where the env
   renders no frames, as kit-less Isaac Lab tasks). The evaluation env is built
   for the evaluation and closed after it, as the collector's env is: Isaac Lab
   holds one simulation per process;
5. **commit**: `learner.pt` (the learning agent, its optimisers and random
   state, and the history of every finished iteration) is replaced atomically;
   this is the one commit point. Then `agent.pt` (the acting agent alone, which
   `run.py eval` and `collect --policy` take), TensorBoard, `summary.json` and
   `returns.png`, and `meter.png`: the model's one-step errors along each
   evaluation's real episodes (the exploitation meter, `agents.jobs.meter`).

**Resume** (`--resume`, after any interruption, SIGKILL included): `learner.pt`
says which iteration finished last; everything of a later, unfinished
iteration is redone from there: its world-model directory is removed, and the
collection resumes the dataset, whose episodes are a function of their seeds and
the committed policy, so finished episodes are kept and the dataset ends as an
uninterrupted run's. (An SB3 learner resumes from its policy's weights; its
replay buffer and optimisers start afresh.)

Env steps are control steps of the simulator (an agent step is `action_repeat`
of them), the unit of the budget and of every curve.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import envs
import world_models
from agents import base
from agents.dreamer import DreamerAgent, DreamerCfg, ImaginationLearner
from agents.jobs.collect import CollectCfg, agent_policy, collect
from agents.jobs.evaluate import MIN_VIDEO_SIZE, VIDEO_SIZE, evaluate, run_episodes
from agents.jobs.meter import ERRORS, plot_readings
from agents.mppi import TDMPC2_PLANNER, MppiAgent, MppiCfg
from agents.policies import SharedAgentPolicy, make_policy
from agents.sb3_agents import Sb3Cfg, Sb3Learner, make_agent
from envs.features import periodic_obs
from sim.data import ownership
from sim.data.atomic import write_json_atomic
from sim.data.dataset import Dataset, read_index
from sim.data.loader import EpisodeData
from sim.randomization import RandomizationCfg
from world_models import pictures
from world_models.base import KINDS, with_settings
from world_models.imagined_env import ImaginedEnv, ImaginedEnvCfg
from world_models.train import TrainWMCfg, train_world_model

AGENT_KINDS = ("dreamer", "mppi", "sac", "ppo")
SB3_AGENTS = ("sac", "ppo")
"""The agents that are Stable-Baselines3's, with no actor-critic of the loop's."""
RESET_JUDGES = ("real", "imagined", "none")
RESET_STARTS = 64
"""Episodes in imagination that judge a reset: from the dataset's last first observations."""
MODELS = tuple(
    sorted(kind for kind, cls in KINDS.items() if not cls.acts and hasattr(cls, "settings"))
)
"""Model kinds that serve the loop: every registered dynamics model that `train-wm`
can train (it declares its settings); a World Action Model would also be trained to
imitate the loop's own exploration."""


@dataclass
class _LoopCfg:
    """The closed loop: collect -> fit the world model -> improve the policy in
    imagination -> evaluate in the real simulator, until the env-step budget."""

    task: str = "cartpole_swingup"
    """Task name (see `envs.list_tasks()`)."""
    backend: str = "mujoco"
    """Physics backend."""
    budget: int = 50_000
    """Env steps [control steps] to collect in all."""
    model: str = "ensemble"
    """World model: a registered dynamics model kind (`MODELS`: ensemble, rssm, tdmpc2;
    tdmpc2, which predicts no observations, with --agent mppi only)."""
    agent: str = "dreamer"
    """Agent: dreamer (actor-critic in imagination), mppi (planner over the model with
    the actor-critic's value at its horizon), sac or ppo (Stable-Baselines3 in the
    imagined env)."""
    seed: int = 0
    """Seed of everything: episodes, model training, imagination."""
    out: Path | None = None
    """Output directory (default: runs/loop/<task>-<agent>-<model>-<date>-<time>)."""
    resume: bool = False
    """Continue the run at `--out` from its last finished iteration."""
    action_repeat: int | None = None
    """Control steps per agent step (default: 2; 1 on isaaclab, whose tasks repeat
    inside a control step by their decimation)."""
    episode_length: int | None = None
    """Override the task's episode length [control steps]."""
    episodes_per_iter: int = 5
    """Episodes collected per iteration (all in parallel)."""
    noise_std: float = 0.5
    """Std of the correlated noise of the first collection."""
    wm_epochs: int = 8
    """World-model epochs per iteration (the first: `wm_first_epochs`), early stopping."""
    wm_first_epochs: int = 20
    """World-model epochs of the first iteration (from scratch)."""
    wm_steps_per_epoch: int = 100
    """Gradient steps per world-model epoch."""
    wm_train_ratio: float = 0.0
    """World-model gradient steps per agent step collected. 0: each iteration fine-tunes
    the last model for `wm_epochs` epochs of `wm_steps_per_epoch` steps (statistics
    refitted, early stopping, the best epoch kept). Above 0: one model trains on across
    the iterations, its optimiser state and statistics carried on, taking `ratio x` the
    iteration's agent steps in gradient steps, and its newest weights act (TD-MPC2
    updates once per agent step: 1)."""
    updates: int = 300
    """Policy updates in imagination per iteration."""
    reset_every: int | None = None
    """dreamer, mppi: in every k-th iteration a fresh actor-critic (new weights, slow
    critics, return scale and optimisers) learns in the newest model, unbiased by what
    the going one learned in the older ones (the primacy bias, Nikishin et al. 2022),
    and is judged against the going one (`reset_judge`; with the real judge, not in
    the last iteration, which no collection follows). 0: never. Default: 5 for
    dreamer and mppi, 0 for sac and ppo."""
    reset_updates: int = 900
    """Updates of the fresh actor-critic in its first iteration (--reset-every)."""
    reset_judge: str = "real"
    """How the fresh actor-critic of --reset-every is judged against the going one,
    which also takes its `updates`: real (the two share the next iteration's
    collection, the fresh one acting in its last half of the episodes, and it goes on
    unless the going one's episodes return more), imagined (it goes on unless the going
    one's deterministic episodes in the newest model, from the dataset's last first
    observations, return more), or none (it always goes on; the going one does not
    train in that iteration)."""
    sb3_steps: int = 20_000
    """sac/ppo: imagined transitions per iteration."""
    imagined_envs: int = 64
    """sac/ppo: parallel rollouts of the imagined env."""
    imagined_length: int = 50
    """sac/ppo: length of an imagined episode [agent steps], from a dataset state."""
    eval_episodes: int = 4
    """Real (and imagined) evaluation episodes per iteration."""
    eval_seed: int = 1000
    """Seed of the evaluation start states (the same every iteration)."""
    video_steps: int = 200
    """Agent steps of each evaluation's real-vs-imagined video (0: none)."""
    video_size: int = VIDEO_SIZE
    """Height [px] of each pane of the video (its width follows the camera's aspect),
    rendered by the simulator at that size whatever the size the model sees."""
    device: str = "cpu"
    """Torch device of the models."""
    progress: bool = True
    """Show progress."""
    ray: bool = False
    """Collect every iteration with Ray workers (`collect --ray`, extra dist); with
    --seeds, run the seeds as Ray tasks instead (each collecting in its own process)."""
    workers: int = 2
    """Ray workers of each collection (--ray)."""
    ray_address: str | None = None
    """Ray cluster to join (--ray; None starts a Ray instance on this machine)."""
    worker_gpus: float = 0.0
    """GPUs Ray reserves for each collection worker and each seed's run (--ray, with
    --device cuda): the workers' envs and the seeds' models run there."""
    randomize: RandomizationCfg = field(default_factory=RandomizationCfg)
    """Domain randomization of the collected episodes (`collect --randomize.*`): the
    world model learns from, and the policy is improved for, physics drawn per episode;
    the evaluation stays on the task's nominal physics (`run.py transfer` measures the
    agent away from it)."""
    seeds: tuple[int, ...] = ()
    """Run the loop once per seed, each into `<out>/seed_<s>/`, then write one
    `summary.json` over them: the mean and a 95% confidence interval (Student t) of
    the final and best real returns and of the curve (--seed is then unused)."""
    dreamer: DreamerCfg = field(default_factory=DreamerCfg)
    """Settings of the actor-critic (dreamer and mppi)."""
    mppi: MppiCfg = field(
        default_factory=lambda: MppiCfg(horizon=10, samples=64, iterations=2, elites=8)
    )
    """Settings of the planner (mppi), lighter than MppiCfg's defaults to act quickly."""
    mppi_tdmpc2: MppiCfg = field(
        default_factory=lambda: MppiCfg(
            **{**TDMPC2_PLANNER, "samples": 128, "elites": 16, "policy_samples": 8, "iterations": 3}
        )
    )
    """Settings of the planner (mppi) over a model with its own value and policy prior
    (--model tdmpc2): TD-MPC2's horizon 3, temperature and std bounds, with 128 samples
    (8 of them policy trajectories), 16 elites and 3 iterations instead of its 512, 24,
    64 and 6 (`agents.mppi.TDMPC2_PLANNER`), which take 0.7 s per action of one env
    on a 2-core CPU shared with another job."""
    sb3: Sb3Cfg = field(default_factory=Sb3Cfg)
    """Settings of SB3 (sac and ppo; its algo is --agent)."""

    def __post_init__(self) -> None:
        if self.action_repeat is None:
            self.action_repeat = 1 if self.backend == "isaaclab" else 2
        if self.reset_every is None:
            self.reset_every = 0 if self.agent in SB3_AGENTS else 5


LoopCfg = with_settings(_LoopCfg, MODELS)
"""The closed loop's config: `_LoopCfg` and one settings field per model kind that can
serve it (`--ensemble.*`, `--rssm.*`)."""


def plain_config(cfg: LoopCfg) -> dict[str, Any]:
    """A loop config as JSON values (what `summary.json` and checkpoints record)."""
    return json.loads(json.dumps(asdict(cfg), default=str))


# Settings added after runs were recorded, with the value every run before them ran
# with: a recorded config that predates one ran as if it had that value (a default
# that changed the behaviour, as `mean_reg` did, then reads as a difference).
INTRODUCED: dict[tuple[str, str], Any] = {  # (section, or "" for the top level; key)
    ("", "reset_every"): 0,
    ("", "reset_updates"): 300,
    ("", "reset_judge"): "none",
    ("dreamer", "mean_reg"): 0.0,
    ("dreamer", "repval"): 0.0,
    ("dreamer", "replay_length"): 16,
    ("dreamer", "critics"): 1,
    ("dreamer", "penalty"): 0.0,
    ("ensemble", "imagined_reward"): "sample",
    ("", "randomize"): json.loads(json.dumps(asdict(RandomizationCfg()))),
}


def identity(plain: dict[str, Any]) -> dict[str, Any]:
    """The settings of a plain config (`plain_config`) that make a run what it is: less
    where its files go and how it is shown or run, and less the SB3 seed and device,
    which the loop sets from its own. A resumed run must share them; `bench dmc` pools
    only runs that do. A setting the config predates takes the value it ran with
    (`INTRODUCED`); any other it lacks is absent."""
    plain = json.loads(json.dumps(plain))  # a copy
    for key in ("resume", "progress", "device", "out", "video_size"):
        plain.pop(key, None)
    for key in ("seed", "device"):  # set from the loop's own
        plain.get("sb3", {}).pop(key, None)
    for (section, key), before in INTRODUCED.items():
        where = plain.get(section) if section else plain
        if isinstance(where, dict):
            where.setdefault(key, before)
    return plain


class Loop:
    """One closed-loop run: its files, its state and its steps."""

    def __init__(self, cfg: LoopCfg):
        if cfg.agent not in AGENT_KINDS:
            raise ValueError(f"unknown agent {cfg.agent!r}; valid agents: {', '.join(AGENT_KINDS)}")
        if cfg.model not in MODELS:
            raise ValueError(f"unknown world model {cfg.model!r}; valid: {', '.join(MODELS)}")
        if not KINDS[cfg.model].predicts_obs and cfg.agent != "mppi":
            raise ValueError(
                f"--model {cfg.model} predicts no observations (it has no decoder): "
                f"--agent {cfg.agent} learns on imagined observations; use --agent mppi, "
                "which plans in the model's latent with its own value and policy prior"
            )
        if cfg.budget < 1 or cfg.episodes_per_iter < 1 or cfg.eval_episodes < 1:
            raise ValueError("budget, episodes_per_iter and eval_episodes must be positive")
        if cfg.video_steps and cfg.video_size < MIN_VIDEO_SIZE:
            raise ValueError(f"--video-size must be at least {MIN_VIDEO_SIZE} px")
        if cfg.reset_every < 0 or (cfg.reset_every and cfg.agent in SB3_AGENTS):
            raise ValueError(
                "--reset-every must be >= 0 and starts afresh the actor-critic of --agent "
                f"dreamer or mppi (got {cfg.reset_every} with --agent {cfg.agent})"
            )
        if cfg.reset_updates < 1:
            raise ValueError(f"--reset-updates must be >= 1 (got {cfg.reset_updates})")
        if cfg.reset_judge not in RESET_JUDGES:
            raise ValueError(
                f"unknown --reset-judge {cfg.reset_judge!r}; valid: {', '.join(RESET_JUDGES)}"
            )
        if cfg.reset_every and cfg.reset_judge == "real" and cfg.episodes_per_iter < 2:
            raise ValueError(
                "--reset-judge real shares a collection between two actor-critics: it needs "
                f"--episodes-per-iter >= 2 (got {cfg.episodes_per_iter}); or --reset-judge "
                "imagined, or --reset-every 0 (no resets)"
            )
        if cfg.worker_gpus and not cfg.ray:
            raise ValueError("--worker-gpus reserves GPUs for Ray workers: it needs --ray")
        if cfg.out is None:
            if cfg.resume:
                raise ValueError("--resume needs the --out of the run to continue")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            cfg.out = Path("runs/loop") / f"{cfg.task}-{cfg.agent}-{cfg.model}-{stamp}"
        self.cfg, self.out = cfg, Path(cfg.out)
        overrides: dict[str, Any] = {"action_repeat": cfg.action_repeat}
        if cfg.episode_length is not None:
            overrides["episode_length"] = cfg.episode_length
        self._env_overrides = overrides
        # the evaluation env is built for each evaluation and closed after it: Isaac Lab
        # holds one simulation per process, and the collector builds its own
        probe = self._make_eval_env()
        env_cfg = probe.cfg
        self.episode_steps = env_cfg.episode_length  # [control steps]
        self.agent_steps = env_cfg.episode_length // env_cfg.action_repeat
        self.renders = probe.can_render
        dims = (probe.observation_dim, probe.action_dim)
        probe.close()
        self.iterations = math.ceil(cfg.budget / (cfg.episodes_per_iter * self.episode_steps))
        torch.manual_seed(cfg.seed)  # the networks' initialisation
        self.sb3 = cfg.agent in SB3_AGENTS
        if self.sb3:
            # a copy: the caller's settings (shared by the configs replace() made) stay as given
            cfg.sb3 = dataclasses.replace(cfg.sb3, algo=cfg.agent, seed=cfg.seed, device=cfg.device)
            self.agent = make_agent(cfg.sb3, *dims)
            self.learner = None  # built with the first imagined env
        else:
            periodic = list(periodic_obs(cfg.task))  # the task's unbounded angles
            agent_cfg = {**asdict(cfg.dreamer), "periodic": periodic}
            self.agent = DreamerAgent(*dims, agent_cfg).to(cfg.device)
            self.learner = ImaginationLearner(self.agent, cfg.device, termination=None)
        self.actor: base.Agent = self.agent  # the agent that acts (mppi: the planner)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.challenger: ImaginationLearner | None = None  # a fresh one the next collection judges
        self.history: list[dict[str, Any]] = []
        self.wm: world_models.WorldModel | None = None
        self.record: dict[str, Any] = {}
        self._start_files()
        self.log = SummaryWriter(str(self.out / "tb"))
        done = self.history[-1]["env_steps"] if self.history else 0
        self.bar = tqdm(
            total=self.iterations * cfg.episodes_per_iter * self.episode_steps,
            initial=done,
            unit="env step",
            disable=not cfg.progress,
            dynamic_ncols=True,
        )
        self.began = time.perf_counter() - (self.history[-1]["wall_s"] if self.history else 0.0)

    # ----------------------------------------------------------- files and state
    def _start_files(self) -> None:
        ckpt_path = self.out / "learner.pt"
        if not ownership.is_empty(self.out):
            if not self.cfg.resume:
                raise ValueError(
                    f"{self.out} is not empty: pass --resume to continue its "
                    "run, or choose another --out"
                )
            # a loop's folder: marked, or (written before markers) holding its learner
            if ownership.made_by(self.out) != "loop" and not ckpt_path.exists():
                raise ValueError(
                    f"--out {self.out}: holds files that no closed loop wrote; refusing "
                    "to resume into it (choose another --out)"
                )
            if ckpt_path.exists():
                ckpt = base.read_checkpoint(ckpt_path, self.agent.kind)
                if "loop" not in ckpt:
                    raise ValueError(f"{ckpt_path}: not a closed loop's checkpoint")
                if identity(ckpt["loop"]["config"]) != self._identity():
                    raise ValueError(f"{self.out}: was run with other settings; cannot resume")
                self.agent.load_state_dict(ckpt["state_dict"])
                if self.learner is not None:
                    self.learner.load_state_dict(ckpt["learner"])
                self.gen.set_state(ckpt["generator"])
                if ckpt.get("challenger") is not None:  # judged by the next collection
                    self.challenger = self.learner.fork(0)
                    self.challenger.agent.load_state_dict(ckpt["challenger"]["state_dict"])
                    self.challenger.load_state_dict(ckpt["challenger"]["learner"])
                self.history = ckpt["loop"]["history"]
                self.wm = world_models.load(self._wm_dir(len(self.history) - 1)).to(self.cfg.device)
                self._set_actor()
        ownership.mark(self.out, "loop")
        for stale in sorted((self.out / "wm").glob("iter_*")):  # unfinished iterations
            if int(stale.name[5:]) >= len(self.history):
                shutil.rmtree(stale)

    def _set_actor(self) -> None:
        self.actor = self._actor_of(self.agent)

    def _actor_of(self, agent: base.Agent) -> base.Agent:
        """What acts for `agent`: itself, or (mppi) a planner over the current world
        model with its critic's value at the horizon (or the model's own value and
        prior, for a model that carries them)."""
        if self.cfg.agent == "mppi" and self.wm.plans:
            return MppiAgent.build(self.wm, None, **asdict(self.cfg.mppi_tdmpc2))
        if self.cfg.agent == "mppi":
            return MppiAgent.build(self.wm, agent, **asdict(self.cfg.mppi))
        return agent

    def _identity(self) -> dict[str, Any]:
        """The settings a resumed run must share (`identity`)."""
        return identity(plain_config(self.cfg))

    def _make_eval_env(self):
        cfg = self.cfg
        return envs.make(
            cfg.task, cfg.eval_episodes, cfg.backend, seed=cfg.eval_seed, **self._env_overrides
        )

    def _wm_dir(self, k: int) -> Path:
        return self.out / "wm" / f"iter_{k:03d}"

    @property
    def iteration(self) -> int:
        """Index of the iteration under way (= iterations finished)."""
        return len(self.history)

    @property
    def done(self) -> bool:
        return self.iteration >= self.iterations

    # ------------------------------------------------------------------ steps
    def _phase(self, name: str) -> None:
        self.bar.set_description(f"iter {self.iteration + 1}/{self.iterations}: {name}")

    def collect(self) -> None:
        """Episodes of this iteration into the dataset (what a crash left is kept)."""
        cfg, k = self.cfg, self.iteration
        self._phase("collect")
        t = time.perf_counter()
        settings = CollectCfg(
            task=cfg.task,
            backend=cfg.backend,
            num_envs=cfg.episodes_per_iter,
            episodes=(k + 1) * cfg.episodes_per_iter,
            policy="closed-loop",
            out=self.out / "data",
            resume=True,
            seed=cfg.seed,
            episode_length=cfg.episode_length,
            action_repeat=cfg.action_repeat,
            randomize=cfg.randomize,
            progress=False,
        )
        actor, noise = self.actor, cfg.noise_std  # what the policy needs, nothing else
        if k == 0:
            policy_fn = lambda env: make_policy("noise", env, noise, 0.9)  # noqa: E731
        elif self.challenger is not None:  # the last half of the rows: the fresh one
            fresh = self._actor_of(self.challenger.agent)
            rows = torch.arange(cfg.episodes_per_iter) >= cfg.episodes_per_iter // 2
            policy_fn = lambda env: SharedAgentPolicy(env.num_envs, actor, fresh, rows)  # noqa: E731
        else:
            policy_fn = lambda env: agent_policy(env, actor)  # noqa: E731
        if cfg.ray:
            from agents.jobs.ray_collect import collect_ray

            ray_settings = dataclasses.replace(
                settings,
                ray=True,
                workers=cfg.workers,
                address=cfg.ray_address,
                worker_gpus=cfg.worker_gpus,
                device=cfg.device if cfg.worker_gpus else "cpu",
            )
            summary = collect_ray(ray_settings, policy_fn)
        else:
            summary = collect(settings, policy_fn)
        self.record = {
            "iteration": k,
            "env_steps": (k + 1) * cfg.episodes_per_iter * self.episode_steps,
            "collect_return": summary["mean_return"],
            "collect_s": time.perf_counter() - t,
        }
        if self.challenger is not None:
            self._real_verdict(range(k * cfg.episodes_per_iter, (k + 1) * cfg.episodes_per_iter))

    def fit_world_model(self) -> None:
        """Fit (iteration 0) or fine-tune the world model on the whole dataset."""
        cfg, k = self.cfg, self.iteration
        self._phase("world model")
        t = time.perf_counter()
        out = self._wm_dir(k)
        shutil.rmtree(out, ignore_errors=True)
        if cfg.wm_train_ratio > 0:  # one model trained on at a ratio to the data
            new_steps = cfg.episodes_per_iter * self.agent_steps
            schedule = {
                "epochs": 1,
                "steps_per_epoch": max(1, round(cfg.wm_train_ratio * new_steps)),
                "continue_from": None if k == 0 else self._wm_dir(k - 1),
                "keep_last": True,
            }
        else:
            schedule = {
                "epochs": cfg.wm_first_epochs if k == 0 else cfg.wm_epochs,
                "steps_per_epoch": cfg.wm_steps_per_epoch,
                "init": None if k == 0 else self._wm_dir(k - 1) / "model.pt",
            }
        report = train_world_model(
            TrainWMCfg(
                data=self.out / "data",
                model=cfg.model,
                out=out,
                seed=cfg.seed + k,
                device=cfg.device,
                progress=False,
                **schedule,
                # every episode either trains or validates the model: the loop's test
                # is the real simulator, and its open-loop errors are a diagnostic on
                # the validation episodes (the record says so)
                test_fraction=0.0,
                **{cfg.model: getattr(cfg, cfg.model)},
            )
        )
        self.wm = world_models.load(out).to(cfg.device)
        self.record["wm_open_loop"] = report["open_loop"]["model"]
        self.record["wm_copy_last"] = report["open_loop"]["copy_last"]
        self.record["wm_const_velocity"] = report["open_loop"]["const_velocity"]
        self.record["wm_open_loop_on"] = report["open_loop_on"]
        self.record["wm_s"] = time.perf_counter() - t

    def improve(self) -> None:
        """Improve the policy in imagination, from dataset start states."""
        cfg = self.cfg
        self._phase("imagination")
        t = time.perf_counter()
        if self.sb3:
            self._improve_sb3()
        elif self.wm.plans and cfg.agent == "mppi":  # trained with the model in `fit`
            self.record["losses"] = {}
        else:
            data = EpisodeData(self.out / "data", sequence_length=cfg.dreamer.replay_length)
            windows = self._replay_windows(data)
            seed = None
            if self._resets_now():
                # a seed the run's generator draws, so a resumed run draws the same
                seed = int(torch.randint(2**31, (1,), generator=self.gen))
            if seed is None or cfg.reset_judge != "none":
                self.record["losses"] = self._train(self.learner, cfg.updates, data, windows)
            if seed is not None:
                fresh = self.learner.fork(seed)  # its update count goes on from the going one's
                losses = self._train(fresh, cfg.reset_updates, data, windows)
                if cfg.reset_judge == "real":
                    self.challenger = fresh
                elif cfg.reset_judge == "none" or self._imagined_verdict(fresh, data):
                    self.learner.adopt(fresh)
                    self.record["losses"] = losses
        self._set_actor()
        self.record["improve_s"] = time.perf_counter() - t

    def _resets_now(self) -> bool:
        """Whether a fresh actor-critic learns in this iteration: every `reset_every`-th,
        but with the real judge not in the last, which no collection follows to judge."""
        cfg, k = self.cfg, self.iteration
        if not cfg.reset_every or not k or k % cfg.reset_every:
            return False
        return cfg.reset_judge != "real" or k < self.iterations - 1

    def _train(self, learner, updates: int, data: EpisodeData, windows) -> dict[str, float]:
        """`updates` actor-critic updates of `learner` in imagination from dataset
        states; the mean of each loss over them."""
        starts, sums = data.data["obs"], {}
        for _ in range(updates):
            pick = torch.randint(len(starts), (self.cfg.dreamer.batch_size,), generator=self.gen)
            replay = windows() if windows else None
            metrics = learner.update(self.wm, starts[pick], self.gen, replay)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value / updates
        return sums

    def _imagined_verdict(self, fresh: ImaginationLearner, data: EpisodeData) -> bool:
        """Whether the fresh actor-critic goes on: unless the going one's imagined
        return beats its own from the same starts (the first observations of the
        dataset's last episodes, none of which the evaluation uses)."""
        firsts = data.data["obs"][data.step == 0][-RESET_STARTS:]
        going, new = (self._imagined_return(a, firsts) for a in (self.agent, fresh.agent))
        return self._verdict("imagined", going, new)

    def _real_verdict(self, episodes: range) -> None:
        """The challenger goes on unless the going one's episodes of this collection
        returned more on average than its own; either way, it is judged."""
        data = Dataset(self.out / "data")
        returns: dict[bool, list[float]] = {False: [], True: []}
        for e in episodes:
            attrs = data.attrs(e)
            returns[bool(attrs["second_agent"])].append(float(attrs["episode_return"]))
        data.close()
        # (a resumed collection may have left one of them no episode: it cannot win)
        going, new = (sum(r) / len(r) if r else -math.inf for r in returns.values())
        if self._verdict("real", going, new):
            self.learner.adopt(self.challenger)
        self.challenger = None

    def _verdict(self, judge: str, going: float, fresh: float) -> bool:
        """Record a reset's verdict; whether the fresh actor-critic goes on: unless the
        going one did better (on a tie, as when neither reaches a sparse reward, the
        fresh one, which learned in the newest model only)."""
        kept = "fresh" if fresh >= going else "going"
        self.record["reset"] = {
            "judge": judge,
            "going_return": going,
            "fresh_return": fresh,
            "kept": kept,
        }
        return kept == "fresh"

    def _challenger_state(self) -> dict[str, Any]:
        return {
            "state_dict": self.challenger.agent.state_dict(),
            "learner": self.challenger.state_dict(),
        }

    def _imagined_return(self, agent, starts: torch.Tensor) -> float:
        """Mean return of `agent`'s deterministic episodes in the model, one from each
        of `starts`, the episodes' length and the model's own mean predictions."""
        imagined = ImaginedEnv(
            self.wm,
            starts,
            ImaginedEnvCfg(
                num_envs=len(starts),
                episode_length=self.agent_steps,
                sample=False,
                termination="model",
                device=self.cfg.device,
            ),
            in_order=True,
        )
        returns, _, _ = run_episodes(agent, imagined, imagined.reset())
        return float(returns.mean())

    def _replay_windows(self, data: EpisodeData):
        """A sampler of whole windows of `data` (read with `replay_length`) for Dreamer's
        replay value loss (none when `repval` is 0)."""
        c = self.cfg.dreamer
        if not c.repval:
            return None
        rows = torch.arange(len(data))
        rows = rows[rows + c.replay_length <= data.end.cpu()]  # windows inside one episode
        if not len(rows):
            raise ValueError(
                f"--dreamer.replay-length {c.replay_length} is longer than every episode"
            )

        def sample() -> dict[str, torch.Tensor]:
            pick = torch.randint(len(rows), (c.batch_size,), generator=self.gen)
            return data.__getitems__(rows[pick])

        return sample

    def _improve_sb3(self) -> None:
        """SB3 on an imagined env of the new model (every dataset state a start)."""
        cfg = self.cfg
        seed = int(torch.randint(2**31, (1,), generator=self.gen))
        env = ImaginedEnv.from_dataset(
            self.wm,
            self.out / "data",
            ImaginedEnvCfg(
                num_envs=cfg.imagined_envs,
                seed=seed,
                episode_length=cfg.imagined_length,
                device=cfg.device,
                termination="model",
            ),
            initial_only=False,
        )
        if self.learner is None:
            self.learner = Sb3Learner(self.agent, env, self.cfg.sb3)
        else:
            self.learner.set_env(env)
        self.learner.learn(cfg.sb3_steps)
        logger = self.learner.model.logger.name_to_value
        self.record["losses"] = {
            k.split("/")[-1]: float(v) for k, v in logger.items() if k.startswith("train/")
        }

    def evaluate(self) -> None:
        """Real and imagined returns from the same fixed starts, and the video."""
        cfg, k = self.cfg, self.iteration
        self._phase("evaluate")
        t = time.perf_counter()
        video = self.out / "eval" / f"iter_{k:03d}" / "video.mp4"
        video_steps = cfg.video_steps if self.renders else 0  # (an Isaac Lab state task)
        if video_steps:
            video.parent.mkdir(parents=True, exist_ok=True)
        env = self._make_eval_env()
        try:
            report = evaluate(
                self.actor,
                env,
                self.wm,
                cfg.eval_seed,
                video_steps,
                video if video_steps else None,
                video_size=cfg.video_size,
            )
        finally:
            env.close()
        self.record.update(
            real_return=report["real_return"]["mean"],
            real_return_std=report["real_return"]["std"],
            imagined_return=report["imagined_return"]["mean"],
            gap=report["gap"],
            video=report.get("video"),
            eval_s=time.perf_counter() - t,
        )
        if "model_error" in report:  # the exploitation meter's errors (a state model)
            self.record["model_error"] = report["model_error"]

    def commit(self) -> None:
        """Make this iteration durable (atomic learner.pt), then write the rest."""
        self.record["wall_s"] = time.perf_counter() - self.began
        history = [*self.history, self.record]
        env_args = read_index(self.out / "data")["env_args"]
        learner = {} if self.learner is None or self.sb3 else self.learner.state_dict()
        base.save(
            self.agent,
            self.out / "learner.pt",
            env_args=env_args,
            learner=learner,
            generator=self.gen.get_state(),
            loop={"config": self._identity(), "history": history},
            challenger=None if self.challenger is None else self._challenger_state(),
        )
        self.history = history
        base.save(
            self.actor,
            self.out / "agent.pt",
            env_args=env_args,
            loop={"iteration": self.record["iteration"]},
        )
        self._log(self.record)
        self.write_summary()
        self.bar.update(self.record["env_steps"] - self.bar.n)
        self.bar.set_postfix(
            real=f"{self.record['real_return']:.1f}",
            imagined=f"{self.record['imagined_return']:.1f}",
        )
        if self.cfg.progress:
            self.bar.write(self.progress_line())

    # ---------------------------------------------------------------- output
    def _log(self, r: dict[str, Any]) -> None:
        step = r["env_steps"]
        scalars = {
            "charts/real_return": r["real_return"],
            "charts/imagined_return": r["imagined_return"],
            "charts/imagination_gap": r["gap"],
            "charts/collect_return": r["collect_return"],
            "charts/env_steps": step,
            "charts/wall_time_s": r["wall_s"],
            "charts/iteration": r["iteration"],
        }
        for h, err in r["wm_open_loop"].items():
            scalars[f"world_model/open_loop_error_h{h}"] = err
        for key, value in r["losses"].items():
            scalars[f"losses/{key}"] = value
        for key in ("collect_s", "wm_s", "improve_s", "eval_s"):
            scalars[f"time/{key}"] = r[key]
        for key in ERRORS:  # the model along the policy's own evaluation episodes
            value = r.get("model_error", {}).get(key)
            if value is not None:
                scalars[f"meter/{key}"] = value
        reset = r.get("reset", {})
        if reset:  # the returns (real or imagined, as judged) that decided a reset
            scalars["reset/going_return"] = reset["going_return"]
            scalars["reset/fresh_return"] = reset["fresh_return"]
            scalars["reset/fresh_kept"] = float(reset["kept"] == "fresh")
        for key, value in scalars.items():
            self.log.add_scalar(key, value, step)
        self.log.flush()

    def progress_line(self) -> str:
        r = self.record
        line = (
            f"iter {r['iteration'] + 1}/{self.iterations}  env steps {r['env_steps']:,}  "
            f"real {r['real_return']:7.1f}  imagined {r['imagined_return']:7.1f}  "
            f"gap {r['gap']:+7.1f}  elapsed {r['wall_s']:6.0f} s"
        )
        if reset := r.get("reset"):
            line += (
                f"  reset: the {reset['kept']} actor-critic goes on ({reset['judge']} return: "
                f"fresh {reset['fresh_return']:.1f}, going {reset['going_return']:.1f})"
            )
        return line

    def write_summary(self) -> dict[str, Any]:
        """`summary.json`, `returns.png` and `meter.png` from the finished iterations."""
        h = self.history
        best = max(h, key=lambda r: r["real_return"])
        readings = [
            {"step": r["env_steps"], **{k: r[k] for k in ("real_return", "imagined_return")}}
            | r["model_error"]
            for r in h
            if "model_error" in r
        ]
        summary = {
            "task": self.cfg.task,
            "agent": self.cfg.agent,
            "model": self.cfg.model,
            "iterations": len(h),
            "planned_iterations": self.iterations,
            "finished": len(h) >= self.iterations,
            "env_steps": h[-1]["env_steps"],
            "final_real_return": h[-1]["real_return"],
            "final_imagined_return": h[-1]["imagined_return"],
            "final_gap": h[-1]["gap"],
            "best_real_return": best["real_return"],
            "best_at_env_steps": best["env_steps"],
            "resets": [{"iteration": r["iteration"], **r["reset"]} for r in h if "reset" in r],
            "wall_s": h[-1]["wall_s"],
            "curve": [
                {
                    k: r[k]
                    for k in (
                        "env_steps",
                        "real_return",
                        "real_return_std",
                        "imagined_return",
                        "gap",
                        "wall_s",
                    )
                }
                | ({"model_error": r["model_error"]} if "model_error" in r else {})
                for r in h
            ],
            "config": plain_config(self.cfg),
            "artifacts": {
                "agent": str(self.out / "agent.pt"),
                "data": str(self.out / "data"),
                "world_model": str(self._wm_dir(len(h) - 1)),
                "tensorboard": str(self.out / "tb"),
                "plot": str(self.out / "returns.png"),
                "videos": [r["video"] for r in h if r.get("video")],
                **({"meter_plot": str(self.out / "meter.png")} if readings else {}),
            },
        }
        write_json_atomic(self.out / "summary.json", summary)
        title = f"{self.cfg.agent} + {self.cfg.model} on {self.cfg.task}"
        plot_returns(self.out / "returns.png", h, title)
        if readings:  # the exploitation meter (a state model)
            plot_readings(self.out / "meter.png", readings, title, "env steps")
        return summary

    def close(self) -> None:
        self.bar.close()
        self.log.close()


def plot_returns(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """PNG of the real (with its std over episodes) and imagined return vs env steps."""
    steps = [r["env_steps"] for r in history]
    real = torch.tensor([r["real_return"] for r in history])
    std = torch.tensor([r["real_return_std"] for r in history])
    fig = pictures.figure(6, 4)
    ax = fig.subplots()
    ax.plot(steps, real, "o-", label="real (deterministic policy)")
    ax.fill_between(steps, real - std, real + std, alpha=0.2)
    ax.plot(steps, [r["imagined_return"] for r in history], "s--", label="imagined, same starts")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    pictures.write_figure(path, fig)


def run_loop(cfg: LoopCfg) -> dict[str, Any]:
    """One closed-loop run (`python run.py`): iterate until the budget, print where
    its files are; returns its summary."""
    loop = Loop(cfg)
    try:
        while not loop.done:
            loop.collect()  # current policy, exploring, into the dataset
            loop.fit_world_model()  # fine-tune on everything collected
            loop.improve()  # actor-critic updates in imagination
            loop.evaluate()  # real vs imagined return from the same starts, video
            loop.commit()  # atomic checkpoint, TensorBoard, summary.json, returns.png
        summary = loop.write_summary()
    finally:
        loop.close()
    artifacts = summary["artifacts"]
    files = ["summary.json", "returns.png"]
    files += ["meter.png"] if "meter_plot" in artifacts else []
    files += ["tb/"] + (["eval/*/video.mp4"] if artifacts["videos"] else [])
    print(
        f"{loop.out}: real return {summary['final_real_return']:.1f} after "
        f"{summary['env_steps']:,} env steps ({summary['wall_s']:.0f} s); {', '.join(files)}"
    )
    return summary
