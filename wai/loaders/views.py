"""Per-view geometry and the two output layouts (MapAnything ``views`` and VGGT ``vggt``).

Frames and units: poses are OpenCV camera-to-world 4x4 (``camera_pose``) in the scene's world frame (or the
first view's camera frame with ``relative_to_first``); points in metres (scene units for ``relative`` scenes).
``depthmap`` is the camera model's depth (z for PINHOLE, range for CYLINDRICAL); ``depth_along_ray`` is the
range for both; ``ray_directions_cam`` are unit vectors. ``pts3d_cam = depth_to_points(depth)`` and
``pts3d = R pts3d_cam + t``, so both camera models are exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wai.errors import import_optional
from wai.format.cameras import Camera
from wai.format.conventions import invert_pose

torch = import_optional("torch", "torch")

#: Per-channel mean/std applied to images in [0, 1] (``img_norm`` option). ``imagenet`` is what MapAnything's
#: DINOv2 encoders use (``data_norm_type="dinov2"``); ``dust3r`` maps to [-1, 1].
IMG_NORMS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "dust3r": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


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
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def view_geometry(cam: Camera, depth: np.ndarray, cam_to_world: np.ndarray) -> dict[str, np.ndarray]:
    """Rays, camera/world points and masks of one view (float32 / bool numpy arrays).

    ``depth`` [H, W] is the model's depth (0 = no data, negative = ambiguous); ``cam_to_world`` 4x4 float64.
    """
    d = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64)
    valid = d > 0
    rays = cam.ray_directions(normalize=True)
    pts_cam = cam.depth_to_points(np.where(valid, d, 0.0))
    T = np.asarray(cam_to_world, dtype=np.float64)
    pts = pts_cam @ T[:3, :3].T + T[:3, 3]
    pts[~valid] = 0.0
    rng = np.linalg.norm(pts_cam, axis=-1)
    return {
        "ray_directions_cam": rays.astype(np.float32),
        "pts3d_cam": pts_cam.astype(np.float32),
        "pts3d": pts.astype(np.float32),
        "depth_along_ray": rng.astype(np.float32)[..., None],
        "valid_mask": valid,
        "ambiguous": d < 0,
    }


def to_views(raw: list[dict[str, Any]], relative_to_first: bool, img_norm: str) -> list[dict[str, Any]]:
    """MapAnything-style view dicts (torch tensors) from the loader's raw per-view records."""
    mean, std = IMG_NORMS[img_norm]
    base = invert_pose(raw[0]["pose"]) if relative_to_first else np.eye(4)
    views = []
    for r in raw:
        pose = base @ r["pose"]
        geo = view_geometry(r["camera"], r["depth"], pose)
        img = torch.from_numpy(r["image"]).permute(2, 0, 1).float().div_(255.0)
        img = (img - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        nam = ~geo["ambiguous"]
        if r.get("non_ambiguous") is not None:
            nam &= np.asarray(r["non_ambiguous"], dtype=bool)
        v: dict[str, Any] = {
            "img": img,
            "data_norm_type": img_norm,
            "depthmap": torch.from_numpy(np.maximum(r["depth"], 0.0).astype(np.float32)[..., None]),
            "camera_pose": torch.from_numpy(pose.astype(np.float32)),
            "camera_intrinsics": torch.from_numpy(r["camera"].K.astype(np.float32)),
            "camera_pose_quats": torch.from_numpy(rotation_to_quat_xyzw(pose[:3, :3]).astype(np.float32)),
            "camera_pose_trans": torch.from_numpy(pose[:3, 3].astype(np.float32)),
            "ray_directions_cam": torch.from_numpy(geo["ray_directions_cam"]),
            "pts3d": torch.from_numpy(geo["pts3d"]),
            "pts3d_cam": torch.from_numpy(geo["pts3d_cam"]),
            "depth_along_ray": torch.from_numpy(geo["depth_along_ray"]),
            "valid_mask": torch.from_numpy(geo["valid_mask"]),
            "non_ambiguous_mask": torch.from_numpy(nam),
            "true_shape": torch.tensor(r["depth"].shape, dtype=torch.int32),
            "is_metric_scale": bool(r["is_metric_scale"]),
            "is_synthetic": bool(r["is_synthetic"]),
            "dataset": r["dataset"],
            "label": r["label"],
            "instance": r["instance"],
            "camera_model": r["camera"].model,
            "frame_idx": int(r["frame_idx"]),
            "idx": tuple(r["idx"]),
        }
        if r.get("loss_weights") is not None:
            v["loss_weights"] = torch.from_numpy(r["loss_weights"])
        views.append(v)
    return views


def to_vggt(raw: list[dict[str, Any]], relative_to_first: bool) -> dict[str, Any]:
    """VGGT-style stacked tensors: ``images [S,3,H,W]`` in [0, 1], ``depths [S,H,W]``, ``extrinsics [S,3,4]``
    (world-to-camera, OpenCV), ``intrinsics [S,3,3]``, ``cam_points``/``world_points [S,H,W,3]``,
    ``point_masks [S,H,W]``, ``ray_directions [S,H,W,3]``, plus ``seq_name``, ``ids``, ``camera_model``.
    """
    base = invert_pose(raw[0]["pose"]) if relative_to_first else np.eye(4)
    imgs, depths, extr, intr, cpts, wpts, masks, rays, weights = [], [], [], [], [], [], [], [], []
    for r in raw:
        pose = base @ r["pose"]
        geo = view_geometry(r["camera"], r["depth"], pose)
        imgs.append(r["image"])
        depths.append(np.maximum(r["depth"], 0.0).astype(np.float32))
        extr.append(invert_pose(pose)[:3, :4])
        intr.append(r["camera"].K)
        cpts.append(geo["pts3d_cam"])
        wpts.append(geo["pts3d"])
        masks.append(geo["valid_mask"])
        rays.append(geo["ray_directions_cam"])
        if r.get("loss_weights") is not None:
            weights.append(r["loss_weights"])
    out: dict[str, Any] = {
        "images": torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(255.0),
        "depths": torch.from_numpy(np.stack(depths)),
        "extrinsics": torch.from_numpy(np.stack(extr).astype(np.float32)),
        "intrinsics": torch.from_numpy(np.stack(intr).astype(np.float32)),
        "cam_points": torch.from_numpy(np.stack(cpts)),
        "world_points": torch.from_numpy(np.stack(wpts)),
        "point_masks": torch.from_numpy(np.stack(masks)),
        "ray_directions": torch.from_numpy(np.stack(rays)),
        "ids": torch.tensor([r["frame_idx"] for r in raw], dtype=torch.int64),
        "seq_name": raw[0]["label"],
        "dataset": raw[0]["dataset"],
        "camera_model": raw[0]["camera"].model,
        "is_metric_scale": bool(raw[0]["is_metric_scale"]),
    }
    if weights:
        out["loss_weights"] = torch.from_numpy(np.stack(weights))
    return out


def _collate_field(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, bool):
        return torch.tensor(values, dtype=torch.bool)
    if isinstance(first, int):
        return torch.tensor(values, dtype=torch.int64)
    if isinstance(first, float):
        return torch.tensor(values, dtype=torch.float32)
    return list(values)


def collate_views(batch: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Collate samples of the ``views`` layout: a list of V dicts whose tensors are stacked to ``[B, ...]``.

    Strings and tuples become lists, bools/ints/floats tensors. Every sample must have the same number of
    views and the same resolution (``ViewBatchSampler`` guarantees both).
    """
    from wai.loaders.errors import LoaderConfigError

    if not batch:
        raise LoaderConfigError("collate_views: empty batch")
    n_views = {len(s) for s in batch}
    if len(n_views) != 1:
        raise LoaderConfigError(f"collate_views: samples have different view counts {sorted(n_views)}; "
                                "use ViewBatchSampler so a batch shares one view count")
    out = []
    for v in range(len(batch[0])):
        keys = batch[0][v].keys()
        out.append({k: _collate_field([s[v][k] for s in batch]) for k in keys})
    return out
