"""Crop/resize that keeps intrinsics exact, for both camera models, and panorama -> pinhole cuts (numpy + OpenCV).

Pixel centres are at integer coordinates. ``Camera.resized`` maps ``u -> (u + 0.5) * s - 0.5``, which is what
``cv2.resize`` does for area/linear interpolation and ``INTER_NEAREST_EXACT`` does for nearest neighbour, so
the returned camera describes the returned pixels exactly. A CYLINDRICAL camera is resized with its own model
(``fl_x`` in pixels per radian scales like a focal length, the principal point shifts under cropping).

Two crops:

* ``center`` (MapAnything's order): rescale (aspect kept) so the image covers the target, then centre-crop.
  The principal point stays where the source had it, shifted by the crop.
* ``principal_point`` (what VGGT's own cropping aims at): the largest window symmetric about the principal point
  with the target's aspect, rescaled to the target, so the output's principal point is exactly the image
  centre ``((W - 1) / 2, (H - 1) / 2)``. Images are area-resized to the scale, then shifted by the sub-pixel
  remainder (bilinear); depth and masks are sampled once by nearest neighbour through the exact affine map.
"""

from __future__ import annotations

import math

import numpy as np

from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import CYLINDRICAL, PINHOLE
from wai.loaders.errors import LoaderConfigError

CROPS = ("center", "principal_point")
#: Below this scale factor images are area-averaged (anti-aliased); at or above it bilinear is used (a
#: 0.8x bilinear shrink aliases little and costs ~1/9 of OpenCV's non-integer INTER_AREA).
AREA_BELOW_SCALE = 2.0 / 3.0


def image_interpolation(w: int, h: int, nw: int, nh: int) -> int:
    """OpenCV interpolation for resizing an image of ``(w, h)`` pixels to ``(nw, nh)``."""
    return cv2.INTER_AREA if min(nw / w, nh / h) < AREA_BELOW_SCALE else cv2.INTER_LINEAR


def crop_resize_plan(cam: Camera, target: tuple[int, int], extra: int = 0) -> tuple[int, int, int, int]:
    """``(new_w, new_h, x0, y0)``: rescale (aspect kept) so the image covers ``target`` (w, h) enlarged by
    ``extra`` pixels in width (MapAnything's ``aug_crop``), then centre-crop ``target``.
    """
    tw, th = int(target[0]), int(target[1])
    if tw <= 0 or th <= 0:
        raise LoaderConfigError(f"resolution {target} must be positive (w, h) in pixels")
    cw, ch = tw + extra, th + extra * th / tw
    s = max(cw / cam.w, ch / cam.h)
    nw, nh = max(tw, round(cam.w * s)), max(th, round(cam.h * s))
    return nw, nh, (nw - tw) // 2, (nh - th) // 2


def _nearest(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if a.dtype == bool:
        return cv2.resize(a.view(np.uint8), size, interpolation=cv2.INTER_NEAREST_EXACT).view(bool)
    return cv2.resize(a, size, interpolation=cv2.INTER_NEAREST_EXACT)


def crop_resize(
    cam: Camera,
    target: tuple[int, int],
    image: np.ndarray | None = None,
    nearest: dict[str, np.ndarray] | None = None,
    crop: str = "center",
    extra: int = 0,
    copy_maps: bool = True,
) -> tuple[Camera, np.ndarray | None, dict[str, np.ndarray]]:
    """Resize + crop ``image`` (area when shrinking below 2/3, else bilinear) and the ``nearest`` maps (depth,
    masks, labels: nearest neighbour) to ``target`` (w, h). Returns the new camera and the arrays.

    ``copy_maps=False``: a ``center`` crop returns the maps as (non-contiguous) views into their resized
    arrays instead of copies, for callers that copy them anyway; the image is always C-contiguous.
    """
    if crop == "principal_point":
        return _pp_crop_resize(cam, target, image, nearest)
    if crop != "center":
        raise LoaderConfigError(f"crop={crop!r}; expected one of {CROPS}")
    nw, nh, x0, y0 = crop_resize_plan(cam, target, extra)
    tw, th = int(target[0]), int(target[1])
    same = (nw, nh) == (cam.w, cam.h)
    out_cam = (cam if same else cam.resized(nw, nh)).cropped(x0, y0, tw, th)

    img_out = None
    if image is not None:
        a = image if same else cv2.resize(image, (nw, nh), interpolation=image_interpolation(cam.w, cam.h, nw, nh))
        img_out = np.ascontiguousarray(a[y0 : y0 + th, x0 : x0 + tw])
    maps: dict[str, np.ndarray] = {}
    for k, a in (nearest or {}).items():
        r = a if same else _nearest(a, (nw, nh))
        view = r[y0 : y0 + th, x0 : x0 + tw]
        maps[k] = np.ascontiguousarray(view) if copy_maps else view
    return out_cam, img_out, maps


def pp_scale(cam: Camera, target: tuple[int, int]) -> float:
    """Scale of the ``principal_point`` crop: the largest window symmetric about (cx, cy) with the target's aspect."""
    tw, th = int(target[0]), int(target[1])
    ax = min(cam.cx + 0.5, cam.w - 0.5 - cam.cx)  # half-extent available around the principal point (pixel edges)
    ay = min(cam.cy + 0.5, cam.h - 0.5 - cam.cy)
    if ax <= 0 or ay <= 0:
        raise LoaderConfigError(f"principal point ({cam.cx:.2f}, {cam.cy:.2f}) lies outside the {cam.w}x{cam.h} "
                                "image; crop='principal_point' cannot centre it (use crop='center')")
    return max(tw / (2.0 * ax), th / (2.0 * ay))


def _pp_crop_resize(
    cam: Camera, target: tuple[int, int], image: np.ndarray | None, nearest: dict[str, np.ndarray] | None
) -> tuple[Camera, np.ndarray | None, dict[str, np.ndarray]]:
    tw, th = int(target[0]), int(target[1])
    if tw <= 0 or th <= 0:
        raise LoaderConfigError(f"resolution {target} must be positive (w, h) in pixels")
    s = pp_scale(cam, target)
    ocx, ocy = (tw - 1) / 2.0, (th - 1) / 2.0
    # Exact output camera: same focal scaling in x and y, principal point at the centre.
    out_cam = Camera(cam.model, tw, th, cam.fl_x * s, cam.fl_y * s, ocx, ocy)
    img_out = None
    if image is not None:
        nw, nh = max(1, math.ceil(cam.w * s)), max(1, math.ceil(cam.h * s))
        a = image if (nw, nh) == (cam.w, cam.h) else cv2.resize(
            image, (nw, nh), interpolation=image_interpolation(cam.w, cam.h, nw, nh))
        mid = cam.resized(nw, nh)
        # out(u) = mid(u * sx' + tx): sx' = mid.fl_x / out.fl_x (~1), tx puts the principal point at the centre
        sx, sy = mid.fl_x / out_cam.fl_x, mid.fl_y / out_cam.fl_y
        M = np.array([[sx, 0.0, mid.cx - ocx * sx], [0.0, sy, mid.cy - ocy * sy]])
        img_out = cv2.warpAffine(a, M, (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)
    maps: dict[str, np.ndarray] = {}
    if nearest:
        M = np.array([[1.0 / s, 0.0, cam.cx - ocx / s], [0.0, 1.0 / s, cam.cy - ocy / s]])
        for k, a in nearest.items():
            src = a.view(np.uint8) if a.dtype == bool else a
            r = cv2.warpAffine(src, M, (tw, th), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            maps[k] = r.view(bool) if a.dtype == bool else r
    return out_cam, img_out, maps


def pinhole_from_panorama(
    cam: Camera,
    image: np.ndarray,
    range_depth: np.ndarray,
    yaw: float,
    target: tuple[int, int],
    hfov_deg: float,
    nearest: dict[str, np.ndarray] | None = None,
) -> tuple[Camera, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Cut one pinhole view out of a CYLINDRICAL panorama.

    The pinhole camera looks along azimuth ``yaw`` (radians, about the panorama camera's y axis, positive
    toward +x), has ``target`` (w, h) pixels, horizontal field ``hfov_deg``, square pixels and its principal
    point at the image centre. Returns ``(camera, image, z_depth, R, maps)``: ``z_depth`` is planar depth
    (metres, 0 = no data: outside the panorama's vertical extent or no source depth); ``R`` (3x3) rotates
    pinhole-camera coordinates into the panorama camera's (``cam_to_world_pinhole = cam_to_world_pano @
    [[R, 0], [0, 1]]``). Image: bilinear; depth and ``nearest`` maps: nearest neighbour.
    """
    if cam.model != CYLINDRICAL:
        raise LoaderConfigError(f"pinhole_from_panorama needs a CYLINDRICAL camera, got {cam.model}")
    tw, th = int(target[0]), int(target[1])
    if not 0.0 < hfov_deg < 180.0:
        raise LoaderConfigError(f"pinhole_hfov_deg={hfov_deg}: a pinhole view needs 0 < hfov < 180 degrees")
    f = (tw / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    pin = Camera(PINHOLE, tw, th, f, f, (tw - 1) / 2.0, (th - 1) / 2.0)
    c, s = math.cos(yaw), math.sin(yaw)
    R = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    x = ((np.arange(tw, dtype=np.float64) - pin.cx) / f)[None, :]
    y = ((np.arange(th, dtype=np.float64) - pin.cy) / f)[:, None]
    # direction (x, y, 1) in the pinhole frame, rotated into the panorama frame
    px, pz = c * x + s, -s * x + c  # [1, W]
    az = np.arctan2(px, pz)  # [1, W]
    rho = np.hypot(px, pz)  # [1, W]
    t = y / rho  # [H, W]
    period = 2.0 * math.pi * cam.fl_x
    u = np.mod(cam.fl_x * az + cam.cx + 0.5, period) - 0.5  # wrap the azimuth into the panorama
    map_x = np.broadcast_to(u, (th, tw)).astype(np.float32)
    map_y = (cam.fl_y * t + cam.cy).astype(np.float32)
    inside = (map_y >= -0.5) & (map_y <= cam.h - 0.5) & (map_x >= -0.5) & (map_x <= cam.w - 0.5)
    img = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    img[~inside] = 0
    rng = cv2.remap(range_depth.astype(np.float32, copy=False), map_x, map_y, cv2.INTER_NEAREST,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # range along the unit ray -> z: z = range / |(x, y, 1)|
    z = (rng / np.sqrt(1.0 + x * x + y * y)).astype(np.float32)
    z[~inside] = 0.0
    maps: dict[str, np.ndarray] = {}
    for k, a in (nearest or {}).items():
        src = a.view(np.uint8) if a.dtype == bool else a
        r = cv2.remap(src, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        r[~inside] = 0
        maps[k] = r.view(bool) if a.dtype == bool else r
    return pin, img, z, R, maps


#: Image augmentations by MapAnything's ``transform`` names (``imgnorm`` = none): colour jitter strengths
#: (brightness, contrast, saturation, hue), the probability of jittering, of greyscale and of a 5x5 blur.
TRANSFORMS: dict[str, tuple[tuple[float, float, float, float] | None, float, float, float]] = {
    "imgnorm": (None, 0.0, 0.0, 0.0),
    "colorjitter": ((0.5, 0.5, 0.5, 0.1), 1.0, 0.0, 0.0),
    "colorjitter+grayscale+gaublur": ((0.3, 0.4, 0.2, 0.1), 0.75, 0.05, 0.05),
}


def color_augment(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Photometric augmentation of an RGB uint8 image (``TRANSFORMS[kind]``), drawn from ``rng``.

    Jitter factors are uniform in ``[1 - s, 1 + s]`` (hue: a shift in ``[-h, h]`` of a full turn), applied in a
    random order; greyscale keeps three channels; the blur is Gaussian, 5x5, sigma in [0.1, 1]. Geometry is
    untouched.
    """
    jitter, p_jitter, p_gray, p_blur = TRANSFORMS[kind]
    if jitter is None:
        return img
    out = img
    if rng.random() < p_jitter:
        f = img.astype(np.float32)
        b, c, s, h = jitter
        for op in rng.permutation(4):
            if op == 0:
                f *= float(rng.uniform(1 - b, 1 + b))
            elif op == 1:
                grey_mean = float(cv2.cvtColor(np.clip(f, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).mean())
                f = (f - grey_mean) * float(rng.uniform(1 - c, 1 + c)) + grey_mean
            elif op == 2:
                grey = cv2.cvtColor(np.clip(f, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
                f = (f - grey[..., None]) * float(rng.uniform(1 - s, 1 + s)) + grey[..., None]
            else:
                hsv = cv2.cvtColor(np.clip(f, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV_FULL)
                hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(rng.uniform(-h, h) * 256))) % 256
                f = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
            np.clip(f, 0, 255, out=f)
        out = f.astype(np.uint8)
    if rng.random() < p_gray:
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if rng.random() < p_blur:
        out = cv2.GaussianBlur(out, (5, 5), float(rng.uniform(0.1, 1.0)))
    return out
