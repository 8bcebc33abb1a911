"""`ImaginedEnv`: a world model served as a batched env, in the protocol of `envs/`.

Agents cannot tell it from a real env: torch tensors with the batch first,
float32 observations, actions in [-1, 1], same-step autoreset with the true last
observation in `info["final_obs"]`, a horizon that truncates, episode statistics
in `info`, Gymnasium spaces; the Stable-Baselines3 adapter (`envs.sb3.Sb3VecEnv`)
takes it as it is. Episodes start from observed states (a dataset's initial
states, every state it visited, or states a real env reset to) and are rolled
out by the model:

- `sample`: the model samples its next state (an ensemble: one randomly drawn
  elite per row and its Gaussian, trajectory sampling; an RSSM: its prior),
  else its mean (ensemble) or mode (RSSM) prediction;
- `disagreement_penalty` lambda: reward - lambda * disagreement (MOPO);
- `termination`: "model" (continuation probability < 0.5) or "never" (tasks
  whose only episode end is the time limit); any callable obs -> bool `[N]` too;
- a success head (`use_success_head`, `world_models.success`): `info["at_goal"]`
  and `info["success"]` as a goal task's real env gives them (the head's
  probability of the goal above 0.5 after this step; at any step so far), and
  `success_bonus` b: reward + b * P(at the goal) of each imagined observation
  (fine-tuning towards the goal rather than the shaped reward alone).
A row whose prediction is not finite ends as truncated, flagged in
`info["diverged"]`, like a diverged real world.

Observations are state vectors (a model that sees decodes them from its latent
state); a model that sees also starts from frames and `render()` returns its
decoded frames, uint8 `[n, H, W, 3]`, like a real env's camera. A model without a
decoder (`predicts_obs` False, the `tdmpc2` model) predicts no observations: its
imagined env observes the model's latent state (`observation_dim` is the latent's
size, `latent_obs` is True), so only an agent that acts on that latent acts in it
(`agents.mppi.MppiAgent.act_latent`, over the same model); a termination rule of the
observation does not apply to it and is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.base import check_action
from sim.data.loader import EpisodeData
from world_models.base import WorldModel
from world_models.success import SuccessHead


def _check_starts(starts: torch.Tensor, obs_dim: int, name: str) -> None:
    """Start states must be `[M > 0, obs_dim]`."""
    if starts.dim() != 2 or starts.shape[1] != obs_dim or len(starts) == 0:
        raise ValueError(
            f"{name}: start states have shape {tuple(starts.shape)}, expected (M > 0, {obs_dim})"
        )


@dataclass(kw_only=True)
class ImaginedEnvCfg:
    num_envs: int = 1
    """Parallel imagined rollouts N."""
    seed: int = 0
    """Seed of the start states and the model's sampling."""
    device: str = "cpu"
    """Torch device of the model and of the returned tensors."""
    episode_length: int = 100
    """Horizon of an imagined episode [agent steps]; model errors grow with it."""
    action_repeat: int = 1
    """Fixed at 1: the model predicts one agent step."""
    sample: bool = True
    """Sample the model (trajectory sampling) instead of its mean prediction."""
    disagreement_penalty: float = 0.0
    """MOPO's lambda: reward minus lambda times the ensemble disagreement."""
    success_bonus: float = 0.0
    """Reward plus this times the success head's probability (needs `use_success_head`)."""
    termination: str = "model"
    """model (continuation probability < 0.5) or never."""


class ImaginedEnv:
    """N rollouts of `model` from `starts` (observations `[M, obs_dim]`), each
    episode from a start drawn at random; with `in_order`, the first N episodes
    from starts 0, 1, ... (cycling when M < N)."""

    render_mode = None

    def __init__(
        self,
        model: WorldModel,
        starts: torch.Tensor,
        cfg: ImaginedEnvCfg,
        termination: Callable[[torch.Tensor], torch.Tensor] | None = None,
        name: str = "imagined",
        start_frames: torch.Tensor | None = None,
        in_order: bool = False,
    ):
        if cfg.action_repeat != 1:
            raise ValueError("an imagined env steps the model once per agent step: action_repeat=1")
        if cfg.termination not in ("model", "never") and termination is None:
            raise ValueError(f"termination must be model or never, got {cfg.termination!r}")
        _check_starts(starts, model.obs_dim, name)
        check_penalty(cfg.disagreement_penalty, model, "disagreement_penalty")
        self.latent_obs = not model.predicts_obs
        if self.latent_obs and termination is not None:
            raise ValueError(
                f"{name}: the {model.kind} model predicts no observations (its imagined "
                "observations are its latent states): a termination rule of the "
                "observation cannot apply; use termination='model' or 'never'"
            )
        if model.sees_pixels:
            want = (len(starts), *model.frame_shape)
            if start_frames is None or tuple(start_frames.shape) != want:
                got = None if start_frames is None else tuple(start_frames.shape)
                raise ValueError(
                    f"{name}: the model sees pixels: start_frames must have shape {want}, got {got}"
                )
            start_frames = start_frames.to(cfg.device, torch.uint8)
        self.start_frames = start_frames if model.sees_pixels else None
        self.cfg, self.name, self.model = cfg, name, model.eval()
        self.num_envs, self.device = cfg.num_envs, torch.device(cfg.device)
        self.model.to(self.device)
        self.starts = starts.to(self.device, torch.float32)
        self.termination = termination
        self.action_dim = model.action_dim
        self.observation_dim = model.state_dim if self.latent_obs else model.obs_dim
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (self.observation_dim,), np.float32
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (model.action_dim,), np.float32)
        self._gen = torch.Generator().manual_seed(cfg.seed)
        n = cfg.num_envs
        self.episode_length_buf = torch.zeros(n, dtype=torch.long, device=self.device)
        self._episode_return = torch.zeros(n, dtype=torch.float64, device=self.device)
        self._obs = torch.empty(n, self.observation_dim, device=self.device)
        self._state: torch.Tensor | None = None
        self._episode_success = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.success_head: SuccessHead | None = None
        self.in_order = in_order
        self._start(torch.arange(n, device=self.device), self._first_starts())
        self._fresh = True  # the first reset() keeps these starts, as real envs do

    @classmethod
    def from_dataset(
        cls, model: WorldModel, path, cfg: ImaginedEnvCfg, initial_only: bool = True, **kw
    ) -> ImaginedEnv:
        """Start states from a recorded dataset: its episodes' first observations, or
        (`initial_only=False`) every observation it holds."""
        data = EpisodeData(path, pixels=model.sees_pixels)
        rows = (data.step == 0).nonzero().squeeze(-1) if initial_only else torch.arange(len(data))
        if model.sees_pixels:
            if len(rows) > 100_000:  # frames are read from disk: a random subset
                gen = torch.Generator().manual_seed(cfg.seed)
                rows = rows[torch.randperm(len(rows), generator=gen)[:100_000]]
            kw["start_frames"] = data.__getitems__(rows)["pixels"]
        return cls(model, data.data["obs"][rows], cfg, **kw)

    @classmethod
    def from_env(cls, model: WorldModel, env, cfg: ImaginedEnvCfg, **kw) -> ImaginedEnv:
        """Start states from a real env's reset (seeded with `cfg.seed`): its
        observations and, for a model that sees, its camera frames. The first
        episodes start row by row where the env's did (row i from the env's row
        i, cycling when the counts differ), so a real and an imagined rollout of
        one row begin in one state; later episodes draw their starts at random."""
        if (env.observation_dim, env.action_dim) != (model.obs_dim, model.action_dim):
            raise ValueError(
                f"{env.name}: observation/action dims ({env.observation_dim}, "
                f"{env.action_dim}) differ from the model's ({model.obs_dim}, {model.action_dim})"
            )
        starts = env.reset(seed=cfg.seed).clone()
        if model.sees_pixels:
            kw["start_frames"] = env.render()
        name = kw.pop("name", f"imagined {env.name}")
        return cls(model, starts, cfg, name=name, in_order=True, **kw)

    # ------------------------------------------------------------ protocol
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Every row starts anew (a seeded reset as the first one did: in order, with
        `in_order`, as a real env's seeded reset starts the same states again)."""
        first = None
        if seed is not None:
            self._gen.manual_seed(seed)
            first = self._first_starts()
        elif self._fresh:
            self._fresh = False
            return self._obs.clone()
        self._fresh = False
        self._start(torch.arange(self.num_envs, device=self.device), first)
        return self._obs.clone()

    def _first_starts(self) -> torch.Tensor | None:
        """The starts of rows 0..N-1 in order (`in_order`), else None (at random)."""
        if not self.in_order:
            return None
        return torch.arange(self.num_envs, device=self.device) % len(self.starts)

    def get_observations(self) -> torch.Tensor:
        return self._obs.clone()

    @torch.no_grad()
    def step(self, action: torch.Tensor):
        action = check_action(action, self.num_envs, self.action_dim, self.name)
        action = action.to(self.device, torch.float32)
        self._fresh = False
        gen = self._gen if self.cfg.sample else None
        step = self.model.next(self._state, action, gen)
        obs, reward = step.obs.float(), step.reward.float()
        if self.cfg.disagreement_penalty:
            reward = reward - self.cfg.disagreement_penalty * step.disagreement.float()
        success = None
        if self.success_head is None and self.cfg.success_bonus:
            raise ValueError(f"{self.name}: success_bonus needs a success head (use_success_head)")
        if self.success_head is not None:
            success = self.success_head.prob(obs).nan_to_num(0.0)
            reward = reward + self.cfg.success_bonus * success
        self.episode_length_buf += 1
        if self.termination is not None:
            terminated = self.termination(obs).to(self.device, torch.bool)
        elif self.cfg.termination == "model":
            terminated = step.cont < 0.5
        else:
            terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        truncated = self.episode_length_buf >= self.cfg.episode_length
        diverged = ~(torch.isfinite(obs).all(-1) & torch.isfinite(reward))
        if diverged.any():  # never pass a non-finite prediction on
            obs = torch.where(diverged[:, None], self._obs, obs)
            reward = reward.masked_fill(diverged, 0.0)
            terminated, truncated = terminated & ~diverged, truncated | diverged
        self._state = step.state
        self._episode_return += reward
        info: dict[str, Any] = {"diverged": diverged, "disagreement": step.disagreement}
        if success is not None:
            info["at_goal"] = (success > 0.5) & ~diverged
            self._episode_success |= info["at_goal"]
            info["success"] = self._episode_success.clone()
        done = terminated | truncated
        info["final_obs"] = obs.clone()
        self._obs = obs
        if done.any():
            info["episode_return"] = self._episode_return.clone()
            info["episode_length"] = self.episode_length_buf.clone()
            self._start(done.nonzero().squeeze(-1))
        return self._obs.clone(), reward, terminated, truncated, info

    def _start(self, env_ids: torch.Tensor, pick: torch.Tensor | None = None) -> None:
        """Episodes begin in rows `env_ids` from starts `pick` (default: drawn at random)."""
        if pick is None:
            pick = torch.randint(len(self.starts), (len(env_ids),), generator=self._gen)
        pick = pick.to(self.device)
        start = self.starts[pick]
        frames = None if self.start_frames is None else self.start_frames[pick]
        state = self.model.encode(start, frames)
        self._obs[env_ids] = state if self.latent_obs else start
        if self._state is None:
            self._state = state.new_zeros(self.num_envs, *state.shape[1:])
        self._state = self._state.clone()  # a model may return its obs as its state
        self._state[env_ids] = state
        self.episode_length_buf[env_ids] = 0
        self._episode_return[env_ids] = 0.0
        self._episode_success[env_ids] = False

    def use_success_head(self, head: SuccessHead | None) -> None:
        """Predict success with `head` (None: no success, and no bonus) from now on."""
        if head is not None and (self.latent_obs or head.obs_dim != self.observation_dim):
            raise ValueError(
                f"{self.name}: a success head of {head.obs_dim} observations cannot read "
                f"this env's {'latent states' if self.latent_obs else 'observations'} "
                f"({self.observation_dim})"
            )
        if head is None and self.cfg.success_bonus:
            raise ValueError(f"{self.name}: success_bonus needs a success head")
        self.success_head = None if head is None else head.eval().to(self.device)

    def use_starts(self, starts: torch.Tensor) -> None:
        """Draw the starts of episodes to come from `starts` `[M, obs_dim]` (a state
        model's; running episodes go on)."""
        if self.start_frames is not None or self.in_order:
            raise ValueError(
                f"{self.name}: start states can change only for random starts of a state model"
            )
        _check_starts(starts, self.model.obs_dim, self.name)
        self.starts = starts.to(self.device, torch.float32)

    def use_model(self, model: WorldModel) -> None:
        """Go on in `model` (a refitted model of the same kind and dims), every row from
        where it is: its observation encoded by the new model (a recurrent model's
        history of the episode so far is not carried over)."""
        if (model.kind, model.obs_dim, model.action_dim) != (
            self.model.kind,
            self.model.obs_dim,
            self.model.action_dim,
        ):
            raise ValueError(
                f"{self.name}: a {model.kind} model of dims ({model.obs_dim}, "
                f"{model.action_dim}) cannot replace the {self.model.kind} model of "
                f"({self.model.obs_dim}, {self.model.action_dim})"
            )
        if self.latent_obs or model.sees_pixels:
            raise ValueError(f"{self.name}: only a state model that predicts observations")
        check_penalty(self.cfg.disagreement_penalty, model, "disagreement_penalty")
        self.model = model.eval().to(self.device)
        self._state = self.model.encode(self._obs)

    def render(self, env_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded frames of a model that sees, uint8 `[n, H, W, 3]`."""
        if not self.model.sees_pixels:
            raise NotImplementedError(f"{self.name}: a {self.model.kind} model has no pictures")
        state = self._state if env_ids is None else self._state[torch.as_tensor(env_ids)]
        return self.model.frames(state)

    def close(self) -> None:
        pass


def check_penalty(penalty: float, model: WorldModel, flag: str) -> None:
    """A disagreement penalty must be >= 0, and used only on a model that has one."""
    if penalty < 0:
        raise ValueError(f"{flag} must be >= 0 (it lowers the reward), got {penalty}")
    if penalty > 0 and not model.has_disagreement:
        if model.kind == "ensemble":
            what, cure = "a single elite", "train it with elites > 1"
        elif "disagreement_heads" in model.config:
            what = "no disagreement"
            cure = f"train it with --{model.kind}.disagreement-heads 2 or more"
        else:
            what, cure = "no disagreement", "use an ensemble with elites > 1"
        raise ValueError(
            f"{flag} {penalty}: the {model.kind} model has {what}, so the penalty would "
            f"do nothing; {cure}"
        )
