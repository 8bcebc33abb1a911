"""Conformance checker for the batched env protocol (`docs/env-protocol.md`): the
batched, torch counterpart of `gymnasium.utils.env_checker.check_env`.

```python
from envs.checker import check_batched_env

check_batched_env(lambda n, seed, length: envs.make(task, num_envs=n, seed=seed,
                                                    episode_length=length))
```

`make_env(num_envs, seed, episode_length)` returns a fresh env; the checker builds a
few (two with the same seed, one with a longer horizon, one with another seed) and
drives them through the public protocol only: `reset`, `step`, `get_observations`,
`observation_space`, `action_space`, `num_envs`, `action_dim`, `observation_dim`,
`device`, `render` where it exists and `close` (plus `cfg.action_repeat` where the
env has one, as the SB3 adapter reads it). Nothing physics-specific is called, so
real tasks, imagined envs and later backends are checked alike. A broken rule raises
`AssertionError("<env>: [<rule>] <what went wrong> (rule: <the rule>)")`.

Comparisons between envs are bit for bit: the protocol promises identical
trajectories for identical seeds and actions, and a horizon that only truncates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

RULES = {
    "spaces": "observation and action spaces are gymnasium Boxes: float32 (obs_dim,) or, for "
    "pixel observations, uint8 (H, W, 3); float32 (action_dim,) actions in [-1, 1]",
    "reset": "reset() returns an [N, *observation shape] finite tensor of the observation "
    "space's dtype on env.device inside the "
    "observation space; get_observations() returns the latest observations",
    "step": "step returns obs [N, *observation shape], reward float32 [N], terminated and "
    "truncated bool [N] and a dict info with final_obs like obs, all finite, on "
    "env.device, and never overwrites a tensor it returned before",
    "autoreset": "same-step autoreset: a done row's obs starts a new episode, "
    "info['final_obs'] is the finished episode's true last observation, and equals obs "
    "where the row is not done",
    "episode stats": "when rows end, info['episode_return'] and info['episode_length'] [N] "
    "hold the sum of each ended episode's rewards and its length",
    "horizon": "episode_length=k truncates (never terminates) every episode at exactly its "
    "k-th step, and the count restarts with each episode",
    "seeding": "the same seed and actions give bit-identical trajectories; "
    "make_env(seed=s).reset() and its trajectory equal reset(seed=s) on a used env; "
    "different seeds start differently (random_starts)",
    "bad action": "NaN/inf, wrong shape, non-float dtype and non-tensor actions raise "
    "ValueError naming the expected shape, and change nothing",
    "clipping": "actions outside [-1, 1] act exactly as if clipped to [-1, 1]",
    "render": "render(env_ids=None) returns uint8 [n, H, W, 3] frames on env.device",
    "sb3": "envs.sb3.Sb3VecEnv reports the env the Stable-Baselines3 way and PPO learns on it",
}

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.uint8): torch.uint8}

EnvFactory = Callable[[int, int, int], Any]
_PROTOCOL = (
    "reset",
    "step",
    "get_observations",
    "observation_space",
    "action_space",
    "num_envs",
    "action_dim",
    "observation_dim",
    "device",
    "close",
)


class _Out(NamedTuple):
    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    info: dict[str, Any]


class _Checker:
    def __init__(self, name: str, env):
        self.name, self.n, self.device = name, env.num_envs, torch.device(env.device)

    def fail(self, rule: str, detail: str):
        raise AssertionError(f"{self.name}: [{rule}] {detail} (rule: {RULES[rule]})")

    def tensor(self, rule: str, what: str, x, shape: tuple, dtype: torch.dtype | None) -> None:
        if not torch.is_tensor(x):
            self.fail(rule, f"{what} is a {type(x).__name__}, expected a torch.Tensor")
        if tuple(x.shape) != shape:
            self.fail(rule, f"{what} has shape {tuple(x.shape)}, expected {shape}")
        if dtype is not None and x.dtype != dtype:
            self.fail(rule, f"{what} has dtype {x.dtype}, expected {dtype}")
        dev = self.device
        if x.device.type != dev.type or (dev.index is not None and x.device.index != dev.index):
            self.fail(rule, f"{what} is on {x.device}, expected env.device {dev}")
        if x.dtype.is_floating_point and not torch.isfinite(x).all():
            rows = (~torch.isfinite(x.reshape(len(x), -1))).any(-1).nonzero().flatten()
            self.fail(rule, f"{what} is not finite in rows {rows[:8].tolist()}")

    def equal(self, rule: str, what: str, x, y, where: str, other: str) -> None:
        """`x` of the env under test bit-identical to `y` of `other`."""
        if not torch.equal(x, y):
            row = _first_diff(x, y)
            self.fail(
                rule,
                f"{where}: {what} differs from {other} (row {row}: "
                f"{_fmt(x[row])} vs {_fmt(y[row])})",
            )

    def same(self, rule: str, a: _Out, b: _Out, where: str, other: str) -> None:
        """Two steps' outputs bit-identical (episode statistics where rows ended)."""
        for what in ("obs", "reward", "terminated", "truncated"):
            self.equal(rule, what, getattr(a, what), getattr(b, what), where, other)
        done = a.terminated | a.truncated
        for key in ("final_obs", "episode_return", "episode_length"):
            if (key in a.info) != (key in b.info):
                self.fail(rule, f"{where}: info[{key!r}] present in one env only ({other})")
            if key in a.info:
                x, y = a.info[key], b.info[key]
                x, y = (x, y) if key == "final_obs" else (x[done], y[done])
                self.equal(rule, f"info[{key!r}]", x, y, where, other)


def _first_diff(x: torch.Tensor, y: torch.Tensor) -> int:
    if x.shape != y.shape or x.dtype != y.dtype:
        return 0
    return int((x != y).reshape(len(x), -1).any(-1).nonzero()[0, 0])


def _fmt(x: torch.Tensor) -> str:
    if x.numel() > 16:  # a frame
        return f"<{tuple(x.shape)} {x.dtype}, mean {x.double().mean().item():.6g}>"
    return str(x.tolist() if x.dim() else x.item())


class _Tracked:
    """The env under test, with each row's episode length and return since its start."""

    def __init__(self, c: _Checker, env, horizon: int, repeat: int):
        self.c, self.env, self.horizon, self.repeat = c, env, horizon, repeat
        n, self.shape = env.num_envs, tuple(env.observation_space.shape)
        self.dtype = _TORCH_DTYPES[np.dtype(env.observation_space.dtype)]
        self.length = torch.zeros(n, dtype=torch.long)
        self.ret = torch.zeros(n, dtype=torch.float64)
        self.scale = torch.zeros(n, dtype=torch.float64)  # sum |reward|, for the tolerance
        self.space = env.observation_space
        self.kept: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def _keep(self, call: str, tensors: dict[str, Any]) -> None:
        """Returned tensors must not change under later calls: a caller may store them."""
        for what, x, copy in self.kept:
            if not torch.equal(x, copy):
                self.c.fail("step", f"{call} overwrote {what} in place; return new tensors")
        self.kept = [
            (f"{k} returned by {call}", v, v.clone())
            for k, v in tensors.items()
            if torch.is_tensor(v)
        ]

    def _obs(self, rule: str, what: str, obs) -> None:
        c = self.c
        c.tensor(rule, what, obs, (c.n, *self.shape), self.dtype)
        low = torch.as_tensor(self.space.low, device=obs.device)
        high = torch.as_tensor(self.space.high, device=obs.device)
        outside = ((obs < low) | (obs > high)).flatten(1).any(-1)
        if outside.any():
            c.fail(
                rule,
                f"{what} lies outside the observation space in rows "
                f"{outside.nonzero().flatten()[:8].tolist()}",
            )
        now = self.env.get_observations()
        if not (torch.is_tensor(now) and torch.equal(now, obs)):
            c.fail(rule, f"get_observations() differs from the {what} just returned")

    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs = self.env.reset() if seed is None else self.env.reset(seed=seed)
        call = "reset()" if seed is None else f"reset(seed={seed})"
        self._obs("reset", f"{call} obs", obs)
        self._keep(call, {"obs": obs})
        for running in (self.length, self.ret, self.scale):
            running.zero_()
        return obs

    def step(self, action, where: str) -> _Out:
        """One step with the structure checked (rules step and, for final_obs, autoreset)."""
        c, n = self.c, self.c.n
        out = self.env.step(action)
        if not (isinstance(out, tuple) and len(out) == 5):
            c.fail(
                "step",
                f"{where}: step returned {type(out).__name__}, expected a tuple "
                "(obs, reward, terminated, truncated, info)",
            )
        out = _Out(*out)
        self._obs("step", f"{where}: obs", out.obs)
        c.tensor("step", f"{where}: reward", out.reward, (n,), torch.float32)
        c.tensor("step", f"{where}: terminated", out.terminated, (n,), torch.bool)
        c.tensor("step", f"{where}: truncated", out.truncated, (n,), torch.bool)
        if not isinstance(out.info, dict) or "final_obs" not in out.info:
            c.fail("step", f"{where}: info must be a dict holding 'final_obs'")
        c.tensor(
            "step",
            f"{where}: info['final_obs']",
            out.info["final_obs"],
            (n, *self.shape),
            self.dtype,
        )
        if "diverged" in out.info:
            c.tensor("step", f"{where}: info['diverged']", out.info["diverged"], (n,), torch.bool)
        if (out.terminated | out.truncated).any():
            for key in ("episode_return", "episode_length"):
                if key not in out.info:
                    c.fail("episode stats", f"{where}: rows ended but info has no {key!r}")
                c.tensor("episode stats", f"{where}: info[{key!r}]", out.info[key], (n,), None)
        self._keep(where, {**out._asdict(), **{f"info[{k!r}]": v for k, v in out.info.items()}})
        return out

    def track(self, out: _Out, where: str) -> None:
        """The semantic rules: autoreset, episode statistics and the horizon."""
        c = self.c
        done = out.terminated | out.truncated
        final = out.info["final_obs"]
        if not torch.equal(final[~done], out.obs[~done]):
            row = int((~done & (final != out.obs).flatten(1).any(-1)).nonzero()[0, 0])
            c.fail(
                "autoreset",
                f"{where}: row {row} is not done but info['final_obs'] differs "
                "from obs; where a row goes on they must be equal",
            )
        same = done & (final == out.obs).flatten(1).all(-1)
        if same.any():
            c.fail(
                "autoreset",
                f"{where}: rows {same.nonzero().flatten().tolist()} ended but "
                "info['final_obs'] equals obs, the new episode's first "
                "observation; it must be the finished episode's last",
            )
        reward = out.reward.detach().cpu().double()
        self.length += 1
        self.ret += reward
        self.scale += reward.abs()
        done, trunc = done.cpu(), out.truncated.cpu()
        diverged = out.info.get("diverged", torch.zeros_like(done)).cpu()
        at_horizon = self.length == self.horizon
        for i in (at_horizon & ~done).nonzero().flatten().tolist():
            c.fail(
                "horizon",
                f"{where}: row {i} reached the horizon ({self.horizon} steps "
                f"since its episode began) but was not truncated",
            )
        early = trunc & ~at_horizon & ~diverged
        for i in early.nonzero().flatten().tolist():
            c.fail(
                "horizon",
                f"{where}: row {i} was truncated after {int(self.length[i])} "
                f"steps of its episode, before the horizon of {self.horizon}; "
                "the step count must restart with each episode",
            )
        if done.any():
            ret = out.info["episode_return"].detach().cpu().double()
            length = out.info["episode_length"].detach().cpu()
            for i in done.nonzero().flatten().tolist():
                want = float(self.ret[i])
                if abs(float(ret[i]) - want) > 1e-5 * float(self.scale[i]) + 1e-6:
                    c.fail(
                        "episode stats",
                        f"{where}: row {i} ended with info['episode_return']"
                        f" {float(ret[i]):.6g}, but its rewards since the episode began sum "
                        f"to {want:.6g}",
                    )
                if int(length[i]) != int(self.length[i]) * self.repeat:
                    c.fail(
                        "episode stats",
                        f"{where}: row {i} ended with info['episode_length'"
                        f"] {int(length[i])}, but its episode lasted {int(self.length[i])} "
                        f"steps (x action_repeat {self.repeat})",
                    )
            self.length[done], self.ret[done], self.scale[done] = 0, 0.0, 0.0


def check_batched_env(
    make_env: EnvFactory,
    *,
    steps: int = 10,
    name: str | None = None,
    num_envs: int = 4,
    episode_length: int = 4,
    seed: int = 0,
    random_starts: bool = True,
    render: bool = True,
    sb3: bool = True,
) -> None:
    """Check every rule of `RULES` on envs from `make_env(num_envs, seed, episode_length)`.

    `steps` agent steps are run with the horizon `episode_length` (at least two whole
    episodes: steps > 2 x horizon), then the bad-action, clipping, render, SB3 and
    reseeding checks (`render=False`, `sb3=False` leave those out). `name` names the
    env in messages (default: its `name` attribute).
    `random_starts=False` declares an env whose start states do not depend on the seed.
    """
    opened: list[Any] = []

    def make(s: int, length: int):
        opened.append(make_env(num_envs, s, length))
        return opened[-1]

    try:
        env = make(seed, episode_length)
        name = name or getattr(env, "name", None) or type(env).__name__
        _check_protocol(env, name)
        c = _Checker(name, env)
        _check_spaces(c, env, num_envs)
        horizon, repeat = _horizon(c, env, steps, episode_length)
        twin, longer = make(seed, episode_length), make(seed, 2 * episode_length)
        run = _Tracked(c, env, horizon, repeat)
        gen = torch.Generator().manual_seed(seed)
        actions = torch.rand(steps + 4, num_envs, env.action_dim, generator=gen) * 2 - 1
        actions = actions.to(c.device)

        first = _check_rollout(c, run, twin, longer, actions, steps, horizon)
        _check_bad_actions(c, run, twin, actions[steps], steps + 1)
        _check_clipping(c, run, twin, actions[steps + 1 : steps + 4], steps + 2)
        if render:
            _check_render(c, env)
        if sb3:
            _check_sb3(c, env, twin, actions, seed + 2, horizon, repeat)
        _check_reseeding(
            c, run, make(seed + 1, episode_length), first, seed + 1, actions, random_starts
        )
    finally:
        for e in opened:
            e.close()


def _check_protocol(env, name: str) -> None:
    """Refuse an env that lacks attributes of the protocol."""
    missing = [a for a in _PROTOCOL if not hasattr(env, a)]
    if missing:
        raise AssertionError(f"{name}: [spaces] lacks {', '.join(missing)} of the protocol")


def _horizon(c: _Checker, env, steps: int, episode_length: int) -> tuple[int, int]:
    """The horizon [agent steps] and the action repeat; refuses a run of `steps` that
    does not cover two whole episodes."""
    # `episode_length` counts control steps, an agent step is `action_repeat` of them
    repeat = int(getattr(getattr(env, "cfg", None), "action_repeat", 1))
    horizon = episode_length // repeat
    if episode_length % repeat or steps <= 2 * horizon:
        raise ValueError(
            f"{c.name}: need episode_length a multiple of action_repeat "
            f"({repeat}) and steps > 2 x {horizon}, got {episode_length}, "
            f"{steps}"
        )
    return horizon, repeat


def _check_rollout(
    c: _Checker,
    run: _Tracked,
    twin,
    longer,
    actions: torch.Tensor,
    steps: int,
    horizon: int,
) -> torch.Tensor:
    """Reset and step the env beside a twin of the same seed and one of a longer horizon
    (rules seeding and horizon, and those `run` tracks); returns the first observations."""
    first = run.reset()
    c.equal(
        "seeding", "obs", first, twin.reset(), "reset()", "a second env made with the same seed"
    )
    c.equal(
        "horizon",
        "obs",
        first,
        longer.reset(),
        "reset()",
        "an env made with the same seed and a longer horizon",
    )
    for t in range(steps):
        where = f"step {t + 1}"
        out = run.step(actions[t], where)
        c.same(
            "seeding",
            out,
            _Out(*twin.step(actions[t])),
            where,
            "a second env made with the same seed",
        )
        run.track(out, where)
        if t < horizon:
            _against_longer(c, out, _Out(*longer.step(actions[t])), where, t + 1 == horizon)
    return first


def _check_spaces(c: _Checker, env, n: int) -> None:
    if env.num_envs != n:
        c.fail("spaces", f"num_envs is {env.num_envs}, the factory was asked for {n}")
    for which, dim in (("observation", env.observation_dim), ("action", env.action_dim)):
        space = getattr(env, f"{which}_space")
        if not isinstance(space, gym.spaces.Box):
            c.fail("spaces", f"{which}_space is {type(space).__name__}, expected gymnasium Box")
        pixels = which == "observation" and len(space.shape) == 3
        if pixels and (space.shape[2] != 3 or space.dtype != np.uint8):
            c.fail(
                "spaces",
                f"observation_space of frames has shape {space.shape} and dtype "
                f"{space.dtype}, expected (H, W, 3) uint8",
            )
        if not pixels and (space.shape != (dim,) or space.dtype != np.float32):
            c.fail(
                "spaces",
                f"{which}_space has shape {space.shape} and dtype {space.dtype}, "
                f"expected ({dim},) float32 ({which}_dim = {dim})",
            )
    space = env.action_space
    if not ((space.low == -1).all() and (space.high == 1).all()):
        c.fail("spaces", f"action_space is [{space.low}, {space.high}], expected [-1, 1]")


def _against_longer(c: _Checker, out: _Out, ref: _Out, where: str, at_horizon: bool) -> None:
    """Up to the horizon an env with a longer one must match, except that it goes on."""
    other = "an env made with the same seed and a longer horizon"
    if not at_horizon:
        c.same("horizon", out, ref, where, other)
        return
    if not torch.equal(out.reward, ref.reward):
        c.fail("horizon", f"{where}: reward at the horizon differs from {other}")
    if not torch.equal(out.terminated, ref.terminated):
        c.fail(
            "horizon",
            f"{where}: terminated at the horizon differs from {other}; a time "
            "limit must be truncation, never termination",
        )
    if not torch.equal(out.info["final_obs"], ref.info["final_obs"]):
        row = _first_diff(out.info["final_obs"], ref.info["final_obs"])
        c.fail(
            "autoreset",
            f"{where}: info['final_obs'] of row {row}, truncated by the "
            f"horizon, differs from the observation of {other} at the same "
            "step: it must be the true last observation",
        )
    cut = out.truncated & ~out.terminated & ~ref.truncated
    same = cut & (out.obs == ref.obs).flatten(1).all(-1)
    if same.any():
        c.fail(
            "autoreset",
            f"{where}: rows {same.nonzero().flatten().tolist()} were truncated "
            f"but their obs equals that of {other}, which goes on: a done row "
            "must return a new episode's first observation",
        )


def _bad_actions(c: _Checker, act_dim: int, valid: torch.Tensor) -> list[tuple[str, Any]]:
    n = c.n
    inf_row = valid.clone()
    inf_row[n // 2, 0] = float("inf")
    return [
        ("an action of NaN", torch.full_like(valid, float("nan"))),
        (f"an action with inf in row {n // 2}", inf_row),
        (f"an action of shape {(n, act_dim + 1)}", torch.zeros(n, act_dim + 1, device=c.device)),
        (f"an action of shape {(n * act_dim,)}", valid.reshape(-1)),
        (f"an action of shape {(n + 1, act_dim)}", torch.zeros(n + 1, act_dim, device=c.device)),
        ("an int64 action", torch.zeros(n, act_dim, dtype=torch.long, device=c.device)),
        ("a list action", valid.tolist()),
    ]


def _check_bad_actions(c: _Checker, run: _Tracked, twin, valid: torch.Tensor, t: int) -> None:
    env, expected = run.env, str((c.n, run.env.action_dim))
    names = [str(env.name)] if hasattr(env, "name") else []
    for what, action in _bad_actions(c, env.action_dim, valid):
        before = env.get_observations().clone()
        try:
            env.step(action)
        except ValueError as err:
            if any(word not in str(err) for word in [expected, *names]):
                c.fail(
                    "bad action",
                    f"the ValueError for {what} must name the env "
                    f"{names} and the expected shape {expected}: {err}",
                )
        except Exception as err:
            c.fail("bad action", f"{what} raised {type(err).__name__} ({err}), expected ValueError")
        else:
            c.fail("bad action", f"{what} was accepted; it must raise ValueError")
        if not torch.equal(env.get_observations(), before):
            c.fail(
                "bad action",
                f"{what} was rejected but changed get_observations(); a "
                "rejected action must change nothing",
            )
    where = f"step {t} (after rejected actions)"
    out = run.step(valid, where)
    c.same(
        "bad action",
        out,
        _Out(*twin.step(valid)),
        where,
        "a twin env that never saw the rejected actions",
    )
    run.track(out, where)


def _check_clipping(c: _Checker, run: _Tracked, twin, actions: torch.Tensor, t: int) -> None:
    wild = actions * 4  # most entries outside [-1, 1]
    wild[:, 0, :] = 5.0
    wild[:, -1, :] = -7.0
    for k, action in enumerate(wild):
        where = f"step {t + k} (actions outside [-1, 1])"
        out = run.step(action, where)
        c.same(
            "clipping",
            out,
            _Out(*twin.step(action.clamp(-1.0, 1.0))),
            where,
            "a twin env given the same actions clipped to [-1, 1]",
        )
        run.track(out, where)


def _check_reseeding(
    c: _Checker, run: _Tracked, fresh, first: torch.Tensor, s: int, actions, random_starts: bool
) -> None:
    """make_env(seed=s).reset() and its trajectory equal reset(seed=s) on a used env."""
    new = fresh.reset()
    other = f"a fresh env made with seed {s} after reset()"
    c.equal("seeding", "obs", run.reset(seed=s), new, f"reset(seed={s})", other)
    for t in range(run.horizon + 1):  # across an autoreset
        where = f"step {t + 1} after reset(seed={s})"
        out = run.step(actions[t], where)
        c.same("seeding", out, _Out(*fresh.step(actions[t])), where, other)
        run.track(out, where)
    if random_starts and torch.equal(new, first):
        c.fail(
            "seeding",
            f"seeds {s - 1} and {s} give the same first observations; pass "
            "random_starts=False for an env whose start states do not depend "
            "on the seed",
        )


def _check_render(c: _Checker, env) -> None:
    if not callable(getattr(env, "render", None)):
        return
    try:
        frames = env.render()
    except NotImplementedError:  # e.g. a world model without pictures
        return
    if not torch.is_tensor(frames) or frames.dim() != 4:
        c.fail("render", f"render() returned {type(frames).__name__}, expected [n, H, W, 3]")
    h, w = frames.shape[1:3]
    c.tensor("render", "render()", frames, (c.n, h, w, 3), torch.uint8)
    one = env.render(torch.tensor([c.n - 1]))
    c.tensor("render", f"render(env_ids=[{c.n - 1}])", one, (1, h, w, 3), torch.uint8)


def _check_sb3(c: _Checker, env, twin, actions, s: int, horizon: int, repeat: int) -> None:
    """Sb3VecEnv over `env` against `twin` stepped directly, then a tiny PPO run."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.utils import check_for_correct_spaces
    from stable_baselines3.common.vec_env import VecCheckNan

    from envs.sb3 import Sb3VecEnv

    vec = Sb3VecEnv(env)
    try:
        check_for_correct_spaces(vec, env.observation_space, env.action_space)
        checked = VecCheckNan(vec, raise_exception=True)
        checked.seed(s)
        obs = checked.reset()
        ref = twin.reset(seed=s)
        if not np.array_equal(obs, ref.cpu().numpy()):
            c.fail("sb3", f"after seed({s}), reset() differs from the env's reset(seed={s})")
        for t in range(horizon + 1):
            obs, rewards, dones, infos = checked.step(actions[t].cpu().numpy())
            _sb3_step(c, (obs, rewards, dones, infos), _Out(*twin.step(actions[t])), t, repeat)
        n_steps = horizon + 1  # one rollout that crosses an episode end, then one update
        model = PPO(
            "MlpPolicy",
            vec,
            n_steps=n_steps,
            batch_size=c.n * n_steps,
            n_epochs=1,
            seed=s,
            device="cpu",
            policy_kwargs={"net_arch": [8]},
        )
        model.set_logger(Logger(folder=None, output_formats=[]))  # no temp dir per learn()
        model.learn(total_timesteps=c.n * n_steps)
    except AssertionError:
        raise
    except Exception as err:  # whatever SB3 trips over, reported as this rule
        c.fail("sb3", f"{type(err).__name__}: {err}")


def _sb3_step(c: _Checker, got, ref: _Out, t: int, repeat: int) -> None:
    obs, rewards, dones, infos = got
    where = f"Sb3VecEnv step {t + 1}"
    done = (ref.terminated | ref.truncated).cpu().numpy()
    want = ref.obs.cpu().numpy().dtype
    if not (isinstance(obs, np.ndarray) and obs.dtype == want):
        c.fail("sb3", f"{where}: observations are not a {want} numpy array")
    if not np.array_equal(obs, ref.obs.cpu().numpy()):
        c.fail("sb3", f"{where}: observations differ from the env's")
    if not np.array_equal(rewards, ref.reward.cpu().numpy()):
        c.fail("sb3", f"{where}: rewards differ from the env's")
    if not np.array_equal(dones, done):
        c.fail("sb3", f"{where}: dones differ from terminated | truncated")
    if len(infos) != c.n:
        c.fail("sb3", f"{where}: {len(infos)} infos for {c.n} envs")
    for i in np.flatnonzero(done):
        info = infos[i]
        final = ref.info["final_obs"][i].cpu().numpy()
        if not np.array_equal(info.get("terminal_observation"), final):
            c.fail("sb3", f"{where}: infos[{i}]['terminal_observation'] is not final_obs[{i}]")
        cut = bool(ref.truncated[i] and not ref.terminated[i])
        if info.get("TimeLimit.truncated") is not cut:
            c.fail(
                "sb3",
                f"{where}: infos[{i}]['TimeLimit.truncated'] is "
                f"{info.get('TimeLimit.truncated')}, expected {cut}",
            )
        episode = info.get("episode", {})
        ret, length = ref.info["episode_return"][i], ref.info["episode_length"][i]
        if episode.get("r") != float(ret) or episode.get("l") != int(length) // repeat:
            c.fail(
                "sb3",
                f"{where}: infos[{i}]['episode'] is {episode}, expected r = "
                f"{float(ret)}, l = {int(length) // repeat} agent steps",
            )
