"""Scale-out: Ray executor gives the same output as the process pool; --shard partitions the scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wai.converters.synthetic import SyntheticConverter
from wai.run import RunOptions, run_conversion
from wai.synthetic.raw_synthetic import make_fake


def _metas(out: Path) -> dict[str, dict]:
    res = {}
    for p in sorted(out.glob("*/scene_meta.json")):
        m = json.loads(p.read_text())
        m.pop("last_modified")
        res[p.parent.name] = m
    return res


def test_shards_partition_the_dataset(tmp_path: Path) -> None:
    raw = make_fake(tmp_path / "raw", n_scenes=5, n_frames=1).root
    conv = SyntheticConverter(raw)
    planned = [run_conversion(conv, tmp_path / "o", RunOptions(dry_run=True, shard=f"{i}/3")).planned for i in range(3)]
    flat = [n for p in planned for n in p]
    assert sorted(flat) == [f"scene_{i:03d}" for i in range(5)] and len(set(flat)) == 5
    for i in range(3):  # shards written into one output root add up to the whole dataset
        run_conversion(conv, tmp_path / "o", RunOptions(shard=f"{i}/3", progress=False))
    manifest = json.loads((tmp_path / "o" / "_meta" / "manifest.json").read_text())
    assert manifest["counts"]["scenes_complete"] == 5


@pytest.mark.slow
def test_ray_matches_process_pool(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the `ray` extra is not installed")
    raw = make_fake(tmp_path / "raw", n_scenes=3, n_frames=2).root
    conv = SyntheticConverter(raw)
    a = run_conversion(conv, tmp_path / "pool", RunOptions(workers=2, progress=False))
    b = run_conversion(conv, tmp_path / "ray", RunOptions(workers=2, executor="ray", progress=False))
    assert a.ok and b.ok, [r.error for r in b.failed]
    assert sorted(r.name for r in b.results) == sorted(r.name for r in a.results)
    ma, mb = _metas(tmp_path / "pool"), _metas(tmp_path / "ray")
    for m in list(ma.values()) + list(mb.values()):
        m["source"].pop("root", None)
    assert ma == mb and len(ma) == 3
    again = run_conversion(conv, tmp_path / "ray", RunOptions(workers=2, executor="ray", progress=False))
    assert [r.status for r in again.results] == ["skipped"] * 3


def test_a_running_pool_is_reused_across_runs(tmp_path: Path) -> None:
    from wai.run import WorkerPool

    raw = make_fake(tmp_path / "raw", n_scenes=3, n_frames=1).root
    conv = SyntheticConverter(raw)
    ref = run_conversion(conv, tmp_path / "inproc", RunOptions(progress=False))
    with WorkerPool(2) as pool:
        first = run_conversion(conv, tmp_path / "p1", RunOptions(progress=False), pool=pool)
        second = run_conversion(conv, tmp_path / "p2", RunOptions(progress=False, scenes="scene_001"), pool=pool)
    assert ref.ok and first.ok and second.ok
    assert [r.name for r in second.results if r.status == "finished"] == ["scene_001"]
    assert _metas(tmp_path / "p1") == _metas(tmp_path / "inproc")  # same output whichever process wrote it
    assert pool._workers == []  # closed on leaving the block: no worker outlives the pool
