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
from wai.converters.base import SceneRef
from wai.converters.synthetic import SyntheticConverter, SyntheticOptions
from wai.errors import MissingDependencyError, SourceLayoutError, SourceNotFoundError, UnknownSourceError, WaiError
from wai.format.scene import SceneWriter, is_complete
from wai.run import RunOptions, run_conversion
from wai.synthetic.raw_synthetic import make_fake
from wai.validation import validate


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
    from wai.run import RunOptions, run_conversion
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
    # --dry-run applies resume: scene_000 is complete, so 3 of 4 would be converted (issue 18, item 7)
    assert dry.exit_code == 0 and "3 scene(s) would be converted" in dry.output, dry.output
    listed = [ln.strip() for ln in dry.output.splitlines()[1:]]
    assert "1 already complete" in dry.output and listed == ["scene_001", "scene_002", "scene_003"]
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


# --- empty scenes: every frame dropped ----------------------------------------------------------------


class DropsScene001(SyntheticConverter):
    """Drops every frame of ``scene_001`` (the last one as ``no_pose``, the others ``too_dark``); converts
    every other scene, except that ``scene_002`` writes and drops nothing when ``SILENT`` is set."""

    SILENT = False
    #: Scenes whose ``convert_scene`` ran, in this process (to see what a resumed run redoes).
    calls: list[str] = []

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, object]:
        DropsScene001.calls.append(scene.name)
        if scene.name == "scene_002" and self.SILENT:
            return {}
        if scene.name != "scene_001":
            return super().convert_scene(scene, writer)
        cams = self._cameras(scene)
        for i, (name, cam, _) in enumerate(cams):
            writer.drop_frame(name, "no_pose" if i == len(cams) - 1 else "too_dark", cam.w, cam.h)
        return {"note": "every frame dropped"}


class DropsOneFrame(SyntheticConverter):
    """Converts every scene and drops one extra frame of ``scene_000`` as ``too_dark``; leaves source scene
    ``scene_999`` out on purpose."""

    def iter_scenes(self):  # type: ignore[no-untyped-def]
        self.skip_scene("scene_999", "viewpoint_quality_score 0.1 < --min-quality 0.5")
        return super().iter_scenes()

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, object]:
        if scene.name == "scene_000":
            cam = self._cameras(scene)[0][1]
            writer.drop_frame("extra_dark", "too_dark", cam.w, cam.h)
        return super().convert_scene(scene, writer)


class Silent(DropsScene001):
    SILENT = True


@pytest.fixture(scope="module")
def raw3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake(tmp_path_factory.mktemp("raw3"), n_scenes=3, n_frames=3).root


def _manifest(out: Path) -> dict:
    return json.loads((out / "_meta" / "manifest.json").read_text())


def test_empty_scene_is_recorded_not_failed(raw3: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_conversion(DropsScene001(raw3), out, _quiet(workers=2))
    assert [(r.name, r.status) for r in res.results] == [
        ("scene_000", "finished"), ("scene_001", "empty"), ("scene_002", "finished")]
    assert res.ok and not res.failed and [r.name for r in res.empty] == ["scene_001"]
    r = res.results[1]
    assert (r.n_frames, r.n_dropped, r.drop_reasons) == (0, 3, {"no_pose": 1, "too_dark": 2}) and r.error is None
    # no scene directory and no half-written file is left; the other scenes are complete
    assert not (out / "scene_001").exists() and not list(out.rglob(".tmp-*"))
    assert is_complete(out / "scene_000") and is_complete(out / "scene_002")
    m = _manifest(out)
    assert m["failures"] == {}
    assert m["empty_scenes"]["scene_001"]["drop_reasons"] == {"no_pose": 1, "too_dark": 2}
    assert m["empty_scenes"]["scene_001"]["n_dropped"] == 3 and m["empty_scenes"]["scene_001"]["split"] == "train"
    c = m["counts"]
    assert (c["scenes_complete"], c["scenes_converted_this_run"], c["scenes_failed"]) == (2, 2, 0)
    assert (c["scenes_empty"], c["scenes_empty_this_run"], c["frames_dropped_in_empty_scenes"]) == (1, 1, 3)
    assert (c["frames"], c["frames_dropped"]) == (6, 0)  # counts of the complete scenes, as in coverage.parquet
    assert "scene_001" not in m["scene_summaries"]
    assert set(pq.read_table(out / "_meta" / "coverage.parquet").column("scene").to_pylist()) == {
        "scene_000", "scene_002"}
    assert np.load(out / "_meta" / "train" / "synthetic_scene_list_train.npy").tolist() == ["scene_000"]
    report = validate(out, geometry=False)
    assert report.ok, [i.message for i in report.errors]


def test_empty_scene_not_redone_on_resume_unless_overwrite_or_options_change(raw3: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_conversion(DropsScene001(raw3), out, _quiet())
    DropsScene001.calls.clear()
    again = run_conversion(DropsScene001(raw3), out, _quiet())
    assert DropsScene001.calls == []  # nothing redone: complete scenes and the known-empty one are skipped
    assert [r.status for r in again.results] == ["skipped"] * 3
    assert [r.name for r in again.empty] == ["scene_001"]
    assert again.results[1].drop_reasons == {"no_pose": 1, "too_dark": 2} and again.results[1].n_dropped == 3
    m = _manifest(out)
    assert list(m["empty_scenes"]) == ["scene_001"] and m["counts"]["scenes_empty_this_run"] == 0
    assert m["counts"]["scenes_empty"] == 1
    # a leftover directory (e.g. a killed retry) means the scene is not known to be empty: it is redone
    (out / "scene_001").mkdir()
    run_conversion(DropsScene001(raw3), out, _quiet())
    assert DropsScene001.calls == ["scene_001"] and not (out / "scene_001").exists()
    for opts in (_quiet(overwrite=True), _quiet(resume=False)):
        DropsScene001.calls.clear()
        res = run_conversion(DropsScene001(raw3), out, opts)
        assert DropsScene001.calls == ["scene_000", "scene_001", "scene_002"]
        assert res.results[1].status == "empty"
    # other converter options: the recorded outcome does not apply, the scene is tried again
    DropsScene001.calls.clear()
    res = run_conversion(DropsScene001(raw3, SyntheticOptions(semantic=False)), out, _quiet())
    assert DropsScene001.calls == ["scene_001"] and res.results[1].status == "empty"
    # once the scene converts, it leaves empty_scenes
    fixed = run_conversion(SyntheticConverter(raw3), out, _quiet(overwrite=True, scenes="scene_001"))
    assert [r.status for r in fixed.results] == ["finished"]
    m = _manifest(out)
    assert m["empty_scenes"] == {} and m["counts"]["scenes_empty"] == 0 and m["counts"]["scenes_complete"] == 3


def test_scene_that_writes_and_drops_nothing_fails(raw3: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_conversion(Silent(raw3), out, _quiet())
    assert [r.status for r in res.results] == ["finished", "empty", "failed"]
    assert "ConversionError" in (res.failed[0].error or "") and "dropped none" in (res.failed[0].error or "")
    m = _manifest(out)
    assert list(m["failures"]) == ["scene_002"] and list(m["empty_scenes"]) == ["scene_001"]
    assert json.loads((out / "scene_002" / "_process_log.json").read_text())["conversion"]["state"] == "failed"


def test_cli_empty_scene_exits_0_and_is_listed(raw3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wai import converters

    monkeypatch.setitem(converters.REGISTRY, "dropper", converters.Entry(f"{__name__}:DropsScene001", "test"))
    args = ["dropper", "-i", str(raw3), "-o", str(tmp_path / "o"), "-q", "-j", "1"]
    runner = CliRunner()
    first = runner.invoke(convert_main, args)
    assert first.exit_code == 0, first.output
    assert ("2 scene(s) converted (6 frames, 0 dropped), 1 empty (every frame dropped), 0 already complete, "
            "0 failed") in first.output
    assert "EMPTY scene_001: 3 frame(s) dropped (too_dark: 2, no_pose: 1), no scene written\n" in first.output
    assert "FAILED" not in first.output
    second = runner.invoke(convert_main, args)
    assert second.exit_code == 0, second.output
    assert "0 scene(s) converted (0 frames, 0 dropped), 1 empty (every frame dropped), 2 already complete" in (
        second.output)
    assert "EMPTY scene_001: 3 frame(s) dropped (too_dark: 2, no_pose: 1), no scene written; known from an " \
           "earlier run, --overwrite retries it" in second.output


def test_cli_summary_names_drop_reasons_and_skipped_source_scenes(raw3: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # a run that drops frames inside converted scenes, or leaves source scenes out, says why on the terminal
    from wai import converters

    monkeypatch.setitem(converters.REGISTRY, "dropone", converters.Entry(f"{__name__}:DropsOneFrame", "test"))
    out = tmp_path / "o"
    res = CliRunner().invoke(convert_main, ["dropone", "-i", str(raw3), "-o", str(out), "-q", "-j", "1"])
    assert res.exit_code == 0, res.output
    assert "3 scene(s) converted (9 frames, 1 dropped)" in res.output
    assert f"  dropped frames in converted scenes: too_dark: 1 (frame by frame: {out}/_meta/coverage.parquet" \
        in res.output
    assert "  SKIPPED scene_999: viewpoint_quality_score 0.1 < --min-quality 0.5\n" in res.output
    m = _manifest(out)
    assert m["drop_reasons"] == {"too_dark": 1}
    assert m["scenes_skipped_by_converter"] == {"scene_999": "viewpoint_quality_score 0.1 < --min-quality 0.5"}
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "_meta" / "coverage.parquet").to_pylist()
    assert [(r["scene"], r["frame"], r["drop_reason"]) for r in rows if not r["selected"]] == [
        ("scene_000", "extra_dark", "too_dark")]
