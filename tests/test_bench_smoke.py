"""The loader benchmark runs and prints what issue 16 asks of it (no timing is asserted: figures are measured
in bench/, see docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
REQUIRED = {"views_per_s_per_worker", "loader_ms_per_view", "codec_floor_ms_per_view", "overhead_ratio",
            "resolution", "source_size", "num_views", "stages_ms_per_view"}
STAGES = {"metadata", "sampling", "decode", "resize", "geometry", "normalisation", "collate"}


def test_loader_bench_quick_prints_the_required_figures(tmp_path: Path) -> None:
    # a subprocess: the bench sets process-wide thread counts and malloc tuning, as a DataLoader worker would
    out = tmp_path / "loader.json"
    res = subprocess.run([sys.executable, str(REPO / "bench" / "loader.py"), "--quick", "--frames", "60",
                          "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads(out.read_text())
    assert json.loads(res.stdout) == d  # one JSON object on stdout, the same as written
    assert REQUIRED <= set(d) and set(d["stages_ms_per_view"]) == STAGES
    assert d["resolution"] == [518, 392] and d["source_size"] == [640, 480] and d["num_views"] == 4
    assert d["n_frames"] == 60 and d["sampling"] == "covisibility"
    assert d["overhead_ratio"] == pytest.approx(d["loader_ms_per_view"] / d["codec_floor_ms_per_view"], rel=2e-3)
    assert d["views_per_s_per_worker"] == pytest.approx(1000.0 / d["loader_ms_per_view"], rel=2e-3)
    assert all(v > 0 for v in (d["loader_ms_per_view"], d["codec_floor_ms_per_view"],
                               d["dataloader_1_worker_ms_per_view"]))
    assert all(v >= 0 for v in d["stages_ms_per_view"].values()) and d["stages_ms_per_view"]["decode"] > 0
