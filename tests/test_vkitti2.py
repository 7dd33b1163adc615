"""Virtual KITTI 2 converter against the synthetic ground truth of ``wai.synthetic.fake_vkitti2``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from wai.converters.vkitti2 import VKitti2Converter, VKitti2Options, colors_to_ids, read_colors, w2c_to_c2w
from wai.errors import SourceLayoutError, SourceNotFoundError, WaiError
from wai.format.codecs import read_depth, read_labels
from wai.format.conventions import invert_pose
from wai.format.scene import SceneWriter, load_scene
from wai.run import RunOptions, run_conversion
from wai.synthetic.fake_vkitti2 import SCENES, VKITTI_CATEGORY, VKITTI_FROM_STREET, fake_camera, make_fake, rig_poses
from wai.synthetic.world import CLASSES, World

N_FRAMES = 3


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("vkitti2")
    info = make_fake(base / "raw", n_frames=N_FRAMES)
    res = run_conversion(VKitti2Converter(info.root), base / "out", RunOptions(workers=1, progress=False))
    assert res.ok, [r.error for r in res.failed]
    return info.root, base / "out"


def _truth(scene_index: int, frame: int, cid: int) -> dict[str, np.ndarray]:
    c2w = rig_poses(scene_index, N_FRAMES)[(frame, cid)]
    return World.street(0).render(fake_camera(), invert_pose(VKITTI_FROM_STREET) @ c2w)


def test_scenes_frames_and_extras(converted: tuple[Path, Path]) -> None:
    _, out = converted
    for scene, var in SCENES:
        s = load_scene(out / f"{scene}_{var}")
        names = [f["frame_name"] for f in s.frames]
        assert names == [f"{i:05d}_cam{c}" for i in range(N_FRAMES) for c in (0, 1)]
        assert [(f["camera_id"], f["source_frame"]) for f in s.frames] == [(c, i) for i in range(N_FRAMES)
                                                                           for c in (0, 1)]
        assert s.meta["scale_type"] == "metric"


def test_poses_and_intrinsics_equal_truth(converted: tuple[Path, Path]) -> None:
    _, out = converted
    cam = fake_camera()
    for si, (scene, var) in enumerate(SCENES):
        s = load_scene(out / f"{scene}_{var}")
        truth = rig_poses(si, N_FRAMES)
        for f in s.frames:
            np.testing.assert_allclose(s.pose(f["frame_name"]), truth[(f["source_frame"], f["camera_id"])], atol=2e-5)
            got = s.camera(f["frame_name"])
            assert (got.w, got.h) == (310, 94)
            np.testing.assert_allclose([got.fl_x, got.fl_y, got.cx, got.cy], [cam.fl_x, cam.fl_y, cam.cx, cam.cy],
                                       rtol=1e-6)
        # Camera_1 sits BASELINE metres along Camera_0's +x axis
        c0, c1 = s.pose("00000_cam0"), s.pose("00000_cam1")
        np.testing.assert_allclose(invert_pose(c0) @ c1[:, 3], [0.532725, 0, 0, 1], atol=1e-4)


def test_pose_direction_with_a_rendered_point(converted: tuple[Path, Path]) -> None:
    """A world point seen at pixel (u, v) with depth z must project back there through the converted pose."""
    _, out = converted
    s = load_scene(out / "Scene01_clone")
    r = _truth(0, 2, 1)
    v, u = 60, 200
    assert r["valid"][v, u]
    p_world = VKITTI_FROM_STREET[:3, :3] @ r["points"][v, u].astype(np.float64) + VKITTI_FROM_STREET[:3, 3]
    w2c = invert_pose(s.pose("00002_cam1"))
    p_cam = w2c[:3, :3] @ p_world + w2c[:3, 3]
    uv, z, ok = s.camera("00002_cam1").project(p_cam[None])
    assert ok[0]
    np.testing.assert_allclose(uv[0], [u, v], atol=2e-3)
    assert z[0] == pytest.approx(float(r["depth"][v, u]), rel=1e-4)


def test_extrinsic_is_world_to_camera_hand_worked() -> None:
    # w2c: R rows (0 0 -1), (0 1 0), (1 0 0); t = (5, 1.65, -2). Camera centre C = -R^T t = (2, -1.65, 5).
    # The optical axis (camera +z) in world is R^T e_z = the third row of R = (1, 0, 0).
    # Read as camera-to-world instead, the centre would be (5, 1.65, -2): the test tells the directions apart.
    row = np.array([0, 0, -1, 5, 0, 1, 0, 1.65, 1, 0, 0, -2, 0, 0, 0, 1], dtype=float)
    c2w = w2c_to_c2w(row, Path("extrinsic.txt"), (0, 0))
    np.testing.assert_allclose(c2w[:3, 3], [2.0, -1.65, 5.0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 2], [1.0, 0.0, 0.0], atol=1e-12)


def test_depth_matches_truth_and_sky_is_invalid(converted: tuple[Path, Path]) -> None:
    _, out = converted
    for si, (scene, var) in enumerate(SCENES):
        s = load_scene(out / f"{scene}_{var}")
        for f in s.frames:
            r = _truth(si, f["source_frame"], f["camera_id"])
            d = read_depth(s.path / f["depth"])
            assert np.all(d[~r["valid"]] == 0), "sky must have no depth"
            assert (~r["valid"]).any()
            valid = r["valid"]
            rel = np.abs(d[valid] - r["depth"][valid]) / r["depth"][valid]
            assert np.mean(rel < 0.01) >= 0.99, np.mean(rel < 0.01)


def test_semantic_ids_from_colors_txt(converted: tuple[Path, Path]) -> None:
    raw, out = converted
    table, _, _ = read_colors(raw / "Scene01" / "clone" / "colors.txt")
    name_to_id = {v: int(k) for k, v in table.items()}
    assert name_to_id["Terrain"] == 1 and name_to_id["Van"] == 14 and table[0] == "undefined"
    s = load_scene(out / "Scene01_clone")
    assert s.meta["label_tables"]["vkitti2"]["13"] == "Car"
    lut = np.zeros(max(CLASSES.values()) + 1, dtype=np.uint8)
    for cls, cid in CLASSES.items():
        lut[cid] = name_to_id[VKITTI_CATEGORY[cls]]
    f = s.frame("00001_cam0")
    sem = read_labels(s.path / f["semantic"])
    np.testing.assert_array_equal(sem, lut[_truth(0, 1, 0)["semantic"]])


def test_unknown_colour_is_undefined() -> None:
    keys = np.array([(1 << 16) | (2 << 8) | 3], dtype=np.int64)
    ids = np.array([7], dtype=np.uint8)
    rgb = np.array([[[1, 2, 3], [9, 9, 9]]], dtype=np.uint8)
    np.testing.assert_array_equal(colors_to_ids(rgb, keys, ids), [[7, 0]])


@pytest.fixture()
def raw_copy(converted: tuple[Path, Path], tmp_path: Path) -> Path:
    raw, _ = converted
    shutil.copytree(raw / "Scene01" / "clone", tmp_path / "raw" / "Scene01" / "clone")
    return tmp_path / "raw"


def _convert(raw: Path, out: Path, **opts: object) -> Path:
    conv = VKitti2Converter(raw, VKitti2Options(**opts))  # type: ignore[arg-type]
    scene = next(iter(conv.iter_scenes()))
    with SceneWriter(out, scene.name, "vkitti2", source=conv.source_info(scene)) as w:
        conv.convert_scene(scene, w)
    return out / scene.name


def test_rows_looked_up_by_key_not_index(raw_copy: Path, converted: tuple[Path, Path], tmp_path: Path) -> None:
    vd = raw_copy / "Scene01" / "clone"
    for name in ("extrinsic.txt", "intrinsic.txt"):
        lines = (vd / name).read_text().splitlines()
        (vd / name).write_text("\n".join([lines[0]] + lines[1:][::-1]) + "\n")
    s = load_scene(_convert(raw_copy, tmp_path / "out"))
    ref = load_scene(converted[1] / "Scene01_clone")
    for f in ref.frames:
        np.testing.assert_allclose(s.pose(f["frame_name"]), ref.pose(f["frame_name"]), atol=1e-12)


def test_camera_and_depth_options(raw_copy: Path, tmp_path: Path) -> None:
    s = load_scene(_convert(raw_copy, tmp_path / "out", cameras="1", max_depth=10.0))
    assert [f["camera_id"] for f in s.frames] == [1] * N_FRAMES
    d = read_depth(s.path / s.frames[0]["depth"])
    assert 0 < d.max() <= 10.0
    assert s.meta["filters"] == {"max_depth_m": 10.0}


def test_bad_header(raw_copy: Path, tmp_path: Path) -> None:
    p = raw_copy / "Scene01" / "clone" / "intrinsic.txt"
    p.write_text(p.read_text().replace("K[0,0]", "fx", 1))
    with pytest.raises(SourceLayoutError, match=r"intrinsic\.txt:1: expected the header"):
        _convert(raw_copy, tmp_path / "out")


def test_missing_row(raw_copy: Path, tmp_path: Path) -> None:
    p = raw_copy / "Scene01" / "clone" / "extrinsic.txt"
    p.write_text("\n".join(line for line in p.read_text().splitlines() if not line.startswith("1 1 ")) + "\n")
    with pytest.raises(SourceLayoutError, match=r"extrinsic\.txt: no row for frame 1 camera 1"):
        _convert(raw_copy, tmp_path / "out")


def test_wrong_column_count_and_non_rotation(raw_copy: Path, tmp_path: Path) -> None:
    p = raw_copy / "Scene01" / "clone" / "extrinsic.txt"
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0], lines[1] + " 7"] + lines[2:]) + "\n")
    with pytest.raises(SourceLayoutError, match=r"extrinsic\.txt:2: expected 18 space-separated values, got 19"):
        _convert(raw_copy, tmp_path / "out")
    parts = lines[1].split()
    parts[2] = "2"  # r1,1 = 2: not a rotation
    p.write_text("\n".join([lines[0], " ".join(parts)] + lines[2:]) + "\n")
    with pytest.raises(SourceLayoutError, match="not a proper rotation"):
        _convert(raw_copy, tmp_path / "out")


def test_missing_depth_and_options_errors(raw_copy: Path, tmp_path: Path) -> None:
    (raw_copy / "Scene01" / "clone" / "frames" / "depth" / "Camera_0" / "depth_00001.png").unlink()
    with pytest.raises(SourceNotFoundError, match=r"depth_00001\.png"):
        _convert(raw_copy, tmp_path / "out")
    with pytest.raises(SourceNotFoundError, match="--vkitti-scenes Scene99: not found"):
        list(VKitti2Converter(raw_copy, VKitti2Options(vkitti_scenes="Scene99")).iter_scenes())
    with pytest.raises(WaiError, match="--cameras '2'"):
        list(VKitti2Converter(raw_copy, VKitti2Options(cameras="2")).iter_scenes())
    problems = VKitti2Converter(raw_copy).check_scene(next(iter(VKitti2Converter(raw_copy).iter_scenes())))
    assert any("depth_00001.png" in p for p in problems)
