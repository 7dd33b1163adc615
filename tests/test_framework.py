"""Converter framework: selection, failure isolation, --check-raw, kill + resume, CLI exit codes, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from wai.cli import convert_main
from wai.converters import get_converter
from wai.converters.base import RunOptions, run_conversion
from wai.converters.synthetic import SyntheticConverter
from wai.errors import MissingDependencyError, SourceLayoutError, SourceNotFoundError, UnknownSourceError, WaiError
from wai.format.scene import is_complete
from wai.synthetic.raw_synthetic import make_fake


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake(tmp_path_factory.mktemp("raw"), n_scenes=4, n_frames=2).root


def _quiet(**kw: object) -> RunOptions:
    return RunOptions(progress=False, **kw)  # type: ignore[arg-type]


def test_selection_dry_run_shard_limit(raw: Path, tmp_path: Path) -> None:
    conv = SyntheticConverter(raw)
    assert run_conversion(conv, tmp_path, _quiet(dry_run=True)).planned == [f"scene_{i:03d}" for i in range(4)]
    assert run_conversion(conv, tmp_path, _quiet(dry_run=True, scenes="scene_00[13]")).planned == [
        "scene_001", "scene_003"]
    assert run_conversion(conv, tmp_path, _quiet(dry_run=True, scenes="scene_002,scene_000")).planned == [
        "scene_000", "scene_002"]
    assert run_conversion(conv, tmp_path, _quiet(dry_run=True, shard="1/2")).planned == ["scene_001", "scene_003"]
    assert run_conversion(conv, tmp_path, _quiet(dry_run=True, limit=1)).planned == ["scene_000"]
    with pytest.raises(WaiError, match="matches no scene"):
        run_conversion(conv, tmp_path, _quiet(scenes="nope"))
    with pytest.raises(WaiError, match="expected i/n"):
        run_conversion(conv, tmp_path, _quiet(shard="3/2"))
    assert not any(tmp_path.iterdir())  # dry runs write nothing


def test_failure_isolation(raw: Path, tmp_path: Path) -> None:
    bad = tmp_path / "raw"
    import shutil

    shutil.copytree(raw, bad)
    lines = (bad / "scene_001" / "cameras.txt").read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 3)[0]  # drop three numbers from a camera line
    (bad / "scene_001" / "cameras.txt").write_text("\n".join(lines) + "\n")
    res = run_conversion(SyntheticConverter(bad), tmp_path / "out", _quiet(workers=2))
    assert [r.name for r in res.failed] == ["scene_001"]
    assert "cameras.txt:2" in (res.failed[0].error or "") and "expected 19 values" in (res.failed[0].error or "")
    assert sum(r.status == "finished" for r in res.results) == 3
    log = json.loads((tmp_path / "out" / "scene_001" / "_process_log.json").read_text())
    assert log["conversion"]["state"] == "failed" and "Traceback" in log["conversion"]["message"]
    manifest = json.loads((tmp_path / "out" / "_meta" / "manifest.json").read_text())
    assert list(manifest["failures"]) == ["scene_001"] and manifest["counts"]["scenes_complete"] == 3
    lists = np.load(tmp_path / "out" / "_meta" / "train" / "synthetic_scene_list_train.npy")
    assert sorted(lists.tolist()) == ["scene_000", "scene_002"]
    table = pq.read_table(tmp_path / "out" / "_meta" / "coverage.parquet")
    assert table.num_rows == 6 and set(table.column("scene").to_pylist()) == {"scene_000", "scene_002", "scene_003"}


def test_check_raw_names_missing_files(raw: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    (bad / "scene_002" / "cameras.txt").unlink()
    (bad / "scene_003" / "depth" / "000001.npy").unlink()
    with pytest.raises(SourceLayoutError, match=r"2 problem\(s\)") as ei:
        run_conversion(SyntheticConverter(bad), tmp_path / "out", _quiet(check_raw=True))
    msg = str(ei.value)
    assert "scene_002/cameras.txt" in msg and "scene_003/depth/000001.npy" in msg
    assert not (tmp_path / "out").exists()  # nothing converted before the check passed


def test_coverage_parquet_matches_numpy(raw: Path, tmp_path: Path) -> None:
    run_conversion(SyntheticConverter(raw), tmp_path, _quiet(scenes="scene_000"))
    table = pq.read_table(tmp_path / "_meta" / "coverage.parquet").to_pylist()
    from wai.format import load_frame

    for row in table:
        d = load_frame(tmp_path / row["scene"], row["frame"], modalities=["depth"])["depth"]
        v = d[d > 0]
        assert row["valid_depth_ratio"] == pytest.approx(v.size / d.size, abs=0)
        assert row["depth_p50"] == pytest.approx(float(np.median(v)), rel=1e-6)
        assert json.loads(row["semantic_ratios"])["building"] > 0


KILL = textwrap.dedent("""
    import os, sys
    from wai.converters.base import RunOptions, run_conversion
    from wai.converters.synthetic import SyntheticConverter

    class Dying(SyntheticConverter):
        def convert_scene(self, scene, writer):
            if scene.name == sys.argv[3]:
                cams = self._cameras(scene)
                name, cam, c2w = cams[0]
                writer.add_frame(name, cam, c2w, image=self.root / scene.name / "rgb" / f"{name}.png")
                os._exit(9)  # killed mid-scene
            return super().convert_scene(scene, writer)

    run_conversion(Dying(sys.argv[1]), sys.argv[2], RunOptions(progress=False))
""")


def test_kill_midway_then_resume(raw: Path, tmp_path: Path) -> None:
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(script), str(raw), str(out), "scene_002"], capture_output=True)
    assert proc.returncode == 9
    assert [is_complete(out / f"scene_{i:03d}") for i in range(3)] == [True, True, False]
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "scene_000").rglob("*") if p.is_file()}
    res = run_conversion(SyntheticConverter(raw), out, _quiet())
    assert [r.status for r in res.results] == ["skipped", "skipped", "finished", "finished"]
    assert {p: p.stat().st_mtime_ns for p in (out / "scene_000").rglob("*") if p.is_file()} == mtimes
    assert not list(out.rglob(".tmp-*"))
    assert all(is_complete(out / f"scene_{i:03d}") for i in range(4))


def test_cli_exit_codes_and_messages(raw: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(convert_main, ["synthetic", "-i", str(raw), "-o", str(tmp_path / "o"), "-q", "-j", "1",
                                      "--scenes", "scene_000"])
    assert ok.exit_code == 0, ok.output
    assert "1 scene(s) converted (2 frames" in ok.output
    missing = runner.invoke(convert_main, ["synthetic", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "SourceNotFoundError" in missing.output and "nope" in missing.output
    usage = runner.invoke(convert_main, ["synthetic", "-i", str(raw)])
    assert usage.exit_code == 2
    unknown = runner.invoke(convert_main, ["nosuchsource"])
    assert unknown.exit_code == 2
    dry = runner.invoke(convert_main, ["synthetic", "-i", str(raw), "-o", str(tmp_path / "o"), "--dry-run"])
    assert dry.exit_code == 0 and "4 scene(s) would be converted" in dry.output
    listing = runner.invoke(convert_main, ["--help"])
    for name in ("opv2v", "kitti360", "eth3d", "co3d", "vkitti2", "synthetic", "covisibility"):
        assert name in listing.output


def test_cli_failed_scene_exits_1(raw: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "raw"
    shutil.copytree(raw, bad)
    (bad / "scene_001" / "depth" / "000000.npy").write_bytes(b"garbage")
    res = CliRunner().invoke(convert_main, ["synthetic", "-i", str(bad), "-o", str(tmp_path / "o"), "-q", "-j", "1"])
    assert res.exit_code == 1
    assert "FAILED scene_001" in res.output and "3 scene(s) converted" in res.output


def test_registry_errors() -> None:
    with pytest.raises(UnknownSourceError, match="available: .*kitti360"):
        get_converter("kitti")
    with pytest.raises(SourceNotFoundError, match="not a directory"):
        SyntheticConverter("/nonexistent/raw")
    from wai.converters import load_class

    with pytest.raises(MissingDependencyError, match="fix:"):
        load_class("wai.converters.does_not_exist:X")


def test_missing_extra_stays_listed_with_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from wai import converters

    entry = converters.Entry("wai_missing_dependency_xyz:Converter", "needs an extra", extra="open3d")
    monkeypatch.setitem(converters.REGISTRY, "needsextra", entry)
    runner = CliRunner()
    listing = runner.invoke(convert_main, ["--help"])
    assert "needsextra" in listing.output and "wai[open3d]" in listing.output
    res = runner.invoke(convert_main, ["needsextra", "--input", "x", "--output", "y"])
    assert res.exit_code == 1 and "pip install 'wai[open3d]'" in res.output
