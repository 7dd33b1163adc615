"""Frame tables (issue 19): derived from scene_meta.json, identical content, stale detection, bounded cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wai.cli import convert_main
from wai.converters.synthetic import SyntheticConverter
from wai.format import scene as scene_mod
from wai.format.frametable import (
    FRAME_TABLE,
    FrameTableStaleError,
    build_frame_tables,
    open_frame_table,
    table_state,
)
from wai.format.scene import load_scene
from wai.loaders.covisibility import write_covisibility
from wai.run import RunOptions, run_conversion
from wai.synthetic.raw_synthetic import make_fake


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = make_fake(tmp_path_factory.mktemp("raw"), n_scenes=2, n_frames=3).root
    out = tmp_path_factory.mktemp("ds")
    assert run_conversion(SyntheticConverter(raw), out, RunOptions(progress=False)).ok
    return out


def test_converter_writes_a_fresh_table_with_the_json_content(dataset: Path) -> None:
    d = dataset / "scene_000"
    assert (d / FRAME_TABLE).is_file() and table_state(d) == "fresh"
    sc, tab = load_scene(d), open_frame_table(d)
    assert len(tab.frames) == len(sc.frames) == 3
    for i, fr in enumerate(sc.frames):
        assert tab.frame(i) == fr  # every key, exactly
        assert tab.frame(fr["frame_name"]) == fr
        np.testing.assert_array_equal(tab.pose(i), sc.pose(i))
        assert tab.camera(i) == sc.camera(i)
        assert tab.file(i, "depth") == fr["depth"]
    assert {k: v for k, v in tab.meta.items() if k != "frames"} == {k: v for k, v in sc.meta.items() if k != "frames"}


def test_table_poses_are_shared_zero_copy_views(dataset: Path) -> None:
    tab = open_frame_table(dataset / "scene_000")
    poses = tab._c.poses
    assert poses.dtype == np.float64 and poses.shape == (3, 4, 4) and not poses.flags.owndata


def test_stale_table_is_detected_and_rebuilt(dataset: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "ds"
    shutil.copytree(dataset, d, symlinks=True)
    scene = d / "scene_001"
    meta = json.loads((scene / "scene_meta.json").read_text())
    meta["frames"][0]["fl_x"] *= 2
    (scene / "scene_meta.json").write_text(json.dumps(meta))
    assert table_state(scene) == "stale"
    with pytest.raises(FrameTableStaleError, match=rf"stale.*rebuild it: wai-convert frame-tables {d}"):
        open_frame_table(scene)
    res = CliRunner().invoke(convert_main, ["frame-tables", str(d)])
    assert res.exit_code == 0 and "1 built, 1 fresh" in res.output, res.output
    assert open_frame_table(scene).frame(0)["fl_x"] == meta["frames"][0]["fl_x"]
    (scene / FRAME_TABLE).unlink()
    assert table_state(scene) == "missing" and build_frame_tables(d) == {"scene_000": "fresh", "scene_001": "built"}


def test_covisibility_keeps_the_table_fresh(dataset: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "ds"
    shutil.copytree(dataset, d, symlinks=True)
    write_covisibility(d / "scene_000")
    tab = open_frame_table(d / "scene_000")  # not stale although scene_meta.json was rewritten
    assert "pairwise_covisibility" in tab.meta["scene_modalities"]


def test_parsed_scene_cache_is_bounded(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = (dataset / "scene_000" / "scene_meta.json").stat().st_size
    budget_mb = 1.5 * size * scene_mod.PARSED_BYTES_PER_JSON_BYTE / (1 << 20)  # room for one scene, not two
    monkeypatch.setenv("WAI_SCENE_CACHE_MB", str(budget_mb))
    monkeypatch.setattr(scene_mod, "_CACHE", scene_mod._SceneCache())
    a = load_scene(dataset / "scene_000")
    assert load_scene(dataset / "scene_000") is a  # cached
    load_scene(dataset / "scene_001")
    assert len(scene_mod._CACHE) == 1 and scene_mod._CACHE.bytes <= budget_mb * (1 << 20)
    assert load_scene(dataset / "scene_000") is not a  # evicted, parsed again
    monkeypatch.setenv("WAI_SCENE_CACHE_MB", "0")
    assert load_scene(dataset / "scene_001") is not load_scene(dataset / "scene_001")  # caching off
    assert os.environ["WAI_SCENE_CACHE_MB"] == "0"


def test_loader_samples_identical_with_and_without_tables(dataset: Path) -> None:
    pytest.importorskip("torch")
    from wai.loaders import WAIDataset

    kw = dict(num_views=3, resolution=(32, 24), sampling="sequential")
    by_mode = {m: WAIDataset(dataset, metadata=m, **kw) for m in ("tables", "json", "reparse", "auto")}
    for k in range(len(by_mode["json"])):
        ref = by_mode["json"][k]
        for mode in ("tables", "reparse", "auto"):
            got = by_mode[mode][k]
            assert len(got) == len(ref)
            for a, b in zip(got, ref):
                assert a.keys() == b.keys()
                for key in a:
                    va, vb = a[key], b[key]
                    if hasattr(va, "numpy"):
                        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=f"{mode} {key}")
                    else:
                        assert va == vb, (mode, key)


def test_loader_refuses_a_stale_table_in_tables_mode(dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import shutil

    from wai.loaders import WAIDataset

    d = tmp_path / "ds"
    shutil.copytree(dataset, d, symlinks=True)
    os.utime(d / "scene_000" / "scene_meta.json", ns=(1, 1))  # edited after the table was built
    kw = dict(num_views=2, resolution=(32, 24), sampling="sequential")
    with pytest.raises(FrameTableStaleError, match=rf"wai-convert frame-tables {d}"):
        WAIDataset(d, metadata="tables", **kw)[0]
    assert len(WAIDataset(d, metadata="auto", **kw)[0]) == 2  # auto falls back to the JSON (the truth)
