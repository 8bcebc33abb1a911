"""`python run.py bench env`: env throughput beside its peers, in one process on one model and N.

(a) our batched env: random actions, with observation, reward and autoreset;
(b) raw MuJoCo: `mujoco.rollout` of the same MJCF, same N and threads, the same
    physics steps per control step, no task logic at all (the ceiling);
(c) Gymnasium's `SyncVectorEnv` of single envs of the same task (how a
    Gymnasium user would parallelise without a batched simulator).
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

TARGET_RAW = 0.6  # a / b
TARGET_SYNC = 25.0  # a / c
GL_FRAMES = 128  # worlds whose frames time the MuJoCo backend's renderer (--backend warp)


@dataclass
class EnvBenchCfg(SuiteCfg):
    """`bench env`: the batched env beside raw MuJoCo and Gymnasium's SyncVectorEnv, or
    with --backend warp the MuJoCo Warp backend beside the MuJoCo CPU backend."""

    num_envs: int = 1024
    """Parallel worlds N of the batched env and of the raw rollout."""
    steps: int = 400
    """Timed steps per round of the batched env and the raw rollout (3 x 400 steps of
    the env cross its 1000-step episode end, so autoresets are timed too)."""
    warmup: int = 50
    """Untimed steps before each measurement."""
    sync_envs: int = 64
    """Single envs inside the SyncVectorEnv peer."""
    sync_steps: int = 60
    """Timed steps per round of the SyncVectorEnv peer (it is slow; steps/s normalises)."""
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


class SyncPeer:
    """(c) `gymnasium.vector.SyncVectorEnv` over single envs of the task."""

    def __init__(self, cfg: EnvBenchCfg):
        gym_id = envs.spec(cfg.task).gym_id
        self.vec = gym.vector.SyncVectorEnv(
            [lambda: gym.make(gym_id) for _ in range(cfg.sync_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        self.vec.reset(seed=cfg.seed)
        self.vec.action_space.seed(cfg.seed)

    def run(self, steps: int) -> float:
        step = lambda: self.vec.step(self.vec.action_space.sample())  # noqa: E731
        return self.vec.num_envs * steps / _timed(step, steps)


def run_bench(cfg: EnvBenchCfg) -> dict:
    """Measure (a), (b), (c), print a table with the ratios, optionally write JSON."""
    envs.spec(cfg.task)  # unknown task: error listing the valid ones, before any work
    threads = cfg.nthread or os.cpu_count()
    print(f"bench {cfg.task}: N={cfg.num_envs}, threads={threads}, {cfg.rounds} interleaved")
    print(f"  rounds of {cfg.steps} steps (sync peer: {cfg.sync_steps}); median round shown")
    batched_peer = BatchedPeer(cfg)
    raw_peer = RawPeer(cfg, batched_peer.env)
    sync_peer = SyncPeer(cfg)
    rng = np.random.default_rng(cfg.seed)
    nu = batched_peer.env.action_dim
    rounds: dict[str, list[float]] = {"a": [], "b1": [], "bs": [], "c": []}
    for r in range(cfg.rounds + 1):  # round 0 is an untimed warm-up
        actions = rng.uniform(-1, 1, (cfg.warmup if r == 0 else cfg.steps, cfg.num_envs, nu))
        # the raw peers start from the env's states and replay its actions
        timings = {
            "b1": raw_peer.run_one_call(actions),
            "bs": raw_peer.run_per_step(actions),
            "a": batched_peer.run(actions),
            "c": sync_peer.run(min(cfg.warmup, 5) if r == 0 else cfg.sync_steps),
        }
        for key, value in timings.items():
            if r > 0:
                rounds[key].append(value)
    batched, resets = float(np.median(rounds["a"])), batched_peer.resets
    raw = {"one_call": float(np.median(rounds["b1"])), "per_step": float(np.median(rounds["bs"]))}
    sync = float(np.median(rounds["c"]))
    best_raw = max(raw.values())
    batched_peer.env.close()
    raw_peer.close()
    sync_peer.vec.close()
    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "steps_per_s": {
            "batched_env": batched,
            "raw_rollout": best_raw,
            "raw_rollout_one_call": raw["one_call"],
            "raw_rollout_per_step": raw["per_step"],
            "sync_vector_env": sync,
        },
        "rounds_steps_per_s": rounds,
        "episode_resets": resets,
        "ratios": {
            "batched_over_raw": batched / best_raw,
            "batched_over_raw_per_step": batched / raw["per_step"],
            "batched_over_sync": batched / sync,
        },
        "targets": {"batched_over_raw": TARGET_RAW, "batched_over_sync": TARGET_SYNC},
    }
    rows = [
        ("(a) batched env (obs, reward, autoreset)", batched),
        ("(b) raw mujoco.rollout, one call", raw["one_call"]),
        ("(b) raw mujoco.rollout, call per step", raw["per_step"]),
        (f"(c) gymnasium SyncVectorEnv x{cfg.sync_envs}", sync),
    ]
    for label, value in rows:
        print(f"  {label:<44} {value:>12,.0f} steps/s")
    print(f"  episodes that ended (autoreset) during (a): {resets}")
    for key, label in (("batched_over_raw", "a/b"), ("batched_over_sync", "a/c")):
        ratio, target = result["ratios"][key], result["targets"][key]
        verdict = "met" if ratio >= target else "NOT met"
        print(f"  {label} = {ratio:7.2f}   (target >= {target:g}: {verdict})")
    print(
        f"  a/b per step = {result['ratios']['batched_over_raw_per_step']:5.2f}   "
        "(both calling the engine once per control step)"
    )
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
