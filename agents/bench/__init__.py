"""Every benchmark of `python run.py bench SUITE`, one module and one config per suite.

- `env`: the batched env beside raw `mujoco.rollout` and Gymnasium's `SyncVectorEnv`
  (or, with `--backend warp`, the MuJoCo Warp backend beside the MuJoCo CPU one);
- `data`: collection with and without recording, pixels, and the loaders;
- `wm`: the imagined env beside the real one;
- `ray`: collection with 1 and 2 Ray workers beside the in-process collector;
- `loop`: the closed loop beside model-free SAC at the same env steps;
- `dmc`: methods x tasks x seeds on the Control Suite at a budget, one result file
  per run, beside TD-MPC2's, DreamerV3's and SAC's published curves (`anchors`);
- `isaaclab`: our Isaac Lab adapter beside Isaac Lab's own env.

Each prints ratios of peers measured in the same run and can write its result as
JSON (`--json`); `agents.bench.common` holds what the suites share.
"""
