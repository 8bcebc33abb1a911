"""LeRobot v3.0 export: info, data, episodes, tasks and stats equal the source dataset,
videos decode to the recorded frames, files roll over, output replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")

from agents.jobs.collect import CollectCfg, collect  # noqa: E402
from sim.data.dataset import Dataset  # noqa: E402
from sim.data.export import ExportCfg, export_lerobot, run_export  # noqa: E402

CAM = "observation.images.camera0"


class MarkedFrames(Dataset):
    """Real collected frames with the step number painted into a corner, so that video
    frames shifted by one step (a small change at 100 fps) stand out despite lossy video."""

    def episode(self, e, keys=None):
        arrays = super().episode(e, keys)
        if "pixels" in arrays:
            marker = np.arange(len(arrays["pixels"])) * 37 % 256
            arrays["pixels"][:, :8, :8] = marker[:, None, None, None]
        return arrays


@pytest.fixture(scope="module")
def pixel_ds(tmp_path_factory) -> Dataset:
    out = tmp_path_factory.mktemp("src") / "ds"
    collect(
        CollectCfg(
            task="cartpole_swingup",
            num_envs=3,
            episodes=4,
            episode_length=50,
            pixels=32,
            policy="expert+noise",
            out=out,
            progress=False,
        )
    )
    return MarkedFrames(out)


@pytest.fixture(scope="module")
def state_ds(tmp_path_factory) -> Dataset:
    """State only, episodes of different lengths (the conftest task terminates early)."""
    out = tmp_path_factory.mktemp("src") / "ds"
    collect(
        CollectCfg(
            task="test_cartpole_falls",
            num_envs=3,
            episodes=5,
            policy="noise",
            seed=3,
            out=out,
            progress=False,
        )
    )
    ds = Dataset(out)
    assert len({ds.length(e) for e in ds.episodes}) > 1
    return ds


@pytest.fixture(scope="module")
def exported(pixel_ds, tmp_path_factory) -> Path:
    return export_lerobot(pixel_ds, tmp_path_factory.mktemp("out") / "lerobot")


def _info(root: Path) -> dict:
    return json.loads((root / "meta" / "info.json").read_text())


def _episodes(root: Path) -> list[dict]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def _frames(root: Path) -> dict[str, np.ndarray]:
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return {k: np.array(table[k].to_pylist()) for k in table.column_names}


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    images = np.stack([f.to_ndarray(format="rgb24") for f in frames])
    return images, np.array([f.time for f in frames])


def test_info_describes_the_data(pixel_ds, exported):
    info = _info(exported)
    first = pixel_ds.episode(pixel_ds.episodes[0])
    assert info["codebase_version"] == "v3.0"
    assert info["total_episodes"] == len(pixel_ds.episodes) == 4
    assert info["total_frames"] == pixel_ds.total == 200
    assert info["total_tasks"] == 1 and info["splits"] == {"train": "0:4"}
    assert info["fps"] == round(1 / pixel_ds.env_args["agent_dt"]) and isinstance(info["fps"], int)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert (
        info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    )
    assert (info["chunks_size"], info["data_files_size_in_mb"]) == (1000, 100)
    f = info["features"]
    assert f["observation.state"]["dtype"] == "float32"
    assert f["observation.state"]["shape"] == [first["obs"].shape[1]]
    assert f["action"]["shape"] == [first["actions"].shape[1]]
    assert f["next.reward"] == {"dtype": "float32", "shape": [1], "names": None}
    assert f["next.done"]["dtype"] == "bool"
    for key, dtype in [
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("index", "int64"),
        ("episode_index", "int64"),
        ("task_index", "int64"),
    ]:
        assert f[key] == {"dtype": dtype, "shape": [1], "names": None}
    assert f[CAM]["dtype"] == "video" and f[CAM]["shape"] == [32, 32, 3]
    assert f[CAM]["names"] == ["height", "width", "channels"]
    video = f[CAM]["info"]
    assert video["video.codec"] in ("av1", "h264") and video["video.pix_fmt"] == "yuv420p"
    assert (video["video.height"], video["video.width"]) == (32, 32)
    assert video["video.fps"] == info["fps"]
    assert video["has_audio"] is False and video["is_depth_map"] is False
    files = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert files == [
        "data/chunk-000/file-000.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        f"videos/{CAM}/chunk-000/file-000.mp4",
    ]


@pytest.mark.parametrize("which", ["pixel_ds", "state_ds"])
def test_frames_are_the_recorded_steps(which, request, tmp_path):
    ds = request.getfixturevalue(which)
    root = export_lerobot(ds, tmp_path / "out")
    fps = _info(root)["fps"]
    frames, start = _frames(root), 0
    assert len(frames["index"]) == ds.total
    np.testing.assert_array_equal(frames["index"], np.arange(ds.total))
    for ep, e in enumerate(ds.episodes):
        arr, n = ds.episode(e), ds.length(e)
        rows = slice(start, start + n)
        np.testing.assert_array_equal(frames["observation.state"][rows], arr["obs"])
        # a feature of shape (1,) is a scalar column, as LeRobot stores it
        np.testing.assert_array_equal(frames["action"][rows], arr["actions"][:, 0])
        np.testing.assert_array_equal(frames["next.reward"][rows], arr["rewards"])
        np.testing.assert_array_equal(frames["next.done"][rows], arr["dones"].astype(bool))
        np.testing.assert_array_equal(frames["episode_index"][rows], ep)
        np.testing.assert_array_equal(frames["frame_index"][rows], np.arange(n))
        np.testing.assert_array_equal(frames["task_index"][rows], 0)
        expected_t = (np.arange(n) / fps).astype(np.float32)
        np.testing.assert_array_equal(frames["timestamp"][rows].astype(np.float32), expected_t)
        start += n
    schema = pq.read_schema(root / "data" / "chunk-000" / "file-000.parquet")
    assert schema.field("observation.state").type == pa.list_(pa.float32(), 5)
    assert schema.field("next.done").type == pa.bool_()
    assert pq.ParquetFile(root / "data/chunk-000/file-000.parquet").num_row_groups == len(ds)
    if which == "state_ds":
        assert _info(root)["video_path"] is None and not (root / "videos").exists()
        assert not any(k.startswith("observation.images") for k in _info(root)["features"])


def test_episodes_locate_data_and_video(pixel_ds, exported):
    rows, fps, start = _episodes(exported), _info(exported)["fps"], 0
    assert [r["episode_index"] for r in rows] == list(range(len(pixel_ds)))
    for row, e in zip(rows, pixel_ds.episodes, strict=True):
        n = pixel_ds.length(e)
        assert row["length"] == n and row["tasks"] == ["cartpole_swingup"]
        assert (row["dataset_from_index"], row["dataset_to_index"]) == (start, start + n)
        assert (row["data/chunk_index"], row["data/file_index"]) == (0, 0)
        assert (row[f"videos/{CAM}/chunk_index"], row[f"videos/{CAM}/file_index"]) == (0, 0)
        assert row[f"videos/{CAM}/from_timestamp"] == pytest.approx(start / fps)
        assert row[f"videos/{CAM}/to_timestamp"] == pytest.approx((start + n) / fps)
        assert (row["meta/episodes/chunk_index"], row["meta/episodes/file_index"]) == (0, 0)
        obs = pixel_ds.episode(e)["obs"]
        np.testing.assert_allclose(row["stats/observation.state/mean"], obs.mean(0), rtol=1e-6)
        assert row["stats/observation.state/count"] == [n]
        assert np.array(row[f"stats/{CAM}/mean"]).shape == (3, 1, 1)
        start += n


def test_tasks_and_stats(pixel_ds, exported):
    tasks = pq.read_table(exported / "meta" / "tasks.parquet")
    assert tasks.to_pylist() == [{"task_index": 0, "task": "cartpole_swingup"}]
    pandas_meta = json.loads(tasks.schema.metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["task"]  # LeRobot reads the task as the index

    stats = json.loads((exported / "meta" / "stats.json").read_text())
    arrays = [pixel_ds.episode(e) for e in pixel_ds.episodes]
    obs = np.concatenate([a["obs"] for a in arrays]).astype(np.float64)
    s = stats["observation.state"]
    assert set(s) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    np.testing.assert_allclose(s["mean"], obs.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s["std"], obs.std(0), rtol=1e-9)
    np.testing.assert_array_equal(s["min"], obs.min(0))
    np.testing.assert_allclose(s["q50"], np.quantile(obs, 0.5, axis=0))
    assert s["count"] == [pixel_ds.total]
    assert np.array(stats["next.reward"]["mean"]).shape == (1,)
    assert stats["index"]["max"] == [pixel_ds.total - 1]

    image = stats[CAM]
    pixels = np.concatenate([a["pixels"][:-1] for a in arrays]) / 255.0  # frames with a row
    for key in ("min", "max", "mean", "std", "q50"):
        assert np.array(image[key]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.ravel(image["mean"]), pixels.mean((0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(np.ravel(image["std"]), pixels.std((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(np.ravel(image["max"]), pixels.max((0, 1, 2)))
    assert 0 <= np.min(image["min"]) <= np.max(image["max"]) <= 1
    assert image["count"] == [pixel_ds.total]


def test_video_decodes_to_the_recorded_frames(pixel_ds, exported):
    fps = _info(exported)["fps"]
    frames, times = _decode(exported / "videos" / CAM / "chunk-000" / "file-000.mp4")
    assert len(frames) == pixel_ds.total
    np.testing.assert_allclose(times, np.arange(len(frames)) / fps, atol=1e-6)
    for row, e in zip(_episodes(exported), pixel_ds.episodes, strict=True):
        first = round(row[f"videos/{CAM}/from_timestamp"] * fps)
        recorded = pixel_ds.episode(e)["pixels"][:-1].astype(np.float64)  # frame t: obs t
        decoded = frames[first : first + len(recorded)]
        assert np.abs(decoded - recorded).mean() < 8, "lossy, but close to the recorded frames"
        markers = decoded[:, 1:7, 1:7].mean((1, 2, 3))  # the block's inside: the step number
        np.testing.assert_allclose(markers, np.arange(len(recorded)) * 37 % 256, atol=8)


def test_files_roll_over_past_the_size_limit(pixel_ds, tmp_path):
    limits = {"data_files_size_in_mb": 0.008, "video_files_size_in_mb": 0.02}  # ~2 episodes
    root = export_lerobot(pixel_ds, tmp_path / "out", **limits)
    rows, fps = _episodes(root), _info(root)["fps"]
    assert _info(root)["data_files_size_in_mb"] == 0.008
    for kind, key in [("data", "data/file_index"), ("video", f"videos/{CAM}/file_index")]:
        files = [r[key] for r in rows]
        assert files == sorted(files) and files[0] == 0, "episodes fill files in order"
        assert 1 < len(set(files)) < len(files), f"{kind}: several files, some shared"
    for path in root.glob(f"videos/{CAM}/chunk-000/*.mp4"):  # only a lone episode overshoots
        shared = sum(path.stem == f"file-{r[f'videos/{CAM}/file_index']:03d}" for r in rows) > 1
        assert not shared or path.stat().st_size <= limits["video_files_size_in_mb"] * 1024**2
    for prev, row in zip([None, *rows], rows, strict=False):
        same_file = prev and prev[f"videos/{CAM}/file_index"] == row[f"videos/{CAM}/file_index"]
        start = prev[f"videos/{CAM}/to_timestamp"] if same_file else 0.0
        assert row[f"videos/{CAM}/from_timestamp"] == pytest.approx(start)

    for row, e in zip(rows, pixel_ds.episodes, strict=True):
        arr = pixel_ds.episode(e)
        data_file = root / f"data/chunk-000/file-{row['data/file_index']:03d}.parquet"
        table = pq.read_table(data_file).to_pydict()
        at = table["index"].index(row["dataset_from_index"])
        got = np.array(table["observation.state"][at : at + row["length"]], np.float32)
        np.testing.assert_array_equal(got, arr["obs"])
        video = root / f"videos/{CAM}/chunk-000/file-{row[f'videos/{CAM}/file_index']:03d}.mp4"
        frames, _ = _decode(video)
        first = round(row[f"videos/{CAM}/from_timestamp"] * fps)
        assert first + row["length"] <= len(frames)
        decoded = frames[first : first + row["length"]].astype(np.float64)
        assert np.abs(decoded - arr["pixels"][:-1]).mean() < 8


def test_overwrite_is_refused_then_atomic(state_ds, tmp_path, monkeypatch):
    out = export_lerobot(state_ds, tmp_path / "out", task="balance")
    with pytest.raises(ValueError, match="overwrite"):
        export_lerobot(state_ds, out, task="other")
    assert _episodes(out)[0]["tasks"] == ["balance"]

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr("sim.data.export._write_tasks", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_lerobot(state_ds, out, task="other", overwrite=True)
    assert _episodes(out)[0]["tasks"] == ["balance"], "a failed export leaves the old one"
    monkeypatch.undo()

    export_lerobot(state_ds, out, task="other", overwrite=True)
    assert _episodes(out)[0]["tasks"] == ["other"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no .tmp or .old left"

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a LeRobot dataset"):
        export_lerobot(state_ds, stranger, overwrite=True)
    assert (stranger / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="overlap"):
        export_lerobot(state_ds, state_ds.path / "lerobot")


def test_only_the_exports_own_staging_folders_are_removed(state_ds, tmp_path):
    """`out.tmp` and `out.old` are the user's; a killed export's staging folder (marked
    as the export's) is cleared, an unmarked look-alike kept."""
    for name in ("out.tmp", "out.old", ".out.export-mine"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text(f"the user's {name}")
    killed = tmp_path / ".out.export-abc123"
    (killed / "data").mkdir(parents=True)
    (killed / ".wam-sandbox.json").write_text('{"made_by": "export"}')
    export_lerobot(state_ds, tmp_path / "out")
    export_lerobot(state_ds, tmp_path / "out", overwrite=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".out.export-mine", "out", "out.old", "out.tmp"]
    for name in ("out.tmp", "out.old", ".out.export-mine"):
        assert (tmp_path / name / "notes.txt").read_text() == f"the user's {name}"
    assert not (tmp_path / "out" / ".wam-sandbox.json").exists()


def test_bad_input_raises_clear_errors(state_ds, tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match=f"{missing}: no such dataset"):
        export_lerobot(missing, tmp_path / "out")
    with pytest.raises(ValueError, match="not a wam-sandbox dataset"):
        export_lerobot(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="fps 33.3 is not a positive integer"):
        export_lerobot(state_ds, tmp_path / "out", fps=33.3)
    with pytest.raises(ValueError, match="valid formats: lerobot"):
        run_export(ExportCfg(path=state_ds.path, out=tmp_path / "out", format="rlds"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_run_export_prints_a_summary(state_ds, tmp_path, capsys):
    run_export(ExportCfg(path=state_ds.path, out=tmp_path / "out", fps=50))
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{tmp_path / 'out'}: LeRobot v3.0 dataset, 5 episodes")
    assert "at 50 fps" in line and "no video" in line and "\n" not in line
    assert _info(tmp_path / "out")["fps"] == 50


def test_h264_where_pyav_lacks_svtav1(pixel_ds, tmp_path, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libsvtav1"})
    root = export_lerobot(pixel_ds, tmp_path / "out")
    assert _info(root)["features"][CAM]["info"]["video.codec"] == "h264"
    frames, _ = _decode(root / "videos" / CAM / "chunk-000" / "file-000.mp4")
    assert len(frames) == pixel_ds.total
    recorded = pixel_ds.episode(pixel_ds.episodes[0])["pixels"][:-1].astype(np.float64)
    assert np.abs(frames[: len(recorded)] - recorded).mean() < 8
