"""The recorded-data stack: episode datasets on disk and everything that reads or
writes them, apart from the physics (the dataset, its writer process and the export
need neither torch nor mujoco).

- `dataset`: the directory layout (robomimic-style HDF5 shards plus an index), the
  crash-safe `DatasetWriter` and the `Dataset` reader;
- `shards`: one shard file; `shard_writer`: the process that writes shards beside a
  collection;
- `recorder`: batched env steps cut into whole episodes;
- `loader`: training batches (transitions or masked windows) from a dataset;
- `export`: the LeRobot v3.0 layout; `summary`: `python run.py inspect`;
- `atomic`: writes that readers see whole or not at all.
"""
