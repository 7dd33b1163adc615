"""Point-cloud projection into images with an exact z-buffer (LiDAR and SfM depth).

Used by every converter that turns points into depth maps (KITTI-360, OPV2V, ETH3D sparse depth) and by
the validator. The nearest point wins per pixel; last-write-wins assignment (``depth[v, u] = z``) is
wrong where points overlap and is deliberately not offered.

Speed (measured in ``bench/run.py``, docs/performance.md): the transform and pixel arithmetic run on whole
float64 columns in cache-sized chunks with a single compaction per chunk (boolean compaction of several
arrays costs more than the arithmetic), and the z-buffer resolves collisions by repeated scatter-and-check instead of
``np.minimum.at``.
"""

from __future__ import annotations

import numpy as np

from wai.format.cameras import Camera
from wai.format.conventions import PINHOLE

#: Scatter rounds before ``zbuffer`` hands the remaining collisions to ``np.minimum.at``.
_SCATTER_ROUNDS = 8
#: Points per chunk: float64 temporaries of 96 KiB stay in cache and under glibc's 128 KiB mmap threshold
#: (each larger temporary is a fresh mmap whose page faults cost 5x the arithmetic on this path).
_CHUNK = 12288


def zbuffer(col: np.ndarray, row: np.ndarray, depth: np.ndarray, h: int, w: int) -> np.ndarray:
    """float32 ``[h, w]`` depth map keeping the smallest positive ``depth`` per pixel (0 where nothing landed).

    ``col``/``row`` must already be inside the image (see ``Camera.pixel_index``). Exact: every round
    scatters the points that are nearer than what their pixel holds, so a pixel's value only decreases and
    is always one of its points' depths; when no point is nearer than its pixel, each pixel holds its minimum.
    """
    lin = row.astype(np.intp) * w + col.astype(np.intp)
    d = np.asarray(depth, dtype=np.float32)
    buf = np.zeros(h * w, dtype=np.float32)
    buf[lin] = d
    for _ in range(_SCATTER_ROUNDS):
        nearer = d < buf[lin]
        if not nearer.any():
            return buf.reshape(h, w)
        lin, d = lin[nearer], d[nearer]
        buf[lin] = d
    # Pathological stacks (many points per pixel in decreasing order): finish with the unbuffered minimum.
    np.minimum.at(buf, lin, d)
    return buf.reshape(h, w)


def project_points(
    camera: Camera,
    cam_from_points: np.ndarray,
    points: np.ndarray,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel ``(col, row)`` (int32) and float32 depth (the model's type) of the points in the image and range.

    ``points [N, >=3]`` are in any frame, moved into the camera by the 4x4 ``cam_from_points``. Pixel
    centres are at integers, so the pixel of ``u`` is ``floor(u + 0.5)``. Use this to merge several scans
    before one ``zbuffer``.
    """
    pts = np.asarray(points)
    m = np.asarray(cam_from_points, dtype=np.float64).tolist()  # Python floats keep scalar ops cheap
    with np.errstate(divide="ignore", invalid="ignore"):  # points behind a pinhole are rejected by the mask
        parts = [_project_chunk(camera, m, pts[s : s + _CHUNK], min_depth, max_depth)
                 for s in range(0, len(pts), _CHUNK)]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    col, row, d = zip(*parts)
    return np.concatenate(col), np.concatenate(row), np.concatenate(d)


def _project_chunk(
    camera: Camera, m: list[list[float]], pts: np.ndarray, min_depth: float, max_depth: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``project_points`` on one chunk of at most ``_CHUNK`` points (``m``: the 4x4 as nested lists)."""
    # Per-column arithmetic on float64 copies: a [N, 3] @ [3, 3] matmul on a strided [N, 4] scan is slower,
    # and float32 would move points across pixel borders relative to the float64 reference.
    x, y, z = (pts[:, i].astype(np.float64) for i in range(3))
    xc = m[0][0] * x + m[0][1] * y + m[0][2] * z + m[0][3]
    yc = m[1][0] * x + m[1][1] * y + m[1][2] * z + m[1][3]
    zc = m[2][0] * x + m[2][1] * y + m[2][2] * z + m[2][3]
    if camera.model == PINHOLE:
        inv = 1.0 / zc
        u = xc * inv * camera.fl_x + (camera.cx + 0.5)
        v = yc * inv * camera.fl_y + (camera.cy + 0.5)
        d = zc
        ok = (zc >= max(min_depth, 1e-6)) & (zc <= max_depth)
    else:
        uv, d, ok = camera.project(np.stack([xc, yc, zc], axis=-1))
        u, v = uv[:, 0] + 0.5, uv[:, 1] + 0.5
        ok &= (d >= min_depth) & (d <= max_depth)
    # NaN fails every comparison, so non-finite points drop out here too.
    ok &= (u >= 0) & (u < camera.w) & (v >= 0) & (v < camera.h)
    idx = np.flatnonzero(ok)
    # u, v >= 0 on the kept points, so truncation is floor.
    return u[idx].astype(np.int32), v[idx].astype(np.int32), d[idx].astype(np.float32)


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
