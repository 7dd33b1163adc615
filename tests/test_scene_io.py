"""SceneWriter atomicity, state and resume; reader semantics; MapAnything WAI read compatibility."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from wai.errors import SceneNotFoundError, SchemaError
from wai.format import Modality, SceneWriter, is_complete, load_frame, load_scene, scene_state
from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import invert_pose, make_pose, rot_y
from wai.format.scene import update_scene_modalities

CAM = Camera.pinhole(16, 12, 10, 10, 7.5, 5.5)


def _write(root: Path, name: str = "s", n: int = 2, overwrite: bool = False) -> Path:
    with SceneWriter(root, name, "test", overwrite=overwrite) as w:
        w.add_label_table("t", {0: "a", 3: "b"})
        for i in range(n):
            d = np.full((12, 16), 2.0 + i, np.float32)
            d[0, :] = 0
            img = np.full((12, 16, 3), 40 * i, np.uint8)
            w.add_frame(f"f{i}", CAM, make_pose(rot_y(0.1 * i), [i, 0, 0]), image=img, depth=d,
                        modalities={"semantic": Modality("labels", np.full((12, 16), 3, np.uint8), "t")})
    return root / name


def test_written_scene_reads_back(tmp_path: Path) -> None:
    s = _write(tmp_path)
    assert is_complete(s) and scene_state(s) == "finished"
    f = load_frame(s, "f1")
    assert f["image"].shape == (12, 16, 3) and f["image"].dtype == np.uint8
    assert f["depth"][5, 5] == pytest.approx(3.0) and f["depth"][0, 0] == 0
    np.testing.assert_allclose(f["extrinsics"], make_pose(rot_y(0.1), [1, 0, 0]), atol=1e-6)
    np.testing.assert_allclose(f["intrinsics"], CAM.K)
    assert f["semantic"].dtype == np.uint8 and f["semantic_fname"].name == "f1.png"
    # regex modality names resolve to the first match (WAI semantics)
    assert "depth" in load_frame(s, 0, modalities="dep.*")
    cov = json.loads((s / "coverage.json").read_text())["frames"]
    assert cov[0]["valid_depth_ratio"] == pytest.approx(11 / 12)
    assert cov[1]["semantic_ratios"] == {"b": 1.0}


def test_reader_caches_and_reloads_on_change(tmp_path: Path) -> None:
    s = _write(tmp_path)
    a = load_scene(s)
    assert load_scene(s) is a
    _write(tmp_path, n=3, overwrite=True)
    assert len(load_scene(s).frames) == 3


def test_mapanything_wai_reader_semantics(tmp_path: Path) -> None:
    """Read the scene exactly as MapAnything's WAI ``load_frame`` does (keys, pose direction, EXR via cv2)."""
    s = _write(tmp_path)
    meta = json.loads((s / "scene_meta.json").read_text())
    assert meta["camera_convention"] == "opencv" and meta["version"] == "0.1" and not meta["shared_intrinsics"]
    frame = meta["frames"][1]
    for name, spec in meta["frame_modalities"].items():
        # WAI: first non-"format" value of the modality dict is the frame key
        key = [v for k, v in spec.items() if k != "format"][0]
        assert key in frame, name
    assert frame["file_path"] == frame["image"]
    depth = cv2.imread(str(s / frame["depth"]), cv2.IMREAD_UNCHANGED)
    assert depth.ndim == 2 and depth.dtype == np.float32
    # transform_matrix is camera-to-world: the camera centre is its translation, and a point at depth d along
    # the optical axis of frame 1 lands at centre + d * (third column)
    c2w = np.array(frame["transform_matrix"])
    p_world = c2w[:3, 3] + depth[6, 8] * c2w[:3, 2]
    p_cam = invert_pose(c2w)[:3, :3] @ p_world + invert_pose(c2w)[:3, 3]
    assert p_cam[2] == pytest.approx(3.0)


def test_failed_scene_records_traceback(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), SceneWriter(tmp_path, "s", "test") as w:
        w.add_frame("a", CAM, np.eye(4), image=np.zeros((12, 16, 3), np.uint8))
        raise RuntimeError("boom")
    log = json.loads((tmp_path / "s" / "_process_log.json").read_text())
    assert log["conversion"]["state"] == "failed" and "boom" in log["conversion"]["message"]
    assert not (tmp_path / "s" / "scene_meta.json").exists() and not is_complete(tmp_path / "s")


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    with SceneWriter(tmp_path, "s", "test") as w:
        img = np.zeros((12, 16, 3), np.uint8)
        w.add_frame("a", CAM, np.eye(4), image=img)
        with pytest.raises(SchemaError, match="duplicate frame name"):
            w.add_frame("a", CAM, np.eye(4), image=img)
        with pytest.raises(SchemaError, match="proper rotation"):
            w.add_frame("b", CAM, np.diag([1.0, 1, -1, 1]), image=img)
        with pytest.raises(SchemaError, match="only contain"):
            w.add_frame("b c", CAM, np.eye(4), image=img)
        with pytest.raises(SchemaError, match="depth"):
            w.add_frame("d", CAM, np.eye(4), image=img, depth=np.ones((3, 3)))
    with pytest.raises(FileExistsError, match="already converted"):
        SceneWriter(tmp_path, "s", "test").__enter__()
    with pytest.raises(SceneNotFoundError, match="scene_meta.json is missing"):
        load_scene(tmp_path / "nothing")


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from wai.format import SceneWriter, atomic
    from wai.format.cameras import Camera
    real = atomic.os.replace
    calls = {"n": 0}
    def dying_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == int(sys.argv[2]):
            os._exit(9)  # killed between writing the temporary file and the rename
        return real(src, dst)
    atomic.os.replace = dying_replace
    cam = Camera.pinhole(16, 12, 10, 10, 7.5, 5.5)
    with SceneWriter(sys.argv[1], "s", "test", overwrite=True) as w:
        for i in range(3):
            w.add_frame(f"f{i}", cam, np.eye(4), image=np.zeros((12, 16, 3), np.uint8), depth=np.ones((12, 16)))
""")


@pytest.mark.parametrize("kill_at", [3, 6, 9])
def test_killed_write_leaves_no_final_file_and_resume_redoes(tmp_path: Path, kill_at: int) -> None:
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(kill_at)], capture_output=True)
    assert proc.returncode == 9
    s = tmp_path / "s"
    assert not is_complete(s) and not (s / "scene_meta.json").exists()
    leftovers = [p for p in s.rglob(".tmp-*")]
    assert leftovers, "the killed write should leave only its temporary file"
    for p in s.rglob("*"):
        if p.is_file() and not p.name.startswith(".tmp-") and p.suffix == ".exr":
            assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None  # every final file is whole
    # resume: an incomplete scene is redone from scratch
    _write(tmp_path)
    assert is_complete(s) and not list(s.rglob(".tmp-*"))


def test_final_files_have_normal_permissions(tmp_path: Path) -> None:
    from wai.format import atomic

    p = atomic.write_bytes(tmp_path / "x.json", b"{}")
    assert p.stat().st_mode & 0o777 == atomic.FILE_MODE and atomic.FILE_MODE & 0o044  # group/other readable


def test_discard_leaves_no_scene_and_an_error_still_fails(tmp_path: Path) -> None:
    with SceneWriter(tmp_path, "s", "test") as w:
        w.drop_frame("a", "too_dark", 16, 12)
        w.discard()
    assert not (tmp_path / "s").exists() and not list(tmp_path.rglob(".tmp-*"))
    with pytest.raises(RuntimeError, match="boom"), SceneWriter(tmp_path, "t", "test") as w:
        w.discard()
        raise RuntimeError("boom")
    assert scene_state(tmp_path / "t") == "failed"
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        SceneWriter(tmp_path, "u", "test").discard()


def _add_keys(scene: str, prefix: str, n: int, barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]  # both processes start updating at the same moment
    for i in range(n):
        update_scene_modalities(scene, {f"{prefix}{i:02d}": {"scene_key": f"x/{prefix}{i}.npy", "format": "numpy"}})


def test_concurrent_scene_modality_updates_all_land(tmp_path: Path) -> None:
    import multiprocessing as mp

    from wai.validation import validate

    s = _write(tmp_path, n=6)
    update_scene_modalities(s, {"first": {"scene_key": "x/first.npy", "format": "numpy"}})
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_add_keys, args=(str(s), p, 20, barrier)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    mods = load_scene(s).meta["scene_modalities"]
    assert sorted(mods) == sorted(["first", *(f"{p}{i:02d}" for p in "ab" for i in range(20))])
    # the lock file stays next to scene_meta.json and bothers neither the validator nor the reader
    assert (s / "scene_meta.json.lock").is_file() and not list(s.glob(".tmp-*"))
    report = validate(s, geometry=False)
    assert report.ok, [i.message for i in report.errors]
    assert load_frame(s, "f1")["depth"].shape == (12, 16)


def test_update_scene_modalities_needs_a_scene(tmp_path: Path) -> None:
    with pytest.raises(SceneNotFoundError, match="scene_meta.json is missing"):
        update_scene_modalities(tmp_path / "nothing", {"k": {"scene_key": "k.npy", "format": "numpy"}})
    assert not (tmp_path / "nothing").exists()
