"""An independent writer of contract-format scenes, and the corruptions the validator must catch.

Nothing here uses ``SceneWriter``, ``wai.format.codecs`` or ``wai.format.projection``: ``scene_meta.json``,
``_process_log.json`` and ``coverage.json`` are written with ``json``, images and depth EXRs with ``cv2``
directly, LiDAR / SfM depth is z-buffered here, following ``/work/shared/reference/format_contract.md``. Only
the ground-truth geometry comes from the library (``wai.synthetic.world``: a ray-cast street world, metres,
z up). So the validator is checked against a second reading of the contract, not only against the library's
own writer.

Kinds of data (``KINDS``), each one scene of small frames:

* ``dense_pinhole``: synthetic dense z-depth, 5 frames driving down the street (float16 EXR);
* ``lidar_seq5`` / ``lidar_seq50``: KITTI-360-like, one sparse Velodyne scan per frame (~4 % of pixels),
  0.9 m forward motion per frame, a UTM-like world frame far from the origin (float16);
* ``pano_agents``: OPV2V-like 360-degree CYLINDRICAL panoramas of two cooperating vehicles over 3 ticks,
  LiDAR range depth (float16);
* ``co3d_orbit``: Co3D-like orbit of a car, ``relative`` scale (a similarity of the street world), object
  depth only, portrait images (float16);
* ``eth3d_sparse``: ETH3D-like sparse depth from SfM points seen in >= 2 images, facade views, arbitrary
  rotated world frame (float32).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wai.format.codecs import cv2  # only for the OPENCV_IO_ENABLE_OPENEXR switch; encoding is done here
from wai.synthetic.world import CLASSES, World

KINDS = ("dense_pinhole", "lidar_seq5", "lidar_seq50", "pano_agents", "co3d_orbit", "eth3d_sparse")


# --- small geometry helpers (independent of wai.format.cameras) ------------------------------------


def _look_at(eye: Any, target: Any, up: Any = (0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV camera-to-world (x right, y down, z towards ``target``) in a z-up world."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def _rot(axis: str, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


@dataclass(frozen=True)
class Cam:
    """Intrinsics as the contract writes them (pixel centres at integer coordinates)."""

    model: str
    w: int
    h: int
    fx: float
    fy: float
    cx: float
    cy: float

    def rays(self) -> np.ndarray:
        """``[h*w, 3]`` unit rays of the pixel centres in the camera frame (row-major)."""
        v, u = np.mgrid[0:self.h, 0:self.w].astype(np.float64)
        u, v = u.ravel(), v.ravel()
        if self.model == "PINHOLE":
            d = np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], axis=-1)
        else:
            az, t = (u - self.cx) / self.fx, (v - self.cy) / self.fy
            d = np.stack([np.sin(az), t, np.cos(az)], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def project(self, pc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera-frame points -> (flat pixel index, stored depth, inside mask)."""
        x, y, z = pc[:, 0], pc[:, 1], pc[:, 2]
        if self.model == "PINHOLE":
            ok = z > 0.05
            zs = np.where(ok, z, 1.0)
            u, v, d = self.fx * x / zs + self.cx, self.fy * y / zs + self.cy, z
        else:
            rho = np.hypot(x, z)
            ok = rho > 0.05
            u = self.fx * np.arctan2(x, z) + self.cx
            v = self.fy * y / np.where(ok, rho, 1.0) + self.cy
            d = np.sqrt(x * x + y * y + z * z)
        col, row = np.floor(u + 0.5).astype(np.int64), np.floor(v + 0.5).astype(np.int64)
        ok &= (col >= 0) & (col < self.w) & (row >= 0) & (row < self.h)
        return np.where(ok, row * self.w + col, 0), d, ok

    def frame_keys(self) -> dict[str, Any]:
        return {"camera_model": self.model, "w": self.w, "h": self.h, "fl_x": self.fx, "fl_y": self.fy,
                "cx": self.cx, "cy": self.cy}


def _pinhole(w: int, h: int, hfov_deg: float) -> Cam:
    f = (w / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return Cam("PINHOLE", w, h, f, f, (w - 1) / 2.0, (h - 1) / 2.0)


def _panorama(w: int, h: int) -> Cam:
    f = w / (2.0 * math.pi)
    return Cam("CYLINDRICAL", w, h, f, f, (w - 1) / 2.0, (h - 1) / 2.0)


def _render(world: World, cam: Cam, c2w: np.ndarray) -> dict[str, np.ndarray]:
    """Dense truth of one view in the street world: rgb uint8, stored depth (z or range), points, instance."""
    d_cam = cam.rays()
    d_w = d_cam @ c2w[:3, :3].T
    hits = world.cast(c2w[:3, 3], d_w)
    ok = np.isfinite(hits.t)
    depth = np.where(ok, hits.t * (d_cam[:, 2] if cam.model == "PINHOLE" else 1.0), 0.0)
    rgb = np.clip(np.round(hits.rgb * 255.0), 0, 255).astype(np.uint8)
    return {"rgb": rgb.reshape(cam.h, cam.w, 3), "depth": depth.reshape(cam.h, cam.w),
            "points": hits.points.reshape(cam.h, cam.w, 3), "instance": hits.instance.reshape(cam.h, cam.w),
            "cls": hits.cls.reshape(cam.h, cam.w)}


def _zbuffer(cam: Cam, pts_cam: np.ndarray) -> np.ndarray:
    """Nearest stored depth per pixel of camera-frame points (0 = no point)."""
    pix, d, ok = cam.project(pts_cam)
    out = np.full(cam.w * cam.h, np.inf)
    np.minimum.at(out, pix[ok], d[ok])
    out[~np.isfinite(out)] = 0.0
    return out.reshape(cam.h, cam.w)


def _lidar(world: World, sensor_c2w: np.ndarray, channels: int, v_fov: tuple[float, float],
           h_res_deg: float, max_range: float = 80.0) -> np.ndarray:
    """World points of one spinning-LiDAR sweep (sensor frame x forward, y left, z up)."""
    el = np.deg2rad(np.linspace(v_fov[0], v_fov[1], channels))[:, None]
    az = np.deg2rad(np.arange(0.0, 360.0, h_res_deg))[None, :]
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) + 0 * az], axis=-1).reshape(-1, 3)
    d_w = d @ sensor_c2w[:3, :3].T
    hits = world.cast(sensor_c2w[:3, 3], d_w, max_t=max_range)
    ok = np.isfinite(hits.t) & (hits.t > 1.0)
    return hits.points[ok]


# --- the writer ------------------------------------------------------------------------------------


@dataclass
class ViewData:
    """One frame to write: intrinsics, camera-to-world in the *dataset* world, RGB and stored depth."""

    name: str
    cam: Cam
    c2w: np.ndarray
    rgb: np.ndarray
    depth: np.ndarray
    extras: dict[str, Any]


def _imwrite(path: Path, ext: str, img: np.ndarray, params: list[int]) -> None:
    ok, buf = cv2.imencode(ext, img, params)
    assert ok, path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def write_depth(path: Path, depth: np.ndarray, precision: str) -> None:
    """Single-channel EXR (half or float32, ZIP), 0 = no data."""
    t = cv2.IMWRITE_EXR_TYPE_HALF if precision == "float16" else cv2.IMWRITE_EXR_TYPE_FLOAT
    _imwrite(path, ".exr", np.ascontiguousarray(depth, dtype=np.float32),
             [cv2.IMWRITE_EXR_TYPE, t, cv2.IMWRITE_EXR_COMPRESSION, cv2.IMWRITE_EXR_COMPRESSION_ZIP])


def read_depth(path: Path) -> np.ndarray:
    """float32 depth of an EXR (via cv2, as MapAnything reads it)."""
    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert d is not None, path
    return (d[..., 0] if d.ndim == 3 else d).astype(np.float32)


def write_scene(root: Path, scene: str, dataset: str, views: list[ViewData], *, scale_type: str = "metric",
                precision: str = "float16", image_ext: str = ".jpg",
                applied: dict[str, Any] | None = None) -> Path:
    """Write one scene folder per the contract (images, depth, scene_meta.json, coverage.json, process log)."""
    sd = root / scene
    sd.mkdir(parents=True, exist_ok=True)
    model = views[0].cam.model
    frames, cov = [], []
    for v in views:
        img = f"images/{v.name}{image_ext}"
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
        _imwrite(sd / img, image_ext, np.ascontiguousarray(v.rgb[..., ::-1]), params)
        write_depth(sd / f"depth/{v.name}.exr", v.depth, precision)
        fr = {"frame_name": v.name, "file_path": img, "image": img, "depth": f"depth/{v.name}.exr",
              "transform_matrix": np.asarray(v.c2w, dtype=np.float64).tolist(), **v.cam.frame_keys(), **v.extras}
        frames.append(fr)
        valid = v.depth[v.depth > 0]
        cov.append({"dataset": dataset, "scene": scene, "frame": v.name, "width": v.cam.w, "height": v.cam.h,
                    "valid_depth_ratio": float(valid.size / v.depth.size),
                    "depth_min": float(valid.min()) if valid.size else None,
                    "depth_p50": float(np.median(valid)) if valid.size else None,
                    "depth_max": float(valid.max()) if valid.size else None})
    meta = {
        "scene_name": scene, "dataset_name": dataset, "version": "0.1", "format_version": "1.0",
        "last_modified": "2024-01-01T00:00:00+00:00", "camera_convention": "opencv", "camera_model": model,
        "shared_intrinsics": False, "scale_type": scale_type, "depth_type": "z" if model == "PINHOLE" else "range",
        "frames": frames,
        "frame_modalities": {"image": {"frame_key": "image", "format": "image"},
                             "depth": {"frame_key": "depth", "format": "depth"}},
        "scene_modalities": {}, "_applied_transforms": applied or {},
        "source": {"writer": "tests/_validation_fixtures.py (independent of SceneWriter)"},
    }
    (sd / "coverage.json").write_text(json.dumps({"scene": scene, "frames": cov}))
    (sd / "scene_meta.json").write_text(json.dumps(meta, indent=1))
    (sd / "_process_log.json").write_text(json.dumps(
        {"conversion": {"state": "finished", "message": "", "date": "2024-01-01T00:00:00+00:00"}}))
    return sd


def write_dataset_meta(root: Path, dataset: str, scenes: list[str]) -> None:
    """``_meta/manifest.json`` and the WAI scene list of split ``train``."""
    (root / "_meta" / "train").mkdir(parents=True, exist_ok=True)
    (root / "_meta" / "manifest.json").write_text(json.dumps({"converter": dataset, "counts": {}}))
    np.save(root / "_meta" / "train" / f"{dataset}_scene_list_train.npy", np.array(scenes))


# --- the kinds ---------------------------------------------------------------------------------------


def _similarity(R: np.ndarray, t: Any, s: float = 1.0) -> np.ndarray:
    S = np.eye(4)
    S[:3, :3], S[:3, 3] = s * R, np.asarray(t, dtype=np.float64)
    return S


def _to_dataset(S: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """A street-world camera-to-world pose in the dataset world ``p_ds = S p_street`` (S a similarity)."""
    s = float(np.cbrt(np.linalg.det(S[:3, :3])))
    T = np.eye(4)
    T[:3, :3] = (S[:3, :3] / s) @ c2w[:3, :3]
    T[:3, 3] = S[:3, :3] @ c2w[:3, 3] + S[:3, 3]
    return T


def _dense_pinhole(world: World) -> tuple[list[ViewData], dict[str, Any]]:
    cam = _pinhole(96, 72, 75.0)
    rng = np.random.default_rng(1)
    views = []
    for i in range(5):
        eye = np.array([-6.0 + 1.5 * i, rng.uniform(-0.6, 0.6), 1.6])
        yaw = math.radians(rng.uniform(-12.0, 12.0))
        T = _look_at(eye, eye + [10 * math.cos(yaw), 10 * math.sin(yaw), -1.0])
        r = _render(world, cam, T)
        views.append(ViewData(f"f{i:02d}", cam, T, r["rgb"], r["depth"], {"timestamp": 0.1 * i}))
    return views, {"dataset": "synthetic", "precision": "float16"}


def _lidar_seq(world: World, n: int) -> tuple[list[ViewData], dict[str, Any]]:
    cam = _pinhole(128, 36, 104.0)  # KITTI-360's field of view (1408x376, f 552) at a small size
    S = _similarity(_rot("z", 0.7), [4512.3, -2210.8, 116.2])  # a UTM-like world far from the origin
    views = []
    for i in range(n):
        x = -8.0 + 0.9 * i
        y = -1.8 + 0.4 * math.sin(0.05 * i)
        yaw = 0.02 * math.cos(0.07 * i)
        eye = np.array([x, y, 1.55])
        T = _look_at(eye, eye + [10 * math.cos(yaw), 10 * math.sin(yaw), -0.3])
        velo = np.eye(4)  # Velodyne (x forward, y left, z up) 0.8 m behind and 0.2 m above the camera
        velo[:3, :3] = _rot("z", yaw)
        velo[:3, 3] = eye + _rot("z", yaw) @ np.array([-0.8, 0.0, 0.2])
        pts = _lidar(world, velo, channels=10, v_fov=(-24.9, 2.0), h_res_deg=3.2)
        pc = (pts - T[:3, 3]) @ T[:3, :3]
        depth = _zbuffer(cam, pc)
        rgb = _render(world, cam, T)["rgb"]
        views.append(ViewData(f"{i:010d}_00", cam, _to_dataset(S, T), rgb, depth, {"camera_id": "00"}))
    return views, {"dataset": "kitti360", "precision": "float16"}


def _pano_agents(world: World) -> tuple[list[ViewData], dict[str, Any]]:
    cam = _panorama(256, 72)
    views = []
    for t in range(3):
        for a, (x0, y, v, head) in enumerate(((-6.0, -1.6, 1.0, 0.0), (8.0, 1.7, -0.9, math.pi))):
            eye = np.array([x0 + v * t, y, 1.9])
            # panorama frame: z = vehicle forward, x right, y down
            fwd = np.array([math.cos(head), math.sin(head), 0.0])
            T = _look_at(eye, eye + fwd)
            pts = _lidar(world, _similarity(_rot("z", head), eye), channels=32, v_fov=(-25.0, 5.0), h_res_deg=1.0)
            depth = _zbuffer(cam, (pts - eye) @ T[:3, :3])
            rgb = _render(world, cam, T)["rgb"]
            views.append(ViewData(f"{t:06d}_{641 + a}", cam, T, rgb, depth, {"timestamp": t, "agent_id": 641 + a}))
    return views, {"dataset": "opv2v", "precision": "float16",
                   "applied": {"world_from_source": np.diag([1.0, -1.0, 1.0, 1.0]).tolist()}}


def _co3d_orbit(world: World) -> tuple[list[ViewData], dict[str, Any]]:
    car = next(b for b in world.boxes if b.cls == "car")
    centre = np.asarray(car.center, dtype=np.float64)
    cam = _pinhole(72, 96, 50.0)
    S_rot = _rot("x", 0.4) @ _rot("z", 1.1)
    S = _similarity(S_rot, -0.37 * S_rot @ centre, 0.37)  # relative scale: street metres x 0.37
    views = []
    for i in range(5):
        a = math.radians(15.0 + 22.0 * i)
        eye = centre + np.array([6.0 * math.cos(a), 6.0 * math.sin(a), 1.4 + 0.2 * i])
        T = _look_at(eye, centre + [0, 0, 0.2])
        r = _render(world, cam, T)
        near = np.linalg.norm(np.nan_to_num(r["points"][..., :2] - centre[:2], nan=1e9), axis=-1) < 3.5
        keep = (r["instance"] == car.instance) | ((r["cls"] != CLASSES["sky"]) & near)
        depth = np.where(keep, r["depth"], 0.0) * 0.37
        views.append(ViewData(f"frame{i + 1:06d}", cam, _to_dataset(S, T), r["rgb"], depth, {"frame_number": i}))
    return views, {"dataset": "co3d", "precision": "float16", "scale_type": "relative"}


def _eth3d_sparse(world: World) -> tuple[list[ViewData], dict[str, Any]]:
    cam = _pinhole(96, 64, 65.0)
    rng = np.random.default_rng(7)
    poses = []
    for i in range(5):
        eye = np.array([-4.0 + 2.0 * i, 1.0 + rng.uniform(-0.5, 0.5), 1.7])
        tgt = np.array([-4.0 + 2.0 * i + (-1) ** i * 3.0, 12.0, 3.0 + rng.uniform(-1, 1)])
        poses.append(_look_at(eye, tgt))
    renders = [_render(world, cam, T) for T in poses]
    # SfM points: surface points sampled from every view, kept where >= 2 views see them unoccluded
    pts = []
    for r in renders:
        ok = np.flatnonzero(r["depth"].ravel() > 0)
        pts.append(r["points"].reshape(-1, 3)[rng.choice(ok, size=min(120, len(ok)), replace=False)])
    P = np.concatenate(pts)
    seen = np.zeros((len(poses), len(P)), dtype=bool)
    for k, (T, r) in enumerate(zip(poses, renders)):
        pix, d, ok = cam.project((P - T[:3, 3]) @ T[:3, :3])
        truth = r["depth"].ravel()[pix]
        seen[k] = ok & (np.abs(d - truth) < 0.01 * truth + 0.02)
    P = P[seen.sum(axis=0) >= 2]
    S = _similarity(_rot("y", 2.1) @ _rot("x", -1.2), [3.0, -7.5, 0.4])  # COLMAP's arbitrary world
    views = []
    for k, (T, r) in enumerate(zip(poses, renders)):
        vis = seen[k][seen.sum(axis=0) >= 2]
        depth = _zbuffer(cam, (P[vis] - T[:3, 3]) @ T[:3, :3])
        views.append(ViewData(f"DSC_{k:04d}", cam, _to_dataset(S, T), r["rgb"], depth, {}))
    return views, {"dataset": "eth3d", "precision": "float32"}


_BUILDERS: dict[str, Callable[[World], tuple[list[ViewData], dict[str, Any]]]] = {
    "dense_pinhole": _dense_pinhole,
    "lidar_seq5": lambda w: _lidar_seq(w, 5),
    "lidar_seq50": lambda w: _lidar_seq(w, 50),
    "pano_agents": _pano_agents,
    "co3d_orbit": _co3d_orbit,
    "eth3d_sparse": _eth3d_sparse,
}


def write_kind(kind: str, root: Path, world: World | None = None) -> Path:
    """Write the clean scene of ``kind`` under ``root`` (a dataset root); returns the scene folder."""
    views, opts = _BUILDERS[kind](world or World.street(0))
    return write_scene(root, kind, opts["dataset"], views, scale_type=opts.get("scale_type", "metric"),
                       precision=opts["precision"], applied=opts.get("applied"))


# --- corruptions -------------------------------------------------------------------------------------

ONE_FRAME_POSE = ("rotation_transposed_one", "world_to_camera_one", "opengl_one")
ALL_FRAMES_POSE = ("world_to_camera_all", "opengl_all")
DEPTH = ("depth_x1.1", "depth_centimetres", "pinhole_range_as_z", "cylindrical_z_as_range")
OTHER = ("poses_swapped", "image_replaced")
CLASSES_ALL = (*ONE_FRAME_POSE, *ALL_FRAMES_POSE, *DEPTH, *OTHER)
OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def _meta(sd: Path) -> dict[str, Any]:
    return json.loads((sd / "scene_meta.json").read_text())


def _save_meta(sd: Path, meta: dict[str, Any]) -> None:
    (sd / "scene_meta.json").write_text(json.dumps(meta, indent=1))


def applies(cls: str, kind: str) -> bool:
    """Whether corruption ``cls`` exists for ``kind`` (the depth-kind swaps are per camera model)."""
    pano = kind == "pano_agents"
    if cls == "pinhole_range_as_z":
        return not pano
    if cls == "cylindrical_z_as_range":
        return pano
    return True


def targets(cls: str, kind: str, names: list[str]) -> list[str]:
    """Frames a corruption touches (what a finding must name); all frames for scene-wide ones."""
    n = len(names)
    one = names[0] if kind.startswith("lidar") else names[n // 2]
    if cls in ONE_FRAME_POSE:
        return [one]
    if cls == "poses_swapped":
        return [names[0], names[1]] if kind == "pano_agents" else [names[1], names[3]]
    if cls == "image_replaced":
        return [names[n // 2]]
    return list(names)


def corrupt(sd: Path, cls: str, kind: str) -> list[str]:
    """Apply corruption ``cls`` to the scene folder ``sd`` in place; returns the frames it touched."""
    meta = _meta(sd)
    frames = meta["frames"]
    names = [f["frame_name"] for f in frames]
    hit = targets(cls, kind, names)
    by = {f["frame_name"]: f for f in frames}

    def pose(name: str) -> np.ndarray:
        return np.array(by[name]["transform_matrix"], dtype=np.float64)

    def set_pose(name: str, T: np.ndarray) -> None:
        by[name]["transform_matrix"] = T.tolist()

    if cls in ("rotation_transposed_one",):
        T = pose(hit[0])
        T[:3, :3] = T[:3, :3].T.copy()
        set_pose(hit[0], T)
    elif cls in ("world_to_camera_one", "world_to_camera_all"):
        for n in hit:
            set_pose(n, np.linalg.inv(pose(n)))
    elif cls in ("opengl_one", "opengl_all"):
        for n in hit:
            set_pose(n, pose(n) @ OPENGL)
    elif cls == "poses_swapped":
        a, b = pose(hit[0]), pose(hit[1])
        set_pose(hit[0], b)
        set_pose(hit[1], a)
    elif cls == "image_replaced":
        src = names[0]
        shutil.copyfile(sd / by[src]["image"], sd / by[hit[0]]["image"])
    else:
        precision = "float32" if kind == "eth3d_sparse" else "float16"
        for fr in frames:
            p = sd / fr["depth"]
            d = read_depth(p).astype(np.float64)
            if cls == "depth_x1.1":
                d = d * 1.1
            elif cls == "depth_centimetres":
                d = d * 100.0
            else:
                v, u = np.mgrid[0:fr["h"], 0:fr["w"]].astype(np.float64)
                xs, ys = (u - fr["cx"]) / fr["fl_x"], (v - fr["cy"]) / fr["fl_y"]
                if cls == "pinhole_range_as_z":  # range written where z belongs
                    d = d * np.sqrt(1.0 + xs * xs + ys * ys)
                else:  # the cylinder's z (distance from its axis, rho) written where range belongs
                    d = d / np.sqrt(1.0 + ys * ys)
            write_depth(p, d, precision)
    _save_meta(sd, meta)
    return hit
