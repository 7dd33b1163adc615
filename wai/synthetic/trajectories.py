"""Camera trajectories through ``World.street()`` shared by the fake datasets and the test scenes."""

from __future__ import annotations

import numpy as np

from wai.synthetic.world import look_at


def street_drive(n: int, start_x: float = -6.0, step: float = 1.5, height: float = 1.6, lateral: float = 0.0,
                 yaw_wiggle_deg: float = 8.0, seed: int = 0) -> list[np.ndarray]:
    """``n`` OpenCV camera-to-world poses driving along +x down the street, looking ahead with small yaw changes."""
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(n):
        eye = np.array([start_x + i * step, lateral, height])
        yaw = np.deg2rad(rng.uniform(-yaw_wiggle_deg, yaw_wiggle_deg))
        target = eye + np.array([10.0 * np.cos(yaw), 10.0 * np.sin(yaw), -0.8])
        poses.append(look_at(eye, target))
    return poses


def facade_views(n: int, center_x: float = 0.0, side: float = 1.0, distance: float = 8.0, height: float = 1.7,
                 spread: float = 8.0, seed: int = 0) -> list[np.ndarray]:
    """``n`` poses on the street looking sideways at the buildings on one side (``side`` = +1 or -1)."""
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(n):
        x = center_x + (i - (n - 1) / 2) * spread / max(n - 1, 1)
        eye = np.array([x, side * (9.0 - distance) + rng.uniform(-0.3, 0.3), height + rng.uniform(-0.2, 0.2)])
        target = np.array([x + rng.uniform(-2, 2), side * 12.0, height + 2.0 + rng.uniform(-1, 1)])
        poses.append(look_at(eye, target))
    return poses
