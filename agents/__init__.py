"""What acts and learns, one module per agent kind, each registering itself by
subclassing `agents.base.Agent`: model-free SB3 learners (`sb3_agents`), the
actor-critic in imagination (`dreamer`), the planner over a world model (`mppi`),
behaviour cloning (`bc`), World Action Model policies (`wam_policy`) and scripted
experts (`expert_agent`); collection policies (`policies`). The jobs that drive them
are in `agents.jobs`, the benchmarks in `agents.bench`."""
