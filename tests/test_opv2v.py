"""OPV2V converter: CARLA conventions, panorama geometry and colour against the synthetic ground truth, errors."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from wai.converters import _opv2v_io as io
from wai.converters.opv2v import OPV2VConverter, OPV2VOptions
from wai.errors import MissingDependencyError, SourceLayoutError, SourceNotFoundError
from wai.format.cameras import Camera
from wai.format.codecs import read_depth, read_image, read_labels, read_mask
from wai.format.conventions import (
    OPENCV_FROM_UE4,
    WORLD_FROM_LEFT_HANDED,
    carla_x1_to_x2,
    carla_x_to_world,
    is_proper_rotation,
    left_to_right_handed_pose,
    ue4_camera_to_opencv_c2w_right_handed,
)
from wai.format.scene import SceneWriter, load_scene
from wai.run import RunOptions, run_conversion
from wai.synthetic import fake_opv2v as fake
from wai.synthetic.world import World

PW, PH = 512, 144
SCEN = fake.scenario_name(0)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("opv2v")
    fake.make_fake(root / "raw", n_scenes=1, depth_root=root / "depth")
    return root


@pytest.fixture(scope="module")
def out(raw: Path) -> Path:
    conv = OPV2VConverter(raw / "raw", OPV2VOptions(width=PW, height=PH, also_pinhole=True))
    res = run_conversion(conv, raw / "out", RunOptions(progress=False))
    assert res.ok, [r.error for r in res.failed]
    return raw / "out"


@pytest.fixture(scope="module")
def out_coop(raw: Path) -> Path:
    opts = OPV2VOptions(width=PW, height=PH, lidar="cooperative", depth_root=str(raw / "depth"))
    res = run_conversion(OPV2VConverter(raw / "raw", opts), raw / "out_coop", RunOptions(progress=False))
    assert res.ok, [r.error for r in res.failed]
    return raw / "out_coop"


@pytest.fixture(scope="module")
def world() -> World:
    return World.street(0)


def _truth(frame: dict) -> fake.AgentTruth:
    return fake.agent_truth(0, fake.AGENTS.index(str(frame["agent_id"])), fake.TIMESTAMPS.index(frame["source_frame"]))


def surface_distance(world: World, pts: np.ndarray) -> np.ndarray:
    """Distance (m) of world points ``[N, 3]`` to the nearest surface (ground plane z = 0 or a box face)."""
    best = np.abs(pts[:, 2])
    for b in world.boxes:
        q = np.abs(b.to_local(pts)) - b.size / 2.0
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        best = np.minimum(best, np.abs(outside + inside))
    return best


def _frame_points(scene_dir: Path, frame: dict, cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    depth = read_depth(scene_dir / frame["depth"])
    valid = depth > 0
    pc = cam.depth_to_points(depth)[valid]
    T = np.asarray(frame["transform_matrix"])
    return pc @ T[:3, :3].T + T[:3, 3], depth[valid], valid


# --- CARLA conventions ---------------------------------------------------------------------------------

TUT_CORDS = [141.35067749023438, -388.642578125, 1.0410505533218384, 0.07589337974786758, 174.18048095703125,
             0.20690691471099854]
TUT_LIDAR = [144.33, -388.94, 1.93, 0.078, 174.18, 0.21]
TUT_EXTRINSIC = np.array([[0.9999999999999999, -5.1230071481984265e-18, 9.322129061605055e-20, -2.999993025731527],
                          [-2.5011383190939924e-18, 1.0, 1.1458579204685086e-19, -3.934422863949294e-06],
                          [2.7713237218713775e-20, 3.7310309839064755e-20, 1.0, 0.8999999040861146],
                          [0.0, 0.0, 0.0, 1.0]])


def test_tutorial_extrinsic_is_lidar_to_camera() -> None:
    pred = carla_x1_to_x2(TUT_LIDAR, TUT_CORDS)  # = inv(x_to_world(cords)) @ x_to_world(lidar_pose)
    assert np.round(pred[:3, 3], 3).tolist() == [-2.991, -0.007, 0.9]  # source_formats.md §1.3
    # the tutorial's numbers, to the rounding of its lidar_pose (0.01 m, 0.01 deg)
    assert np.allclose(pred[:3, 3], TUT_EXTRINSIC[:3, 3], atol=0.015)
    assert np.allclose(pred[:3, :3], TUT_EXTRINSIC[:3, :3], atol=5e-4)
    # the other direction (camera -> LiDAR, as the tutorial's comment says) does not match
    assert not np.allclose(carla_x1_to_x2(TUT_CORDS, TUT_LIDAR)[:3, 3], TUT_EXTRINSIC[:3, 3], atol=1.0)


def test_x_to_world_matches_opencood_formula_and_fake() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        x, y, z = rng.uniform(-100, 100, 3)
        roll, yaw, pitch = rng.uniform(-30, 30), rng.uniform(-180, 180), rng.uniform(-30, 30)
        T = carla_x_to_world([x, y, z, roll, yaw, pitch])
        r, w, p = np.deg2rad([roll, yaw, pitch])
        c_y, s_y, c_r, s_r, c_p, s_p = np.cos(w), np.sin(w), np.cos(r), np.sin(r), np.cos(p), np.sin(p)
        ref = np.array([[c_p * c_y, c_y * s_p * s_r - s_y * c_r, -c_y * s_p * c_r - s_y * s_r, x],
                        [s_y * c_p, s_y * s_p * s_r + c_y * c_r, -s_y * s_p * c_r + c_y * s_r, y],
                        [s_p, -c_p * s_r, c_p * c_r, z], [0, 0, 0, 1]])
        assert np.allclose(T, ref, atol=1e-12)
        # the fake's independent right-handed construction is the mirrored CARLA matrix
        assert np.allclose(left_to_right_handed_pose(T), fake.rh_from_carla([x, y, z, roll, yaw, pitch]), atol=1e-12)
        c2w = ue4_camera_to_opencv_c2w_right_handed(T)
        assert is_proper_rotation(c2w[:3, :3])
        # OpenCV z = UE4 forward (x), x = UE4 right (y), y = -UE4 up (z), all mirrored into the right-handed world
        S = WORLD_FROM_LEFT_HANDED[:3, :3]
        assert np.allclose(c2w[:3, 2], S @ T[:3, 0]) and np.allclose(c2w[:3, 0], S @ T[:3, 1])
        assert np.allclose(c2w[:3, 1], -S @ T[:3, 2])
    # CARLA semantics: yaw +90 turns forward towards +y (right, left-handed), pitch +90 points it up
    assert np.allclose(carla_x_to_world([0, 0, 0, 0, 90, 0])[:3, 0], [0, 1, 0], atol=1e-12)
    assert np.allclose(carla_x_to_world([0, 0, 0, 0, 0, 90])[:3, 0], [0, 0, 1], atol=1e-12)
    assert np.allclose(OPENCV_FROM_UE4 @ [1, 0, 0], [0, 0, 1]) and np.allclose(OPENCV_FROM_UE4 @ [0, 0, 1], [0, -1, 0])


# --- raw parsing ---------------------------------------------------------------------------------------


def test_yaml_reads_exponent_floats(tmp_path: Path) -> None:
    text = "a: 1e-5\nb: -2.5E+3\nc: 1.0e-05\nd: abc\ne: 12\n"
    assert isinstance(yaml.safe_load(text)["a"], str)  # why the resolver is needed
    p = tmp_path / "x.yaml"
    p.write_text(text)
    d = io.load_yaml(p)
    assert d["a"] == 1e-5 and d["b"] == -2500.0 and d["c"] == 1e-5 and d["d"] == "abc" and d["e"] == 12
    with pytest.raises(SourceLayoutError, match="x.yaml"):
        p.write_text("a: [1, 2\n")
        io.load_yaml(p)


def test_fake_pcd_is_open3d_format_and_reads_back(raw: Path) -> None:
    p = raw / "raw" / "train" / SCEN / fake.AGENTS[0] / "000069.pcd"
    lines = p.read_text().splitlines()
    assert lines[:11] == ["# .PCD v0.7 - Point Cloud Data file format", "VERSION 0.7", "FIELDS x y z rgb",
                          "SIZE 4 4 4 4", "TYPE F F F F", "COUNT 1 1 1 1", f"WIDTH {len(lines) - 11}", "HEIGHT 1",
                          "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {len(lines) - 11}", "DATA ascii"]
    pts = io.read_pcd(p)
    assert pts.dtype == np.float32 and pts.shape == (len(lines) - 11, 4)
    first = [float(v) for v in lines[11].split()]
    assert np.allclose(pts[0, :3], first[:3], atol=1e-6)
    # rgb denormal -> red byte -> intensity in 256 levels
    red = np.array([first[3]], np.float32).view(np.uint32)[0] >> 16
    assert abs(pts[0, 3] - red / 255.0) < 1e-6
    assert np.allclose(pts[:, 3] * 255, np.round(pts[:, 3] * 255), atol=1e-3)
    # CARLA LiDAR frame is left-handed: the truth LiDAR pose mirrored maps the points onto the world's surfaces
    tr = fake.agent_truth(0, 0, 0)
    T = WORLD_FROM_LEFT_HANDED @ carla_x_to_world(tr.lidar)
    world_pts = pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    assert np.percentile(surface_distance(World.street(0), world_pts), 99) < 1e-3


def test_listing_orders_ego_first_and_rsu_last(tmp_path: Path) -> None:
    for n in ("-1", "2056", "1732"):
        (tmp_path / n).mkdir()
    assert io.list_agents(tmp_path) == ["1732", "2056", "-1"]


# --- panoramas -----------------------------------------------------------------------------------------


def test_panorama_frames_and_poses(out: Path) -> None:
    scene = load_scene(out / SCEN)
    meta = scene.meta
    assert meta["camera_model"] == "CYLINDRICAL" and meta["depth_type"] == "range"
    assert np.allclose(meta["_applied_transforms"]["world_from_source"], np.diag([1.0, -1.0, 1.0, 1.0]))
    names = [f["frame_name"] for f in scene.frames]
    assert names == [f"{ts}_{a}" for ts in fake.TIMESTAMPS for a in fake.AGENTS]
    for i, f in enumerate(scene.frames):
        cam = scene.camera(i)
        assert (cam.w, cam.h) == (PW, PH) and np.isclose(cam.fl_x, PW / (2 * np.pi)) and np.isclose(cam.fl_y, cam.fl_x)
        assert f["is_ego"] == (str(f["agent_id"]) == fake.AGENTS[0]) and f["is_rsu"] is False
        assert f["timestamp"] == int(f["source_frame"]) and len(f["source_cameras"]) == 4
        assert np.allclose(scene.pose(i), _truth(f).pano_c2w, atol=1e-5)


def test_panorama_depth_lies_on_world_surfaces(out: Path, world: World) -> None:
    scene = load_scene(out / SCEN)
    for i, f in enumerate(scene.frames):
        pts, rng, valid = _frame_points(out / SCEN, f, scene.camera(i))
        assert valid.mean() > 0.15
        rel = surface_distance(world, pts) / rng
        assert rel.max() < 0.01, (f["frame_name"], float(rel.max()))


def test_panorama_colour_matches_world(out: Path, world: World) -> None:
    scene = load_scene(out / SCEN)
    for i, f in enumerate(scene.frames):
        cam = scene.camera(i)
        truth = world.render(cam, _truth(f).pano_c2w)
        img = read_image(out / SCEN / f["image"]).astype(np.float64)
        depth = read_depth(out / SCEN / f["depth"])
        diff = np.abs(img - truth["rgb"]).mean(axis=-1)
        assert np.median(diff[depth > 0]) < 12, f["frame_name"]
        mask = read_mask(out / SCEN / f["valid_mask"])
        # footprint: pixels whose true surface point projects inside at least one true camera image
        pts = truth["points"].reshape(-1, 3).astype(np.float64)
        hit = truth["valid"].ravel()
        foot = np.zeros(hit.shape, bool)
        cam_src = Camera.pinhole(fake.W, fake.H, fake.FOCAL, fake.FOCAL, (fake.W - 1) / 2, (fake.H - 1) / 2)
        for c2w in _truth(f).cam_c2w:
            pc = (pts - c2w[:3, 3]) @ c2w[:3, :3]
            uv, z, _ = cam_src.project(np.nan_to_num(pc))
            foot |= hit & (z > 0.05) & (uv[:, 0] >= 0) & (uv[:, 0] <= fake.W - 1) & (uv[:, 1] >= 0) & (
                uv[:, 1] <= fake.H - 1)
        foot = foot.reshape(mask.shape)
        assert mask[foot].mean() > 0.97 and foot[mask & truth["valid"]].mean() > 0.97
        # LiDAR depth also exists where no camera looks (near-field gaps between cameras mounted metres apart):
        # there the mask must say so, exactly where the true footprint says so
        assert (mask == foot)[depth > 0].mean() > 0.97
        src = read_labels(out / SCEN / f["source_camera"])
        assert set(np.unique(src[mask]).tolist()) == {0, 1, 2, 3} and (src[~mask] == 255).all()
        # the front camera dominates straight ahead, the back camera straight behind
        assert src[PH // 2, PW // 2] == 0 and src[PH // 2, 0] == 3


def test_pinhole_scene(out: Path, world: World) -> None:
    scene = load_scene(out / f"{SCEN}_pinhole")
    assert scene.meta["camera_model"] == "PINHOLE" and scene.meta["depth_type"] == "z"
    assert len(scene.frames) == 16
    for i, f in enumerate(scene.frames):
        tr = _truth(f)
        assert np.allclose(scene.pose(i), tr.cam_c2w[f["camera_index"]], atol=1e-5)
        cam = scene.camera(i)
        assert np.isclose(cam.cx, 399.5) and np.isclose(cam.fl_x, fake.FOCAL)
        pts, z, valid = _frame_points(out / f"{SCEN}_pinhole", f, cam)
        if i < 4:  # keep it fast: a full surface check on one vehicle's cameras
            rng = np.linalg.norm(pts - scene.pose(i)[:3, 3], axis=1)
            assert (surface_distance(world, pts) / rng).max() < 0.01
    img = read_image(out / f"{SCEN}_pinhole" / scene.frames[0]["image"])
    assert img.shape == (fake.H, fake.W, 3)


def test_cooperative_and_camera_depth(out: Path, out_coop: Path, world: World) -> None:
    import json

    own = {r["frame"]: r for r in json.loads((out / SCEN / "coverage.json").read_text())["frames"]}
    coop = {r["frame"]: r for r in json.loads((out_coop / SCEN / "coverage.json").read_text())["frames"]}
    scene = load_scene(out_coop / SCEN)
    assert scene.meta["filters"]["lidar"] == "cooperative"
    for i, f in enumerate(scene.frames):
        r = coop[f["frame_name"]]
        assert r["coop_valid_depth_ratio"] > r["own_valid_depth_ratio"] > 0.2
        assert r["n_coop_points_projected"] > 0 and r["agents_at_timestamp"] == 2
        assert np.isclose(r["own_valid_depth_ratio"], own[f["frame_name"]]["valid_depth_ratio"])
        assert r["camera_depth_valid_ratio"] > 0.5 and r["valid_depth_ratio"] > r["coop_valid_depth_ratio"]
        pts, rng, _ = _frame_points(out_coop / SCEN, f, scene.camera(i))
        rel = surface_distance(world, pts) / rng
        assert np.mean(rel < 0.01) > 0.995, float(np.mean(rel < 0.01))


# --- errors --------------------------------------------------------------------------------------------


def _one_frame_copy(raw: Path, dst: Path) -> Path:
    src = raw / "raw" / "train" / SCEN / fake.AGENTS[0]
    d = dst / "train" / SCEN / fake.AGENTS[0]
    d.mkdir(parents=True)
    for p in src.glob("000069*"):
        shutil.copy(p, d / p.name)
    return dst


def _convert(root: Path, out: Path) -> None:
    conv = OPV2VConverter(root, OPV2VOptions(width=64, height=16))
    scene = next(conv.iter_scenes())
    with SceneWriter(out, scene.name, "opv2v", camera_model="CYLINDRICAL", overwrite=True) as w:
        conv.convert_scene(scene, w)


def test_missing_camera_image(raw: Path, tmp_path: Path) -> None:
    root = _one_frame_copy(raw, tmp_path / "r")
    (root / "train" / SCEN / fake.AGENTS[0] / "000069_camera2.png").unlink()
    with pytest.raises(SourceNotFoundError, match="000069_camera2.png"):
        _convert(root, tmp_path / "o")
    problems = OPV2VConverter(root).check_scene(next(OPV2VConverter(root).iter_scenes()))
    assert any("000069_camera2.png" in p for p in problems)


def test_yaml_missing_camera(raw: Path, tmp_path: Path) -> None:
    root = _one_frame_copy(raw, tmp_path / "r")
    y = root / "train" / SCEN / fake.AGENTS[0] / "000069.yaml"
    d = yaml.safe_load(y.read_text())
    del d["camera3"]
    y.write_text(yaml.safe_dump(d))
    with pytest.raises(SourceLayoutError, match=r"000069\.yaml.*camera3"):
        _convert(root, tmp_path / "o")


def test_bad_pcd(raw: Path, tmp_path: Path) -> None:
    root = _one_frame_copy(raw, tmp_path / "r")
    p = root / "train" / SCEN / fake.AGENTS[0] / "000069.pcd"
    p.write_text("this is not a point cloud\n1 2 3\n")
    with pytest.raises(SourceLayoutError, match=r"000069\.pcd"):
        _convert(root, tmp_path / "o")
    lines = (raw / "raw" / "train" / SCEN / fake.AGENTS[0] / "000069.pcd").read_text().splitlines()
    p.write_text("\n".join(lines[:100]) + "\n")  # truncated data section
    with pytest.raises(SourceLayoutError, match=r"000069\.pcd.*POINTS"):
        _convert(root, tmp_path / "o")


def test_ascii_pcd_needs_no_open3d_and_a_binary_one_names_the_extra(raw: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src = raw / "raw" / "train" / SCEN / fake.AGENTS[0] / "000069.pcd"
    monkeypatch.setitem(sys.modules, "open3d", None)
    assert io.read_pcd(src).shape[1] == 4  # OPV2V's ASCII files: parsed by wai itself
    text = src.read_text().split("DATA ascii\n")[0]
    n = int(text.split("POINTS ")[1].split()[0])
    binary = tmp_path / "b.pcd"
    binary.write_bytes((text + "DATA binary\n").encode() + np.zeros((n, 4), "<f4").tobytes())
    with pytest.raises(MissingDependencyError, match=r"wai\[open3d\]"):
        io.read_pcd(binary)


def test_opv2v_h_depth_png_encoding(tmp_path: Path) -> None:
    from wai.format.codecs import cv2

    img = np.array([[0, 7, 255], [50, 1, 254]], np.uint8)
    cv2.imwrite(str(tmp_path / "000069_depth1.png"), img)
    p = io.find_camera_depth([tmp_path / "nowhere", tmp_path], "000069", 1)
    assert p == tmp_path / "000069_depth1.png"
    d = io.read_camera_depth(p, (2, 3))
    assert d.tolist() == [[0.0, 7.0, 0.0], [50.0, 1.0, 254.0]]  # metres; 0 and 255 = no data
    with pytest.raises(SourceLayoutError, match="000069_depth1.png"):
        io.read_camera_depth(p, (600, 800))


def test_ascii_pcd_read_equals_open3d_bit_for_bit(tmp_path: Path) -> None:
    # read_pcd parses OPV2V's ASCII PCDs once (Arrow, inside the raw check) instead of again with Open3D; its
    # values must be what Open3D (OpenCOOD's pcd_to_np) reads: every intensity level, signs, odd magnitudes
    o3d = pytest.importorskip("open3d")
    rng = np.random.default_rng(3)
    n = 2048
    pts = np.concatenate([rng.normal(0, 40, (n - 4, 3)), [[0, 0, 0], [-0.0, 1e-30, -1e-7], [119.99, -0.5, 3.25],
                                                           [1e-5, 2.5e-3, -99.5]]]).astype(np.float32)
    inten = np.concatenate([np.arange(256) / 255.0, rng.random(n - 256)])
    p = tmp_path / "x.pcd"
    p.write_text(fake._pcd_text(pts, inten))
    ours = io.read_pcd(p)
    cloud = o3d.io.read_point_cloud(str(p), format="pcd")
    ref = np.concatenate([np.asarray(cloud.points), np.asarray(cloud.colors)[:, :1]], axis=1).astype(np.float32)
    assert ours.dtype == np.float32 and np.array_equal(ours, ref)
    assert len(np.unique(ours[:, 3])) == 256
    # a PCD without colours: intensity 0, as Open3D
    q = tmp_path / "y.pcd"
    q.write_text(p.read_text().replace("FIELDS x y z rgb", "FIELDS x y z intensity"))
    assert np.array_equal(io.read_pcd(q)[:, 3], np.zeros(n, np.float32))
