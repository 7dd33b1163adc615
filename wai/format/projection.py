"""Point-cloud projection into images with an exact z-buffer (LiDAR and SfM depth).

Used by every converter that turns points into depth maps (KITTI-360, OPV2V, ETH3D sparse depth) and by
the validator. The nearest point wins per pixel; last-write-wins assignment (``depth[v, u] = z``) is
wrong where points overlap and is deliberately not offered.
"""

from __future__ import annotations

import numpy as np

from wai.format.cameras import Camera
from wai.format.conventions import PINHOLE


def zbuffer(col: np.ndarray, row: np.ndarray, depth: np.ndarray, h: int, w: int) -> np.ndarray:
    """float32 ``[h, w]`` depth map keeping the smallest ``depth`` per pixel (0 where nothing landed).

    ``col``/``row`` must already be inside the image (see ``Camera.pixel_index``).
    """
    lin = row.astype(np.int64) * w + col.astype(np.int64)
    buf = np.full(h * w, np.inf, dtype=np.float32)
    np.minimum.at(buf, lin, depth.astype(np.float32))
    buf[np.isinf(buf)] = 0.0
    return buf.reshape(h, w)


def project_points(
    camera: Camera,
    cam_from_points: np.ndarray,
    points: np.ndarray,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel ``(col, row)`` and depth (the model's type) of the points landing in the image within range.

    ``points [N, >=3]`` are in any frame, moved into the camera by the 4x4 ``cam_from_points``. Work is
    float32 for float32 scans and points are culled by depth before the division (the LiDAR hot path).
    Use this to merge several scans before one ``zbuffer``.
    """
    pts = np.asarray(points)
    dt = pts.dtype if pts.dtype in (np.float32, np.float64) else np.float32
    M = np.asarray(cam_from_points, dtype=np.float64)
    # Per-column arithmetic: a [N, 3] @ [3, 3] matmul on a strided [N, 4] scan is ~20x slower.
    x, y, z = (pts[:, i].astype(dt, copy=False) for i in range(3))
    xc = M[0, 0] * x + M[0, 1] * y + M[0, 2] * z + M[0, 3]
    yc = M[1, 0] * x + M[1, 1] * y + M[1, 2] * z + M[1, 3]
    zc = M[2, 0] * x + M[2, 1] * y + M[2, 2] * z + M[2, 3]
    if camera.model == PINHOLE:
        keep = (zc >= max(min_depth, 1e-6)) & (zc <= max_depth)
        xc, yc, d = xc[keep], yc[keep], zc[keep]
        inv = 1.0 / d
        col = np.floor(xc * inv * camera.fl_x + (camera.cx + 0.5)).astype(np.int32)
        row = np.floor(yc * inv * camera.fl_y + (camera.cy + 0.5)).astype(np.int32)
    else:
        uv, d, ok = camera.project(np.stack([xc, yc, zc], axis=-1))
        keep = ok & (d >= min_depth) & (d <= max_depth)
        col, row, _ = camera.pixel_index(uv[keep])
        d = d[keep]
    inside = (col >= 0) & (col < camera.w) & (row >= 0) & (row < camera.h)
    return col[inside], row[inside], d[inside]


def project_to_depth(
    camera: Camera,
    cam_from_points: np.ndarray,
    points: np.ndarray,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
) -> tuple[np.ndarray, int]:
    """Z-buffered depth map of ``points`` (see ``project_points``) and how many points landed in the image."""
    col, row, d = project_points(camera, cam_from_points, points, min_depth, max_depth)
    return zbuffer(col, row, d, camera.h, camera.w), int(col.size)
