"""Camera models: known values, round trips, resize/crop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wai.errors import SchemaError
from wai.format.cameras import Camera, project_world_points
from wai.format.conventions import invert_pose


def test_pinhole_known_values() -> None:
    cam = Camera.pinhole(640, 480, 500.0, 400.0, 320.0, 240.0)
    uv, d, ok = cam.project(np.array([[1.0, -0.5, 2.0], [0.0, 0.0, -1.0]]))
    np.testing.assert_allclose(uv[0], [320 + 500 * 0.5, 240 - 400 * 0.25])
    assert d[0] == 2.0 and ok.tolist() == [True, False]
    np.testing.assert_allclose(cam.K, [[500, 0, 320], [0, 400, 240], [0, 0, 1]])


def test_cylindrical_known_values() -> None:
    cam = Camera.panorama(2048, 576)
    assert cam.fl_x == pytest.approx(2048 / (2 * math.pi)) and cam.fl_y == cam.fl_x
    # straight ahead at the horizon -> principal point; 90 deg to the right -> a quarter turn
    uv, d, _ = cam.project(np.array([[0.0, 0.0, 5.0], [3.0, 0.0, 0.0], [0.0, 0.0, -2.0]]))
    np.testing.assert_allclose(uv[0], [cam.cx, cam.cy])
    np.testing.assert_allclose(uv[1, 0], cam.cx + 2048 / 4)
    assert abs(abs(uv[2, 0] - cam.cx) - 1024) < 1e-9  # behind: +-pi
    # depth is range: point (3, 4, 0) has range 5
    _, d, _ = cam.project(np.array([[3.0, 4.0, 0.0001]]))
    assert d[0] == pytest.approx(5.0, rel=1e-6)
    # v = fl_y * y / rho + cy
    uv, _, _ = cam.project(np.array([[0.0, 1.0, 2.0]]))
    assert uv[0, 1] == pytest.approx(cam.fl_y * 0.5 + cam.cy)


@pytest.mark.parametrize("cam", [Camera.pinhole(320, 240, 250, 260, 160.2, 119.7), Camera.panorama(512, 144)])
def test_round_trip(cam: Camera) -> None:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 3)) * 4
    if cam.model == "PINHOLE":
        pts[:, 2] = np.abs(pts[:, 2]) + 0.5
    uv, d, ok = cam.project(pts)
    assert ok.all()
    np.testing.assert_allclose(cam.unproject(uv, d), pts, atol=1e-9)


@pytest.mark.parametrize("cam", [Camera.pinhole(40, 30, 35, 35, 19.5, 14.5), Camera.panorama(64, 20)])
def test_depth_to_points_projects_back_to_pixel_centres(cam: Camera) -> None:
    depth = np.full((cam.h, cam.w), 3.0)
    pts = cam.depth_to_points(depth).reshape(-1, 3)
    uv, d, _ = cam.project(pts)
    np.testing.assert_allclose(uv, cam.pixel_grid(), atol=1e-9)
    np.testing.assert_allclose(d, 3.0)
    rays = cam.ray_directions()
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0)


def test_resize_keeps_pixel_centre_convention() -> None:
    cam = Camera.pinhole(640, 480, 500, 500, 319.5, 239.5)
    half = cam.resized(320, 240)
    # the image centre stays the image centre: (319.5 + 0.5) / 2 - 0.5
    assert (half.cx, half.cy, half.fl_x) == (159.5, 119.5, 250.0)
    # a 3D point lands on the same relative position
    p = np.array([[0.7, -0.3, 4.0]])
    u0 = cam.project(p)[0][0]
    u1 = half.project(p)[0][0]
    np.testing.assert_allclose((u1 + 0.5), (u0 + 0.5) / 2)
    pano = Camera.panorama(2048, 576).resized(1024, 288)
    assert pano.fl_x == pytest.approx(1024 / (2 * math.pi))


def test_crop() -> None:
    cam = Camera.pinhole(640, 480, 500, 500, 320, 240)
    c = cam.cropped(100, 50, 200, 100)
    assert (c.cx, c.cy, c.w, c.h) == (220, 190, 200, 100)
    with pytest.raises(SchemaError, match="outside"):
        cam.cropped(600, 0, 100, 10)


def test_project_world_points_and_pixel_rounding() -> None:
    cam = Camera.pinhole(4, 4, 1.0, 1.0, 1.5, 1.5)
    c2w = np.eye(4)
    c2w[:3, 3] = [0, 0, -1]
    col, row, d = project_world_points(cam, invert_pose(c2w), np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -5.0]]))
    # (1.5, 1.5) rounds to pixel (2, 2) (pixel i covers [i-0.5, i+0.5)); the point behind is dropped
    assert col.tolist() == [2] and row.tolist() == [2] and d.tolist() == [1.0]


def test_unknown_model_and_missing_keys() -> None:
    with pytest.raises(SchemaError, match="unknown camera model"):
        Camera("FISHEYE", 1, 1, 1, 1, 0, 0)
    with pytest.raises(SchemaError, match="fl_x"):
        Camera.from_frame({"frame_name": "a", "w": 1, "h": 1})
