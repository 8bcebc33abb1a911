"""`bench isaaclab`: Isaac Lab's own env and our adapter around it, timed on the same
actions (Isaac Lab's own environment, marker `isaac`)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("isaaclab_tasks", reason="Isaac Lab is not installed here")

from agents.bench.isaaclab import IsaacLabBenchCfg, bench  # noqa: E402

pytestmark = pytest.mark.isaac


def test_bench_times_both_and_reports_the_overhead(tmp_path, capsys):
    path = tmp_path / "bench.json"
    cfg = IsaacLabBenchCfg(num_envs=8, steps=5, warmup=2, rounds=1, json=path)
    result = bench(cfg)
    rates = result["steps_per_s"]
    assert set(rates) == {"isaaclab", "adapter"} and min(rates.values()) > 0
    assert result["adapter_overhead"] == pytest.approx(1 - rates["adapter"] / rates["isaaclab"])
    assert json.loads(path.read_text())["steps_per_s"] == pytest.approx(rates)
    assert "overhead" in capsys.readouterr().out
