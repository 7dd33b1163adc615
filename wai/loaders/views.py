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

Batches: ``ViewBatchWriter`` writes each view straight into per-view ``[B, ...]`` batch tensors (what
``WAIDataset.__getitems__`` uses), so collation copies nothing; ``to_views`` (``ds[i]``) writes into per-view
arrays through the same kernels (``geometry_into``, the normaliser), so both give the same values bit for bit.
"""

from __future__ import annotations

import math
import sys
import threading
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
    """Unit quaternion (x, y, z, w), w >= 0, of a proper 3x3 rotation (float64 [4]).

    Shepperd's method on Python floats: a per-view call, where numpy's per-element indexing cost more than the
    arithmetic."""
    m = np.asarray(R, dtype=np.float64).tolist()
    tr = m[0][0] + m[1][1] + m[2][2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = [(m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s, 0.25 * s]
    else:
        diag = (m[0][0], m[1][1], m[2][2])
        i = diag.index(max(diag))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + m[i][i] - m[j][j] - m[k][k])
        q = [0.0, 0.0, 0.0, (m[k][j] - m[j][k]) / s]
        q[i] = 0.25 * s
        q[j] = (m[j][i] + m[i][j]) / s
        q[k] = (m[k][i] + m[i][k]) / s
    n = math.sqrt(sum(v * v for v in q))
    sign = -1.0 if q[3] < 0 else 1.0
    return np.array([sign * v / n for v in q])


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
        #: ``f0, f1`` broadcast to [H, W] (built on first ``points``) and ``f2``
        self._full: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def points(self, depth: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``[H, W, 3]`` float32 camera-frame points of a cleaned depth map (0 where depth is 0), written into
        ``out`` (C-contiguous float32 ``[H, W, 3]``) when given.

        The products ``depth * f`` go to per-thread scratch planes (no allocation per view) through
        ``cv2.multiply`` against the full-size factor planes (the same IEEE products as numpy's broadcast).
        """
        if self._full is None:
            shape = depth.shape
            full = [np.ascontiguousarray(np.broadcast_to(f, shape)) for f in (self.f0, self.f1)]
            self._full = (*full, self.f2)
        f0, f1, f2 = self._full
        s0, s1, s2 = _scratch_planes(depth.shape)
        planes = [cv2.multiply(depth, f0, dst=s0), cv2.multiply(depth, f1, dst=s1),
                  depth if f2 is None else cv2.multiply(depth, f2, dst=s2)]
        return _cv_into(cv2.merge(planes, dst=out), out)


_SCRATCH = threading.local()


def _scratch_planes(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Three float32 planes of ``shape`` owned by the calling thread (contents undefined; reused per call)."""
    cache = getattr(_SCRATCH, "planes", None)
    if cache is None or cache[0].shape != shape:
        cache = _SCRATCH.planes = [np.empty(shape, dtype=np.float32) for _ in range(3)]
    return cache


def _cv_into(result: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``out`` holding ``result``: OpenCV writes into a matching ``dst`` in place, but silently returns a new
    array when ``dst`` does not match (shape, type, layout); this copies in that case."""
    if out is None or result is out:
        return result
    np.copyto(out, result.reshape(out.shape))
    return out


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


def geometry_into(cam: Camera, depth: np.ndarray, cam_to_world: np.ndarray, depth_out: np.ndarray,
                  pts_cam_out: np.ndarray, pts_out: np.ndarray, range_out: np.ndarray, valid_out: np.ndarray,
                  non_ambiguous_out: np.ndarray | None = None) -> None:
    """Write one view's geometry into preallocated C-contiguous arrays (nothing allocated per view on clean
    depth; the camera points' products go to per-thread scratch planes).

    ``depth`` [H, W] is the camera model's depth in metres (0 = no data, negative = ambiguous, non-finite = no
    data; any layout, cast to float32); ``cam_to_world`` 4x4 (OpenCV, metres). Outputs, all [H, W] or
    [H, W, 3] float32 / bool: ``depth_out`` the cleaned depth (non-finite and negative values set to 0),
    ``pts_cam_out`` camera-frame points (0 where invalid), ``pts_out`` world points (``R pts_cam + t``: the
    camera centre where invalid), ``range_out`` the distance along the unit ray, ``valid_out`` depth > 0 and
    ``non_ambiguous_out`` (optional) the pixels whose source depth was not negative.
    """
    d = depth_out
    np.copyto(d, depth, casting="unsafe")
    lo, hi = d.min(), d.max()  # NaN propagates into the min; +-inf shows in the max / min
    if lo >= 0 and hi < np.inf:
        if non_ambiguous_out is not None:
            non_ambiguous_out.fill(True)
    else:
        finite = np.isfinite(d)
        if not finite.all():
            np.copyto(d, np.float32(0.0), where=~finite)
        ambiguous = d < 0
        if ambiguous.any():
            np.copyto(d, np.float32(0.0), where=ambiguous)
        if non_ambiguous_out is not None:
            np.logical_not(ambiguous, out=non_ambiguous_out)
    np.greater(d, np.float32(0.0), out=valid_out)
    g = ray_grid(cam)
    g.points(d, out=pts_cam_out)
    T = np.asarray(cam_to_world, dtype=np.float64)
    _cv_into(cv2.transform(pts_cam_out, T[:3, :4], dst=pts_out), pts_out)
    if g.norm is None:
        np.copyto(range_out, d)
    else:
        np.multiply(d, g.norm, out=range_out)


def view_geometry(cam: Camera, depth: np.ndarray, cam_to_world: np.ndarray) -> dict[str, np.ndarray]:
    """Rays, camera/world points and masks of one view (float32 / bool numpy arrays, freshly allocated).

    ``depth`` [H, W] is the model's depth in metres (0 = no data, negative = ambiguous, non-finite = no data);
    ``cam_to_world`` 4x4. Returns ``ray_directions_cam`` (unit; the camera's cached read-only array, shared
    between views of the same camera), ``pts3d_cam`` (0 where invalid), ``pts3d`` (world; the camera centre
    where invalid, as MapAnything and VGGT compute them: use ``valid_mask``), ``depth_along_ray`` [H, W, 1]
    (range), ``depth`` (the cleaned depth, >= 0), ``valid_mask`` and ``ambiguous``. The rigid transform runs
    in ``cv2.transform`` (one SIMD pass, no BLAS threads); see ``geometry_into``.
    """
    h, w = depth.shape[:2]
    d = np.empty((h, w), dtype=np.float32)
    pts_cam = np.empty((h, w, 3), dtype=np.float32)
    pts = np.empty((h, w, 3), dtype=np.float32)
    rng = np.empty((h, w, 1), dtype=np.float32)
    valid = np.empty((h, w), dtype=bool)
    nam = np.empty((h, w), dtype=bool)
    geometry_into(cam, depth, cam_to_world, d, pts_cam, pts, rng[..., 0], valid, nam)
    return {
        "ray_directions_cam": ray_grid(cam).unit,
        "pts3d_cam": pts_cam,
        "pts3d": pts,
        "depth_along_ray": rng,
        "depth": d,
        "valid_mask": valid,
        "ambiguous": ~nam,
    }


class _Normalizer:
    """uint8 HWC RGB -> float32 [3, H, W], ``(x / 255 - mean) / std``, one OpenCV pass per channel."""

    def __init__(self, name: str) -> None:
        mean, std = DATA_NORM_TYPES[name]
        self.scale = [1.0 / (255.0 * s) for s in std]
        self.offset = [-m / s for m, s in zip(mean, std)]

    def __call__(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The normalised planes, written into ``out`` (C-contiguous float32 [3, H, W]) when given."""
        if out is None:
            out = np.empty((3, img.shape[0], img.shape[1]), dtype=np.float32)
        for c, plane in enumerate(cv2.split(img)):
            dst = out[c]  # one view object: _cv_into checks identity
            _cv_into(cv2.addWeighted(plane, self.scale[c], plane, 0.0, self.offset[c], dst=dst, dtype=cv2.CV_32F),
                     dst)
        return out


_NORMALIZERS: dict[str, _Normalizer] = {}


def _normalizer(data_norm_type: str) -> _Normalizer:
    n = _NORMALIZERS.get(data_norm_type)
    if n is None:
        n = _NORMALIZERS[data_norm_type] = _Normalizer(data_norm_type)
    return n


def normalize_image(img: np.ndarray, data_norm_type: str, out: np.ndarray | None = None) -> Any:
    """float32 [3, H, W] tensor of an RGB uint8 image normalised per ``DATA_NORM_TYPES[data_norm_type]``
    (written into the numpy array ``out`` when given; the tensor shares its memory)."""
    return torch.from_numpy(_normalizer(data_norm_type)(img, out))


def _bump(times: dict[str, float] | None, key: str, t0: float) -> float:
    import time

    t1 = time.perf_counter()
    if times is not None:
        times[key] = times.get(key, 0.0) + (t1 - t0)
    return t1


#: Keys of a ``views`` record, in order; ``loss_weights`` only with label weights.
VIEW_KEYS = ("img", "data_norm_type", "depthmap", "camera_pose", "camera_intrinsics", "camera_pose_quats",
             "camera_pose_trans", "ray_directions_cam", "pts3d", "pts3d_cam", "depth_along_ray", "valid_mask",
             "non_ambiguous_mask", "true_shape", "is_metric_scale", "is_synthetic", "dataset", "label", "instance",
             "camera_model_id", "frame_idx", "idx", "rng", "loss_weights")


def _pixel_layout(h: int, w: int, weights: bool) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Per-view tensors of the ``views`` layout: key -> (shape, torch dtype) at ``h x w`` pixels."""
    f32 = torch.float32
    out = {"img": ((3, h, w), f32), "depthmap": ((h, w, 1), f32), "camera_pose": ((4, 4), f32),
           "camera_intrinsics": ((3, 3), f32), "camera_pose_quats": ((4,), f32), "camera_pose_trans": ((3,), f32),
           "ray_directions_cam": ((h, w, 3), f32), "pts3d": ((h, w, 3), f32), "pts3d_cam": ((h, w, 3), f32),
           "depth_along_ray": ((h, w, 1), f32), "valid_mask": ((h, w), torch.bool),
           "non_ambiguous_mask": ((h, w), torch.bool), "true_shape": ((2,), torch.int32)}
    if weights:
        out["loss_weights"] = ((h, w), f32)
    return out


def _fill_view(r: dict[str, Any], pose: np.ndarray, norm: _Normalizer, o: dict[str, np.ndarray],
               times: dict[str, float] | None, t: float) -> float:
    """Write view record ``r`` (camera-to-world ``pose``) into the numpy arrays ``o`` (``_pixel_layout`` keys;
    ``ray_directions_cam`` may be absent: the caller shares the camera's cached rays). Returns the clock."""
    cam = r["camera"]
    nam = o["non_ambiguous_mask"]
    geometry_into(cam, r["depth"], pose, o["depthmap"][..., 0], o["pts3d_cam"], o["pts3d"],
                  o["depth_along_ray"][..., 0], o["valid_mask"], nam)
    if r.get("non_ambiguous") is not None:
        np.logical_and(nam, np.asarray(r["non_ambiguous"], dtype=bool), out=nam)
    rays = o.get("ray_directions_cam")
    if rays is not None:
        np.copyto(rays, ray_grid(cam).unit)
    t = _bump(times, "geometry", t)
    norm(r["image"], o["img"])
    o["camera_pose"][...] = pose
    o["camera_intrinsics"][...] = cam.K
    o["camera_pose_quats"][...] = rotation_to_quat_xyzw(pose[:3, :3])
    o["camera_pose_trans"][...] = pose[:3, 3]
    o["true_shape"][...] = o["depthmap"].shape[:2]
    if "loss_weights" in o:
        np.copyto(o["loss_weights"], r["loss_weights"], casting="unsafe")
    return t


def _host_fields(r: dict[str, Any], vi: int, data_norm_type: str) -> dict[str, Any]:
    """The non-tensor entries of a view (strings, bools, ints, the ``idx`` tuple)."""
    return {
        "data_norm_type": data_norm_type,
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


def _poses(raw: list[dict[str, Any]], relative_to_first: bool) -> list[np.ndarray]:
    """Camera-to-world 4x4 of each record, in the first view's camera frame with ``relative_to_first``."""
    base = invert_pose(raw[0]["pose"]) if relative_to_first else np.eye(4)
    return [base @ r["pose"] for r in raw]


def to_views(raw: list[dict[str, Any]], relative_to_first: bool, data_norm_type: str,
             times: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """MapAnything view dicts (torch tensors) from the loader's raw per-view records.

    Keys holding strings or tuples are only those in ``MAPANYTHING_HOST_KEYS``; ``camera_model_id`` is an int
    (``CAMERA_MODEL_IDS``). ``idx`` is ``(sample_idx, resolution_idx, view_index)``. ``ray_directions_cam`` is
    the camera's cached tensor, shared by every view of that camera (read-only use; collation copies it).
    ``times`` (optional) accumulates seconds under ``geometry`` and ``normalisation``.
    """
    import time

    data_norm_type = normalize_data_norm_type(data_norm_type)
    norm = _normalizer(data_norm_type)
    views = []
    t = time.perf_counter()
    for vi, (r, pose) in enumerate(zip(raw, _poses(raw, relative_to_first))):
        h, w = r["depth"].shape[:2]
        layout = _pixel_layout(h, w, r.get("loss_weights") is not None)
        del layout["ray_directions_cam"]
        tens = {k: _host_empty(shape, dt) for k, (shape, dt) in layout.items()}
        t = _fill_view(r, pose, norm, {k: v.numpy() for k, v in tens.items()}, times, t)
        tens["ray_directions_cam"] = ray_grid(r["camera"]).unit_tensor
        host = _host_fields(r, vi, data_norm_type)
        views.append({k: tens[k] if k in tens else host[k] for k in VIEW_KEYS if k in tens or k in host})
        t = _bump(times, "normalisation", t)
    return views


class ViewBatch(list):
    """The samples of one batch of the ``views`` layout, as ``WAIDataset.__getitems__`` returns them.

    A list of B samples (each a list of V view dicts), so anything that collates a list of samples (torch's
    ``default_collate``) works on it unchanged; their tensors are slices of per-view batch tensors, and
    ``collated`` holds those batch tensors in ``collate_views``' layout (V dicts of ``[B, ...]``), which
    ``collate_views`` returns as they are instead of copying every sample again.
    """

    collated: list[dict[str, Any]] | None = None


#: ``madvise`` advice: fault a range in, writable, in one call (Linux >= 5.14).
_MADV_POPULATE_WRITE = 23
#: ``libc.madvise`` once looked up; False where unavailable (then the advice is skipped).
_MADVISE: Any = None
#: advices the kernel refused once (EINVAL on an older kernel): not tried again
_REFUSED: set[int] = set()


def _madvise(start: int, end: int, advice: int) -> bool:
    """``madvise(start, end - start, advice)`` on page-aligned bounds; best effort, False when not done."""
    global _MADVISE
    if _MADVISE is None:
        _MADVISE = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                fn = ctypes.CDLL(None, use_errno=True).madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _MADVISE = fn
            except (OSError, AttributeError):
                _MADVISE = False
    if not _MADVISE or advice in _REFUSED or end <= start:
        return False
    if _MADVISE(start, end - start, advice) != 0:
        import ctypes
        import errno

        if ctypes.get_errno() == errno.EINVAL:  # advice unknown to this kernel
            _REFUSED.add(advice)
        return False
    return True


def _populate(ptr: int, nbytes: int) -> bool:
    """Fault in ``nbytes`` of fresh memory at ``ptr`` before it is written (best effort; False if not done).

    A fresh shared-memory batch otherwise takes one page fault per 4 KiB on first write. Measured on the
    development VM for 14.6 MB: populate 3.9 ms then write 0.6-1.1 ms, against 4.9-5.0 ms of faulting writes
    (an earlier session measured 0.9 against 1.5 ms per 2.4 MB): a small gain that depends on the kernel.
    """
    if nbytes < (1 << 16):
        return False
    return _madvise(ptr & ~4095, (ptr + nbytes + 4095) & ~4095, _MADV_POPULATE_WRITE)


#: numpy dtype of each torch dtype the layouts allocate.
_NUMPY_DTYPES = {torch.float32: np.float32, torch.bool: np.bool_, torch.int32: np.int32}


def _host_empty(shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised CPU tensor allocated by numpy (``to_views``' per-view outputs, as the per-view code
    before it allocated them). Under glibc's default 256 MB trim threshold, ``torch.empty`` here was measured to
    make ``ds[i]`` + ``collate_views`` fault its memory in again every batch (~3,000 faults, +7 ms per view);
    ``wai.loaders.dataset.tune_worker_malloc`` raises the threshold in workers, which removes that dependence.
    """
    return torch.from_numpy(np.empty(shape, dtype=_NUMPY_DTYPES[dtype]))


def _batch_empty(shape: tuple[int, ...], dtype: Any, shared: bool) -> Any:
    """An uninitialised tensor; in shared memory with ``shared`` (what ``default_collate`` allocates in a
    DataLoader worker, so sending the batch to the main process copies nothing), populated up front;
    otherwise from ``torch.empty`` (what ``default_collate`` allocates in the main process)."""
    if not shared:
        return torch.empty(shape, dtype=dtype)
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(nbytes)
    _populate(storage.data_ptr(), nbytes)
    return torch.empty((0,), dtype=dtype).set_(storage, 0, shape)


def _signature(raw: list[dict[str, Any]]) -> tuple[tuple[tuple[int, ...], bool], ...]:
    """What samples must share to be written into the same batch tensors: per view, its size and whether it
    has loss weights (the view count is the tuple's length)."""
    return tuple((tuple(r["depth"].shape[:2]), r.get("loss_weights") is not None) for r in raw)


class ViewBatchWriter:
    """Writes the samples of one batch, one at a time, straight into per-view ``[B, ...]`` batch tensors.

    Allocated from the first sample (``first``: its raw records), which fixes the view count, the view sizes
    and the keys; ``fits(raw)`` tells whether another sample shares them. ``add(raw)`` fills the next slot
    (geometry and normalisation as ``to_views``: same values), ``finish()`` returns the ``ViewBatch``.
    ``shared``: allocate in shared memory (a DataLoader worker whose ``collate_fn`` is ``collate_views``).
    ``times`` accumulates ``geometry``, ``normalisation`` and ``collate`` (allocation, host fields) seconds.
    """

    def __init__(self, size: int, first: list[dict[str, Any]], relative_to_first: bool, data_norm_type: str,
                 times: dict[str, float] | None = None, shared: bool = False) -> None:
        import time

        t = time.perf_counter()
        self.size, self.relative_to_first, self.times = int(size), bool(relative_to_first), times
        self.data_norm_type = normalize_data_norm_type(data_norm_type)
        self.norm = _normalizer(self.data_norm_type)
        self.signature = _signature(first)
        self.tensors: list[dict[str, Any]] = []
        self.arrays: list[dict[str, np.ndarray]] = []
        for (h, w), weights in self.signature:
            tens = {k: _batch_empty((self.size, *shape), dt, shared)
                    for k, (shape, dt) in _pixel_layout(h, w, weights).items()}
            self.tensors.append(tens)
            self.arrays.append({k: v.numpy() for k, v in tens.items()})
        self.hosts: list[list[dict[str, Any]]] = []
        #: (view index, slot, camera) whose unit rays are still to be copied (``_write_rays``)
        self._rays: list[tuple[int, int, Camera]] = []
        _bump(times, "collate", t)

    def fits(self, raw: list[dict[str, Any]]) -> bool:
        """True when ``raw`` has the first sample's view count, view sizes and keys and a slot is left."""
        return len(self.hosts) < self.size and bool(raw) and _signature(raw) == self.signature

    def add(self, raw: list[dict[str, Any]]) -> None:
        """Write the next sample (``fits(raw)`` must hold)."""
        import time

        b = len(self.hosts)
        hosts = []
        t = time.perf_counter()
        for vi, (r, pose) in enumerate(zip(raw, _poses(raw, self.relative_to_first))):
            o = {k: a[b] for k, a in self.arrays[vi].items() if k != "ray_directions_cam"}
            t = _fill_view(r, pose, self.norm, o, self.times, t)
            self._rays.append((vi, b, r["camera"]))
            hosts.append(_host_fields(r, vi, self.data_norm_type))
            t = _bump(self.times, "normalisation", t)
        self.hosts.append(hosts)

    def _write_rays(self) -> None:
        """Copy the unit rays of the written slots, camera by camera, back to back (one camera's cached rays
        are read from the CPU cache after the first copy instead of from memory between other outputs)."""
        import time

        if not self._rays:
            return
        t = time.perf_counter()
        by_cam: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
        grids: dict[tuple[Any, ...], RayGrid] = {}
        for vi, b, cam in self._rays:
            key = (cam.model, cam.w, cam.h, cam.fl_x, cam.fl_y, cam.cx, cam.cy)
            by_cam.setdefault(key, []).append((vi, b))
            if key not in grids:
                grids[key] = ray_grid(cam)
        for key, slots in by_cam.items():
            unit = grids[key].unit
            for vi, b in slots:
                np.copyto(self.arrays[vi]["ray_directions_cam"][b], unit)
        self._rays = []
        _bump(self.times, "geometry", t)

    def samples(self) -> list[list[dict[str, Any]]]:
        """The samples written so far, as ``to_views`` returns them (tensors are slices of the batch)."""
        self._write_rays()
        n = len(self.hosts)
        rows = [{k: v[:n].unbind(0) for k, v in tens.items()} for tens in self.tensors]
        return [[{k: per[k][b] if k in per else host[k] for k in VIEW_KEYS if k in per or k in host}
                 for per, host in zip(rows, hosts)] for b, hosts in enumerate(self.hosts)]

    def finish(self) -> ViewBatch:
        """The ``ViewBatch`` of the written samples (all ``size`` slots must be filled)."""
        import time

        if len(self.hosts) != self.size:
            raise ValueError(f"ViewBatchWriter: {len(self.hosts)} of {self.size} samples written")
        self._write_rays()
        t = time.perf_counter()
        out = ViewBatch(self.samples())
        collated = []
        for vi, tens in enumerate(self.tensors):
            host = torch.utils.data.default_collate([hosts[vi] for hosts in self.hosts])
            collated.append({k: tens[k] if k in tens else host[k] for k in VIEW_KEYS if k in tens or k in host})
        out.collated = collated
        _bump(self.times, "collate", t)
        return out


def to_views_batch(raws: list[list[dict[str, Any]]], relative_to_first: bool, data_norm_type: str,
                   times: dict[str, float] | None = None, shared: bool = False) -> ViewBatch | None:
    """A ``ViewBatch`` of the samples ``raws`` (raw records of each sample), written straight into per-view
    batch tensors (``ViewBatchWriter``); ``None`` when the samples cannot share them (different view counts,
    view sizes or keys: build each with ``to_views``). Values equal ``to_views`` of each sample, collated.
    """
    if not raws or not raws[0] or any(_signature(raw) != _signature(raws[0]) for raw in raws[1:]):
        return None
    writer = ViewBatchWriter(len(raws), raws[0], relative_to_first, data_norm_type, times, shared)
    for raw in raws:
        writer.add(raw)
    return writer.finish()


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
    and the same resolution (``ViewBatchSampler`` guarantees both). A ``ViewBatch`` (``WAIDataset.__getitems__``)
    is already collated: its batch tensors are returned as they are, not copied.
    """
    from wai.loaders.errors import LoaderConfigError

    if isinstance(batch, ViewBatch) and batch.collated is not None:
        return batch.collated
    if not batch:
        raise LoaderConfigError("collate_views: empty batch")
    n_views = {len(s) for s in batch}
    if len(n_views) != 1:
        raise LoaderConfigError(f"collate_views: samples have different view counts {sorted(n_views)}; "
                                "use ViewBatchSampler so a batch shares one view count")
    return torch.utils.data.default_collate(batch)
