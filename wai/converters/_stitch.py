"""Stitch pinhole cameras into one 360-degree ``CYLINDRICAL`` panorama using a per-pixel 3D proxy.

The cameras sit metres away from the panorama centre, so a panorama pixel's colour depends on *where*
along its ray the surface is. For each pixel the proxy distance is, in order of preference:

1. measured depth at that pixel (z-buffered LiDAR, optionally per-camera depth): exact stitching;
2. the measured depth densified in the panorama by nearest-neighbour fill within a bounded radius
   (wraps around in azimuth);
3. above the topmost measurement of a column, when that is above the horizon (a facade cut off by the
   LiDAR's upper field of view): a vertical wall at that measurement's horizontal distance;
4. a ground plane at the sensor height below the centre (rays below the horizon), cut off by a vertical
   cylinder wall of a fixed radius (all other rays).

The proxy point is projected into every source camera and sampled bilinearly (``cv2.remap``). Overlaps
are blended with weights that fall off linearly to zero at each source image's border. Frames: the
panorama frame is OpenCV-style (x right, y down, z forward); metres throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wai.format.cameras import Camera
from wai.format.codecs import cv2

#: ``source_camera`` value of pixels no camera sees.
NO_CAMERA = 255
#: Minimum weight inside an image, so that pixels on the very border still count as covered.
_MIN_WEIGHT = 1e-3
#: Points closer than this to a camera (along its axis) are not sampled (metres).
_MIN_Z = 0.05


@dataclass(frozen=True)
class SourceView:
    """One pinhole source image: its camera, the transform camera <- panorama frame, and RGB pixels."""

    camera: Camera
    cam_from_pano: np.ndarray  # 4x4
    rgb: np.ndarray  # uint8 [h, w, 3]


def fill_nearest(depth: np.ndarray, radius_px: float, wrap: bool = True) -> np.ndarray:
    """Fill empty (0) pixels with the value of the nearest non-empty pixel within ``radius_px``.

    ``wrap`` treats the image as periodic in x (a 360-degree panorama). Pixels farther than the radius
    from any measurement stay 0.
    """
    h, w = depth.shape
    if radius_px <= 0 or not np.any(depth > 0):
        return depth.copy()
    pad = int(min(w, np.ceil(radius_px) + 1)) if wrap else 0
    d = np.pad(depth, ((0, 0), (pad, pad)), mode="wrap") if pad else depth
    valid = d > 0
    # distanceTransformWithLabels labels the zero pixels of `src` 1..n in raster order.
    dist, lab = cv2.distanceTransformWithLabels((~valid).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.concatenate([[0.0], d[valid]]).astype(np.float32)
    filled = np.where(valid, d, np.where(dist <= radius_px, lut[lab], 0.0)).astype(np.float32)
    return filled[:, pad: pad + w] if pad else filled


def fallback_distance(rays: np.ndarray, sensor_height: float, wall_radius: float) -> np.ndarray:
    """Distance along unit ``rays [h, w, 3]`` (panorama frame, y down) to the ground plane ``y = sensor_height``
    or, when nearer or above the horizon, to the cylinder ``x^2 + z^2 = wall_radius^2``."""
    horiz = np.hypot(rays[..., 0], rays[..., 2])
    t_wall = wall_radius / np.maximum(horiz, 1e-6)
    down = rays[..., 1]
    with np.errstate(divide="ignore"):
        t_ground = np.where(down > 1e-6, sensor_height / np.maximum(down, 1e-6), np.inf)
    return np.minimum(t_wall, t_ground).astype(np.float32)


def stitch(
    rays: np.ndarray, distance: np.ndarray, views: list[SourceView]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour every panorama pixel from the source views.

    ``rays [h, w, 3]`` unit directions and ``distance [h, w]`` (metres, > 0) give the proxy point of each
    pixel in the panorama frame. Returns ``rgb`` uint8 ``[h, w, 3]`` (0 where uncovered), ``source`` uint8
    ``[h, w]`` (index of the view with the largest weight, ``NO_CAMERA`` where none) and ``valid`` bool
    ``[h, w]`` (at least one view covers the pixel).
    """
    h, w = distance.shape
    n = h * w
    pts = (rays.reshape(-1, 3) * distance.reshape(-1, 1)).astype(np.float32)
    acc = np.zeros((n, 3), dtype=np.float32)
    wsum = np.zeros(n, dtype=np.float32)
    best_w = np.zeros(n, dtype=np.float32)
    best_i = np.full(n, NO_CAMERA, dtype=np.uint8)
    for i, v in enumerate(views):
        R = v.cam_from_pano[:3, :3].astype(np.float32)
        t = v.cam_from_pano[:3, 3].astype(np.float32)
        # column-wise products: (n, 3) @ (3, 3) matmul is several times slower in numpy
        pc = pts[:, 0:1] * R[:, 0] + pts[:, 1:2] * R[:, 1] + pts[:, 2:3] * R[:, 2] + t
        uv, _, ok = v.camera.project(pc)
        cam_w, cam_h = v.camera.w, v.camera.h
        u, vv = uv[:, 0].astype(np.float32), uv[:, 1].astype(np.float32)
        inside = ok & (pc[:, 2] > _MIN_Z) & (u >= 0) & (u <= cam_w - 1) & (vv >= 0) & (vv <= cam_h - 1)
        if not np.any(inside):
            continue
        # Tent weight: 1 at the image centre, 0 at the border (never 0 inside: _MIN_WEIGHT).
        wu = np.clip(np.minimum(u, cam_w - 1 - u) / ((cam_w - 1) / 2.0), 0.0, 1.0)
        wv = np.clip(np.minimum(vv, cam_h - 1 - vv) / ((cam_h - 1) / 2.0), 0.0, 1.0)
        wt = np.where(inside, np.maximum(wu * wv, _MIN_WEIGHT), 0.0).astype(np.float32)
        map_x = np.where(inside, u, -1.0).astype(np.float32).reshape(h, w)
        map_y = np.where(inside, vv, -1.0).astype(np.float32).reshape(h, w)
        col = cv2.remap(v.rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3)
        acc += col.astype(np.float32) * wt[:, None]
        wsum += wt
        better = wt > best_w
        best_w = np.where(better, wt, best_w)
        best_i[better] = i
    valid = wsum > 0
    rgb = np.zeros((n, 3), dtype=np.uint8)
    rgb[valid] = np.clip(np.round(acc[valid] / wsum[valid, None]), 0, 255).astype(np.uint8)
    return rgb.reshape(h, w, 3), best_i.reshape(h, w), valid.reshape(h, w)


def extrude_up(dense: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Distance above the topmost measurement of each column, assuming a vertical wall there (0 elsewhere).

    Only columns whose topmost measurement is above the horizon (a facade, tree or pole cut off by the
    LiDAR's upper field of view) are extruded; the wall keeps that point's horizontal distance.
    """
    h, w = dense.shape
    valid = dense > 0
    has = valid.any(axis=0)
    top = np.argmax(valid, axis=0)
    cols = np.arange(w)
    ray_top = rays[top, cols]
    horiz = np.hypot(rays[..., 0], rays[..., 2])
    rho = dense[top, cols] * horiz[top, cols]
    use = has & (ray_top[:, 1] < 0)
    above = (np.arange(h)[:, None] < top[None, :]) & use[None, :]
    return np.where(above, rho[None, :] / np.maximum(horiz, 1e-6), 0.0).astype(np.float32)


def proxy_distance(measured: np.ndarray, rays: np.ndarray, fill_radius_px: float, sensor_height: float,
                   wall_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel proxy distance (metres) and its origin: 0 measured, 1 densified, 2 extruded up, 3 ground/wall."""
    dense = fill_nearest(measured, fill_radius_px, wrap=True)
    up = extrude_up(dense, rays)
    fb = fallback_distance(rays, sensor_height, wall_radius)
    dist = np.where(dense > 0, dense, np.where(up > 0, up, fb)).astype(np.float32)
    origin = np.where(measured > 0, 0, np.where(dense > 0, 1, np.where(up > 0, 2, 3))).astype(np.uint8)
    return dist, origin
