"""`python run.py bench env`: env throughput beside its peers, in one process on one model and N.

(a) our batched env: random actions, with observation, reward and autoreset;
(b) raw MuJoCo: `mujoco.rollout` of the same MJCF, same N and threads, the same
    physics steps per control step, no task logic at all (the ceiling);
(c) plain Gymnasium: the task written as a Gymnasium user writes a MuJoCo env (a
    subclass of `gymnasium.envs.mujoco.MujocoEnv` on the task's MJCF, numpy
    observation and reward, `TimeLimit` at the task's episode length), `sync_envs`
    copies in `gymnasium.vector.SyncVectorEnv` (how a Gymnasium user parallelises
    without a batched simulator);
(d) dm_control, the reference implementation: `dm_control.suite.load(domain, task)`
    of the task's Control Suite counterpart, one env stepped at a time (not applicable
    to tasks without one, such as `push`; skipped if dm_control is not installed).
Timings on a shared machine are noisy, so the result that matters is the ratio
of peers measured in the same run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import torch
from mujoco import rollout

import envs
from agents.bench.common import SuiteCfg, keep
from agents.bench.gym_peers import gym_env_class, make_gym_env

TARGET_RAW = 0.6  # a / b: task logic and autoreset cost at most 40% of the raw engine
# a / c: the batched env steps its worlds on every thread; the Gymnasium peer steps one
# MjData at a time in Python on one. Measured 3.3x on 2 threads (cart-pole); below 2x
# batching would buy little over what a Gymnasium user already has.
TARGET_GYM = 2.0
GL_FRAMES = 128  # worlds whose frames time the MuJoCo backend's renderer (--backend warp)


@dataclass
class EnvBenchCfg(SuiteCfg):
    """`bench env`: the batched env beside raw MuJoCo, a plain Gymnasium MuJoCo env in
    SyncVectorEnv and dm_control, or with --backend warp the MuJoCo Warp backend beside
    the MuJoCo CPU backend."""

    num_envs: int = 1024
    """Parallel worlds N of the batched env and of the raw rollout."""
    steps: int = 400
    """Timed steps per round of the batched env and the raw rollout (3 x 400 steps of
    the env cross its 1000-step episode end, so autoresets are timed too)."""
    warmup: int = 50
    """Untimed steps before each measurement."""
    sync_envs: int = 64
    """Gymnasium MujocoEnv copies inside the SyncVectorEnv peer (c)."""
    sync_steps: int = 200
    """Timed vector steps per round of the SyncVectorEnv peer (steps/s normalises)."""
    dmc_steps: int = 2000
    """Timed steps per round of the single dm_control env (d); 2000 cross an episode end."""
    nthread: int = 0
    """Physics threads for (a) and (b); 0 uses every CPU."""
    backend: str = "mujoco"
    """warp: measure the env and its bare physics on the MuJoCo Warp backend beside the
    MuJoCo CPU backend, at each of --world-counts (needs the warp extra)."""
    world_counts: tuple[int, ...] = (1024, 4096)
    """Parallel worlds of the backend comparison (--backend warp)."""
    device: str = "cpu"
    """Device of the --backend warp worlds: cpu or cuda[:k] (state, CUDA graphs, frames
    and the timed actions all stay there); the MuJoCo peer runs on the CPU."""


def bench(cfg: EnvBenchCfg) -> dict:
    """`python run.py bench env`: the peers on the MuJoCo backend, or the backends side
    by side (--backend warp)."""
    result = run_bench(cfg) if cfg.backend == "mujoco" else run_backend_bench(cfg)
    return keep(result, cfg.json)


def _timed(step: Callable[[], None], steps: int, device: torch.device | None = None) -> float:
    """Seconds for `steps` calls of `step`; work queued on a CUDA `device` is waited for."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class BatchedPeer:
    """(a) `envs.make(task, num_envs=N)`: observation, reward and autoreset included."""

    def __init__(self, cfg: EnvBenchCfg, backend: str = "mujoco", num_envs: int | None = None):
        self.n, self.resets = num_envs or cfg.num_envs, 0
        device = cfg.device if backend == "warp" else "cpu"
        self.env = envs.make(
            cfg.task,
            num_envs=self.n,
            seed=cfg.seed,
            nthread=cfg.nthread,
            backend=backend,
            device=device,
        )
        self.device = self.env.sim_device

    def run(self, actions: np.ndarray) -> float:
        """Step through `actions` `[T, N, nu]` (moved to the env's device first);
        returns steps/s."""
        batch = [torch.from_numpy(a).to(self.device) for a in actions.astype(np.float32)]
        resets = torch.zeros((), dtype=torch.long, device=self.device)
        _sync(self.device)
        start = time.perf_counter()
        for action in batch:
            _, _, terminated, truncated, _ = self.env.step(action)
            resets += (terminated | truncated).sum()
        _sync(self.device)
        seconds = time.perf_counter() - start
        self.resets += int(resets)
        return self.n * len(batch) / seconds


class RawPeer:
    """(b) `mujoco.rollout` of the env's own model with its N, threads and substeps.

    Each round starts from the env's current states and applies the env's actions, so
    both do the same physics work. Two ways: one call for the whole round (no Python
    in the loop) and one call per control step (what a closed loop must do).
    """

    def __init__(self, cfg: EnvBenchCfg, env: envs.BatchedEnv):
        self.env, model = env, env.sim.model
        self.n, self.sub = cfg.num_envs, env.cfg.substeps
        nthread = cfg.nthread or os.cpu_count() or 1
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.state0 = np.empty(mujoco.mj_stateSize(model, spec))
        mujoco.mj_getState(model, mujoco.MjData(model), self.state0, spec)
        self.datas = [mujoco.MjData(model) for _ in range(nthread)]
        self.models = [model] * self.n
        self.pool = rollout.Rollout(nthread=nthread)

    def _initial_state(self) -> np.ndarray:
        """Full-physics rows (time, qpos, qvel, ...) holding the env's current states."""
        nq, nv = self.env.sim.nq, self.env.sim.nv
        init = np.tile(self.state0, (self.n, 1))
        init[:, 1 : 1 + nq] = self.env.sim.qpos.numpy()
        init[:, 1 + nq : 1 + nq + nv] = self.env.sim.qvel.numpy()
        return init

    def _controls(self, actions: np.ndarray) -> np.ndarray:
        """`[T, N, nu]` actions -> `[N, T * substeps, nu]` controls, each held `substeps`."""
        return np.ascontiguousarray(np.repeat(actions.transpose(1, 0, 2), self.sub, axis=1))

    def run_one_call(self, actions: np.ndarray) -> float:
        init, control = self._initial_state(), self._controls(actions)
        start = time.perf_counter()
        self.pool.rollout(self.models, self.datas, init, control)
        return self.n * len(actions) / (time.perf_counter() - start)

    def run_per_step(self, actions: np.ndarray) -> float:
        state = self._initial_state()
        controls = [self._controls(a[None]) for a in actions]
        out = np.empty((self.n, self.sub, state.shape[1]))
        start = time.perf_counter()
        for control in controls:
            self.pool.rollout(
                self.models, self.datas, state, control, state=out, nstep=self.sub, skip_checks=True
            )
            state[:] = out[:, -1]
        return self.n * len(actions) / (time.perf_counter() - start)

    def close(self) -> None:
        self.pool.close()


# ------------------------------------------------- (c) a plain Gymnasium MuJoCo env
class GymPeer:
    """(c) `gymnasium.vector.SyncVectorEnv` of `sync_envs` plain `TaskMujocoEnv`s,
    random actions drawn before the timed loop, autoreset by the vector env (same step,
    as the batched env does)."""

    def __init__(self, cfg: EnvBenchCfg):
        self.vec = gym.vector.SyncVectorEnv(
            [lambda: make_gym_env(cfg.task) for _ in range(cfg.sync_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        self.vec.reset(seed=cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.resets = 0

    def run(self, steps: int) -> float:
        space = self.vec.action_space
        actions = self.rng.uniform(space.low, space.high, (steps, *space.shape))
        actions = actions.astype(space.dtype)
        resets = 0
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = self.vec.step(action)
            resets += int((terminated | truncated).sum())
        seconds = time.perf_counter() - start
        self.resets += resets
        return self.vec.num_envs * steps / seconds

    def close(self) -> None:
        self.vec.close()


# ------------------------------------------------------------------ (d) dm_control
def dm_control_task(task: str) -> tuple[str, str] | None:
    """The Control Suite's (domain, task) of `<domain>_<task>`, or None if it has none
    (such as `push`). Raises ImportError without dm_control."""
    from dm_control import suite

    domain, _, name = task.partition("_")
    return (domain, name) if (domain, name) in suite.ALL_TASKS else None


class DmControlPeer:
    """(d) `dm_control.suite.load(domain, task)`: one env, stepped one control step at a
    time with uniform random actions in the action spec's bounds (drawn before the
    timed loop), reset when `time_step.last()`."""

    def __init__(self, cfg: EnvBenchCfg, domain: str, task: str):
        from dm_control import suite

        self.env = suite.load(domain, task, task_kwargs={"random": cfg.seed})
        self.spec = self.env.action_spec()
        self.rng = np.random.default_rng(cfg.seed)
        self.env.reset()
        self.resets = 0

    def run(self, steps: int) -> float:
        lo, hi = self.spec.minimum, self.spec.maximum
        actions = self.rng.uniform(lo, hi, (steps, *self.spec.shape))
        resets = 0
        start = time.perf_counter()
        for action in actions:
            if self.env.step(action).last():
                self.env.reset()
                resets += 1
        seconds = time.perf_counter() - start
        self.resets += resets
        return steps / seconds


def run_bench(cfg: EnvBenchCfg) -> dict:
    """Measure (a), (b), (c), (d), print one table with the ratios, optionally write JSON."""
    envs.spec(cfg.task)  # unknown task: error listing the valid ones, before any work
    threads = cfg.nthread or os.cpu_count()
    print(f"bench {cfg.task}: N={cfg.num_envs}, threads={threads}, {cfg.rounds} interleaved")
    print(
        f"  rounds of {cfg.steps} steps (gymnasium peer: {cfg.sync_steps} vector steps, "
        f"dm_control: {cfg.dmc_steps} steps); median round shown"
    )
    notes: dict[str, str] = {}
    batched_peer = BatchedPeer(cfg)
    raw_peer = RawPeer(cfg, batched_peer.env)
    gym_peer = GymPeer(cfg) if gym_env_class(cfg.task) is not None else None
    if gym_peer is None:
        notes["sync_vector_env"] = f"not applicable: no Gymnasium MujocoEnv for {cfg.task}"
    dmc_peer, dmc_name = None, None
    try:
        counterpart = dm_control_task(cfg.task)
    except ImportError as err:
        notes["dm_control"] = f"skipped: dm_control is not installed ({err}; extra dev)"
    else:
        if counterpart is None:
            notes["dm_control"] = f"not applicable: {cfg.task} has no dm_control counterpart"
        else:
            dmc_peer, dmc_name = DmControlPeer(cfg, *counterpart), "/".join(counterpart)
    rng = np.random.default_rng(cfg.seed)
    nu = batched_peer.env.action_dim
    rounds: dict[str, list[float]] = {"a": [], "b1": [], "bs": [], "c": [], "d": []}
    for r in range(cfg.rounds + 1):  # round 0 is an untimed warm-up
        actions = rng.uniform(-1, 1, (cfg.warmup if r == 0 else cfg.steps, cfg.num_envs, nu))
        # the raw peers start from the env's states and replay its actions
        timings = {
            "b1": raw_peer.run_one_call(actions),
            "bs": raw_peer.run_per_step(actions),
            "a": batched_peer.run(actions),
        }
        if gym_peer is not None:
            timings["c"] = gym_peer.run(min(cfg.warmup, 5) if r == 0 else cfg.sync_steps)
        if dmc_peer is not None:
            timings["d"] = dmc_peer.run(cfg.warmup if r == 0 else cfg.dmc_steps)
        for key, value in timings.items():
            if r > 0:
                rounds[key].append(value)
    median = {k: float(np.median(v)) if v else None for k, v in rounds.items()}
    batched, resets = median["a"], batched_peer.resets
    raw = {"one_call": median["b1"], "per_step": median["bs"]}
    best_raw = max(raw.values())
    gym_rate, dmc_rate = median["c"], median["d"]
    batched_peer.env.close()
    raw_peer.close()
    if gym_peer is not None:
        gym_peer.close()

    def over(rate: float | None) -> float | None:
        return None if rate is None else batched / rate

    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "steps_per_s": {
            "batched_env": batched,
            "raw_rollout": best_raw,
            "raw_rollout_one_call": raw["one_call"],
            "raw_rollout_per_step": raw["per_step"],
            "sync_vector_env": gym_rate,
            "dm_control": dmc_rate,
        },
        "rounds_steps_per_s": rounds,
        "episode_resets": resets,
        "peer_episode_resets": {
            "sync_vector_env": None if gym_peer is None else gym_peer.resets,
            "dm_control": None if dmc_peer is None else dmc_peer.resets,
        },
        "peers": {
            "sync_vector_env": f"gymnasium.vector.SyncVectorEnv of {cfg.sync_envs} "
            f"gymnasium.envs.mujoco.MujocoEnv ({cfg.task})",
            "dm_control": dmc_name,
        },
        "notes": notes,
        "ratios": {
            "batched_over_raw": batched / best_raw,
            "batched_over_raw_per_step": batched / raw["per_step"],
            "batched_over_sync": over(gym_rate),
            "batched_over_dm_control": over(dmc_rate),
        },
        "targets": {"batched_over_raw": TARGET_RAW, "batched_over_sync": TARGET_GYM},
    }
    ratios, targets = result["ratios"], result["targets"]

    def verdict(key: str) -> str:
        if key not in targets or ratios[key] is None:
            return ""
        met = "met" if ratios[key] >= targets[key] else "NOT met"
        return f"(target >= {targets[key]:g}: {met})"

    rows = [
        ("(a) batched env (obs, reward, autoreset)", batched, "", None),
        ("(b) raw mujoco.rollout, one call", raw["one_call"], "a/b", "batched_over_raw"),
        (
            "(b) raw mujoco.rollout, call per step",
            raw["per_step"],
            "a/b per step",
            "batched_over_raw_per_step",
        ),
        (
            f"(c) gymnasium MujocoEnv x{cfg.sync_envs}, SyncVectorEnv",
            gym_rate,
            "a/c",
            "batched_over_sync",
        ),
        (
            f"(d) dm_control {dmc_name}, one env" if dmc_name else "(d) dm_control",
            dmc_rate,
            "a/d",
            "batched_over_dm_control",
        ),
    ]
    print(f"  {'peer':<46} {'steps/s':>12}   ratio")
    for label, rate, ratio_label, key in rows:
        value = f"{rate:>12,.0f}" if rate is not None else f"{'-':>12}"
        ratio = ""
        if key is not None:
            r = ratios[key]
            ratio = f"{ratio_label} = " + (f"{r:.2f} {verdict(key)}" if r is not None else "-")
        print(f"  {label:<46} {value}   {ratio}".rstrip())
    print("  a/b is against the faster raw way; a/b per step: both call the engine once per step")
    for key, note in notes.items():
        print(f"  {'(c)' if key == 'sync_vector_env' else '(d)'} {note}")
    print(f"  episodes that ended (autoreset) during (a): {resets}")
    return result


def run_backend_bench(cfg: EnvBenchCfg) -> dict:
    """Steps/s of the task's batched env (observation, reward, autoreset) and of its
    bare physics (`sim.step` with the controls held), and frames/s of `env.render()`
    (64 x 64), on `cfg.backend` beside the MuJoCo CPU backend, at each of
    `cfg.world_counts`, rounds interleaved; prints the ratios. Warp ray-traces every
    world's frame in one call; the MuJoCo backend rasterises one world at a time, so
    it is timed on `GL_FRAMES` worlds (its cost per frame does not depend on N)."""
    envs.spec(cfg.task)
    if cfg.backend != "warp":
        raise ValueError(
            f"bench --backend takes mujoco or warp, got {cfg.backend!r} "
            "(Isaac Lab tasks: bench isaaclab)"
        )
    backends = ("mujoco", cfg.backend)
    threads = cfg.nthread or os.cpu_count()
    print(
        f"bench {cfg.task}: {cfg.backend} on {cfg.device} beside mujoco on the CPU, "
        f"threads={threads}, {cfg.rounds} "
        f"interleaved rounds of {cfg.steps} steps; median round shown"
    )
    rng = np.random.default_rng(cfg.seed)
    result: dict = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "worlds": {},
    }
    print(f"  {'N':>6} {'backend':<8} {'env steps/s':>14} {'physics steps/s':>16} {'frames/s':>10}")
    for n in cfg.world_counts:
        peers = {b: BatchedPeer(cfg, b, n) for b in backends}
        kinds = ("env", "sim", "frames")
        rounds: dict[str, list[float]] = {f"{k}_{b}": [] for k in kinds for b in backends}
        for r in range(cfg.rounds + 1):  # round 0 warms up (and compiles Warp's kernels)
            steps = cfg.warmup if r == 0 else cfg.steps
            actions = rng.uniform(-1, 1, (steps, n, peers["mujoco"].env.action_dim))
            for b, peer in peers.items():
                env_rate = peer.run(actions)
                sim = peer.env.sim
                sim.ctrl.copy_(torch.from_numpy(actions[-1]))
                sim_rate = n * steps / _timed(sim.step, steps, peer.device)
                peer.env.reset()  # the bare steps leave states the env did not see
                ids = None if b == "warp" else torch.arange(min(n, GL_FRAMES))
                _sync(peer.device)
                start = time.perf_counter()
                frames = peer.env.render(ids)
                _sync(peer.device)
                frame_rate = len(frames) / (time.perf_counter() - start)
                if r > 0:
                    rounds[f"env_{b}"].append(env_rate)
                    rounds[f"sim_{b}"].append(sim_rate)
                    rounds[f"frames_{b}"].append(frame_rate)
        for peer in peers.values():
            peer.env.close()
        rates = {k: float(np.median(v)) for k, v in rounds.items()}
        for b in backends:
            print(
                f"  {n:>6} {b:<8} {rates[f'env_{b}']:>14,.0f} {rates[f'sim_{b}']:>16,.0f} "
                f"{rates[f'frames_{b}']:>10,.0f}"
            )
        ratio = {k: rates[f"{k}_{cfg.backend}"] / rates[f"{k}_mujoco"] for k in kinds}
        print(
            f"  {n:>6} {cfg.backend}/mujoco {ratio['env']:>11.2f}x {ratio['sim']:>15.2f}x "
            f"{ratio['frames']:>9.2f}x"
        )
        result["worlds"][str(n)] = {"steps_per_s": rates, "rounds": rounds, "ratio": ratio}
    return result
