"""Tests of the procedural ground-truth world and the simulated LiDAR against hand-computed truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wai.format.cameras import Camera
from wai.format.conventions import invert_pose, is_proper_rotation, transform_points
from wai.synthetic.lidar import lidar_directions, simulate_lidar
from wai.synthetic.world import (
    CLASS_NAMES,
    CLASSES,
    SKY_COLOR,
    Box,
    World,
    ground_class,
    look_at,
)


@pytest.fixture(scope="module")
def street() -> World:
    return World.street(seed=0)


def _box(center, size, yaw=0.0, cls="car", instance=1, color=(0.5, 0.4, 0.3)) -> Box:
    return Box(
        center=np.array(center, dtype=float),
        size=np.array(size, dtype=float),
        yaw=float(yaw),
        cls=cls,
        instance=instance,
        color=np.array(color, dtype=float),
    )


def _brute_force_t(world: World, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Independent reference: ground plane + per-box slab test, no culling, no reordering."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = -origins[:, 2] / dirs[:, 2]
    best = np.where((tg > 1e-6) & np.isfinite(tg), tg, np.inf)
    for b in world.boxes:
        lo = b.to_local(origins)
        c, s = math.cos(b.yaw), math.sin(b.yaw)
        ld = np.stack([c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2]], -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-b.size / 2 - lo) / ld
            t2 = (b.size / 2 - lo) / ld
        t1 = np.nan_to_num(t1, nan=-np.inf)
        t2 = np.nan_to_num(t2, nan=np.inf)
        tn = np.minimum(t1, t2).max(axis=1)
        tf = np.maximum(t1, t2).min(axis=1)
        ok = (tn <= tf) & (tn > 1e-6)
        best = np.where(ok & (tn < best), tn, best)
    return np.where(best <= 1000.0, best, np.inf)  # World.cast's default max_t


# --- world layout ---------------------------------------------------------------------------------


def test_class_table():
    assert CLASSES == {
        "sky": 0, "road": 1, "sidewalk": 2, "terrain": 3,
        "building": 4, "vegetation": 5, "car": 6, "pole": 7,
    }  # fmt: skip
    assert all(CLASS_NAMES[v] == k for k, v in CLASSES.items())
    y = np.array([0.0, 3.99, -3.99, 4.0, -6.99, 7.0, -20.0])
    assert ground_class(y).tolist() == [1, 1, 1, 2, 2, 3, 3]


def test_street_layout(street: World):
    boxes = street.boxes
    kinds = {b.cls for b in boxes}
    assert kinds == {"building", "vegetation", "pole", "car"}
    assert [b.instance for b in boxes] == list(range(1, len(boxes) + 1))
    for b in boxes:
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * b.size / 2
        c, s = math.cos(b.yaw), math.sin(b.yaw)
        R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        world_corners = corners @ R.T + b.center
        assert world_corners[:, 2].min() == pytest.approx(0.0, abs=1e-9)  # resting on the ground
        assert np.all((b.color >= 0) & (b.color <= 1))
        if b.cls == "building":
            assert np.abs(world_corners[:, 1]).min() >= 9.0
            assert 6.0 <= b.size[2] <= 25.0 and 6.0 <= b.size[0] <= 15.0
            assert 0 < abs(b.yaw) < math.radians(5.0) or b.yaw == 0.0
        if b.cls == "car":
            np.testing.assert_allclose(b.size, [4.5, 1.9, 1.5])
            # footprint (with margin for any yaw) clear of the test strip |y| < 2.5, |x| < 10
            r = 0.5 * math.hypot(4.5, 1.9)
            assert not (abs(b.center[0]) < 10 + r and abs(b.center[1]) < 2.5 + r)
        if b.cls in ("vegetation", "pole"):
            assert 4.0 <= np.abs(world_corners[:, 1]).min() and np.abs(world_corners[:, 1]).max() < 7.0
    assert any(abs(b.yaw) > 1e-3 for b in boxes if b.cls == "building")


def test_determinism():
    a, b, c = World.street(3), World.street(3), World.street(4)
    assert len(a.boxes) == len(b.boxes)
    for x, y in zip(a.boxes, b.boxes):
        np.testing.assert_array_equal(x.center, y.center)
        np.testing.assert_array_equal(x.size, y.size)
        assert x.yaw == y.yaw and x.cls == y.cls and x.instance == y.instance
    assert any(not np.array_equal(x.center, y.center) for x, y in zip(a.boxes, c.boxes)) or len(a.boxes) != len(c.boxes)
    cam = Camera.pinhole(64, 48, 40.0, 40.0, 31.5, 23.5)
    T = look_at([0, 0, 1.6], [10, 1, 1.0])
    ra, rb = a.render(cam, T), b.render(cam, T)
    for k in ra:
        np.testing.assert_array_equal(ra[k], rb[k])


# --- ray casting ----------------------------------------------------------------------------------


def test_axis_aligned_box_hit():
    w = World([_box([10.0, 0.0, 1.0], [2.0, 2.0, 2.0], cls="car", instance=1)])
    o = np.array([[0.0, 0.0, 1.0], [10.0, 0.0, 5.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    d = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.6, -0.8]])
    h = w.cast(o, d)
    np.testing.assert_allclose(h.t[:2], [9.0, 3.0])
    np.testing.assert_allclose(h.points[0], [9.0, 0.0, 1.0])
    np.testing.assert_allclose(h.normals[0], [-1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(h.normals[1], [0.0, 0.0, 1.0], atol=1e-12)
    assert h.cls[:2].tolist() == [CLASSES["car"]] * 2 and h.instance[:2].tolist() == [1, 1]
    # horizontal ray sideways: nothing -> sky
    assert h.t[2] == np.inf and h.cls[2] == 0 and h.instance[2] == 0 and np.isnan(h.points[2]).all()
    np.testing.assert_allclose(h.rgb[2], SKY_COLOR)
    # slanted ray hits the ground at t = 1 / 0.8, y = 0.75 (road)
    assert h.t[3] == pytest.approx(1.25)
    np.testing.assert_allclose(h.points[3], [0.0, 0.75, 0.0], atol=1e-12)
    assert h.cls[3] == CLASSES["road"] and h.instance[3] == 0
    assert np.all((h.rgb >= 0) & (h.rgb <= 1))


def test_yawed_box_hit():
    # 4 x 1 x 2 box rotated 45 deg about z at (10, 0, 1).
    w = World([_box([10.0, 0.0, 1.0], [4.0, 1.0, 2.0], yaw=math.pi / 4, cls="building", instance=7)])
    o = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 2.2, 1.0]])
    d = np.tile([1.0, 0.0, 0.0], (3, 1))
    h = w.cast(o, d)
    s2 = math.sqrt(0.5)
    # y = 0: enters through the local +y face at s = -0.5/sin45 from the centre.
    assert h.t[0] == pytest.approx(10.0 - 0.5 / s2)
    np.testing.assert_allclose(h.normals[0], [-s2, s2, 0.0], atol=1e-12)
    # y = 1: an axis-aligned box would be missed; the yawed one is hit at s = 1 - 0.5/sin45.
    assert h.t[1] == pytest.approx(10.0 + 1.0 - 0.5 / s2)
    assert h.cls[1] == CLASSES["building"] and h.instance[1] == 7
    # y = 2.2: beyond the box's reach (max |y| of the footprint is (2 + 0.5) * sin45 = 1.77).
    assert h.t[2] == np.inf


def test_cast_matches_brute_force(street: World):
    rng = np.random.default_rng(1)
    n = 6000
    o = np.stack([rng.uniform(-70, 70, n), rng.uniform(-8, 8, n), rng.uniform(0.3, 30, n)], -1)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    h = street.cast(o, d)
    ref = _brute_force_t(street, o, d)
    # rays starting inside a box are documented not to see it; drop them
    inside = np.zeros(n, bool)
    for b in street.boxes:
        inside |= b.contains(o)
    np.testing.assert_allclose(h.t[~inside], ref[~inside], rtol=1e-9, atol=1e-9)
    assert np.isfinite(h.t).mean() > 0.3
    hit = np.isfinite(h.t)
    np.testing.assert_allclose(h.points[hit], o[hit] + h.t[hit, None] * d[hit], atol=1e-9)
    # normals are unit and face the incoming ray
    np.testing.assert_allclose(np.linalg.norm(h.normals[hit], axis=1), 1.0)
    assert np.all(np.einsum("ij,ij->i", h.normals[hit], d[hit]) < 1e-9)
    # box hits lie on their box's surface
    for b in street.boxes:
        m = h.instance == b.instance
        if m.any():
            assert b.contains(h.points[m], tol=1e-6).all()
            assert h.cls[m].tolist() == [CLASSES[b.cls]] * int(m.sum())
    ground = hit & (h.instance == 0)
    np.testing.assert_array_equal(h.cls[ground], ground_class(h.points[ground, 1]))
    assert np.all(h.points[ground, 2] == 0.0)


def test_single_origin_and_max_t(street: World):
    d = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    h = street.cast(np.array([0.0, 0.0, 2.0]), d)
    h_far = street.cast(np.array([0.0, 0.0, 2.0]), d, max_t=1.0)
    assert np.isfinite(h.t).any()
    assert np.all(h_far.t == np.inf) and np.all(h_far.cls == 0)


def test_texture_smooth(street: World):
    # Along a line on the road, colour changes at most ~ (2 pi / 1.5) * 0.25 * step per metre.
    x = np.linspace(-5, 5, 1001)
    o = np.stack([x, np.full_like(x, 0.3), np.full_like(x, 2.0)], -1)
    h = street.cast(o, np.tile([0.0, 0.0, -1.0], (len(x), 1)))
    assert np.all(h.cls == CLASSES["road"])
    step = np.abs(np.diff(h.rgb, axis=0)).max()
    assert step < 0.01
    assert h.rgb.max() - h.rgb.min() > 0.05  # but it is textured


# --- rendering ------------------------------------------------------------------------------------


def test_downward_camera_depth_is_height(street: World):
    h = 3.0
    cam = Camera.pinhole(80, 60, 100.0, 100.0, 39.5, 29.5)
    T = look_at([0.0, 0.0, h], [0.0, 0.0, 0.0])
    assert is_proper_rotation(T[:3, :3])
    out = street.render(cam, T)
    # a plane parallel to the image plane: planar depth is h everywhere, including the principal point
    np.testing.assert_allclose(out["depth"], h, rtol=1e-6)
    assert out["valid"].all()
    assert np.all(out["semantic"] == CLASSES["road"]) and np.all(out["instance"] == 0)
    np.testing.assert_allclose(out["points"][..., 2], 0.0, atol=1e-6)


def _check_render_consistency(cam: Camera, T: np.ndarray, out: dict[str, np.ndarray]) -> None:
    assert out["rgb"].shape == (cam.h, cam.w, 3) and out["rgb"].dtype == np.uint8
    assert out["depth"].dtype == np.float32 and out["semantic"].dtype == np.uint8
    assert out["instance"].dtype == np.uint16 and out["points"].dtype == np.float32
    assert out["valid"].dtype == bool
    v = out["valid"]
    assert 0.2 < v.mean() < 1.0  # sees both surfaces and sky
    # sky pixels: depth 0, class 0, instance 0, nan points, sky colour
    assert np.all(out["depth"][~v] == 0) and np.all(out["semantic"][~v] == 0)
    assert np.all(out["instance"][~v] == 0) and np.isnan(out["points"][~v]).all()
    np.testing.assert_array_equal(out["rgb"][~v], np.tile(np.round(SKY_COLOR * 255), (int((~v).sum()), 1)))
    assert np.all(out["depth"][v] > 0) and np.all(out["semantic"][v] > 0)
    # depth unprojected with the camera model lands on the returned world points
    pts_w = transform_points(T, cam.depth_to_points(out["depth"]))
    np.testing.assert_allclose(pts_w[v], out["points"][v], rtol=1e-5, atol=2e-3)
    # depth type: z for pinhole, range for cylindrical
    pts_c = transform_points(invert_pose(T), out["points"][v].astype(np.float64))
    expected = pts_c[:, 2] if cam.depth_type == "z" else np.linalg.norm(pts_c, axis=1)
    np.testing.assert_allclose(out["depth"][v], expected, rtol=1e-5, atol=1e-4)


def test_pinhole_render_consistency(street: World):
    cam = Camera.pinhole(160, 90, 80.0, 80.0, 79.5, 44.5)
    T = look_at([0.0, 0.5, 1.6], [20.0, -1.0, 3.0])
    out = street.render(cam, T)
    _check_render_consistency(cam, T, out)
    assert {CLASSES["road"], CLASSES["building"], 0} <= set(np.unique(out["semantic"]).tolist())


def test_cylindrical_render_is_range(street: World):
    cam = Camera.panorama(256, 64, v_fov_deg=90.0)
    T = look_at([2.0, 0.0, 1.7], [10.0, 0.0, 1.7])
    out = street.render(cam, T)
    assert cam.depth_type == "range"
    _check_render_consistency(cam, T, out)
    # a column looking straight ahead and a column looking back see the same street, both ways
    sem = set(np.unique(out["semantic"]).tolist())
    assert {CLASSES["road"], CLASSES["building"], CLASSES["sidewalk"]} <= sem


def test_sky_camera():
    w = World.street(0)
    cam = Camera.pinhole(32, 32, 100.0, 100.0, 15.5, 15.5)
    out = w.render(cam, look_at([0.0, 0.0, 1.5], [0.0, 0.0, 100.0]))
    assert not out["valid"].any()
    assert np.all(out["depth"] == 0) and np.all(out["semantic"] == 0)
    assert np.all(out["rgb"] == np.round(SKY_COLOR * 255).astype(np.uint8))


def test_look_at():
    eye, target = np.array([1.0, 2.0, 3.0]), np.array([5.0, -1.0, 2.0])
    T = look_at(eye, target)
    R = T[:3, :3]
    assert is_proper_rotation(R, tol=1e-12)
    np.testing.assert_allclose(T[:3, 3], eye)
    np.testing.assert_allclose(R[:, 2], (target - eye) / np.linalg.norm(target - eye))
    assert abs(R[:, 0] @ [0, 0, 1]) < 1e-12  # x (right) is horizontal
    assert R[:, 1] @ [0, 0, 1] < 0  # y (down) points down
    # looking along +x with z up: right = -y world, down = -z world
    np.testing.assert_allclose(look_at([0, 0, 0], [1, 0, 0])[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]],
                               atol=1e-12)  # fmt: skip
    Td = look_at([0, 0, 5], [0, 0, 0])  # degenerate: view parallel to up
    assert is_proper_rotation(Td[:3, :3], tol=1e-12)
    np.testing.assert_allclose(Td[:3, 2], [0, 0, -1])


# --- LiDAR ----------------------------------------------------------------------------------------


def test_lidar_on_surfaces(street: World):
    T = np.eye(4)  # sensor at 1.8 m, yawed 0.1 rad
    T[:3, :3] = np.array([[math.cos(0.1), -math.sin(0.1), 0], [math.sin(0.1), math.cos(0.1), 0], [0, 0, 1]])
    T[:3, 3] = [1.0, 0.5, 1.8]
    pts = simulate_lidar(street, T, n_channels=16, h_res_deg=1.0)
    assert pts.dtype == np.float32 and pts.shape[1] == 4 and len(pts) > 0.5 * 16 * 360
    rng_s = np.linalg.norm(pts[:, :3].astype(np.float64), axis=1)
    assert rng_s.min() >= 0.5 - 1e-4 and rng_s.max() <= 120.0 + 1e-3
    assert np.all((pts[:, 3] >= 0) & (pts[:, 3] <= 1))
    pw = transform_points(T, pts[:, :3].astype(np.float64))
    # re-cast from the sensor origin along each point's direction: same distance
    d = (pw - T[:3, 3]) / rng_s[:, None]
    h = street.cast(T[:3, 3], d, max_t=200.0)
    np.testing.assert_allclose(h.t, rng_s, rtol=1e-5, atol=1e-4)
    ground = np.abs(pw[:, 2]) < 1e-4
    assert ground.mean() > 0.2
    assert np.isin(h.cls[ground], [CLASSES["road"], CLASSES["sidewalk"], CLASSES["terrain"]]).all()
    assert np.all(h.instance[ground] == 0) and np.all(h.instance[~ground] > 0)
    # the lowest channel looking straight ahead (azimuth 0) hits the road: range = height / sin(24.9 deg)
    dirs = lidar_directions(16, (-24.9, 2.0), 1.0)
    first = pts[0, :3].astype(np.float64)
    np.testing.assert_allclose(first / np.linalg.norm(first), dirs[0], atol=1e-6)
    assert np.linalg.norm(first) == pytest.approx(1.8 / math.sin(math.radians(24.9)), rel=1e-5)


def test_lidar_deterministic(street: World):
    T = np.eye(4)
    T[:3, 3] = [-3.0, 0.0, 1.7]
    a = simulate_lidar(street, T, n_channels=8, h_res_deg=2.0)
    b = simulate_lidar(World.street(0), T, n_channels=8, h_res_deg=2.0)
    np.testing.assert_array_equal(a, b)
    # max_range cuts far returns
    c = simulate_lidar(street, T, n_channels=8, h_res_deg=2.0, max_range=10.0)
    assert len(c) < len(a) and np.linalg.norm(c[:, :3], axis=1).max() <= 10.0 + 1e-4
