"""Per-view geometry and the two output layouts (MapAnything ``views`` and VGGT ``vggt``).

Frames and units: poses are OpenCV camera-to-world 4x4 (``camera_pose``) in the scene's world frame (or the
first view's camera frame with ``relative_to_first``); points in metres (scene units for ``relative`` scenes).
``depthmap`` is the camera model's depth (z for PINHOLE, range for CYLINDRICAL); ``depth_along_ray`` is the
range for both; ``ray_directions_cam`` are unit vectors. ``pts3d_cam = depth * ray`` and
``pts3d = R pts3d_cam + t``, so both camera models are exact.

Speed: a camera's rays are separable, ``ray[h, w] = a[h] * (col[w] + row[h])`` with 3-vectors ``col`` and
``row`` (PINHOLE: ``col = (x', 0, 1)``, ``row = (0, y', 0)``, ``a = 1``; CYLINDRICAL: ``col = (sin az, 0, cos az)``,
``row = (0, t, 0)``, ``a = 1/sqrt(1 + t^2)``), so camera points are three products of the depth with cached
factor planes; unit rays and the range per unit depth are cached per camera (a few entries per process); the
rigid transform to world points is one ``cv2.transform`` pass. float32 throughout, no ``numpy.linalg.norm``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from wai.errors import import_optional
from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import CYLINDRICAL, PINHOLE, invert_pose

torch = import_optional("torch", "torch")

#: Image normalisations by UniCeption name (``data_norm_type``; MapAnything's encoders assert the name):
#: per-channel (mean, std) applied to images in [0, 1]. ``dinov2`` is what MapAnything's default encoder uses.
DATA_NORM_TYPES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "croco": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "patch_embedder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "roma": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "dust3r": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "identity": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "radio": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "cosmos": ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)),
}
#: Names accepted before UniCeption's were adopted, and the UniCeption name they now produce.
DATA_NORM_ALIASES = {"imagenet": "dinov2", "none": "identity"}
#: Kept for callers of the old ``img_norm`` option.
IMG_NORMS = {**DATA_NORM_TYPES, **{k: DATA_NORM_TYPES[v] for k, v in DATA_NORM_ALIASES.items()}}
#: ``camera_model_id`` of the views (MapAnything moves every non-string key to the device, so no strings).
CAMERA_MODEL_IDS = {PINHOLE: 0, CYLINDRICAL: 1}
#: Keys MapAnything's training step does not move to the device (``loss_of_one_batch_multi_view``): the only
#: keys of the ``views`` layout allowed to hold strings or tuples.
MAPANYTHING_HOST_KEYS = frozenset({"depthmap", "dataset", "label", "instance", "idx", "true_shape", "rng",
                                   "data_norm_type"})


def normalize_data_norm_type(name: str) -> str:
    """The UniCeption name for ``name`` (aliases ``imagenet`` -> ``dinov2``, ``none`` -> ``identity``)."""
    from wai.loaders.errors import LoaderConfigError

    name = DATA_NORM_ALIASES.get(name, name)
    if name not in DATA_NORM_TYPES:
        raise LoaderConfigError(f"data_norm_type={name!r}; expected a UniCeption name, one of "
                                f"{sorted(DATA_NORM_TYPES)} (MapAnything's default encoder uses 'dinov2')")
    return name


def rotation_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a proper 3x3 rotation."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    q /= np.sqrt(float(q @ q))
    return -q if q[3] < 0 else q


class RayGrid:
    """Separable rays of one camera (see the module docstring); arrays are float32 and read-only.

    ``pts_cam = (d * f0, d * f1, d * f2)`` with the broadcastable factor planes ``f0, f1, f2`` (``f2`` is None
    for PINHOLE, where the third coordinate is the depth itself); ``unit`` [H, W, 3] are the unit rays and
    ``norm`` [H, W] the range per unit depth (None for CYLINDRICAL, whose depth is the range).
    """

    def __init__(self, cam: Camera) -> None:
        u = np.arange(cam.w, dtype=np.float64)
        v = np.arange(cam.h, dtype=np.float64)
        if cam.model == PINHOLE:
            x = (u - cam.cx) / cam.fl_x
            y = (v - cam.cy) / cam.fl_y
            f0, f1, f2 = x[None, :], y[:, None], None
            norm = np.sqrt(1.0 + x[None, :] ** 2 + y[:, None] ** 2)
            unit = np.dstack([np.broadcast_to(f0, norm.shape), np.broadcast_to(f1, norm.shape),
                              np.ones(norm.shape)]) / norm[..., None]
            self.norm: np.ndarray | None = norm.astype(np.float32)
        else:
            az = (u - cam.cx) / cam.fl_x
            t = (v - cam.cy) / cam.fl_y
            a = 1.0 / np.sqrt(1.0 + t * t)
            f0, f1, f2 = a[:, None] * np.sin(az)[None, :], (a * t)[:, None], a[:, None] * np.cos(az)[None, :]
            unit = np.dstack([f0, np.broadcast_to(f1, f0.shape), f2])
            self.norm = None
        self.f0 = np.ascontiguousarray(f0, dtype=np.float32)
        self.f1 = np.ascontiguousarray(f1, dtype=np.float32)
        self.f2 = None if f2 is None else np.ascontiguousarray(f2, dtype=np.float32)
        self.unit = np.ascontiguousarray(unit, dtype=np.float32)
        for arr in (self.f0, self.f1, self.f2, self.norm):
            if arr is not None:
                arr.flags.writeable = False
        #: the unit rays as one tensor shared by every view of this camera (collation copies it; read-only use)
        self.unit_tensor = torch.from_numpy(self.unit)
        self.unit.flags.writeable = False

    def points(self, depth: np.ndarray) -> np.ndarray:
        """``[H, W, 3]`` float32 camera-frame points of a cleaned depth map (0 where depth is 0)."""
        z = depth if self.f2 is None else depth * self.f2
        return cv2.merge([depth * self.f0, depth * self.f1, z])


_GRIDS: OrderedDict[tuple[Any, ...], RayGrid] = OrderedDict()
_GRID_CACHE_SIZE = 8


def ray_grid(cam: Camera) -> RayGrid:
    """The cached ``RayGrid`` of ``cam`` (least-recently-used cache of a few cameras per process)."""
    key = (cam.model, cam.w, cam.h, cam.fl_x, cam.fl_y, cam.cx, cam.cy)
    g = _GRIDS.get(key)
    if g is None:
        g = RayGrid(cam)
        _GRIDS[key] = g
        if len(_GRIDS) > _GRID_CACHE_SIZE:
            _GRIDS.popitem(last=False)
    else:
        _GRIDS.move_to_end(key)
    return g


def view_geometry(cam: Camera, depth: np.ndarray, cam_to_world: np.ndarray) -> dict[str, np.ndarray]:
    """Rays, camera/world points and masks of one view (float32 / bool numpy arrays).

    ``depth`` [H, W] is the model's depth in metres (0 = no data, negative = ambiguous, non-finite = no data);
    ``cam_to_world`` 4x4. Returns ``ray_directions_cam`` (unit; the camera's cached read-only array, shared
    between views of the same camera), ``pts3d_cam`` (0 where invalid), ``pts3d`` (world; the camera centre
    where invalid, as MapAnything and VGGT compute them: use ``valid_mask``), ``depth_along_ray`` [H, W, 1]
    (range), ``depth`` (the cleaned depth, >= 0), ``valid_mask`` and ``ambiguous``. The rigid transform runs
    in ``cv2.transform`` (one SIMD pass, no BLAS threads).
    """
    d = np.ascontiguousarray(depth, dtype=np.float32)
    if not np.isfinite(d).all():
        d = np.where(np.isfinite(d), d, np.float32(0.0))
    ambiguous = d < 0
    if ambiguous.any():
        d = np.where(ambiguous, np.float32(0.0), d)
    valid = d > 0
    g = ray_grid(cam)
    pts_cam = g.points(d)
    T = np.asarray(cam_to_world, dtype=np.float64)
    pts = cv2.transform(pts_cam, T[:3, :4])
    rng = d if g.norm is None else d * g.norm
    return {
        "ray_directions_cam": g.unit,
        "pts3d_cam": pts_cam,
        "pts3d": pts,
        "depth_along_ray": rng[..., None],
        "depth": d,
        "valid_mask": valid,
        "ambiguous": ambiguous,
    }


class _Normalizer:
    """uint8 HWC RGB -> float32 [3, H, W] tensor, ``(x / 255 - mean) / std``, one OpenCV pass per channel."""

    def __init__(self, name: str) -> None:
        mean, std = DATA_NORM_TYPES[name]
        self.scale = [1.0 / (255.0 * s) for s in std]
        self.offset = [-m / s for m, s in zip(mean, std)]

    def __call__(self, img: np.ndarray) -> Any:
        out = np.empty((3, img.shape[0], img.shape[1]), dtype=np.float32)
        for c, plane in enumerate(cv2.split(img)):
            cv2.addWeighted(plane, self.scale[c], plane, 0.0, self.offset[c], dst=out[c], dtype=cv2.CV_32F)
        return torch.from_numpy(out)


_NORMALIZERS: dict[str, _Normalizer] = {}


def normalize_image(img: np.ndarray, data_norm_type: str) -> Any:
    """float32 [3, H, W] tensor of an RGB uint8 image normalised per ``DATA_NORM_TYPES[data_norm_type]``."""
    n = _NORMALIZERS.get(data_norm_type)
    if n is None:
        n = _NORMALIZERS[data_norm_type] = _Normalizer(data_norm_type)
    return n(img)


def _bump(times: dict[str, float] | None, key: str, t0: float) -> float:
    import time

    t1 = time.perf_counter()
    if times is not None:
        times[key] = times.get(key, 0.0) + (t1 - t0)
    return t1


def to_views(raw: list[dict[str, Any]], relative_to_first: bool, data_norm_type: str,
             times: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """MapAnything view dicts (torch tensors) from the loader's raw per-view records.

    Keys holding strings or tuples are only those in ``MAPANYTHING_HOST_KEYS``; ``camera_model_id`` is an int
    (``CAMERA_MODEL_IDS``). ``idx`` is ``(sample_idx, resolution_idx, view_index)``. ``times`` (optional)
    accumulates seconds under ``geometry`` and ``normalisation``.
    """
    import time

    data_norm_type = normalize_data_norm_type(data_norm_type)
    base = invert_pose(raw[0]["pose"]) if relative_to_first else np.eye(4)
    views = []
    t = time.perf_counter()
    for vi, r in enumerate(raw):
        pose = base @ r["pose"]
        geo = view_geometry(r["camera"], r["depth"], pose)
        t = _bump(times, "geometry", t)
        img = normalize_image(r["image"], data_norm_type)
        nam = ~geo["ambiguous"]
        if r.get("non_ambiguous") is not None:
            nam &= np.asarray(r["non_ambiguous"], dtype=bool)
        d = geo["depth"]
        v: dict[str, Any] = {
            "img": img,
            "data_norm_type": data_norm_type,
            "depthmap": torch.from_numpy(d[..., None]),
            "camera_pose": torch.from_numpy(pose.astype(np.float32)),
            "camera_intrinsics": torch.from_numpy(r["camera"].K.astype(np.float32)),
            "camera_pose_quats": torch.from_numpy(rotation_to_quat_xyzw(pose[:3, :3]).astype(np.float32)),
            "camera_pose_trans": torch.from_numpy(pose[:3, 3].astype(np.float32)),
            "ray_directions_cam": ray_grid(r["camera"]).unit_tensor,
            "pts3d": torch.from_numpy(geo["pts3d"]),
            "pts3d_cam": torch.from_numpy(geo["pts3d_cam"]),
            "depth_along_ray": torch.from_numpy(geo["depth_along_ray"]),
            "valid_mask": torch.from_numpy(geo["valid_mask"]),
            "non_ambiguous_mask": torch.from_numpy(nam),
            "true_shape": torch.tensor(d.shape, dtype=torch.int32),
            "is_metric_scale": bool(r["is_metric_scale"]),
            "is_synthetic": bool(r["is_synthetic"]),
            "dataset": r["dataset"],
            "label": r["label"],
            "instance": r["instance"],
            "camera_model_id": CAMERA_MODEL_IDS[r["camera"].model],
            "frame_idx": int(r["frame_idx"]),
            "idx": (int(r["idx"][0]), int(r["idx"][1]), vi),
            "rng": int(r.get("rng", 0)),
        }
        if r.get("loss_weights") is not None:
            v["loss_weights"] = torch.from_numpy(r["loss_weights"])
        views.append(v)
        t = _bump(times, "normalisation", t)
    return views


def vggt_arrays(raw: list[dict[str, Any]], relative_to_first: bool,
                times: dict[str, float] | None = None) -> dict[str, Any]:
    """VGGT's per-sequence batch before tensor conversion (what a VGGT ``BaseDataset.get_data`` returns):
    lists of per-frame numpy arrays ``images`` (uint8 [H, W, 3]), ``depths`` (z, [H, W], 0 = invalid),
    ``extrinsics`` ([3, 4] world-to-camera, OpenCV), ``intrinsics`` ([3, 3]), ``cam_points``, ``world_points``
    ([H, W, 3]), ``point_masks`` ([H, W] bool), plus ``seq_name`` (the scene name), ``dataset``, ``ids``
    (int64 frame indices) and ``frame_num``.
    """
    import time

    base = invert_pose(raw[0]["pose"]) if relative_to_first else np.eye(4)
    out: dict[str, Any] = {k: [] for k in ("images", "depths", "extrinsics", "intrinsics", "cam_points",
                                           "world_points", "point_masks", "ray_directions", "loss_weights")}
    t = time.perf_counter()
    for r in raw:
        pose = base @ r["pose"]
        geo = view_geometry(r["camera"], r["depth"], pose)
        out["images"].append(r["image"])
        out["depths"].append(geo["depth"])
        out["extrinsics"].append(invert_pose(pose)[:3, :4].astype(np.float32))
        out["intrinsics"].append(r["camera"].K.astype(np.float32))
        out["cam_points"].append(geo["pts3d_cam"])
        out["world_points"].append(geo["pts3d"])
        out["point_masks"].append(geo["valid_mask"])
        out["ray_directions"].append(geo["ray_directions_cam"])
        if r.get("loss_weights") is not None:
            out["loss_weights"].append(r["loss_weights"])
        t = _bump(times, "geometry", t)
    if not out["loss_weights"]:
        del out["loss_weights"]
    out["seq_name"] = raw[0]["label"]
    out["dataset"] = raw[0]["dataset"]
    out["ids"] = np.array([r["frame_idx"] for r in raw], dtype=np.int64)
    out["frame_num"] = len(raw)
    return out


def to_vggt(raw: list[dict[str, Any]], relative_to_first: bool,
            times: dict[str, float] | None = None) -> dict[str, Any]:
    """VGGT-style stacked tensors: ``images [S,3,H,W]`` in [0, 1], ``depths [S,H,W]`` (z), ``extrinsics [S,3,4]``
    (world-to-camera, OpenCV), ``intrinsics [S,3,3]``, ``cam_points``/``world_points [S,H,W,3]``,
    ``point_masks [S,H,W]``, ``ray_directions [S,H,W,3]``, ``ids`` (int64), ``seq_name``, ``dataset`` (str), plus
    ``is_metric_scale`` (bool) and ``camera_model_id`` (int).
    """
    import time

    a = vggt_arrays(raw, relative_to_first, times)
    t = time.perf_counter()
    out = stack_vggt(a)
    out["is_metric_scale"] = bool(raw[0]["is_metric_scale"])
    out["camera_model_id"] = CAMERA_MODEL_IDS[raw[0]["camera"].model]
    _bump(times, "normalisation", t)
    return out


def stack_vggt(a: dict[str, Any]) -> dict[str, Any]:
    """Tensors of a ``vggt_arrays`` dict, as VGGT's ``ComposedDataset`` builds them (images divided by 255)."""
    out: dict[str, Any] = {
        "seq_name": a["seq_name"],
        "dataset": a.get("dataset", ""),
        "ids": torch.from_numpy(np.asarray(a["ids"], dtype=np.int64)),
        "images": torch.from_numpy(np.stack(a["images"])).permute(0, 3, 1, 2).float().div_(255.0),
    }
    for k in ("depths", "extrinsics", "intrinsics", "cam_points", "world_points", "ray_directions",
              "loss_weights"):
        if k in a:
            out[k] = torch.from_numpy(np.stack(a[k]).astype(np.float32, copy=False))
    out["point_masks"] = torch.from_numpy(np.stack(a["point_masks"]))
    return out


def collate_views(batch: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Collate samples of the ``views`` layout: a list of V dicts whose tensors are stacked to ``[B, ...]``.

    Same result as torch's ``default_collate`` (what MapAnything's DataLoader uses): strings become lists,
    bools/ints tensors, ``idx`` a list of three int64 tensors. Every sample must have the same number of views
    and the same resolution (``ViewBatchSampler`` guarantees both).
    """
    from wai.loaders.errors import LoaderConfigError

    if not batch:
        raise LoaderConfigError("collate_views: empty batch")
    n_views = {len(s) for s in batch}
    if len(n_views) != 1:
        raise LoaderConfigError(f"collate_views: samples have different view counts {sorted(n_views)}; "
                                "use ViewBatchSampler so a batch shares one view count")
    return torch.utils.data.default_collate(batch)
