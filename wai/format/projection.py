"""Point-cloud projection into images with an exact z-buffer (LiDAR and SfM depth).

Used by every converter that turns points into depth maps (KITTI-360, OPV2V, ETH3D sparse depth) and by
the validator. The nearest point wins per pixel; last-write-wins assignment (``depth[v, u] = z``) is
wrong where points overlap and is deliberately not offered.
"""

from __future__ import annotations

import numpy as np

from wai.format.cameras import Camera


def zbuffer(col: np.ndarray, row: np.ndarray, depth: np.ndarray, h: int, w: int) -> np.ndarray:
    """float32 ``[h, w]`` depth map keeping the smallest ``depth`` per pixel (0 where nothing landed).

    ``col``/``row`` must already be inside the image (see ``Camera.pixel_index``).
    """
    lin = row.astype(np.int64) * w + col.astype(np.int64)
    buf = np.full(h * w, np.inf, dtype=np.float32)
    np.minimum.at(buf, lin, depth.astype(np.float32))
    buf[np.isinf(buf)] = 0.0
    return buf.reshape(h, w)


def project_to_depth(
    camera: Camera,
    cam_from_points: np.ndarray,
    points: np.ndarray,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
) -> tuple[np.ndarray, int]:
    """Project ``points [N, 3]`` (any frame) into ``camera`` through the 4x4 ``cam_from_points``.

    Returns the z-buffered depth map (the camera model's depth type: z for PINHOLE, range for
    CYLINDRICAL) and the number of points that landed inside the image within ``[min_depth, max_depth]``.
    """
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    pc = pts @ cam_from_points[:3, :3].T + cam_from_points[:3, 3]
    uv, d, ok = camera.project(pc)
    col, row, inside = camera.pixel_index(uv)
    keep = ok & inside & (d >= min_depth) & (d <= max_depth)
    depth = zbuffer(col[keep], row[keep], d[keep], camera.h, camera.w)
    return depth, int(np.count_nonzero(keep))
