"""Issue 14: never lose or leak data. One test (or group) per numbered case of the issue.

Each reproduces what went wrong before the fix (raw data deleted, two runs corrupting one output, user files
deleted, a manifest replaced, reads and writes outside a root, crashes, unbounded reads) and checks the
guarantee now holds: the raw tree's checksum is unchanged, nothing outside a root is read or written, the
concurrent run fails fast, a dead worker fails only its scene.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from wai.cli import convert_main
from wai.converters.base import SceneRef
from wai.converters.synthetic import SyntheticConverter
from wai.errors import (
    OutputLockedError,
    OutputOverlapError,
    PathEscapeError,
    SchemaError,
    UsageError,
)
from wai.format import atomic
from wai.format.scene import PROCESS_LOG, SceneWriter, is_complete, load_frame, load_scene
from wai.loaders.covisibility import covisibility_path, run_covisibility, write_covisibility
from wai.run import OutputLock, RunOptions, WorkerPool, read_manifest, run_conversion
from wai.synthetic.raw_synthetic import make_fake


def _quiet(**kw: Any) -> RunOptions:
    return RunOptions(progress=False, **kw)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (symlinks as their target text): a raw tree's fingerprint."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake(tmp_path_factory.mktemp("raw"), n_scenes=3, n_frames=2).root


@pytest.fixture()
def raw_copy(raw: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "raw"
    shutil.copytree(raw, dst)
    return dst


# --- 1. output overlapping input ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_case1_output_overlapping_input_is_refused(raw_copy: Path, tmp_path: Path, where: str) -> None:
    before = tree_digest(raw_copy)
    out = {"same": raw_copy, "inside": raw_copy / "scene_000" / "out", "contains": tmp_path}[where]
    with pytest.raises(OutputOverlapError, match=r"--output .* --input .*wai never writes into raw data"):
        run_conversion(SyntheticConverter(raw_copy), out, _quiet())
    res = CliRunner().invoke(convert_main, ["synthetic", "-i", str(raw_copy), "-o", str(out), "-q"])
    assert res.exit_code == 2, res.output
    assert str(raw_copy.resolve()) in res.output and "_wai" in res.output  # both paths and the fix
    assert tree_digest(raw_copy) == before


def test_case1_overlap_through_a_symlink_is_refused(raw_copy: Path, tmp_path: Path) -> None:
    link = tmp_path / "alias"
    link.symlink_to(raw_copy)
    before = tree_digest(raw_copy)
    with pytest.raises(OutputOverlapError):
        run_conversion(SyntheticConverter(raw_copy), link / "out", _quiet())
    assert tree_digest(raw_copy) == before


def test_case1_eth3d_input_as_output_keeps_every_raw_file(tmp_path: Path) -> None:
    pytest.importorskip("pycolmap")
    from wai.synthetic import get_fake

    root = get_fake("eth3d")(tmp_path / "eth3d").root
    before = tree_digest(root)
    for out in (root, root.parent):
        res = CliRunner().invoke(convert_main, ["eth3d", "-i", str(root), "-o", str(out), "-q"])
        assert res.exit_code == 2 and "OutputOverlapError" in res.output, res.output
    assert tree_digest(root) == before


def test_case1_a_folder_wai_did_not_create_is_never_deleted(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    foreign = out / "scene_001"  # e.g. raw data or the user's own folder at a scene's path
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("keep me")
    res = run_conversion(SyntheticConverter(raw), out, _quiet())
    failed = {r.name: r.error for r in res.failed}
    assert list(failed) == ["scene_001"] and "NotOursError" in failed["scene_001"]
    assert "was not created by wai" in failed["scene_001"] and "nothing was deleted" in failed["scene_001"]
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt"]
    assert is_complete(out / "scene_000") and is_complete(out / "scene_002")
    # the same under --overwrite: still untouched
    res = run_conversion(SyntheticConverter(raw), out, _quiet(overwrite=True))
    assert [r.name for r in res.failed] == ["scene_001"] and (foreign / "precious.txt").is_file()


def test_case1_symlink_at_a_scene_path_is_not_followed(raw: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.bin").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene_000").symlink_to(outside, target_is_directory=True)
    res = run_conversion(SyntheticConverter(raw), out, _quiet(scenes="scene_000"))
    assert res.failed and "symlink" in (res.failed[0].error or "")
    assert sorted(p.name for p in outside.iterdir()) == ["data.bin"]


def test_case1_own_incomplete_scene_is_redone(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with SceneWriter(out, "scene_000", "synthetic"):
            raise RuntimeError("boom")
    assert json.loads((out / "scene_000" / PROCESS_LOG).read_text())["created_by"]["library"] == "wai"
    res = run_conversion(SyntheticConverter(raw), out, _quiet(scenes="scene_000"))
    assert res.ok and is_complete(out / "scene_000")


# --- 2. one writer per output root -------------------------------------------------------------------


def test_case2_second_run_fails_fast_naming_the_holder(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_conversion(SyntheticConverter(raw), out, _quiet(scenes="scene_000")).ok
    before = tree_digest(out)
    with OutputLock(out, purpose="test holder"):
        t = time.perf_counter()
        with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()} on host .*test holder.*started"):
            run_conversion(SyntheticConverter(raw), out, _quiet(overwrite=True))
        assert time.perf_counter() - t < 5  # at once, not after waiting
        with pytest.raises(OutputLockedError):
            run_covisibility(out)  # covisibility takes the same lock
        res = CliRunner().invoke(convert_main, ["synthetic", "-i", str(raw), "-o", str(out), "-q"])
        assert res.exit_code == 1 and "OutputLockedError" in res.output
        lock_rel = "_meta/.wai.lock"
        assert {k: v for k, v in tree_digest(out).items() if k != lock_rel} == {
            k: v for k, v in before.items() if k != lock_rel}  # the refused runs changed nothing
    assert run_conversion(SyntheticConverter(raw), out, _quiet()).ok  # released: the next run proceeds


def test_case2_stale_lock_of_a_dead_process_is_taken_over(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = f"from wai.run import OutputLock; OutputLock({str(out)!r}).acquire(); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)  # dies holding the lock: the file stays
    assert (out / "_meta" / ".wai.lock").is_file()
    assert run_conversion(SyntheticConverter(raw), out, _quiet()).ok


def test_case2_lock_file_symlink_is_refused(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "_meta").mkdir(parents=True)
    target = tmp_path / "victim.txt"
    (out / "_meta" / ".wai.lock").symlink_to(target)
    with pytest.raises(PathEscapeError, match="symlink"):
        run_conversion(SyntheticConverter(raw), out, _quiet())
    assert not target.exists()


# --- 3. temporary files ------------------------------------------------------------------------------


def test_case3_users_tmp_files_survive_a_run(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = [out / ".tmp-notes.txt", out / "sub" / ".tmp-keep", out / "_meta" / ".tmp-user"]
    for p in mine:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("user data")
    leftover = out / "_meta" / f"{atomic.TMP_PREFIX}manifest.json.abc123"  # a killed run of ours
    leftover.write_text("{")
    assert run_conversion(SyntheticConverter(raw), out, _quiet()).ok
    assert all(p.read_text() == "user data" for p in mine)
    assert not leftover.exists()
    assert not list(out.rglob(atomic.TMP_PREFIX + "*"))


# --- 4. one dataset per output root ------------------------------------------------------------------


class OtherSource(SyntheticConverter):
    """The synthetic data under another dataset name (a second source)."""

    name = "other"


def test_case4_second_source_into_the_same_root_is_refused(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_conversion(SyntheticConverter(raw), out, _quiet()).ok
    manifest = (out / "_meta" / "manifest.json").read_bytes()
    parquet = (out / "_meta" / "coverage.parquet").read_bytes()
    with pytest.raises(UsageError, match=r"already holds a 'synthetic' dataset.*--output .*other"):
        run_conversion(OtherSource(raw), out, _quiet())
    assert (out / "_meta" / "manifest.json").read_bytes() == manifest
    assert (out / "_meta" / "coverage.parquet").read_bytes() == parquet
    assert run_conversion(OtherSource(raw), tmp_path / "other", _quiet()).ok  # side by side: fine


# --- 5. crafted converted datasets -------------------------------------------------------------------


@pytest.fixture()
def dataset(raw: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    assert run_conversion(SyntheticConverter(raw), out, _quiet(scenes="scene_000")).ok
    return out


def _edit_meta(scene: Path, fn: Any) -> None:
    meta = json.loads((scene / "scene_meta.json").read_text())
    fn(meta)
    (scene / "scene_meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_case5_frame_paths_that_leave_the_dataset_are_refused(dataset: Path, tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret.png"
    scene = dataset / "scene_000"
    img = scene / load_scene(scene).frames[0]["file_path"]
    secret.write_bytes(img.read_bytes())
    if kind == "symlink":
        img.unlink()
        img.symlink_to(secret)
    else:
        rel = "../../secret.png" if kind == "dotdot" else str(secret)
        _edit_meta(scene, lambda m: m["frames"][0].update(file_path=rel, image=rel))
    with pytest.raises(PathEscapeError, match=r"scene_meta.json \[frames\[0\]\.(file_path|image)\]"):
        load_frame(scene, 0)


def test_case5_symlinked_scene_folder_is_refused(dataset: Path, tmp_path: Path) -> None:
    import shutil

    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(dataset / "scene_000"), elsewhere)
    (dataset / "scene_000").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(PathEscapeError, match="outside"):
        load_frame(dataset / "scene_000", 0)
    res = run_covisibility(dataset)
    assert "PathEscapeError" in (res[str(dataset / "scene_000")] or "")
    assert not (elsewhere / "covisibility").exists()


def test_case5_covisibility_never_writes_through_a_symlink(dataset: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "pairwise_covisibility--9x9.npy"
    victim.write_bytes(b"not ours")
    scene = dataset / "scene_000"
    (scene / "covisibility").mkdir()
    (scene / "covisibility" / "v0").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathEscapeError, match="covisibility/v0"):
        write_covisibility(scene)
    assert sorted(p.name for p in outside.iterdir()) == [victim.name] and victim.read_bytes() == b"not ours"


def test_case5_scene_meta_lock_symlink_is_refused(dataset: Path, tmp_path: Path) -> None:
    target = tmp_path / "created_by_link"
    (dataset / "scene_000" / "scene_meta.json.lock").symlink_to(target)
    with pytest.raises(PathEscapeError, match="symlink"):
        write_covisibility(dataset / "scene_000")
    assert not target.exists()


def test_case5_covisibility_scene_key_outside_is_refused(dataset: Path, tmp_path: Path) -> None:
    outside = tmp_path / "m.npy"
    np.save(outside, np.zeros((2, 2), np.float32))
    scene = dataset / "scene_000"
    _edit_meta(scene, lambda m: m.setdefault("scene_modalities", {}).update(
        pairwise_covisibility={"scene_key": "../../m.npy", "format": "mmap"}))
    with pytest.raises(PathEscapeError, match=r"scene_modalities\.pairwise_covisibility\.scene_key"):
        covisibility_path(scene)


def test_case5_covisibility_npy_is_world_readable(dataset: Path) -> None:
    path = write_covisibility(dataset / "scene_000")
    assert path.stat().st_mode & 0o777 == atomic.FILE_MODE


# --- 7. crashes --------------------------------------------------------------------------------------


class KillingConverter(SyntheticConverter):
    """Kills its own process (as the OOM killer would) when converting ``scene_001``."""

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        if scene.name == "scene_001":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().convert_scene(scene, writer)


def test_case7_a_dead_worker_fails_only_its_scene(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_conversion(KillingConverter(raw), out, _quiet(workers=2))
    status = {r.name: r.status for r in res.results}
    assert status == {"scene_000": "finished", "scene_001": "failed", "scene_002": "finished"}
    assert "worker died: signal 9 (SIGKILL)" in (res.failed[0].error or "")
    manifest = read_manifest(out)
    assert "worker died: signal 9" in manifest["failures"]["scene_001"]
    log = json.loads((out / "scene_001" / PROCESS_LOG).read_text())
    assert log["conversion"]["state"] == "failed"


def test_case7_a_reused_pool_replaces_its_dead_worker(raw: Path, tmp_path: Path) -> None:
    with WorkerPool(1) as pool:
        first = run_conversion(KillingConverter(raw), tmp_path / "a", _quiet(), pool=pool)
        second = run_conversion(SyntheticConverter(raw), tmp_path / "b", _quiet(), pool=pool)
    assert [r.status for r in first.results] == ["finished", "failed", "finished"]
    assert second.ok and len(second.results) == 3


SLOW_RUN = textwrap.dedent("""
    import os, sys, time
    from wai.converters.synthetic import SyntheticConverter
    from wai.run import RunOptions, run_conversion

    class Slow(SyntheticConverter):
        def convert_scene(self, scene, writer):
            with open(os.path.join(sys.argv[3], f"pid-{os.getpid()}"), "w"):
                pass
            time.sleep(60)

    if __name__ == "__main__":
        sys.modules["slowmod"] = sys.modules["__main__"]
        run_conversion(Slow(sys.argv[1]), sys.argv[2], RunOptions(workers=2, progress=False))
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(") ")[1].startswith("Z"))


def test_case7_workers_die_with_the_main_process(raw: Path, tmp_path: Path) -> None:
    script = tmp_path / "slowmod.py"
    script.write_text(SLOW_RUN)
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(raw), str(tmp_path / "out"), str(pids)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        deadline = time.time() + 60
        while len(list(pids.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.2)
        workers = [int(p.name.split("-")[1]) for p in pids.iterdir()]
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
    finally:
        proc.kill()


class SummaryConverter(SyntheticConverter):
    """Returns a per-scene summary (as KITTI-360's --sample bucket report does)."""

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        super().convert_scene(scene, writer)
        return {"buckets": {"rich": len(scene.name)}}


def test_case7_resume_after_a_kill_keeps_every_scene_summary(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_conversion(SummaryConverter(raw), out, _quiet(scenes="scene_000,scene_001")).ok
    (out / "_meta" / "manifest.json").unlink()  # the main process was killed before writing it
    res = run_conversion(SummaryConverter(raw), out, _quiet())
    assert [r.status for r in res.results] == ["skipped", "skipped", "finished"]
    assert res.manifest is not None
    assert sorted(res.manifest["scene_summaries"]) == ["scene_000", "scene_001", "scene_002"]


# --- 8. bounded reads --------------------------------------------------------------------------------


def test_case8_huge_sparse_scene_meta_is_refused_without_reading(dataset: Path) -> None:
    p = dataset / "scene_000" / "scene_meta.json"
    with open(p, "r+b") as fh:
        fh.truncate(10 << 30)  # 10 GB, sparse: costs no disk
    with pytest.raises(SchemaError, match=r"scene_meta.json is 10240 MiB, above the 1024 MiB cap.*WAI_MAX_JSON_MB"):
        load_scene(dataset / "scene_000")


def test_case8_size_cap_can_be_raised(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAI_MAX_JSON_MB", "0.001")
    with pytest.raises(SchemaError, match="cap"):
        load_scene(dataset / "scene_000")
    monkeypatch.setenv("WAI_MAX_JSON_MB", "4096")
    assert len(load_scene(dataset / "scene_000").frames) == 2


def test_case8_deeply_nested_json_is_a_clear_error(dataset: Path) -> None:
    p = dataset / "scene_000" / "scene_meta.json"
    p.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(SchemaError, match="nests deeper than the parser allows"):
        load_scene(dataset / "scene_000")


def test_case8_size_in_metadata_is_checked_against_the_decoded_image(dataset: Path) -> None:
    scene = dataset / "scene_000"
    _edit_meta(scene, lambda m: m["frames"][0].update(h=100_000_000))
    with pytest.raises(SchemaError, match=r"decoded image is \d+x\d+ but .* says w x h"):
        load_frame(scene, 0, modalities=["image"])


# --- the machinery's own writes ----------------------------------------------------------------------


def _listing(root: Path) -> Iterator[str]:
    for p in sorted(root.rglob("*")):
        yield str(p.relative_to(root))


def test_nothing_is_written_outside_the_output(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "work" / "out"
    sentinel = tmp_path / "work" / "neighbour.txt"
    sentinel.parent.mkdir()
    sentinel.write_text("x")
    before_raw = tree_digest(raw)
    assert run_conversion(SyntheticConverter(raw), out, _quiet(workers=2)).ok
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["neighbour.txt", "out"]
    assert tree_digest(raw) == before_raw


def test_disk_full_names_the_file_and_the_fix(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from wai.errors import OutputWriteError

    real_replace = os.replace

    def full(src: str, dst: str) -> None:
        if str(dst).endswith((".exr", "manifest.json")):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OutputWriteError, match=r"cannot write .*manifest.json: No space left.*free space"):
        run_conversion(SyntheticConverter(raw), tmp_path / "out", _quiet(scenes="scene_000"))
    log = json.loads((tmp_path / "out" / "scene_000" / PROCESS_LOG).read_text())["conversion"]
    assert log["state"] == "failed" and "cannot write" in log["message"] and ".exr" in log["message"]
    assert not list((tmp_path / "out").rglob(atomic.TMP_PREFIX + "*"))  # no temporary left behind
