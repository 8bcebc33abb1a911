"""The jobs that drive agents, one module each: `collect` (in process) and
`ray_collect` (on Ray workers, and the `collect` command), `loop` (the closed loop),
`seeds` (one loop per seed and their summary), `finetune` (BC -> RL in a world
model), `evaluate` (an agent in the real simulator and in imagination) and `rank`
(how well a world model ranks policies)."""
