"""Exact z-buffer projection (``wai.format.projection``) against an independent lexsort reference."""

from __future__ import annotations

import numpy as np
import pytest

from wai.format import projection
from wai.format.cameras import Camera
from wai.format.projection import project_points, project_to_depth, zbuffer


def _reference(camera: Camera, pts_cam: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Per-pixel nearest point by sorting (pixel, depth): slow and obviously right."""
    uv, d, ok = camera.project(pts_cam)
    col, row, inside = camera.pixel_index(uv)
    k = ok & inside & (d >= lo) & (d <= hi)
    lin, d = row[k] * camera.w + col[k], d[k]
    order = np.lexsort((d, lin))
    lin, d = lin[order], d[order]
    first = np.r_[True, lin[1:] != lin[:-1]]
    out = np.zeros(camera.h * camera.w, np.float32)
    out[lin[first]] = d[first]
    return out.reshape(camera.h, camera.w)


def _scan(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    az, el, r = rng.uniform(-np.pi, np.pi, n), rng.uniform(-0.4, 0.1, n), rng.uniform(1, 60, n)
    return np.stack([r * np.cos(el) * np.sin(az), -r * np.sin(el), r * np.cos(el) * np.cos(az)], 1)


@pytest.mark.parametrize("camera", [
    Camera.pinhole(320, 96, 150.0, 150.0, 159.5, 47.5),
    Camera.panorama(512, 128, v_fov_deg=60.0),
], ids=["pinhole", "cylindrical"])
def test_matches_reference_across_chunks(camera: Camera, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(projection, "_CHUNK", 1000)  # force many chunks on a small scan
    pts = _scan(25_000)
    # any rigid transform: points given in a rotated, shifted frame must land where the camera sees them
    c, s = np.cos(0.3), np.sin(0.3)
    cam_from_pts = np.array([[c, 0, s, 0.2], [0, 1, 0, -0.1], [-s, 0, c, 0.5], [0, 0, 0, 1]])
    pts_in = (pts - cam_from_pts[:3, 3]) @ cam_from_pts[:3, :3]  # inverse transform
    got, n = project_to_depth(camera, cam_from_pts, pts_in.astype(np.float32), 2.0, 50.0)
    exp = _reference(camera, (pts_in.astype(np.float32).astype(np.float64) @ cam_from_pts[:3, :3].T
                              + cam_from_pts[:3, 3]), 2.0, 50.0)
    assert n > 1000 and np.count_nonzero(got) > 500
    np.testing.assert_array_equal(got, exp)


def test_nearest_wins_whatever_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 points on one pixel in decreasing depth: more collisions than scatter rounds, so the fallback runs
    d = np.linspace(40.0, 1.0, 40)
    col, row = np.full(40, 3), np.full(40, 2)
    for order in (slice(None), slice(None, None, -1)):
        out = zbuffer(col[order], row[order], d[order], 5, 7)
        assert out[2, 3] == pytest.approx(1.0) and np.count_nonzero(out) == 1
    monkeypatch.setattr(projection, "_SCATTER_ROUNDS", 0)  # fallback alone is exact too
    assert zbuffer(col, row, d, 5, 7)[2, 3] == pytest.approx(1.0)


def test_rejects_behind_out_of_range_and_non_finite() -> None:
    cam = Camera.pinhole(10, 10, 5.0, 5.0, 4.5, 4.5)
    pts = np.array([[0, 0, -1.0], [0, 0, 0.0], [0, 0, 100.0], [np.nan, 0, 3.0], [0, 0, np.inf], [0, 0, 3.0]])
    col, row, d = project_points(cam, np.eye(4), pts, 0.5, 50.0)
    assert col.tolist() == [5] and row.tolist() == [5] and d.tolist() == [3.0]
    assert project_points(cam, np.eye(4), np.zeros((0, 3)))[0].size == 0
