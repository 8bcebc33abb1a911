"""The closed loop learns: on cartpole_balance, 12,000 env steps of the default loop
(ensemble world model, Dreamer actor-critic in imagination) lift the real return of
the deterministic policy from its first iteration's to near the maximum of 1,000."""

from __future__ import annotations

import pytest

from agents.jobs.loop import LoopCfg
from run import closed_loop


@pytest.mark.slow(seconds=730)
def test_closed_loop_learns_cartpole_balance(tmp_path):
    cfg = LoopCfg(
        task="cartpole_balance",
        budget=12_000,
        episodes_per_iter=2,
        video_steps=0,
        wm_first_epochs=10,
        wm_epochs=4,
        out=tmp_path / "run",
        progress=False,
    )
    summary = closed_loop(cfg)
    curve = [r["real_return"] for r in summary["curve"]]
    assert len(curve) == 6
    # measured: 533, 285, 716, 760, 923, 966 (seed 0, one thread)
    assert curve[-1] > 800, curve
    assert curve[-1] > curve[0] + 200, curve
