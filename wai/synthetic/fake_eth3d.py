"""Fake raw ETH3D high-resolution multi-view scenes, rendered from ``World.street()`` in ETH3D's exact layout.

Per scene (see ``docs/sources/eth3d.md`` and source_formats.md §3)::

    <root>/<scene>/
      images/dslr_images/DSC_0xxx.JPG                 distorted RGB (THIN_PRISM_FISHEYE camera 0)
      images/dslr_images_undistorted/DSC_0xxx.JPG     undistorted RGB (PINHOLE camera 0)
      dslr_calibration_jpg/{cameras,images,points3D}.txt
      dslr_calibration_undistorted/{cameras,images,points3D}.txt
      ground_truth_depth/dslr_images/DSC_0xxx.JPG     raw float32 z-depth (+inf = no data), distorted camera
      masks_for_images/dslr_images/DSC_0xxx.png       uint8 0 / 1 / 2, distorted camera

Quirks reproduced: camera id 0; COLMAP headers with counts; numbers with 6 significant digits (C++ ``<<``);
observations written as ``" x y id"`` (leading space) with some ``-1`` (untriangulated) entries; one image of
the first scene with an empty POINTS2D line; images.txt rows in non-sorted order; non-zero thin-prism
distortion (the real courtyard coefficients); the depth file is a headerless float32 dump named ``.JPG``;
``+inf`` where the world shows sky, under mask value 2 and at random splat gaps. Some points are observed
in one image only (their track has length 1), so the converter's ">= 2 images" filter is exercised.

The second scene mimics an ETH3D *test* scene: no ``ground_truth_depth/`` and no ``masks_for_images/``.
The ground truth (poses from the rounded numbers actually written, cameras, points, tracks) is returned in
``Eth3dFakeInfo.truth``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wai.format.cameras import Camera
from wai.format.codecs import cv2, imwrite_bytes_safe
from wai.format.conventions import invert_pose, make_pose, qvec_to_rotmat, rotmat_to_qvec
from wai.synthetic.exif_blocks import exif_tiff, jpeg_with_exif
from wai.synthetic.raw_synthetic import FakeInfo
from wai.synthetic.world import BUILDING_LINE, World, look_at

#: Real courtyard THIN_PRISM_FISHEYE line (source_formats.md §3.2) at 6048x4032; scaled to the fake's size.
REAL_SIZE = (6048, 4032)
REAL_FOCAL = (3411.42, 3410.02)
REAL_PP = (3041.29, 2014.07)
REAL_DISTORTION = (0.21047, 0.21102, -5.36231e-06, 0.00051541, -0.158023, 0.406856, -8.46499e-05, 0.000861313)
#: Real pipes undistorted PINHOLE line: ``0 PINHOLE 6220 4141 3430.27 3429.23 3119.2 2057.75`` (its own size and
#: focal length: COLMAP's undistorter grows the image to keep the field of view).
REAL_UND_SIZE = (6220, 4141)
REAL_UND_PARAMS = (3430.27, 3429.23, 3119.2, 2057.75)
SCENE_NAMES = ("courtyard", "botanical_garden")  # a training scene (GT, masks) and a test scene (neither)

CAMERAS_HEADER = "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
IMAGES_HEADER = ("# Image list with two lines of data per image:\n"
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n#   POINTS2D[] as (X, Y, POINT3D_ID)\n")
POINTS_HEADER = ("# 3D point list with one line of data per point:\n"
                 "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")


@dataclass(frozen=True)
class Eth3dFakeInfo(FakeInfo):
    """``FakeInfo`` plus the ground truth of every scene (see ``make_fake``)."""

    truth: dict[str, Any] = field(default_factory=dict)


def g(x: float) -> str:
    """C++ ``operator<<`` default formatting of a double (6 significant digits)."""
    return f"{float(x):g}"


def rounded(x: np.ndarray) -> np.ndarray:
    """Values as they read back after ``g`` formatting."""
    return np.array([float(g(v)) for v in np.asarray(x, dtype=np.float64).ravel()]).reshape(np.shape(x))


def _colmap_cameras(pycolmap: Any, w: int, h: int, real_shapes: bool = False) -> tuple[Any, Any]:
    """(distorted THIN_PRISM_FISHEYE, undistorted PINHOLE) camera 0 with 6-digit parameters.

    With ``real_shapes`` the undistorted camera has its own size and focal length, scaled from the real pipes
    line (6220x4141, f 3430.27 / 3429.23, pp 3119.2 / 2057.75 for the 6048x4032 distorted camera).
    """
    s = w / REAL_SIZE[0]
    dist = rounded(np.array([REAL_FOCAL[0] * s, REAL_FOCAL[1] * s, REAL_PP[0] * s, REAL_PP[1] * h / REAL_SIZE[1],
                             *REAL_DISTORTION]))
    cd = pycolmap.Camera.create_from_model_name(0, "THIN_PRISM_FISHEYE", 1.0, w, h)
    cd.params = dist
    if real_shapes:
        wu, hu = round(REAL_UND_SIZE[0] * s), round(REAL_UND_SIZE[1] * h / REAL_SIZE[1])
        fx, fy, cx, cy = REAL_UND_PARAMS
        und = rounded(np.array([fx * s, fy * s, cx * wu / REAL_UND_SIZE[0], cy * hu / REAL_UND_SIZE[1]]))
        cu = pycolmap.Camera.create_from_model_name(0, "PINHOLE", 1.0, wu, hu)
    else:
        # The undistorted twin: a slightly shorter focal length (COLMAP's undistorter keeps the field of view)
        # and a principal point away from the distorted one, so the -0.5 shift and the remap are both visible.
        und = rounded(np.array([dist[0] * 0.96, dist[1] * 0.96, w / 2 + 1.3, h / 2 - 0.7]))
        cu = pycolmap.Camera.create_from_model_name(0, "PINHOLE", 1.0, w, h)
    cu.params = und
    return cd, cu


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """JPEG quality 95 with the camera's EXIF block (orientation 1) after SOI."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError(f"cannot encode {path}")
    path.write_bytes(jpeg_with_exif(buf.tobytes(), exif_tiff(orientation=1)))


def _pinhole(cu: Any) -> Camera:
    fx, fy, cx, cy = cu.params
    return Camera.pinhole(cu.width, cu.height, fx, fy, cx - 0.5, cy - 0.5)


def _render_distorted(world: World, cd: Any, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 and z-depth (inf = sky) of the distorted camera: each pixel's ray from pycolmap ``cam_from_img``."""
    v, u = np.mgrid[0 : cd.height, 0 : cd.width]
    uv_colmap = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64) + 0.5
    xy = np.asarray(cd.cam_from_img(uv_colmap))
    rays = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
    norm = np.linalg.norm(rays, axis=1)
    d_world = (rays / norm[:, None]) @ c2w[:3, :3].T
    hits = world.cast(c2w[:3, 3], d_world)
    z = np.where(hits.hit, hits.t / norm, np.inf)
    rgb = np.round(hits.rgb * 255).clip(0, 255).astype(np.uint8)
    return rgb.reshape(cd.height, cd.width, 3), z.reshape(cd.height, cd.width).astype(np.float32)


def facade_poses(world: World, n: int, side: float = 1.0, rank: int = 0, distance: float = 2.5, height: float = 1.7,
                 step: float = 2.0, yaw_deg: float = 35.0, pitch_deg: float = 10.0) -> list[np.ndarray]:
    """ETH3D-like handheld DSLR views of one facade: ``n`` poses ``distance`` m in front of the building line,
    ``step`` m apart, alternately yawed by +-``yaw_deg`` (oblique, so depth varies across the image) and
    pitched up by ``pitch_deg``. The facade is the ``rank``-th widest building on ``side`` (+1 / -1)."""
    blds = sorted((b for b in world.boxes if b.cls == "building" and np.sign(b.center[1]) == side
                   and abs(b.center[0]) < 60), key=lambda b: -b.size[0])
    x0 = blds[rank % len(blds)].center[0]
    poses = []
    for i in range(n):
        eye = np.array([x0 + (i - (n - 1) / 2) * step, side * (BUILDING_LINE - distance), height])
        yaw = np.radians(yaw_deg if i % 2 else -yaw_deg)
        look = np.array([np.sin(yaw), side * np.cos(yaw), np.tan(np.radians(pitch_deg))])
        poses.append(look_at(eye, eye + look))
    return poses


def _visible(world: World, c2w: np.ndarray, cam: Camera, pts: np.ndarray) -> np.ndarray:
    """Points inside ``cam``'s image and not hidden by another surface (ray cast to the point)."""
    w2c = invert_pose(c2w)
    pc = pts @ w2c[:3, :3].T + w2c[:3, 3]
    uv, z, ok = cam.project(pc)
    inside = ok & (uv[:, 0] > 0) & (uv[:, 0] < cam.w - 1) & (uv[:, 1] > 0) & (uv[:, 1] < cam.h - 1)
    vis = np.zeros(len(pts), dtype=bool)
    if inside.any():
        d = pts[inside] - c2w[:3, 3]
        dist = np.linalg.norm(d, axis=1)
        hits = world.cast(c2w[:3, 3], d / dist[:, None])
        vis[inside] = hits.t >= dist * (1 - 1e-3)
    return vis


def make_fake(root: str | Path, n_scenes: int = 2, n_images: int = 3, w: int = 240, h: int = 160,
              points_per_image: int = 150, seed: int = 0, n_train: int = 1, real_shapes: bool = False,
              ) -> Eth3dFakeInfo:
    """Write ``n_scenes`` ETH3D scenes of ``n_images`` DSLR images each (``w`` x ``h``; the real DSLR is 6048x4032).

    The first ``n_train`` scenes are training scenes (ground-truth depth and masks, the first image with an
    empty POINTS2D line); every further scene is a test scene without either. ``truth[scene]`` holds, per frame name,
    ``c2w`` (4x4), ``camera`` (format PINHOLE, OpenCV pixel centres), ``image_id``, plus ``points`` (world
    xyz as written), ``tracks`` (point row -> image ids), ``has_gt``, ``dist_params``, ``empty_obs``.
    """
    import pycolmap

    root = Path(root)
    world = World.street(seed)
    rng = np.random.default_rng(seed)
    cd, cu = _colmap_cameras(pycolmap, w, h, real_shapes)
    cam = _pinhole(cu)
    wu, hu = cam.w, cam.h
    truth: dict[str, Any] = {}
    for s in range(n_scenes):
        name = SCENE_NAMES[s] if s < len(SCENE_NAMES) else f"scene_{s}"
        training = s < n_train
        sd = root / name
        poses = facade_poses(world, n_images, side=1.0 if s % 2 == 0 else -1.0, rank=s // 2)
        image_ids = [5 + 3 * i for i in range(n_images)]  # arbitrary, not 0/1-based
        names = [f"DSC_{286 + 7 * s * 10 + i:04d}" for i in range(n_images)]
        frames: dict[str, Any] = {}
        qt: list[tuple[np.ndarray, np.ndarray]] = []
        for pose in poses:  # the truth is what the 6-digit numbers say
            w2c = invert_pose(pose)
            q, t = rounded(rotmat_to_qvec(w2c[:3, :3])), rounded(w2c[:3, 3])
            qt.append((q, t))
        c2ws = [invert_pose(make_pose(qvec_to_rotmat(q), t)) for q, t in qt]
        empty_obs = names[0] if training else None  # its neighbours still share points with each other

        # 3D points: rays cast from every camera into the world, visibility by ray casting.
        pts = []
        for c2w in c2ws:
            uv = rng.uniform([2, 2], [wu - 3, hu - 3], size=(points_per_image, 2))
            d = cam.rays(uv) @ c2w[:3, :3].T
            hits = world.cast(c2w[:3, 3], d)
            pts.append(hits.points[hits.hit])
        xyz = rounded(np.concatenate(pts))
        vis = np.stack([_visible(world, c2w, cam, xyz) for c2w in c2ws], axis=1)  # [N, n_images]
        if empty_obs is not None:
            vis[:, names.index(empty_obs)] = False
        single = rng.random(len(xyz)) < 0.1  # a few points keep only their first observation
        for r in np.flatnonzero(single):
            first = np.flatnonzero(vis[r])[:1]
            vis[r] = False
            vis[r, first] = True
        keep = vis.any(axis=1)
        xyz, vis = xyz[keep], vis[keep]
        point_ids = np.arange(len(xyz)) * 2 + 100

        # images.txt (both calibrations) with observation lists; tracks point at (image id, point2D idx).
        tracks: list[list[tuple[int, int]]] = [[] for _ in range(len(xyz))]
        obs_und: list[list[str]] = []
        obs_dist: list[list[str]] = []
        for i, c2w in enumerate(c2ws):
            w2c = invert_pose(c2w)
            ou: list[str] = []
            od: list[str] = []
            rows = np.flatnonzero(vis[:, i])
            if names[i] != empty_obs:
                pc = xyz[rows] @ w2c[:3, :3].T + w2c[:3, 3]
                uvu = np.asarray(cu.img_from_cam(pc))
                uvd = np.asarray(cd.img_from_cam(pc))
                for k, r in enumerate(rows):
                    tracks[r].append((image_ids[i], len(ou)))
                    ou.append(f" {g(uvu[k, 0])} {g(uvu[k, 1])} {point_ids[r]}")
                    od.append(f" {g(uvd[k, 0])} {g(uvd[k, 1])} {point_ids[r]}")
                for _ in range(3):  # untriangulated keypoints
                    x, y = rng.uniform(0, wu), rng.uniform(0, hu)
                    ou.append(f" {g(x)} {g(y)} -1")
                    od.append(f" {g(x)} {g(y)} -1")
            obs_und.append(ou)
            obs_dist.append(od)

        n_obs = sum(len(o) for o in obs_und)
        mean_track = sum(len(t) for t in tracks) / max(len(tracks), 1)
        order = list(range(n_images))[::-1]  # rows not sorted by name or id, as in real files
        for calib, sub, cam_c, obs in (("dslr_calibration_undistorted", "dslr_images_undistorted", cu, obs_und),
                                       ("dslr_calibration_jpg", "dslr_images", cd, obs_dist)):
            cdir = sd / calib
            cdir.mkdir(parents=True, exist_ok=True)
            jpg_multi = real_shapes and calib == "dslr_calibration_jpg"
            cam_lines = f"0 {cam_c.model_name} {cam_c.width} {cam_c.height} {' '.join(g(p) for p in cam_c.params)}\n"
            cam_id = 0
            if jpg_multi:  # a second camera (another body), used by every image; camera 0 is unused here
                other = rounded(np.asarray(cam_c.params) * np.r_[np.full(4, 1.01), np.full(8, 0.9)])
                cam_lines = (f"0 {cam_c.model_name} {cam_c.width} {cam_c.height} {' '.join(g(p) for p in other)}\n"
                             f"1 {cam_c.model_name} {cam_c.width} {cam_c.height} "
                             f"{' '.join(g(p) for p in cam_c.params)}\n")
                cam_id = 1
            (cdir / "cameras.txt").write_text(
                CAMERAS_HEADER + f"# Number of cameras: {2 if jpg_multi else 1}\n" + cam_lines)
            lines = [IMAGES_HEADER + f"# Number of images: {n_images}, mean observations per image: "
                     f"{g(n_obs / n_images)}\n"]
            for i in order:
                q, t = qt[i]
                if jpg_multi and i % 2 == 0:
                    q = -q  # -q is the same rotation; real files have negative qw
                lines.append(f"{image_ids[i]} {' '.join(g(v) for v in q)} {' '.join(g(v) for v in t)} {cam_id} "
                             f"{sub}/{names[i]}.JPG\n")
                lines.append("".join(obs[i]) + "\n")
            (cdir / "images.txt").write_text("".join(lines))
            plines = [POINTS_HEADER + f"# Number of points: {len(xyz)}, mean track length: {g(mean_track)}\n"]
            for r in range(len(xyz)):
                col = rng.integers(0, 256, 3)
                tr = " ".join(f"{a} {b}" for a, b in tracks[r])
                plines.append(f"{point_ids[r]} {' '.join(g(v) for v in xyz[r])} {col[0]} {col[1]} {col[2]} "
                              f"{g(rng.uniform(0.2, 1.5))} {tr}\n")
            (cdir / "points3D.txt").write_text("".join(plines))

        for sub in ("images/dslr_images", "images/dslr_images_undistorted"):
            (sd / sub).mkdir(parents=True, exist_ok=True)
        if training:
            (sd / "ground_truth_depth/dslr_images").mkdir(parents=True, exist_ok=True)
            (sd / "masks_for_images/dslr_images").mkdir(parents=True, exist_ok=True)
        for i, c2w in enumerate(c2ws):
            rend = world.render(cam, c2w)
            # the DSLR's EXIF block (make, model, orientation 1), as the real JPEGs carry one
            _write_jpeg(sd / "images/dslr_images_undistorted" / f"{names[i]}.JPG", rend["rgb"])
            rgb_d, z_d = _render_distorted(world, cd, c2w)
            _write_jpeg(sd / "images/dslr_images" / f"{names[i]}.JPG", rgb_d)
            if training:
                mask = np.zeros((h, w), dtype=np.uint8)
                x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
                mask[y0 : y0 + h // 5, x0 : x0 + w // 6] = 1  # e.g. a reflection: registration only
                x0, y0 = int(rng.integers(w // 3, w - w // 5)), int(rng.integers(h // 3, h - h // 4))
                mask[y0 : y0 + h // 4, x0 : x0 + w // 8] = 2  # e.g. a passer-by: no ground truth
                imwrite_bytes_safe(sd / "masks_for_images/dslr_images" / f"{names[i]}.png", mask)
                gt = z_d.copy()
                gt[mask == 2] = np.inf
                gt[rng.random(gt.shape) < 0.03] = np.inf  # splatted scan points leave gaps
                gt.astype("<f4").tofile(sd / "ground_truth_depth/dslr_images" / f"{names[i]}.JPG")
            frames[names[i]] = {"c2w": c2ws[i], "camera": cam, "image_id": image_ids[i]}
        truth[name] = {
            "frames": frames, "points": xyz, "point_ids": point_ids,
            "tracks": [[a for a, _ in t] for t in tracks], "has_gt": training,
            "dist_params": np.asarray(cd.params), "und_params": np.asarray(cu.params), "empty_obs": empty_obs,
            "world_seed": seed,
        }
    return Eth3dFakeInfo(root, n_scenes, n_scenes * n_images, None, truth)
