"""Simulated spinning LiDAR (Velodyne-like) in the procedural ``World``.

Sensor frame: x forward, y left, z up (Velodyne), metres. Rays sweep 360 degrees of azimuth about the
sensor z axis (azimuth 0 = +x, counter-clockwise towards +y) at ``n_channels`` elevations spread evenly
over ``v_fov_deg``.
"""

from __future__ import annotations

import numpy as np

from wai.synthetic.world import World


def lidar_directions(
    n_channels: int = 64, v_fov_deg: tuple[float, float] = (-24.9, 2.0), h_res_deg: float = 0.2
) -> np.ndarray:
    """Unit ray directions ``[n_channels * n_azimuth, 3]`` in the sensor frame, channel-major
    (lowest elevation first), azimuth increasing from 0 within each channel."""
    el = np.deg2rad(np.linspace(v_fov_deg[0], v_fov_deg[1], int(n_channels)))
    n_az = int(round(360.0 / h_res_deg))
    az = np.deg2rad(np.arange(n_az) * (360.0 / n_az))
    ce, se = np.cos(el)[:, None], np.sin(el)[:, None]
    d = np.stack([ce * np.cos(az)[None, :], ce * np.sin(az)[None, :], np.broadcast_to(se, (len(el), n_az))], axis=-1)
    return d.reshape(-1, 3)


def simulate_lidar(
    world: World,
    sensor_to_world: np.ndarray,
    n_channels: int = 64,
    v_fov_deg: tuple[float, float] = (-24.9, 2.0),
    h_res_deg: float = 0.2,
    max_range: float = 120.0,
    min_range: float = 0.5,
) -> np.ndarray:
    """One LiDAR sweep: float32 ``[N, 4]`` of ``(x, y, z, intensity)`` in the **sensor frame** (metres).

    Only returns with ``min_range <= range <= max_range`` are kept, in the channel-major ray order of
    ``lidar_directions``. ``sensor_to_world`` is a 4x4 pose mapping sensor-frame points into the world.
    Intensity in [0, 1] is the mean surface colour times ``0.5 + 0.5 |cos(incidence)|`` (deterministic).
    """
    T = np.asarray(sensor_to_world, dtype=np.float64)
    d_s = lidar_directions(n_channels, v_fov_deg, h_res_deg)
    d_w = d_s @ T[:3, :3].T
    d_w /= np.linalg.norm(d_w, axis=1, keepdims=True)
    hits = world.cast(T[:3, 3], d_w, max_t=max_range)
    keep = np.isfinite(hits.t) & (hits.t >= min_range) & (hits.t <= max_range)
    t = hits.t[keep]
    pts = d_s[keep] * t[:, None]
    cos_inc = np.abs(np.einsum("ij,ij->i", hits.normals[keep], d_w[keep]))
    intensity = np.clip(hits.rgb[keep].mean(axis=1) * (0.5 + 0.5 * cos_inc), 0.0, 1.0)
    return np.concatenate([pts, intensity[:, None]], axis=1).astype(np.float32)
