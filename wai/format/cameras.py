"""Camera models ``PINHOLE`` and ``CYLINDRICAL`` exactly as the format contract defines them.

Camera frame: OpenCV axes (x right, y down, z forward). Pixel centres at integer coordinates: pixel
``(i, j)`` covers ``u in [i - 0.5, i + 0.5)``, ``v in [j - 0.5, j + 0.5)``.

* ``PINHOLE``: ``u = fl_x * x/z + cx``, ``v = fl_y * y/z + cy``; depth is ``z``.
* ``CYLINDRICAL``: ``rho = sqrt(x^2 + z^2)``, ``az = atan2(x, z)``; ``u = fl_x * az + cx``,
  ``v = fl_y * y/rho + cy``; depth is the range ``|p|``. A full 360-degree panorama has ``fl_x = w/(2 pi)``.

Everything is vectorised numpy; inputs are ``[N, 3]`` points or ``[N, 2]`` pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from wai.errors import SchemaError
from wai.format.conventions import CAMERA_MODELS, CYLINDRICAL, DEPTH_TYPE_OF_MODEL, PINHOLE

_EPS = 1e-9


@dataclass(frozen=True)
class Camera:
    """Intrinsics of one image. Focal lengths and principal point in pixels; size in pixels."""

    model: str
    w: int
    h: int
    fl_x: float
    fl_y: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if self.model not in CAMERA_MODELS:
            raise SchemaError(f"unknown camera model {self.model!r}; expected one of {CAMERA_MODELS}")

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def pinhole(cls, w: int, h: int, fl_x: float, fl_y: float, cx: float, cy: float) -> Camera:
        """A ``PINHOLE`` camera."""
        return cls(PINHOLE, int(w), int(h), float(fl_x), float(fl_y), float(cx), float(cy))

    @classmethod
    def from_K(cls, K: np.ndarray, w: int, h: int) -> Camera:
        """A ``PINHOLE`` camera from a 3x3 matrix (zero skew)."""
        K = np.asarray(K, dtype=np.float64)
        return cls.pinhole(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2])

    @classmethod
    def panorama(cls, w: int, h: int, v_fov_deg: float | None = None, v_center: float = 0.0) -> Camera:
        """A full 360-degree ``CYLINDRICAL`` camera, azimuth 0 (straight ahead, +z) at the image centre.

        ``fl_x = w / (2 pi)``. ``fl_y`` defaults to ``fl_x`` (square pixels at the horizon); with
        ``v_fov_deg`` it is chosen so the image spans that vertical field symmetric about ``v_center``
        (elevation tangent of the centre row, positive down).
        """
        fl_x = w / (2.0 * math.pi)
        if v_fov_deg is None:
            fl_y = fl_x
        else:
            fl_y = (h / 2.0) / math.tan(math.radians(v_fov_deg) / 2.0)
        cy = (h - 1) / 2.0 - v_center * fl_y
        return cls(CYLINDRICAL, int(w), int(h), fl_x, fl_y, (w - 1) / 2.0, cy)

    @classmethod
    def from_frame(cls, frame: dict[str, Any], default_model: str = PINHOLE) -> Camera:
        """Camera of a ``scene_meta`` frame dict (``camera_model`` overrides the scene default)."""
        try:
            return cls(
                str(frame.get("camera_model", default_model)),
                int(frame["w"]),
                int(frame["h"]),
                float(frame["fl_x"]),
                float(frame["fl_y"]),
                float(frame["cx"]),
                float(frame["cy"]),
            )
        except KeyError as e:
            raise SchemaError(f"frame {frame.get('frame_name')!r} lacks intrinsics key {e.args[0]!r}") from e

    def to_dict(self) -> dict[str, Any]:
        """The frame keys of this camera (``camera_model``, ``w``, ``h``, ``fl_x``, ``fl_y``, ``cx``, ``cy``)."""
        return {
            "camera_model": self.model,
            "w": self.w,
            "h": self.h,
            "fl_x": self.fl_x,
            "fl_y": self.fl_y,
            "cx": self.cx,
            "cy": self.cy,
        }

    # --- properties -----------------------------------------------------------------------
    @property
    def K(self) -> np.ndarray:
        """3x3 intrinsics matrix (for CYLINDRICAL: the linear part mapping (az, y/rho, 1) to (u, v, 1))."""
        return np.array([[self.fl_x, 0.0, self.cx], [0.0, self.fl_y, self.cy], [0.0, 0.0, 1.0]])

    @property
    def depth_type(self) -> str:
        """``z`` for PINHOLE, ``range`` for CYLINDRICAL."""
        return DEPTH_TYPE_OF_MODEL[self.model]

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)``."""
        return (self.h, self.w)

    # --- projection -----------------------------------------------------------------------
    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project camera-frame points ``[N, 3]``.

        Returns ``uv [N, 2]`` (continuous pixel coordinates), ``depth [N]`` (z or range, per the model)
        and ``ok [N]`` (in front of a pinhole camera / off the axis of a cylinder). Image bounds are not
        checked here: see ``pixel_index``.
        """
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        if self.model == PINHOLE:
            ok = z > _EPS
            zs = np.where(ok, z, 1.0)
            u = self.fl_x * x / zs + self.cx
            v = self.fl_y * y / zs + self.cy
            depth = z
        else:
            rho = np.hypot(x, z)
            ok = rho > _EPS
            rs = np.where(ok, rho, 1.0)
            u = self.fl_x * np.arctan2(x, z) + self.cx
            v = self.fl_y * y / rs + self.cy
            depth = np.sqrt(rho * rho + y * y)
        return np.stack([u, v], axis=-1), depth, ok

    def pixel_index(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest pixel ``(col, row)`` of continuous coordinates and whether it lies inside the image."""
        col = np.floor(uv[:, 0] + 0.5).astype(np.int64)
        row = np.floor(uv[:, 1] + 0.5).astype(np.int64)
        inside = (col >= 0) & (col < self.w) & (row >= 0) & (row < self.h)
        return col, row, inside

    def rays(self, uv: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Ray directions ``[N, 3]`` through pixel coordinates ``uv [N, 2]``.

        Un-normalised, a PINHOLE ray is ``(x/z, y/z, 1)`` (so ``z * ray`` is the point) and a CYLINDRICAL
        ray is ``(sin az, t, cos az)`` with ``t = y/rho``.
        """
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if self.model == PINHOLE:
            d = np.stack(
                [(uv[:, 0] - self.cx) / self.fl_x, (uv[:, 1] - self.cy) / self.fl_y, np.ones(len(uv))], axis=-1
            )
        else:
            az = (uv[:, 0] - self.cx) / self.fl_x
            t = (uv[:, 1] - self.cy) / self.fl_y
            d = np.stack([np.sin(az), t, np.cos(az)], axis=-1)
        if normalize:
            d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        return d

    def unproject(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Camera-frame points ``[N, 3]`` from pixel coordinates and depth (z for PINHOLE, range for CYLINDRICAL)."""
        depth = np.asarray(depth, dtype=np.float64).reshape(-1, 1)
        return depth * self.rays(uv, normalize=self.model == CYLINDRICAL)

    def pixel_grid(self) -> np.ndarray:
        """``[h*w, 2]`` coordinates ``(u, v)`` of every pixel centre, row-major."""
        v, u = np.mgrid[0 : self.h, 0 : self.w]
        return np.stack([u.ravel(), v.ravel()], axis=-1).astype(np.float64)

    def ray_directions(self, normalize: bool = True) -> np.ndarray:
        """``[h, w, 3]`` ray direction of every pixel centre (unit length unless ``normalize=False``)."""
        return self.rays(self.pixel_grid(), normalize=normalize).reshape(self.h, self.w, 3)

    def depth_to_points(self, depth: np.ndarray) -> np.ndarray:
        """``[h, w, 3]`` camera-frame points of a depth map (z or range per the model); 0-depth pixels give 0."""
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != (self.h, self.w):
            raise SchemaError(f"depth of shape {depth.shape} does not match camera size (h, w) = {self.shape}")
        return self.ray_directions(normalize=self.model == CYLINDRICAL) * depth[..., None]

    def range_per_unit_depth(self) -> np.ndarray:
        """``[h, w]`` factor turning this model's depth into range (``sqrt(1 + x'^2 + y'^2)`` for PINHOLE)."""
        if self.model == CYLINDRICAL:
            return np.ones((self.h, self.w))
        return np.linalg.norm(self.ray_directions(normalize=False), axis=-1)

    # --- image transforms -----------------------------------------------------------------
    def resized(self, w: int, h: int) -> Camera:
        """Intrinsics after resizing the image to ``(w, h)`` (pixel-centre convention kept exact)."""
        sx, sy = w / self.w, h / self.h
        return replace(
            self,
            w=int(w),
            h=int(h),
            fl_x=self.fl_x * sx,
            fl_y=self.fl_y * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
        )

    def cropped(self, x0: int, y0: int, w: int, h: int) -> Camera:
        """Intrinsics of the sub-image ``[y0:y0+h, x0:x0+w]``."""
        if x0 < 0 or y0 < 0 or x0 + w > self.w or y0 + h > self.h:
            raise SchemaError(f"crop ({x0}, {y0}, {w}, {h}) lies outside the {self.w}x{self.h} image")
        return replace(self, w=int(w), h=int(h), cx=self.cx - x0, cy=self.cy - y0)


def project_world_points(
    camera: Camera, world_to_cam: np.ndarray, pts_world: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points into an image: ``(col, row, depth)`` of the points that land inside it."""
    pts_cam = np.asarray(pts_world, dtype=np.float64) @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    uv, depth, ok = camera.project(pts_cam)
    col, row, inside = camera.pixel_index(uv)
    keep = ok & inside
    return col[keep], row[keep], depth[keep]
