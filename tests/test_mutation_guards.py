"""Guards for behaviours no other test pinned (issue 20): the KITTI-360 sampling buckets and default weights, the
covisibility depth thresholds, and the pose quaternion of the loader's views.

Each test states the documented behaviour independently of the code under test (hard-coded constants, a
straightforward re-implementation of the covisibility formula, a quaternion -> matrix conversion of its own).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from wai.converters.kitti360 import Kitti360Converter, Kitti360Options
from wai.converters.sampling import BUILDING_BUCKETS, DEFAULT_WEIGHTS, bucket_of, parse_weights, stratified_sample
from wai.format.cameras import Camera
from wai.format.scene import Modality, SceneWriter, load_frame, load_scene
from wai.loaders.covisibility import compute_covisibility
from wai.synthetic.fake_kitti360 import SEQ, H, W, make_fake

BUCKETS = ["rich", "mixed", "road"]

# --- 1. KITTI-360 building-ratio buckets ---------------------------------------------------------


@pytest.mark.parametrize(("ratio", "bucket"), [
    (0.0, "road"), (0.05, "road"), (0.0999, "road"), (0.1 - 1e-12, "road"),
    (0.10, "mixed"), (0.15, "mixed"), (0.2999, "mixed"), (0.3 - 1e-12, "mixed"),
    (0.30, "rich"), (0.5, "rich"), (1.0, "rich"),
])
def test_bucket_boundaries(ratio: float, bucket: str) -> None:
    """rich: ratio >= 0.30, mixed: 0.10 <= ratio < 0.30, road: below 0.10 (lower bounds inclusive)."""
    assert bucket_of(ratio) == bucket


def test_bucket_table_and_stratified_sample_use_the_bounds() -> None:
    assert BUILDING_BUCKETS == (("rich", 0.30), ("mixed", 0.10), ("road", 0.0))
    scores = {"a": 0.0999, "b": 0.10, "c": 0.2999, "d": 0.30}
    res = stratified_sample(scores, 4, {"rich": 0.5, "mixed": 0.3, "road": 0.2})
    assert res.bucket == {"a": "road", "b": "mixed", "c": "mixed", "d": "rich"}
    assert {b: res.report[b]["available"] for b in BUCKETS} == {"rich": 1, "mixed": 2, "road": 1}


# --- 2. KITTI-360 default bucket weights ---------------------------------------------------------


def test_default_bucket_weights_are_50_30_20() -> None:
    default = Kitti360Options().bucket_weights
    assert parse_weights(default, BUCKETS) == pytest.approx({"rich": 0.5, "mixed": 0.3, "road": 0.2})
    assert [float(t) for t in default.split(",")] == [0.5, 0.3, 0.2]
    assert DEFAULT_WEIGHTS == (0.5, 0.3, 0.2)


# Frame index -> building ratio written into the fake's label maps (frame 0 has no label map, frame 3 no pose).
# Eligible: rich 1, 4, 8; mixed 2, 6; road 5, 7 (7 frames).
FAKE_RATIOS = [None, 0.45, 0.12, None, 0.31, 0.08, 0.25, 0.0, 0.60]
FAKE_BUCKETS = {250 + i: bucket_of(r) for i, r in enumerate(FAKE_RATIOS) if r is not None and i != 3}


@pytest.fixture(scope="module")
def mixed_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A coarse LiDAR keeps the fake cheap: sampling only needs the label maps and some depth.
    return make_fake(tmp_path_factory.mktemp("k360mix") / "raw", n_frames=len(FAKE_RATIOS), lidar_channels=16,
                     lidar_h_res_deg=1.0, building_ratios=FAKE_RATIOS).root


def test_fake_building_ratio_option(mixed_raw: Path) -> None:
    """The fake's label maps have exactly the requested building fractions, for both cameras."""
    from wai.format.codecs import read_labels

    for i, r in enumerate(FAKE_RATIOS):
        for cam in ("00", "01"):
            p = mixed_raw / "data_2d_semantics" / "train" / SEQ / f"image_{cam}" / "semantic" / f"{250 + i:010d}.png"
            if i == 0:
                assert not p.exists()
                continue
            labels = read_labels(p)
            if r is None:
                assert np.mean(labels == 11) > 0.3  # rendered street: building-rich
            else:
                assert np.count_nonzero(labels == 11) == round(r * W * H)
    assert sorted(FAKE_BUCKETS.values()) == ["mixed", "mixed", "rich", "rich", "rich", "road", "road"]


def test_converter_sample_follows_default_weights(mixed_raw: Path, tmp_path: Path) -> None:
    """``--sample 6`` with the default weights 0.5/0.3/0.2 picks 3 rich, 2 mixed, 1 road frames
    (0.5/0.2/0.3 would pick 3/1/2; with --sample 4 both give 2/1/1), and every scene summary says so."""
    from wai.run import RunOptions, run_conversion

    conv = Kitti360Converter(mixed_raw, Kitti360Options(cameras="00", sample=6, seed=2, frames_per_scene=100))
    res = run_conversion(conv, tmp_path / "out", RunOptions(progress=False))
    assert res.ok, [r.error for r in res.failed]
    rows = []
    for r in res.results:
        rows += json.loads((tmp_path / "out" / r.name / "coverage.json").read_text())["frames"]
    by_frame = {int(row["frame"][:10]): row for row in rows}
    selected = [f for f, row in by_frame.items() if row["selected"]]
    for f, row in by_frame.items():
        if f in FAKE_BUCKETS:
            assert row["sampling_bucket"] == FAKE_BUCKETS[f], f
            assert row["building_ratio"] == pytest.approx(FAKE_RATIOS[f - 250], abs=1e-5)
    counts = {b: sum(FAKE_BUCKETS[f] == b for f in selected) for b in BUCKETS}
    assert counts == {"rich": 3, "mixed": 2, "road": 1}
    assert sorted(row["drop_reason"] for row in rows if not row["selected"]) == [
        "no_pose", "no_semantics", "not_sampled"]
    expected = {"rich": {"available": 3, "requested": 3, "achieved": 3},
                "mixed": {"available": 2, "requested": 2, "achieved": 2},
                "road": {"available": 2, "requested": 1, "achieved": 1}}
    summaries = res.manifest["scene_summaries"]
    assert len(summaries) == 2  # train and val scenes both carry the sequence's report
    in_scenes: dict[str, int] = {}
    for s in summaries.values():
        assert s["sampling"] == expected
        for b, n in s["frames_per_bucket_in_scene"].items():
            in_scenes[b] = in_scenes.get(b, 0) + n
    assert in_scenes == counts


# --- 3./4. covisibility thresholds ---------------------------------------------------------------

#: Documented thresholds for ground-truth depth (docs/training.md, covisibility module docstring).
ABS_THRES, REL_THRES, TEMP, MIN_DEPTH = 0.1, 0.005, 0.1, 0.04
CAM = Camera.pinhole(48, 36, 40.0, 40.0, 23.5, 17.5)


def _pose(yaw_deg: float = 0.0, pitch_deg: float = 0.0, t: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    Ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    T = np.eye(4)
    T[:3, :3] = Ry @ Rx
    T[:3, 3] = t
    return T


def _plane_depth(pose: np.ndarray, plane_z: float) -> np.ndarray:
    """z-depth of the world plane ``z = plane_z`` seen by a pinhole ``CAM`` at ``pose`` (camera-to-world)."""
    v, u = np.mgrid[0 : CAM.h, 0 : CAM.w].astype(np.float64)
    rays = np.stack([(u - CAM.cx) / CAM.fl_x, (v - CAM.cy) / CAM.fl_y, np.ones_like(u)], axis=-1)
    world_dir_z = rays @ pose[2, :3]
    return (plane_z - pose[2, 3]) / world_dir_z


def _write(root: Path, name: str, poses: list[np.ndarray], depths: list[np.ndarray]) -> Path:
    with SceneWriter(root, name, "covis_test", depth_precision="float32", overwrite=True) as w:
        for i, (T, d) in enumerate(zip(poses, depths)):
            img = np.full((CAM.h, CAM.w, 3), 128, np.uint8)
            w.add_frame(f"{i:03d}", CAM, T, image=img, depth=d.astype(np.float32))
    return root / name


def _reference_covisibility(poses: list[np.ndarray], depths: list[np.ndarray]) -> np.ndarray:
    """The documented formula, written out: unproject i, move into j, project, nearest pixel, accept if
    ``|d_exp - d_j| < abs + rel * d_exp - ln(0.5) * temp``; ``M[i, j] = accepted / (H * W)``."""
    n = len(poses)
    M = np.zeros((n, n))
    v, u = np.mgrid[0 : CAM.h, 0 : CAM.w].astype(np.float64)
    for i in range(n):
        di = depths[i].astype(np.float64)
        ok = di > 0
        x = (u[ok] - CAM.cx) / CAM.fl_x * di[ok]
        y = (v[ok] - CAM.cy) / CAM.fl_y * di[ok]
        pts_world = np.stack([x, y, di[ok]], axis=1) @ poses[i][:3, :3].T + poses[i][:3, 3]
        for j in range(n):
            pc = (pts_world - poses[j][:3, 3]) @ poses[j][:3, :3]  # R^T (p - t)
            z = pc[:, 2]
            front = z > 1e-9
            zs = np.where(front, z, 1.0)
            col = np.floor(CAM.fl_x * pc[:, 0] / zs + CAM.cx + 0.5).astype(int)
            row = np.floor(CAM.fl_y * pc[:, 1] / zs + CAM.cy + 0.5).astype(int)
            inside = front & (col >= 0) & (col < CAM.w) & (row >= 0) & (row < CAM.h) & (z > MIN_DEPTH)
            dj = np.zeros_like(z)
            dj[inside] = depths[j].astype(np.float64)[row[inside], col[inside]]
            tol = ABS_THRES + REL_THRES * z - math.log(0.5) * TEMP
            M[i, j] = np.count_nonzero(inside & (dj > 0) & (np.abs(z - dj) < tol)) / (CAM.h * CAM.w)
    return M


@pytest.fixture(scope="module")
def offset_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frame 0 sees the plane z = 10 m head-on; the others, moved and turned, measure it with a constant error."""
    T0 = _pose()
    T1 = _pose(yaw_deg=4.0, pitch_deg=-2.0, t=(0.3, 0.1, 0.0))
    truth = _plane_depth(T1, 10.0)
    offsets = [0.05, 0.3, -0.3, 0.2, 0.25]
    return _write(tmp_path_factory.mktemp("covis_off"), "offsets", [T0] + [T1] * len(offsets),
                  [_plane_depth(T0, 10.0)] + [truth + o for o in offsets])


def test_covisibility_depth_offset_inside_and_outside_threshold(offset_scene: Path) -> None:
    """At ~10 m the tolerance is 0.1 + 0.005 * 10 + 0.1 ln 2 = 0.219 m: 0.05 m and 0.2 m errors keep the pair
    covisible, 0.25 m and 0.3 m (either sign) make it ~0."""
    m = compute_covisibility(offset_scene)
    assert m[0, 1] > 0.7 and m[0, 4] > 0.7, m[0]  # +0.05, +0.2
    for j in (2, 3, 5):  # +0.3, -0.3, +0.25
        assert m[0, j] < 0.01, (j, m[0])


@pytest.fixture(scope="module")
def near_far_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same head-on plane at 2 m and at 30 m, each measured again with errors around the tolerance."""
    frames: list[tuple[np.ndarray, np.ndarray]] = []
    for z, offsets in ((2.0, (0.15, 0.2)), (30.0, (0.25, 0.35))):
        T = _pose()
        d = _plane_depth(T, z)
        frames += [(T, d)] + [(T, d + o) for o in offsets]
    return _write(tmp_path_factory.mktemp("covis_nf"), "near_far", [f[0] for f in frames], [f[1] for f in frames])


def test_covisibility_absolute_and_relative_terms(near_far_scene: Path) -> None:
    """tol(2 m) = 0.179 m: 0.15 accepted, 0.2 rejected (pins abs_thres within ~0.07-0.12);
    tol(30 m) = 0.319 m: 0.25 accepted, 0.35 rejected (pins rel_thres within ~0.003-0.006)."""
    m = compute_covisibility(near_far_scene, frustum_check=False)
    full = m[0, 0]
    assert full > 0.99 and m[3, 3] > 0.99
    assert m[0, 1] == pytest.approx(full) and m[0, 2] == 0.0  # 2 m: +0.15 in, +0.2 out
    assert m[3, 4] == pytest.approx(m[3, 3]) and m[3, 5] == 0.0  # 30 m: +0.25 in, +0.35 out


@pytest.fixture(scope="module")
def ramp_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    """Moved/turned views of the plane z = 10 m (one at ~3 m), with depth errors ramping across the image
    through the tolerance, and a hole of invalid depth."""
    poses = [_pose(), _pose(6.0, -3.0, (0.4, -0.2, 0.5)), _pose(-5.0, 4.0, (-0.5, 0.3, -1.0)),
             _pose(3.0, 2.0, (0.2, 0.1, 7.0))]
    depths = [_plane_depth(T, 10.0) for T in poses]
    cols = np.linspace(-0.8, 0.8, CAM.w)[None, :]
    rows = np.linspace(0.0, 1.5, CAM.h)[:, None]
    depths[1] = depths[1] + cols
    depths[2] = depths[2] + rows
    depths[3] = depths[3] + 0.5 * cols
    depths[0] = depths[0].copy()
    depths[0][10:20, 5:15] = 0.0
    depths = [d.astype(np.float32) for d in depths]
    return _write(tmp_path_factory.mktemp("covis_ramp"), "ramp", poses, depths), poses, depths


def test_covisibility_matches_reference_formula(ramp_scene: tuple[Path, list[np.ndarray], list[np.ndarray]]) -> None:
    scene_dir, poses, depths = ramp_scene
    sc = load_scene(scene_dir)
    for i in range(len(poses)):  # the scene holds exactly what the reference uses
        np.testing.assert_array_equal(load_frame(sc, i, ["depth"])["depth"], depths[i])
        np.testing.assert_allclose(sc.pose(i), poses[i], atol=1e-12)
    ref = _reference_covisibility(poses, depths)
    m = compute_covisibility(scene_dir)
    np.testing.assert_allclose(m, ref, atol=2.0 / (CAM.h * CAM.w))
    # The ramps put the tolerance inside the images: partial, not all-or-nothing, covisibility.
    off = ref[~np.eye(len(poses), dtype=bool)]
    assert np.count_nonzero((off > 0.05) & (off < 0.6)) >= 4, ref


# --- 5. pose quaternion of the loader's views ---------------------------------------------------


def _quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = (float(c) for c in q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _random_rotations(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        q = rng.normal(size=4)
        out.append(_quat_xyzw_to_matrix(q / np.linalg.norm(q)))
    # half-turns about each axis and about a diagonal: every branch of a matrix -> quaternion conversion
    for axis in (np.eye(3)[0], np.eye(3)[1], np.eye(3)[2], np.ones(3) / math.sqrt(3)):
        for ang in (math.pi, math.radians(179.0), math.radians(120.0)):
            s = math.sin(ang / 2)
            out.append(_quat_xyzw_to_matrix(np.array([*(axis * s), math.cos(ang / 2)])))
    return out


def test_rotation_to_quat_xyzw_round_trips() -> None:
    from wai.loaders.views import rotation_to_quat_xyzw

    for R in _random_rotations(40, seed=5):
        q = rotation_to_quat_xyzw(R)
        assert q.shape == (4,) and q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(_quat_xyzw_to_matrix(q), R, atol=1e-9)


@pytest.fixture(scope="module")
def rotated_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One scene of 5 frames with strong, varied rotations (including > 90 degrees from the world axes)."""
    from wai.synthetic.scenes import write_scene_lists

    root = tmp_path_factory.mktemp("rot")
    cam = Camera.pinhole(24, 18, 20.0, 20.0, 11.5, 8.5)
    rots = _random_rotations(3, seed=11)[:3] + [_quat_xyzw_to_matrix(np.array([0.0, 0.0, 1.0, 0.0])),
                                                _quat_xyzw_to_matrix(np.array([0.6, -0.48, 0.64, 0.0]))]
    with SceneWriter(root, "rot_0", "rot_test", depth_precision="float32") as w:
        w.add_label_table("t", {0: "unlabeled"})
        for i, R in enumerate(rots):
            T = np.eye(4)
            T[:3, :3] = R
            T[:3, 3] = [1.0 + i, -2.0 * i, 0.5 * i]
            d = np.full((cam.h, cam.w), 3.0 + i, np.float32)
            w.add_frame(f"{i:03d}", cam, T, image=np.full((cam.h, cam.w, 3), 100, np.uint8), depth=d,
                        modalities={"semantic": Modality("labels", np.zeros((cam.h, cam.w), np.uint8), "t")})
    write_scene_lists(root, {"train": ["rot_0"]}, dataset_name="rot_test")
    return root


@pytest.mark.parametrize("relative", [False, True])
def test_views_pose_quaternion_matches_camera_pose(rotated_root: Path, relative: bool) -> None:
    pytest.importorskip("torch")
    from wai.loaders import WAIDataset

    kw = dict(num_views=5, resolution=[(24, 18)], sampling="sequential", relative_to_first=relative)
    ds = WAIDataset(rotated_root, **kw)
    views = ds[(0, 0, 5)]
    sc = load_scene(rotated_root / "rot_0")
    first = sc.pose(int(views[0]["frame_idx"]))
    n_large = 0
    for v in views:
        T = v["camera_pose"].double().numpy()
        expected = sc.pose(int(v["frame_idx"]))
        if relative:
            expected = np.linalg.inv(first) @ expected
        np.testing.assert_allclose(T, expected, atol=1e-5)
        q = v["camera_pose_quats"].double().numpy()
        assert q.shape == (4,) and q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(_quat_xyzw_to_matrix(q), T[:3, :3], atol=1e-5)
        np.testing.assert_allclose(v["camera_pose_trans"].double().numpy(), T[:3, 3], atol=1e-5)
        angle = math.degrees(math.acos(np.clip((np.trace(T[:3, :3]) - 1) / 2, -1, 1)))
        n_large += angle > 30.0
    assert n_large >= 3  # the check is not made on (near-)identity rotations
    # The vggt layout has no quaternion; its world-to-camera extrinsics agree with the views' quaternions.
    vg = WAIDataset(rotated_root, output="vggt", **{**kw, "resolution": [(28, 14)]})[(0, 0, 5)]  # multiples of 14
    assert "camera_pose_quats" not in vg
    for s, v in enumerate(views):
        assert int(vg["ids"][s]) == int(v["frame_idx"])
        E = vg["extrinsics"][s].double().numpy()
        R = _quat_xyzw_to_matrix(v["camera_pose_quats"].double().numpy())
        np.testing.assert_allclose(E[:, :3], R.T, atol=1e-5)
        np.testing.assert_allclose(E[:, 3], -R.T @ v["camera_pose_trans"].double().numpy(), atol=1e-4)
