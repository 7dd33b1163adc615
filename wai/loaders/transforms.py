"""Crop/resize that keeps intrinsics exact, for both camera models (numpy + OpenCV; no torch).

Pixel centres are at integer coordinates. ``Camera.resized`` maps ``u -> (u + 0.5) * s - 0.5``, which is what
``cv2.resize`` does for area/linear interpolation and ``INTER_NEAREST_EXACT`` does for nearest neighbour, so
the returned camera describes the returned pixels exactly. A CYLINDRICAL camera is resized with its own model
(``fl_x`` in pixels per radian scales like a focal length, the principal point shifts under cropping).
"""

from __future__ import annotations

import numpy as np

from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.loaders.errors import LoaderConfigError


def crop_resize_plan(cam: Camera, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(new_w, new_h, x0, y0)``: rescale (aspect kept) so the image covers ``target`` (w, h), then centre-crop."""
    tw, th = int(target[0]), int(target[1])
    if tw <= 0 or th <= 0:
        raise LoaderConfigError(f"resolution {target} must be positive (w, h) in pixels")
    s = max(tw / cam.w, th / cam.h)
    nw, nh = max(tw, round(cam.w * s)), max(th, round(cam.h * s))
    return nw, nh, (nw - tw) // 2, (nh - th) // 2


def crop_resize(
    cam: Camera,
    target: tuple[int, int],
    image: np.ndarray | None = None,
    nearest: dict[str, np.ndarray] | None = None,
) -> tuple[Camera, np.ndarray | None, dict[str, np.ndarray]]:
    """Resize + centre-crop ``image`` (area when shrinking, linear when enlarging) and the ``nearest`` maps
    (depth, masks, labels: nearest neighbour) to ``target`` (w, h). Returns the new camera and arrays.
    """
    nw, nh, x0, y0 = crop_resize_plan(cam, target)
    tw, th = int(target[0]), int(target[1])
    same = (nw, nh) == (cam.w, cam.h)
    out_cam = (cam if same else cam.resized(nw, nh)).cropped(x0, y0, tw, th)

    def _apply(a: np.ndarray, interp: int) -> np.ndarray:
        if not same:
            a = cv2.resize(a, (nw, nh), interpolation=interp)
        return a[y0 : y0 + th, x0 : x0 + tw]

    img_out = None
    if image is not None:
        interp = cv2.INTER_AREA if nw * nh < cam.w * cam.h else cv2.INTER_LINEAR
        img_out = np.ascontiguousarray(_apply(image, interp))
    maps: dict[str, np.ndarray] = {}
    for k, a in (nearest or {}).items():
        if a.dtype == bool:
            r = _apply(a.astype(np.uint8), cv2.INTER_NEAREST_EXACT).astype(bool)
        else:
            r = _apply(a, cv2.INTER_NEAREST_EXACT)
        maps[k] = np.ascontiguousarray(r)
    return out_cam, img_out, maps
