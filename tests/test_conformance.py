"""One conformance test for every registered converter: fake raw data -> convert -> validate -> resume -> overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wai.converters import REGISTRY, get_converter
from wai.format.scene import load_scene
from wai.run import RunOptions, run_conversion
from wai.synthetic import get_fake
from wai.validation import validate


def _meta_without_time(scene_dir: Path) -> dict:
    meta = json.loads((scene_dir / "scene_meta.json").read_text())
    meta.pop("last_modified")
    return meta


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_converter_conformance(name: str, tmp_path: Path) -> None:
    info = get_fake(name)(tmp_path / "raw")
    cls = get_converter(name)
    conv = cls(info.root, cls.Options(**(info.options or {})))
    out = tmp_path / "out"
    raw_before = sorted(str(p.relative_to(info.root)) for p in info.root.rglob("*"))

    res = run_conversion(conv, out, RunOptions(workers=1, progress=False))
    assert res.ok, [r.error for r in res.failed]
    assert sum(r.status == "finished" for r in res.results) == info.n_scenes
    assert sum(r.n_frames for r in res.results) == info.n_frames

    report = validate(out)
    assert not report.errors, [str(i) for i in report.errors]

    scenes = sorted(r.name for r in res.results)
    for s in scenes:
        meta = load_scene(out / s).meta
        assert meta["dataset_name"] == name
        assert set(cls.provides) <= set(meta["frame_modalities"]), (cls.provides, meta["frame_modalities"])
        assert meta["source"]["options"] == conv.options.to_dict()
    manifest = json.loads((out / "_meta" / "manifest.json").read_text())
    assert manifest["counts"]["frames"] == info.n_frames
    assert (out / "_meta" / "coverage.parquet").is_file()
    before = {s: _meta_without_time(out / s) for s in scenes}

    again = run_conversion(conv, out, RunOptions(workers=1, progress=False))
    assert [r.status for r in again.results] == ["skipped"] * len(scenes)

    redo = run_conversion(conv, out, RunOptions(workers=1, overwrite=True, progress=False))
    assert all(r.status == "finished" for r in redo.results)
    assert {s: _meta_without_time(out / s) for s in scenes} == before

    # nothing was written into the raw tree
    assert sorted(str(p.relative_to(info.root)) for p in info.root.rglob("*")) == raw_before
