"""`python run.py export`: write a dataset in the LeRobot dataset v3.0 layout.

`export_lerobot(source, out)` writes (codebase_version "v3.0"; paths are LeRobot's
`DEFAULT_*_PATH` templates with chunk/file indices)::

    meta/info.json             features (dtype, shape, names), fps, totals, path templates
    meta/stats.json            per feature min, max, mean, std, count, q01, q10, q50, q90, q99
    meta/tasks.parquet         task_index, task (the pandas index, as LeRobot reads it)
    meta/episodes/chunk-000/file-000.parquet
                               a row per episode: episode_index, tasks, length,
                               dataset_from/to_index, data/{chunk,file}_index,
                               videos/<key>/{chunk,file}_index, videos/<key>/{from,to}_timestamp,
                               stats/<feature>/<stat>, meta/episodes/{chunk,file}_index
    data/chunk-000/file-000.parquet
                               a row per step, a row group per episode
    videos/observation.images.camera<N>/chunk-000/file-000.mp4     (datasets with pixels)

Episodes are concatenated in a data file and in a video file; the next file (file-001,
...) starts where an episode would take the open one past `data_files_size_in_mb`
(counted in uncompressed Arrow bytes) or `video_files_size_in_mb` (encoded bytes).
Row t of an episode: `observation.state` (obs t), `action`, `next.reward`, `next.done`
(the dataset's `dones`), `timestamp` t / fps, `frame_index` t, `episode_index`, `index`
(global), `task_index`; a feature of shape (1,) is a scalar column, as LeRobot stores it.
The video frame at `from_timestamp` + t / fps shows obs t (the frame after the last step
has no row and is not exported). Episodes are renumbered 0..N-1 in `Dataset.episodes`
order. Video is AV1 (libsvtav1, yuv420p, g=2, crf=30, preset 12: LeRobot's defaults),
or H.264 where the PyAV build lacks libsvtav1. Image stats are per channel in [0, 1],
shaped (3, 1, 1); all stats are exact (LeRobot's own are estimates from samples).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from sim.data import ownership
from sim.data.dataset import Dataset

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
FORMATS = ("lerobot",)
# encoders by preference, with the settings recorded as info "video.<name>": libsvtav1 as
# LeRobot's RGBEncoderConfig defaults, libx264 where the PyAV build lacks it
_ENCODERS = {
    "libsvtav1": {"g": 2, "crf": 30, "preset": 12, "fast_decode": 0},
    "libx264": {"g": 2, "crf": 23, "preset": None, "fast_decode": 0},
}


@dataclass
class ExportCfg:
    """Export a dataset to another format (LeRobot dataset v3.0)."""

    path: tyro.conf.Positional[Path]
    """Source dataset directory (or a robomimic-layout HDF5 file)."""
    out: Path
    """Output directory; written whole to a hidden staging folder beside it, then
    renamed (a killed export leaves `out` as it was)."""
    format: str = "lerobot"
    """Output format: lerobot (dataset v3.0: parquet + mp4)."""
    task: str | None = None
    """Task description stored for every frame (default: the env name)."""
    fps: float | None = None
    """Frames per second (default: 1 / agent_dt of the dataset)."""
    overwrite: bool = False
    """Replace `out` if it holds an earlier export."""


def export_lerobot(
    source: str | Path | Dataset,
    out: str | Path,
    *,
    task: str | None = None,
    fps: float | None = None,
    overwrite: bool = False,
    data_files_size_in_mb: float = 100,
    video_files_size_in_mb: float = 200,
) -> Path:
    """Write `source` to `out` in the LeRobot v3.0 layout (see the module docstring);
    the size limits [MiB] are LeRobot's defaults. Returns `out`."""
    try:
        import av  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as err:
        msg = f"exporting needs pyarrow and av ({err}); pip install wam-sandbox[export]"
        raise ImportError(msg) from err
    ds = source if isinstance(source, Dataset) else Dataset(source)
    out, src = Path(out), ds.path.resolve()
    if not ds.episodes:
        raise ValueError(f"{ds.path}: the dataset holds no episodes, nothing to export")
    if src in (out.resolve(), *out.resolve().parents) or out.resolve() in src.parents:
        raise ValueError(f"{out}: the output and the source {ds.path} would overlap")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    ours = (out / "meta" / "info.json").is_file() or (out.is_dir() and not any(out.iterdir()))
    if out.exists() and not ours:
        raise ValueError(f"{out} exists and is not a LeRobot dataset: refusing to replace it")
    fps = _fps(ds, fps)
    task = task or ds.env_args.get("env_name") or "default"
    _remove_leftovers(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_staging(out), dir=out.parent))
    ownership.mark(tmp, "export")
    try:
        _write(ds, tmp, task, fps, data_files_size_in_mb, video_files_size_in_mb)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if ds is not source:
            ds.close()
    _replace(tmp, out)
    return out


_INDICES = ("frame_index", "episode_index", "index", "task_index")
_NONE = np.empty((0, 0))  # stands in for an array an episode lacks
_VECTORS = {"observation.state": "obs", "action": "actions"}


def _write(ds: Dataset, root: Path, task: str, fps: int, data_mb: float, video_mb: float) -> None:
    """Write the LeRobot tree of `ds` into `root`: the episodes' data and video files,
    then the metadata."""
    first = ds.episode(ds.episodes[0])
    cam = f"observation.images.{_camera_name(ds.env_args)}" if "pixels" in first else None
    features = _features(first, cam)
    out = _EpisodeWriter(root, features, cam, task, fps, data_mb, video_mb)
    for ep, e in enumerate(ds.episodes):
        arr = first if ep == 0 else ds.episode(e)
        n = len(arr["actions"])
        if n == 0 or any(arr.get(k, _NONE).shape[1:] != v.shape[1:] for k, v in first.items()):
            raise ValueError(f"{ds.path}: episode {e} is empty or its shapes differ from the first")
        out.add(ep, arr, n)
    stats = out.close()
    if cam:
        first_video = VIDEO_PATH.format(video_key=cam, chunk_index=0, file_index=0)
        features[cam]["info"] = _video_info(root / first_video)
    _write_meta(root, features, out.rows, stats, task, fps, out.index, data_mb, video_mb, cam)


def _features(first: dict[str, np.ndarray], cam: str | None) -> dict[str, dict[str, Any]]:
    """info.json's features, from the first episode's arrays (the video's info comes later)."""
    features: dict[str, dict[str, Any]] = {
        key: {
            "dtype": "float32",
            "shape": [first[src].shape[1]],
            "names": [f"{key.split('.')[-1]}_{i}" for i in range(first[src].shape[1])],
        }
        for key, src in _VECTORS.items()
    }
    features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    if cam:
        features[cam] = {
            "dtype": "video",
            "shape": list(first["pixels"].shape[1:]),
            "names": ["height", "width", "channels"],
            "info": {},
        }
    for name, dtype in (("timestamp", "float32"), *((k, "int64") for k in _INDICES)):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


class _EpisodeWriter:
    """The data (and video) files written episode by episode, and what the metadata
    needs of them: the episodes' rows, every column for the stats, the frame count."""

    def __init__(
        self,
        root: Path,
        features: dict[str, dict[str, Any]],
        cam: str | None,
        task: str,
        fps: int,
        data_mb: float,
        video_mb: float,
    ):
        import pyarrow as pa

        self.cam, self.task, self.fps = cam, task, fps
        arrow_type = {"float32": pa.float32(), "bool": pa.bool_(), "int64": pa.int64()}
        # 1: a scalar column
        self.dims = {k: f["shape"][0] for k, f in features.items() if k != cam}
        self.schema = pa.schema(
            (
                k,
                arrow_type[f["dtype"]]
                if self.dims[k] == 1
                else pa.list_(arrow_type[f["dtype"]], self.dims[k]),
            )
            for k, f in features.items()
            if k != cam
        )
        self.data = _Files(root, DATA_PATH, data_mb)
        self.video = _Files(root, VIDEO_PATH, video_mb, video_key=cam)
        self.writer = self.container = self.stream = None
        self.columns: dict[str, list[np.ndarray]] = {k: [] for k in self.schema.names}
        self.hist = np.zeros((3, 256), np.int64)  # per-channel pixel histogram: exact image stats
        self.rows: list[dict[str, Any]] = []
        self.index = 0

    def add(self, ep: int, arr: dict[str, np.ndarray], n: int) -> None:
        """Write episode `ep` (`n` steps): its rows, its frames, its row of the episodes."""
        frame = np.arange(n, dtype=np.int64)
        cols = {
            "observation.state": arr["obs"].astype(np.float32),
            "action": arr["actions"].astype(np.float32),
            "next.reward": arr["rewards"].astype(np.float32),
            "next.done": arr["dones"].astype(bool),
            "timestamp": (frame / self.fps).astype(np.float32),
            "frame_index": frame,
            "episode_index": np.full(n, ep, np.int64),
            "index": self.index + frame,
            "task_index": np.zeros(n, np.int64),
        }
        self._write_data(cols, n)
        row = {
            "episode_index": ep,
            "tasks": [self.task],
            "length": n,
            "data/chunk_index": self.data.chunk,
            "data/file_index": self.data.file,
            "dataset_from_index": self.index,
            "dataset_to_index": self.index + n,
        }
        ep_stats = {k: _stats(v) for k, v in cols.items()}
        if self.cam:
            frames = arr["pixels"][:n]  # frame t shows obs t; the final frame has no row
            row |= self._write_video(frames, n)
            ep_hist = np.stack([np.bincount(ch.ravel(), minlength=256) for ch in frames.T])
            ep_stats[self.cam] = _image_stats(ep_hist, n)
            self.hist += ep_hist
        for k, v in cols.items():
            self.columns[k].append(v)
        row |= {f"stats/{k}/{stat}": v for k, st in ep_stats.items() for stat, v in st.items()}
        self.rows.append(row)
        self.index += n

    def _write_data(self, cols: dict[str, np.ndarray], n: int) -> None:
        """Append an episode's rows to the data file, as one row group (as LeRobot writes
        them), in a new file where they would pass the open one's size limit."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        dims = self.dims
        table = pa.table(
            [
                pa.array(v.ravel())
                if dims[k] == 1
                else pa.FixedSizeListArray.from_arrays(v.ravel(), dims[k])
                for k, v in cols.items()
            ],
            schema=self.schema,
        )
        if self.writer is None or self.data.full(table.nbytes):
            if self.writer is not None:
                self.writer.close()
            self.writer = pq.ParquetWriter(self.data.next_file(), self.schema, compression="snappy")
        self.writer.write_table(table)
        self.data.add(table.nbytes, n)

    def _write_video(self, frames: np.ndarray, n: int) -> dict[str, Any]:
        """Encode an episode's frames into the video file (a new one where they would pass
        its size limit); returns the episode's video columns."""
        import av

        video, cam = self.video, self.cam
        # the encoder holds frames back: estimate their bytes and the episode's
        pending = video.frames - video.packets + n
        if self.container is None or video.full(video.bytes / max(video.packets, 1) * pending):
            if self.container is not None:
                _close_video(self.container, self.stream, video)
            self.container, self.stream = _open_video(video.next_file(), frames.shape, self.fps)
        start = video.frames / self.fps
        for image in frames:
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                video.mux(self.container, packet)
        video.frames += n
        return {
            f"videos/{cam}/chunk_index": video.chunk,
            f"videos/{cam}/file_index": video.file,
            f"videos/{cam}/from_timestamp": start,
            f"videos/{cam}/to_timestamp": start + n / self.fps,
        }

    def close(self) -> dict[str, dict[str, list]]:
        """Close the open files; returns the stats of every feature over all episodes."""
        self.writer.close()
        stats = {k: _stats(np.concatenate(v)) for k, v in self.columns.items()}
        if self.cam:
            _close_video(self.container, self.stream, self.video)
            stats[self.cam] = _image_stats(self.hist, self.index)
        return stats


def _write_meta(
    root: Path,
    features: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    stats: dict[str, dict[str, list]],
    task: str,
    fps: int,
    frames: int,
    data_mb: float,
    video_mb: float,
    cam: str | None,
) -> None:
    """Write meta/: the episodes' rows, the tasks, info.json and stats.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for row in rows:  # all episode rows fit one file (LeRobot rolls over at data_mb)
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
    episodes_file = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_file.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), episodes_file)
    _write_tasks(root / "meta" / "tasks.parquet", [task])
    info = {
        "codebase_version": CODEBASE_VERSION,
        "fps": fps,
        "features": features,
        "total_episodes": len(rows),
        "total_frames": frames,
        "total_tasks": 1,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": data_mb,
        "video_files_size_in_mb": video_mb,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if cam else None,
        "robot_type": None,
        "splits": {"train": f"0:{len(rows)}"},
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))


class _Files:
    """Where the next episode goes: chunk/file indices and the open file's fill."""

    def __init__(self, root: Path, template: str, limit_mb: float, **keys: Any):
        self.root, self.template, self.keys = root, template, keys
        self.limit = limit_mb * 1024**2
        self.chunk, self.file, self.bytes, self.frames, self.packets = 0, -1, 0, 0, 0

    def full(self, nbytes: float) -> bool:
        """Would an episode of `nbytes` pass the size limit of the open file?"""
        return self.frames > 0 and self.bytes + nbytes >= self.limit

    def add(self, nbytes: float, frames: int) -> None:
        self.bytes, self.frames = self.bytes + nbytes, self.frames + frames

    def mux(self, container, packet) -> None:
        container.mux(packet)
        self.bytes, self.packets = self.bytes + packet.size, self.packets + 1

    def next_file(self) -> Path:
        self.file += 1
        if self.file == CHUNKS_SIZE:
            self.chunk, self.file = self.chunk + 1, 0
        self.bytes = self.frames = self.packets = 0
        path = self.root / self.template.format(
            chunk_index=self.chunk, file_index=self.file, **self.keys
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def _fps(ds: Dataset, fps: float | None) -> int:
    if fps is None:
        dt = ds.env_args.get("agent_dt")
        if not dt or dt <= 0:
            raise ValueError(f"{ds.path}: env_args has no agent_dt; pass fps explicitly")
        fps = 1.0 / dt
    if fps <= 0 or abs(fps - round(fps)) > 1e-6 * fps:
        raise ValueError(f"{ds.path}: fps {fps:g} is not a positive integer (LeRobot needs one)")
    return int(round(fps))


def _camera_name(env_args: dict[str, Any]) -> str:
    camera = env_args.get("env_kwargs", {}).get("render_camera", 0)
    return f"camera{camera}" if isinstance(camera, int) else str(camera)


def _stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot's per-feature stats over axis 0, each of shape (dim,) ((1,) for scalars)."""
    v = values.reshape(len(values), -1).astype(np.float64)
    stats = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0)}
    stats |= {k: np.quantile(v, q, axis=0) for k, q in QUANTILES.items()}
    return {k: s.tolist() for k, s in stats.items()} | {"count": [len(v)]}


def _image_stats(hist: np.ndarray, count: int) -> dict[str, list]:
    """Per-channel stats of [0, 1] pixels from uint8 histograms, shaped (3, 1, 1)."""
    levels, total = np.arange(256) / 255.0, hist.sum(1)
    mean = hist @ levels / total
    cdf = np.cumsum(hist, 1) / total[:, None]
    stats = {
        "min": levels[np.argmax(hist > 0, 1)],
        "max": levels[255 - np.argmax(hist[:, ::-1] > 0, 1)],
        "mean": mean,
        "std": np.sqrt(np.maximum(hist @ levels**2 / total - mean**2, 0)),
    }
    stats |= {k: levels[np.argmax(cdf >= q, 1)] for k, q in QUANTILES.items()}
    return {k: s.reshape(3, 1, 1).tolist() for k, s in stats.items()} | {"count": [count]}


def _open_video(path: Path, shape: tuple[int, ...], fps: int):
    import av

    height, width = shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"frames of {height}x{width} px: yuv420p video needs even sizes")
    codec = next((c for c in _ENCODERS if c in av.codecs_available), None)
    if codec is None:
        raise ImportError(f"this PyAV build encodes none of {', '.join(_ENCODERS)}")
    cfg = _ENCODERS[codec]
    options = {k: str(cfg[k]) for k in ("g", "crf", "preset") if cfg[k] is not None}
    if codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner unless told not to
        options["svtav1-params"] = f"fast-decode={cfg['fast_decode']}"
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=fps, options=options)
    stream.pix_fmt, stream.width, stream.height = "yuv420p", width, height
    return container, stream


def _close_video(container, stream, files: _Files) -> None:
    for packet in stream.encode():  # flush the encoder
        files.mux(container, packet)
    container.close()


def _video_info(path: Path) -> dict[str, Any]:
    """The `info` of a video feature as LeRobot's `get_video_info` writes it."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.fps": int(stream.base_rate),
            "video.channels": 3,
            "has_audio": bool(container.streams.audio),
        }
        encoder = "libsvtav1" if info["video.codec"] == "av1" else "libx264"
    info |= {f"video.{k}": v for k, v in _ENCODERS[encoder].items()}
    return info | {"video.extra_options": {}, "video.video_backend": "pyav", "is_depth_map": False}


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as pandas writes a frame indexed by `task` (LeRobot reads it so)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": tasks})
    columns = [
        {"name": n, "field_name": n, "pandas_type": p, "numpy_type": t, "metadata": None}
        for n, p, t in (("task_index", "int64", "int64"), ("task", "unicode", "object"))
    ]
    pandas = {"index_columns": ["task"], "column_indexes": [], "columns": columns}
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas)}), path)


def _staging(out: Path) -> str:
    """Name prefix of the export's own staging folders beside `out` (hidden, unique)."""
    return f".{out.name}.export-"


def _remove_leftovers(out: Path) -> None:
    """Remove the staging folders that killed exports to `out` left (each marked as an
    export's); nothing else beside `out` is touched."""
    if not out.parent.is_dir():
        return
    for path in out.parent.glob(_staging(out) + "*"):
        if path.is_dir() and ownership.made_by(path) == "export":
            shutil.rmtree(path, ignore_errors=True)


def _replace(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` to `out`; an old `out` is moved into a staging folder
    of its own first and removed only afterwards."""
    os.remove(tmp / ownership.MARKER)
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=_staging(out), dir=out.parent))
    ownership.mark(old, "export")
    os.replace(out, old / out.name)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def run_export(cfg: ExportCfg) -> None:
    if cfg.format not in FORMATS:
        raise ValueError(f"unknown format {cfg.format!r}; valid formats: {', '.join(FORMATS)}")
    out = export_lerobot(cfg.path, cfg.out, task=cfg.task, fps=cfg.fps, overwrite=cfg.overwrite)
    info = json.loads((out / "meta" / "info.json").read_text())
    videos = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    print(
        f"{out}: LeRobot {info['codebase_version']} dataset, {info['total_episodes']} episodes, "
        f"{info['total_frames']:,} frames at {info['fps']} fps"
        + (f", video {', '.join(videos)}" if videos else ", no video")
    )
