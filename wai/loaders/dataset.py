"""``WAIDataset``: a multi-view ``torch.utils.data.Dataset`` over one or several converted dataset roots.

Sample index ``k`` (or MapAnything's tuple ``(k, aspect_ratio_idx, num_views_idx)``) picks a root by the mixing
weights, a scene of that root's scene list (``<root>/_meta/<split>/<dataset>_scene_list_<split>.npy``), then
frames by the sampling strategy, loads them, crops/resizes them to the resolution with exact intrinsics and
returns the ``views`` (MapAnything) or ``vggt`` layout (``wai.loaders.views``). Everything random comes from
``numpy.random.default_rng([seed, epoch, k, resolution_idx, num_views])``, so a sample is reproducible.

Data safety: scene-list entries, scene folders, ``scene_meta.json``, the covisibility file and every frame file
are resolved with ``wai.format.paths.resolve_inside`` against the dataset root (``PathEscapeError`` names the
file and the entry); ``w``/``h`` are checked as integers in range and against the decoded image before anything
is sized from them.

Per-worker caching: parsed ``scene_meta.json`` (``load_scene``, keyed by path and mtime), the covisibility
memmap, the timestamp index of each scene and the per-camera ray grids. Caches are dropped when the dataset is
pickled to a worker.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wai.errors import PathEscapeError, SceneNotFoundError, SchemaError, import_optional
from wai.format import codecs
from wai.format.cameras import Camera
from wai.format.conventions import CYLINDRICAL, PINHOLE
from wai.format.frametable import FrameTable, open_scene, rebuild_hint
from wai.format.paths import resolve_inside
from wai.format.scene import SCENE_META, Scene, frame_file, load_scene
from wai.loaders.errors import LoaderConfigError
from wai.loaders.transforms import CROPS, TRANSFORMS, color_augment, crop_resize, pinhole_from_panorama
from wai.loaders.views import collate_views, normalize_data_norm_type, to_vggt, to_views, to_views_batch

torch = import_optional("torch", "torch")

log = logging.getLogger("wai.loaders")

#: Datasets rendered by a simulator (``is_synthetic`` in the views).
SYNTHETIC_DATASETS = frozenset({"synthetic", "synthetic_street", "vkitti2", "opv2v"})
SAMPLINGS = ("covisibility", "sequential", "cooperative", "random")
OUTPUTS = ("views", "vggt")
#: How CYLINDRICAL frames are delivered: as panoramas (rays/points exact; ``views`` layout only), refused, or
#: as ``pinhole_views`` pinhole views cut from each panorama (exact K, z-depth and pose).
CYLINDRICAL_MODES = ("native", "refuse", "pinhole")
GROUP_KEYS = ("camera_model", "dataset")
#: ViT patch size of VGGT: every ``vggt``-layout resolution must be a multiple of it.
VGGT_PATCH_SIZE = 14
#: Largest image side accepted from ``scene_meta.json`` before decoding (checked again against the pixels).
MAX_IMAGE_SIDE = 1 << 16

#: Named resolution lists (W, H). ``518_many_ar`` is MapAnything's training set of aspect ratios.
#: ``panorama`` keeps the full 360 degrees of a 2048x576 (3.56:1) panorama: every entry is at least 3.6:1, so
#: the centre crop removes no azimuth and 1.4-4 % of the rows (a 4:3 crop keeps only ~135 of 360 degrees).
#: All entries are multiples of 14 (VGGT/DINOv2 patches).
RESOLUTION_PRESETS: dict[str, list[tuple[int, int]]] = {
    "518_many_ar": [(518, 518), (518, 392), (518, 336), (518, 294), (518, 252), (518, 168), (392, 518), (336, 518),
                    (294, 518), (252, 518)],
    "panorama": [(1008, 280), (756, 210), (518, 140)],
}

_VEHICLES = ("car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle", "vehicle")
#: Per-class loss weights by preset name (class names as in the scene's ``label_tables``; others weigh 1.0).
LABEL_WEIGHT_PRESETS: dict[str, dict[str, float]] = {
    "kitti360": {"building": 2.0, "window": 2.0, "road": 0.7, "sky": 0.2, **{v: 0.5 for v in _VEHICLES}},
}
#: decoded with ``codecs.imdecode`` (the stored pixel grid, whatever an EXIF orientation tag says)
_IMREAD_FLAGS = {"image": codecs.cv2.IMREAD_COLOR_RGB, "depth": codecs.cv2.IMREAD_UNCHANGED}
_CAMERA_MODEL_RE = re.compile(rb'"camera_model"\s*:\s*"([A-Za-z_]+)"')


def _is_seq(x: Any) -> bool:
    """A list/tuple or another sequence (e.g. OmegaConf's ListConfig from a hydra config), not a string."""
    return isinstance(x, Sequence) and not isinstance(x, (str, bytes))


def _as_pair(r: Any, what: str) -> tuple[int, int]:
    if not (_is_seq(r) and len(r) == 2 and all(isinstance(x, (int, np.integer)) for x in r)):
        raise LoaderConfigError(f"{what} must be (W, H) in pixels, got {r!r}")
    if r[0] <= 0 or r[1] <= 0:
        raise LoaderConfigError(f"{what} must be positive, got {r!r}")
    return int(r[0]), int(r[1])


def parse_resolutions(resolution: Any) -> list[tuple[int, int]]:
    """A list of (W, H) from a pair, a list of pairs or a preset name (``RESOLUTION_PRESETS``)."""
    if isinstance(resolution, str):
        if resolution not in RESOLUTION_PRESETS:
            raise LoaderConfigError(f"resolution={resolution!r}: unknown preset; expected (W, H), a list of them "
                                    f"or one of {sorted(RESOLUTION_PRESETS)}")
        return list(RESOLUTION_PRESETS[resolution])
    if _is_seq(resolution) and len(resolution) == 2 and all(isinstance(x, (int, np.integer)) for x in resolution):
        return [_as_pair(resolution, "resolution")]
    out = [_as_pair(r, "resolution entry") for r in resolution]
    if not out:
        raise LoaderConfigError("resolution list is empty")
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _parse_roots(roots: Any) -> list[tuple[Path, float | None]]:
    items = [roots] if isinstance(roots, (str, Path)) else list(roots)
    if not items:
        raise LoaderConfigError("roots is empty; give a dataset root, a list of roots or (root, weight) pairs")
    out = []
    for it in items:
        if _is_seq(it):
            if len(it) != 2:
                raise LoaderConfigError(f"root entry {it!r}: expected (path, weight), e.g. ('/data/kitti360_wai', 0.5)")
            path, weight = it
            if _is_number(path) and isinstance(weight, (str, Path)):
                raise LoaderConfigError(f"root entry {tuple(it)!r} is (weight, path); write it as (path, weight): "
                                        f"({str(weight)!r}, {path!r})")
            if not isinstance(path, (str, Path)):
                raise LoaderConfigError(f"root entry {tuple(it)!r}: the first element must be a dataset root path")
            if not _is_number(weight):
                raise LoaderConfigError(f"root entry {tuple(it)!r}: the mixing weight must be a number, got "
                                        f"{weight!r}; write (path, weight)")
            if not float(weight) > 0:
                raise LoaderConfigError(f"root {path}: mixing weight must be > 0, got {weight!r}")
            out.append((Path(path), float(weight)))
        elif isinstance(it, (str, Path)):
            out.append((Path(it), None))
        else:
            raise LoaderConfigError(f"root entry {it!r}: expected a path or a (path, weight) pair")
    return out


def _allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` samples proportionally to ``weights`` (largest remainder, deterministic)."""
    w = np.asarray(weights, dtype=np.float64)
    raw = total * w / w.sum()
    n = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - n), kind="stable")[: total - int(n.sum())]:
        n[i] += 1
    return [int(x) for x in n]


def _splits_under(meta: Path) -> list[str]:
    if not meta.is_dir():
        return []
    return sorted(d.name for d in meta.iterdir() if d.is_dir() and any(d.glob("*_scene_list_*.npy")))


#: Where ``WAIDataset`` reads per-frame metadata (``metadata=``); see ``wai.format.frametable.open_scene``.
METADATA_MODES = ("auto", "tables", "json", "reparse")


def frame_camera(scene: Scene, i: int) -> Camera:
    """The camera of frame ``i``, with ``w``/``h`` checked as integers in [1, 65536] and finite intrinsics.

    Raises ``SchemaError`` naming ``scene_meta.json`` and the key; nothing is allocated from ``w``/``h`` here.
    """
    if isinstance(scene, FrameTable):  # typed columns: only the range checks are left
        cam = scene.camera(i)
        if not (1 <= cam.w <= MAX_IMAGE_SIDE and 1 <= cam.h <= MAX_IMAGE_SIDE):
            raise SchemaError(f"{scene.path / SCENE_META} [frames[{i}]]: w x h = {cam.w} x {cam.h} is not an image "
                              f"size in pixels (1..{MAX_IMAGE_SIDE}); fix the frame's w/h")
        if not (all(math.isfinite(x) for x in (cam.fl_x, cam.fl_y, cam.cx, cam.cy)) and cam.fl_x > 0 and cam.fl_y > 0):
            raise SchemaError(f"{scene.path / SCENE_META} [frames[{i}]]: intrinsics must be finite with focal "
                              "lengths > 0")
        return cam
    fr = scene.frames[i]
    where = f"{scene.path / SCENE_META} [frames[{i}]"
    if not isinstance(fr, dict):
        raise SchemaError(f"{where}]: expected an object")
    for key in ("w", "h"):
        val = fr.get(key)
        if isinstance(val, bool) or not isinstance(val, int) or not 1 <= val <= MAX_IMAGE_SIDE:
            raise SchemaError(f"{where}.{key}]: {val!r} is not an image size in pixels (an int in "
                              f"1..{MAX_IMAGE_SIDE}); fix the frame's w/h (they must match the decoded image)")
    for key in ("fl_x", "fl_y", "cx", "cy"):
        val = fr.get(key)
        if not _is_number(val) or not math.isfinite(float(val)):
            raise SchemaError(f"{where}.{key}]: {val!r} is not a finite number")
    if not (float(fr["fl_x"]) > 0 and float(fr["fl_y"]) > 0):
        raise SchemaError(f"{where}]: focal lengths must be > 0, got fl_x={fr['fl_x']!r}, fl_y={fr['fl_y']!r}")
    return Camera.from_frame(fr, scene.meta.get("camera_model", PINHOLE))


def frame_pose(scene: Scene, i: int) -> np.ndarray:
    """4x4 camera-to-world (float64) of frame ``i``; ``SchemaError`` unless finite with a 4x4 shape."""
    try:
        T = scene.pose(i) if isinstance(scene, FrameTable) else np.asarray(
            scene.frames[i]["transform_matrix"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise SchemaError(f"{scene.path / SCENE_META} [frames[{i}].transform_matrix]: not a 4x4 matrix ({e})") from e
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise SchemaError(f"{scene.path / SCENE_META} [frames[{i}].transform_matrix]: expected a finite 4x4 matrix")
    return T


#: glibc's trim threshold in loader processes (the largest ``mallopt`` accepts, ~2 GiB): see ``tune_worker_malloc``.
LOADER_TRIM_THRESHOLD = (1 << 31) - 1
_TRIM_SET: bool | None = None


def tune_worker_malloc() -> bool:
    """What a DataLoader worker of ``WAIDataset(malloc_tuning=True)`` does to glibc: ``keep_freed_memory``, and a
    trim threshold above a batch's footprint (``LOADER_TRIM_THRESHOLD``). True when both are in effect.

    A batch frees ~11.6 MB per view at once (24 views: ~280 MB of batch tensors, ~500 MB on the per-sample
    path), more than ``wai.run.allocator``'s 256 MB trim threshold: glibc then returned it to the kernel after
    every batch and the next batch faulted it in again, 4 KiB at a time (measured: ~1,400-2,900 faults and
    +2-7 ms per view, depending on how allocations happened to fall). The worker's heap now stays at the size
    it reaches every batch anyway.
    """
    global _TRIM_SET
    from wai.run.allocator import M_TRIM_THRESHOLD, keep_freed_memory

    if not keep_freed_memory():
        return False
    if _TRIM_SET is None:
        import ctypes
        import ctypes.util

        try:
            mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            _TRIM_SET = bool(mallopt(M_TRIM_THRESHOLD, LOADER_TRIM_THRESHOLD))
        except (OSError, AttributeError):
            _TRIM_SET = False
    return _TRIM_SET


#: True in a process forked from the one that imported this module (DataLoader workers under "fork").
_FORKED = False


def _mark_forked() -> None:
    global _FORKED
    _FORKED = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked)


class WAIDataset(torch.utils.data.Dataset):
    """Multi-view samples from converted dataset roots (MapAnything ``views`` or VGGT ``vggt`` layout).

    Args:
        roots: a root, a list of roots, or ``(root, weight)`` pairs. Weights are mixing proportions; without
            weights each root contributes in proportion to its number of scenes.
        split: scene-list split (``train``, ``val``, ...).
        num_views: an int, a ``(min, max)`` range (inclusive) or a list of allowed view counts.
        resolution: output ``(W, H)`` in pixels, a list of them (the index's ``resolution_idx`` picks one) or a
            preset name of ``RESOLUTION_PRESETS`` (``518_many_ar``, ``panorama``).
        sampling: ``covisibility`` (random walk over the thresholded covisibility graph, WAI §4.3), ``sequential``
            (windows of frames ``stride`` apart in stored order), ``cooperative`` (all agents sharing the frame
            extra ``timestamp``, padded from the nearest timestamps) or ``random``.
        output: ``views`` (list of MapAnything view dicts) or ``vggt`` (VGGT's stacked tensors; resolutions must
            be multiples of ``patch_size`` = 14, crop defaults to ``principal_point``, CYLINDRICAL is refused
            unless ``cylindrical='pinhole'``).
        seed: base seed of every random choice.

    Options (keyword): ``covisibility_thres`` (0.25), ``stride`` (1, int or (min, max)), ``samples_per_epoch``
    (default: the total number of scenes), ``relative_to_first`` (False), ``data_norm_type`` (UniCeption name,
    default ``dinov2``), ``crop`` (``center`` | ``principal_point``), ``aug_crop`` (MapAnything's: the resize
    target grows by up to that many pixels, random per view, before the centre crop), ``cylindrical``
    (``native`` | ``refuse`` | ``pinhole``), ``pinhole_views`` (4 per panorama), ``pinhole_hfov_deg``
    (default ``360 / pinhole_views``), ``patch_size``, ``depth_modality`` (``depth``), ``non_ambiguous_modality``,
    ``label_modality`` (``semantic``), ``label_weights``, ``max_depth``, ``metadata_dir`` (default
    ``<root>/_meta``), ``metadata`` (``auto``: each scene's memory-mapped frame table ``frames.arrow`` when
    fresh, else its ``scene_meta.json``; ``tables``: the tables only, a missing or stale one is an error naming
    ``wai-convert frame-tables``; ``json``; ``reparse``: MapAnything's parse-per-sample), ``cache_metadata``
    (True; False means ``metadata="reparse"``), ``max_retries`` (0: errors propagate), ``worker_threads``
    (OpenCV threads in DataLoader workers, 1), ``malloc_tuning`` (True: DataLoader workers keep freed
    buffers and batches, ``tune_worker_malloc``; saves the page faults of ~12 MB of outputs per view).

    MapAnything's dataset keywords are accepted too, so one of its config lines can point here unchanged:
    ``ROOT`` (= roots), ``dataset_metadata_dir`` (= metadata_dir), ``variable_num_views`` (``num_views=N`` becomes
    2..N), ``principal_point_centered`` (= ``crop='principal_point'``), ``transform`` (``imgnorm``,
    ``colorjitter``, ``colorjitter+grayscale+gaublur``: photometric augmentation per view),
    ``max_num_retries`` (= max_retries), ``overfit_num_sets`` (first N scenes of each root). ``img_norm`` is
    the old name of ``data_norm_type``.
    """

    def __init__(
        self,
        roots: str | Path | Sequence[Any] | None = None,
        split: str = "train",
        num_views: int | Sequence[int] = 4,
        resolution: Any = (518, 392),
        sampling: str = "covisibility",
        output: str = "views",
        seed: int | None = 0,
        *,
        covisibility_thres: float = 0.25,
        stride: int | tuple[int, int] = 1,
        samples_per_epoch: int | None = None,
        relative_to_first: bool = False,
        data_norm_type: str | None = None,
        crop: str | None = None,
        aug_crop: int = 0,
        cylindrical: str | None = None,
        pinhole_views: int = 4,
        pinhole_hfov_deg: float | None = None,
        patch_size: int | None = None,
        depth_modality: str = "depth",
        non_ambiguous_modality: str | None = None,
        label_modality: str = "semantic",
        label_weights: str | dict[str, Any] | None = None,
        max_depth: float | None = None,
        metadata_dir: str | Path | None = None,
        cache_metadata: bool = True,
        metadata: str = "auto",
        max_retries: int = 0,
        worker_threads: int | None = 1,
        malloc_tuning: bool = True,
        img_norm: str | None = None,
        ROOT: str | Path | None = None,  # noqa: N803 - MapAnything's keyword
        dataset_metadata_dir: str | Path | None = None,
        variable_num_views: bool = False,
        principal_point_centered: bool | None = None,
        transform: str = "imgnorm",
        max_num_retries: int | None = None,
        overfit_num_sets: int | None = None,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise LoaderConfigError(f"sampling={sampling!r}; expected one of {SAMPLINGS}")
        if output not in OUTPUTS:
            raise LoaderConfigError(f"output={output!r}; expected one of {OUTPUTS}")
        if roots is None:
            roots = ROOT
        elif ROOT is not None:
            raise LoaderConfigError("give the dataset root(s) once: roots or ROOT (MapAnything's name), not both")
        if roots is None:
            raise LoaderConfigError("no dataset root: pass roots=... (or ROOT=... as in MapAnything's configs)")
        if transform not in TRANSFORMS:
            raise LoaderConfigError(f"transform={transform!r}; expected one of {sorted(TRANSFORMS)} "
                                    "(MapAnything's names)")
        self.transform = transform
        if img_norm is not None and data_norm_type is not None:
            raise LoaderConfigError("give data_norm_type only (img_norm is its old name)")
        self.data_norm_type = normalize_data_norm_type(data_norm_type or img_norm or "dinov2")
        self.split, self.sampling, self.output, self.seed = split, sampling, output, int(seed or 0)
        self.num_views_options = self._parse_num_views(num_views, variable_num_views)
        self.resolutions = parse_resolutions(resolution)
        if principal_point_centered is not None and crop is not None:
            raise LoaderConfigError("give crop or principal_point_centered (MapAnything's name), not both")
        if principal_point_centered is not None:
            crop = "principal_point" if principal_point_centered else "center"
        self.crop = crop or ("principal_point" if output == "vggt" else "center")
        if self.crop not in CROPS:
            raise LoaderConfigError(f"crop={self.crop!r}; expected one of {CROPS}")
        self.aug_crop = int(aug_crop)
        if self.aug_crop < 0 or (self.aug_crop and self.crop != "center"):
            raise LoaderConfigError(f"aug_crop={aug_crop!r}: expected an int >= 0, and only with crop='center'")
        self.cylindrical = cylindrical or ("refuse" if output == "vggt" else "native")
        if self.cylindrical not in CYLINDRICAL_MODES:
            raise LoaderConfigError(f"cylindrical={self.cylindrical!r}; expected one of {CYLINDRICAL_MODES}")
        if output == "vggt" and self.cylindrical == "native":
            raise LoaderConfigError("cylindrical='native' with output='vggt': VGGT reads every view as a pinhole "
                                    "camera with z-depth; use cylindrical='pinhole' (pinhole views cut from each "
                                    "panorama) or output='views'")
        self.pinhole_views = int(pinhole_views)
        if self.pinhole_views < 1:
            raise LoaderConfigError(f"pinhole_views={pinhole_views!r}: expected an int >= 1")
        self.pinhole_hfov_deg = float(pinhole_hfov_deg) if pinhole_hfov_deg is not None else min(
            120.0, 360.0 / self.pinhole_views)
        self.patch_size = patch_size if patch_size is not None else (VGGT_PATCH_SIZE if output == "vggt" else None)
        if self.patch_size is not None:
            bad = [r for r in self.resolutions if r[0] % self.patch_size or r[1] % self.patch_size]
            if bad:
                fix = [(max(1, round(w / self.patch_size)) * self.patch_size,
                        max(1, round(h / self.patch_size)) * self.patch_size) for w, h in bad]
                raise LoaderConfigError(f"resolution(s) {bad} are not multiples of the patch size {self.patch_size} "
                                        f"(output={output!r}); use e.g. {fix}")
        if isinstance(stride, (tuple, list)):
            self.stride = (int(stride[0]), int(stride[1]))
        else:
            self.stride = (int(stride), int(stride))
        if self.stride[0] < 1 or self.stride[1] < self.stride[0]:
            raise LoaderConfigError(f"stride={stride!r}: expected an int >= 1 or a (min, max) range")
        self.covisibility_thres = float(covisibility_thres)
        self.relative_to_first = bool(relative_to_first)
        self.depth_modality = depth_modality
        self.non_ambiguous_modality = non_ambiguous_modality
        self.label_modality = label_modality
        self.label_weights = label_weights
        self.max_depth = max_depth
        self.cache_metadata = bool(cache_metadata)
        if metadata not in METADATA_MODES:
            raise LoaderConfigError(f"metadata={metadata!r}; expected one of {METADATA_MODES}")
        self.metadata = metadata
        self._warned_no_table = False
        if max_num_retries is not None and max_retries:
            raise LoaderConfigError("give max_retries or max_num_retries (MapAnything's name), not both")
        self.max_retries = int(max_num_retries if max_num_retries is not None else max_retries)
        self.worker_threads = worker_threads
        if worker_threads is not None:
            # Set here, in the process that will fork the DataLoader workers: a forked child that changes
            # OpenCV's thread count while the parent's OpenCV thread pool exists deadlocks or crashes (the
            # inherited pool waits for threads that were not forked), so forked workers never change it and
            # inherit this count instead (tests/test_loader_fork.py).
            codecs.cv2.setNumThreads(int(worker_threads))
        self.malloc_tuning = bool(malloc_tuning)
        self.epoch = 0
        #: Set to a dict to accumulate seconds per stage (metadata, sampling, decode, resize, geometry,
        #: normalisation); ``None`` (default) disables the timers.
        self.profile_stages: dict[str, float] | None = None

        metadata_dir = metadata_dir if metadata_dir is not None else dataset_metadata_dir
        parsed = _parse_roots(roots)
        self.roots: list[Path] = []
        self.scenes: list[list[str]] = []
        self.scene_datasets: list[list[str]] = []
        for root, _ in parsed:
            names, dsets = self._scene_list(root, split, metadata_dir)
            if overfit_num_sets is not None:  # MapAnything's: train on the first N scenes only
                names, dsets = names[: int(overfit_num_sets)], dsets[: int(overfit_num_sets)]
            self.roots.append(root)
            self.scenes.append(names)
            self.scene_datasets.append(dsets)
        self._weights = [w if w is not None else float(len(s)) for (_, w), s in zip(parsed, self.scenes)]
        total = int(samples_per_epoch) if samples_per_epoch is not None else sum(len(s) for s in self.scenes)
        self._set_total(total, samples_per_epoch)
        self._covis: dict[str, tuple[int, np.ndarray]] = {}
        self._groups: dict[str, tuple[int, dict[float, list[int]]]] = {}
        self._scene_dirs: dict[tuple[int, int], Path] = {}
        self._threads_set = False

    def _set_total(self, total: int, given: Any = None) -> None:
        if total <= 0:
            raise LoaderConfigError(f"samples_per_epoch must be >= 1, got {given!r}")
        self.root_sizes = _allocate(total, self._weights)
        self._offsets = np.cumsum([0] + self.root_sizes)

    # --- configuration -----------------------------------------------------------------
    @staticmethod
    def _parse_num_views(num_views: Any, variable: bool = False) -> list[int]:
        if isinstance(num_views, (int, np.integer)):
            opts = list(range(2, int(num_views) + 1)) if variable and num_views > 2 else [int(num_views)]
        elif isinstance(num_views, tuple) and len(num_views) == 2:
            opts = list(range(int(num_views[0]), int(num_views[1]) + 1))
        else:
            opts = sorted({int(v) for v in num_views})
        if not opts or min(opts) < 1:
            raise LoaderConfigError(f"num_views={num_views!r}: expected an int >= 1, a (min, max) range or a list")
        return opts

    @staticmethod
    def _scene_list(root: Path, split: str, metadata_dir: str | Path | None) -> tuple[list[str], list[str]]:
        meta = Path(metadata_dir) if metadata_dir is not None else root / "_meta"
        pattern = meta / split / f"<dataset>_scene_list_{split}.npy"
        files = sorted((meta / split).glob(f"*_scene_list_{split}.npy")) if (meta / split).is_dir() else []
        if not files:
            have = _splits_under(meta)
            hint = (f"splits that exist there: {have}; pass split=<one of them>" if have else
                    f"{meta} holds no scene lists (wai-convert writes them at the end of a run)")
            raise SceneNotFoundError(f"no scene list for split {split!r} of root {root}: expected {pattern}; {hint}")
        names: list[str] = []
        dsets: list[str] = []
        for f in files:
            try:
                entries = np.load(f, allow_pickle=False).tolist()
            except ValueError as e:
                raise SchemaError(f"{f}: not a numpy array of scene names ({e})") from e
            dataset = f.name[: -len(f"_scene_list_{split}.npy")]
            for j, s in enumerate(entries if isinstance(entries, list) else [entries]):
                if not isinstance(s, str):
                    raise SchemaError(f"{f} [{j}]: scene name {s!r} is not a string")
                # refuses absolute paths, '..', and symlinked scene folders that leave the root
                resolve_inside(root, s, source=f, entry=f"entry {j}", what="scene name")
                names.append(s)
                dsets.append(dataset)
        if not names:
            raise SceneNotFoundError(f"scene list(s) {[str(f) for f in files]} are empty")
        return names, dsets

    def set_epoch(self, epoch: int) -> None:
        """Vary the views drawn for each sample index between epochs (deterministically)."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_covis"], state["_groups"] = {}, {}  # memmaps and indexes are rebuilt per worker
        state["_threads_set"] = False
        return state

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def resized(self, n: int) -> WAIDataset:
        """A copy with ``n`` samples per epoch (same roots, weights and options)."""
        out = copy.copy(self)
        out._set_total(int(n), n)
        return out

    def __rmatmul__(self, n: int) -> WAIDataset:
        """``N @ ds`` (MapAnything's config syntax): ``N`` samples per epoch."""
        if not isinstance(n, (int, np.integer)):
            return NotImplemented
        return self.resized(int(n))

    def __rmul__(self, k: int) -> WAIDataset:
        """``k * ds``: ``k`` times the samples per epoch."""
        if not isinstance(k, (int, np.integer)):
            return NotImplemented
        return self.resized(int(k) * len(self))

    # --- scene access ------------------------------------------------------------------
    def _root_and_scene(self, sample_idx: int) -> tuple[int, int]:
        if not 0 <= sample_idx < len(self):
            raise IndexError(f"sample index {sample_idx} out of range [0, {len(self)})")
        r = int(np.searchsorted(self._offsets, sample_idx, side="right") - 1)
        return r, (sample_idx - int(self._offsets[r])) % len(self.scenes[r])

    def locate(self, sample_idx: int) -> tuple[int, Path]:
        """(root index, scene directory) of a sample index; the scene folder is checked to lie in the root."""
        r, k = self._root_and_scene(sample_idx)
        hit = self._scene_dirs.get((r, k))
        if hit is None:
            root, name = self.roots[r], self.scenes[r][k]
            resolve_inside(root, f"{name}/{SCENE_META}", source=f"scene list of {root}", entry=name,
                           what="scene metadata path")
            hit = self._scene_dirs[(r, k)] = root / name
        return r, hit

    def _scene(self, scene_dir: Path) -> Scene:
        """The scene's frames: its memory-mapped frame table (``metadata="tables"``/``"auto"``), parsed JSON
        (``"json"``) or JSON parsed again for every sample (``"reparse"``, or ``cache_metadata=False``)."""
        if not (scene_dir / SCENE_META).is_file():
            raise SceneNotFoundError(f"no scene at {scene_dir}: {scene_dir / SCENE_META} is missing")
        mode = self.metadata if self.cache_metadata else "reparse"
        scene = open_scene(scene_dir, mode)
        if mode == "auto" and not isinstance(scene, FrameTable) and not self._warned_no_table:
            self._warned_no_table = True
            log.warning("%s has no fresh frame table (frames.arrow): reading scene_meta.json instead, which costs "
                        "every DataLoader worker memory; build the tables with: %s", scene_dir,
                        rebuild_hint(scene_dir))
        return scene

    def _covis_path(self, scene: Scene) -> Path | None:
        entry = scene.meta.get("scene_modalities", {}).get("pairwise_covisibility", {})
        rel = None
        if isinstance(entry, dict):
            rel = next((v for k, v in entry.items() if k != "format" and isinstance(v, str)), None)
        root = scene.path.parent
        if rel is not None:
            p = resolve_inside(root, f"{scene.path.name}/{rel}", source=scene.path / SCENE_META,
                               entry="scene_modalities.pairwise_covisibility", what="covisibility path")
            if p.is_file():
                return p
        d = scene.path / "covisibility" / "v0"
        for f in sorted(d.glob("pairwise_covisibility--*.npy")) if d.is_dir() else []:
            return resolve_inside(root, f"{scene.path.name}/covisibility/v0/{f.name}", source=d,
                                  what="covisibility file")
        return None

    def _covisibility(self, scene: Scene) -> np.ndarray:
        key = str(scene.path)
        mtime = (scene.path / SCENE_META).stat().st_mtime_ns
        hit = self._covis.get(key) if self.cache_metadata else None
        if hit is not None and hit[0] == mtime:
            return hit[1]
        path = self._covis_path(scene)
        if path is None:
            raise SceneNotFoundError(f"scene {scene.path} has no covisibility matrix "
                                     f"(covisibility/v0/pairwise_covisibility--NxN.npy); run "
                                     f"`wai-convert covisibility {scene.path.parent}` or use sampling='sequential'")
        m = np.load(path, mmap_mode="r")
        n = len(scene.frames)
        if m.shape != (n, n):
            raise SchemaError(f"{path}: covisibility shape {m.shape} != ({n}, {n}) frames; recompute it")
        if self.cache_metadata:
            self._covis[key] = (mtime, m)
        return m

    def _timestamp_groups(self, scene: Scene) -> dict[float, list[int]]:
        key = str(scene.path)
        mtime = (scene.path / SCENE_META).stat().st_mtime_ns
        hit = self._groups.get(key) if self.cache_metadata else None
        if hit is not None and hit[0] == mtime:
            return hit[1]
        groups: dict[float, list[int]] = {}
        for i, fr in enumerate(scene.frames):
            if "timestamp" not in fr:
                raise SchemaError(f"{scene.path / SCENE_META}: frame {fr.get('frame_name')!r} has no `timestamp`; "
                                  "sampling='cooperative' needs frames of all agents sharing a timestamp")
            groups.setdefault(float(fr["timestamp"]), []).append(i)
        if self.cache_metadata:
            self._groups[key] = (mtime, groups)
        return groups

    # --- batch grouping ----------------------------------------------------------------
    def scene_camera_model(self, r: int, k: int) -> str:
        """Default camera model of scene ``k`` of root ``r`` (read from the head of its ``scene_meta.json``)."""
        root, name = self.roots[r], self.scenes[r][k]
        resolve_inside(root, f"{name}/{SCENE_META}", source=f"scene list of {root}", entry=name,
                       what="scene metadata path")
        scene_dir = root / name
        with open(scene_dir / SCENE_META, "rb") as fh:
            head = fh.read(1 << 16)
        m = _CAMERA_MODEL_RE.search(head.split(b'"frames"', 1)[0])
        if m is not None:
            return m.group(1).decode()
        return str(load_scene(scene_dir).meta.get("camera_model", PINHOLE))

    def sample_groups(self, group_by: str | Sequence[str]) -> np.ndarray:
        """int64 group id of every sample index for ``group_by`` (``camera_model``, ``dataset`` or both)."""
        keys = [group_by] if isinstance(group_by, str) else list(group_by)
        bad = [k for k in keys if k not in GROUP_KEYS]
        if bad or not keys:
            raise LoaderConfigError(f"group_by={group_by!r}; expected one or more of {GROUP_KEYS}")
        labels: dict[tuple[int, int], tuple[str, ...]] = {}
        out = np.empty(len(self), dtype=np.int64)
        ids: dict[tuple[str, ...], int] = {}
        for s in range(len(self)):
            r, k = self._root_and_scene(s)
            lab = labels.get((r, k))
            if lab is None:
                parts = []
                for key in keys:
                    parts.append(self.scene_datasets[r][k] if key == "dataset" else self.scene_camera_model(r, k))
                lab = labels[(r, k)] = tuple(parts)
            out[s] = ids.setdefault(lab, len(ids))
        return out

    def make_sampler(self, batch_size: int | None = None, shuffle: bool = True, world_size: int = 1, rank: int = 0,
                     drop_last: bool = True, max_num_of_images_per_gpu: int | None = None,
                     use_dynamic_sampler: bool = True, *, group_by: str | Sequence[str] | None = None) -> Any:
        """MapAnything's ``dataset.make_sampler(...)``: our rank-aware ``ViewBatchSampler``.

        ``use_dynamic_sampler=True`` (training): batches of ``max(1, max_num_of_images_per_gpu // num_views)``
        tuple indices, for ``DataLoader(batch_sampler=...)``. ``False`` (its many-aspect-ratio test loader):
        single tuple indices in runs of ``batch_size`` sharing a resolution and a view count, for
        ``DataLoader(sampler=..., batch_size=batch_size)``. Indices are ``(sample, aspect_ratio_idx,
        num_views_idx)``.
        """
        from wai.loaders.sampler import FlatBatchSampler, ViewBatchSampler

        if use_dynamic_sampler:
            if max_num_of_images_per_gpu is None:
                raise LoaderConfigError("make_sampler(use_dynamic_sampler=True) needs max_num_of_images_per_gpu")
            return ViewBatchSampler(self, int(max_num_of_images_per_gpu), rank=rank, world_size=world_size,
                                    shuffle=shuffle, seed=self.seed, drop_last=drop_last, group_by=group_by)
        if batch_size is None:
            raise LoaderConfigError("make_sampler(use_dynamic_sampler=False) needs batch_size")
        return FlatBatchSampler(ViewBatchSampler(self, 1, rank=rank, world_size=world_size, shuffle=shuffle,
                                                 seed=self.seed, drop_last=drop_last, batch_size=int(batch_size),
                                                 group_by=group_by))

    # --- view selection ----------------------------------------------------------------
    def _select(self, scene: Scene, k: int, rng: np.random.Generator) -> list[int]:
        n = len(scene.frames)
        if n == 0:
            raise SchemaError(f"{scene.path / SCENE_META}: scene has no frames")
        if self.sampling == "random":
            return [int(i) for i in rng.choice(n, size=k, replace=n < k)]
        if self.sampling == "sequential":
            return self._sequential(n, k, rng)
        if self.sampling == "cooperative":
            return self._cooperative(scene, k, rng)
        return random_walk(self._covisibility(scene), k, self.covisibility_thres, rng)

    def _sequential(self, n: int, k: int, rng: np.random.Generator) -> list[int]:
        if n < k:
            return list(range(n)) + [int(i) for i in rng.choice(n, size=k - n)]
        stride = int(rng.integers(self.stride[0], self.stride[1] + 1))
        if k > 1:
            stride = max(1, min(stride, (n - 1) // (k - 1)))
        start = int(rng.integers(0, n - (k - 1) * stride))
        return [start + i * stride for i in range(k)]

    def _cooperative(self, scene: Scene, k: int, rng: np.random.Generator) -> list[int]:
        groups = self._timestamp_groups(scene)
        stamps = np.array(sorted(groups))
        t = stamps[int(rng.integers(len(stamps)))]
        members = list(groups[float(t)])
        main = members.pop(int(rng.integers(len(members))))
        chosen = [main] + [members[i] for i in rng.permutation(len(members))]
        for t2 in stamps[np.argsort(np.abs(stamps - t), kind="stable")][1:]:  # pad from the nearest timestamps
            if len(chosen) >= k:
                break
            chosen.extend(groups[float(t2)])
        if len(chosen) < k:
            chosen.extend(int(i) for i in rng.choice(chosen, size=k - len(chosen)))
        return chosen[:k]

    # --- loading -----------------------------------------------------------------------
    def _weights_table(self, dataset: str) -> dict[str, float] | None:
        lw = self.label_weights
        if lw is None:
            return None
        if isinstance(lw, str):
            lw = LABEL_WEIGHT_PRESETS.get(lw)
            if lw is None:
                raise LoaderConfigError(f"label_weights preset {self.label_weights!r}; "
                                        f"expected one of {sorted(LABEL_WEIGHT_PRESETS)}")
            return lw
        if all(isinstance(v, (int, float)) for v in lw.values()):
            return {str(k): float(v) for k, v in lw.items()}
        per = lw.get(dataset)
        if per is None:
            return {}
        if isinstance(per, str):
            if per not in LABEL_WEIGHT_PRESETS:
                raise LoaderConfigError(f"label_weights[{dataset!r}] preset {per!r}; "
                                        f"expected one of {sorted(LABEL_WEIGHT_PRESETS)}")
            return LABEL_WEIGHT_PRESETS[per]
        return {str(k): float(v) for k, v in per.items()}

    def _weight_lut(self, scene: Scene) -> np.ndarray | None:
        """Lookup table id -> weight for the scene's label modality (None: no label map, uniform weights)."""
        table = self._weights_table(str(scene.meta.get("dataset_name", "")))
        if table is None:
            return None
        spec = scene.meta.get("frame_modalities", {}).get(self.label_modality)
        if not table or spec is None:
            return np.ones(1, dtype=np.float32)
        names = scene.meta.get("label_tables", {}).get(spec.get("labels", ""), {})
        low = {k.lower(): v for k, v in table.items()}
        lut = np.ones(65536, dtype=np.float32)  # label maps are uint8 or uint16
        for i, name in names.items():
            lut[int(i)] = low.get(str(name).lower(), 1.0)
        return lut

    def _frame_path(self, scene: Scene, fr: dict[str, Any], key: str, i: int) -> str:
        """The frame file of ``fr[key]``, contained in the dataset root (same guarantees as ``frame_file``).

        Fast path: a relative path without ``..`` under the scene folder (whose real path was checked at
        ``locate``) whose components below the scene are not symlinks needs two ``lstat`` calls instead of a
        full ``realpath``; anything else goes through ``resolve_inside`` (``frame_file``).
        """
        rel = fr[key]
        if isinstance(rel, str) and rel and "\x00" not in rel and not rel.startswith("/"):
            parts = rel.split("/")
            if ".." not in parts and "" not in parts and "." not in parts:
                try:
                    cur = os.fspath(scene.path)  # plain strings: pathlib joins cost more than the lstat calls
                    for part in parts:
                        cur = f"{cur}/{part}"
                        if stat.S_ISLNK(os.lstat(cur).st_mode):
                            break
                    else:
                        return cur
                except OSError:
                    pass  # missing: let the full check (and the decoder) report it
        return os.fspath(frame_file(scene, fr, key, i))

    def _decode(self, scene: Scene, i: int, cam: Camera, name: str, fr: dict[str, Any] | None = None) -> np.ndarray:
        """Decode modality ``name`` of frame ``i`` (path contained in the root) and check its size against w/h.

        ``fr``: the frame's dict when the caller has it (a frame table builds one per access)."""
        mods = scene.meta.get("frame_modalities", {})
        spec = mods.get(name)
        if not isinstance(spec, dict):
            raise SchemaError(f"{scene.path / SCENE_META}: no frame modality {name!r}; has {sorted(mods)}")
        key = spec.get("frame_key", name)
        if fr is None:
            fr = scene.frames[i]
        if key not in fr:
            raise SchemaError(f"{scene.path / SCENE_META} [frames[{i}]]: frame {fr.get('frame_name')!r} has no "
                              f"`{key}` path")
        path = self._frame_path(scene, fr, key, i)
        fmt = spec.get("format", "image")
        flags = _IMREAD_FLAGS.get(fmt)
        if flags is None:
            arr = codecs.decode(path, fmt)
        else:  # any path; JPEG/PNG checked complete (see codecs.imread_bytes_safe)
            arr = codecs.imread_bytes_safe(path, flags, name, f"{scene.path / SCENE_META} [frames[{i}]]")
            if arr is None:
                raise SchemaError(f"{path}: could not decode {name} (corrupt file or wrong extension)")
            if fmt == "depth":
                arr = (arr[..., 0] if arr.ndim == 3 else arr).astype(np.float32, copy=False)
        if fmt != "numpy" and arr.shape[:2] != (cam.h, cam.w):
            raise SchemaError(f"{path}: decoded {name} is {arr.shape[1]}x{arr.shape[0]} but {scene.path / SCENE_META} "
                              f"[frames[{i}]] says w x h = {cam.w}x{cam.h}; fix w/h (nothing was sized from them)")
        return arr

    def _load_view(self, scene: Scene, i: int, res: tuple[int, int], lut: np.ndarray | None,
                   rng: np.random.Generator, times: dict[str, float] | None,
                   photo: np.random.Generator | None = None) -> list[dict[str, Any]]:
        """Records of frame ``i`` at ``res``: one, or ``pinhole_views`` for a panorama with cylindrical='pinhole'."""
        t0 = time.perf_counter()
        cam = frame_camera(scene, i)
        pose = frame_pose(scene, i)
        if cam.model == CYLINDRICAL and self.cylindrical == "refuse":
            raise LoaderConfigError(
                f"{scene.path / SCENE_META} [frames[{i}]]: CYLINDRICAL view in the {self.output!r} layout, which "
                "VGGT reads as a pinhole camera with z-depth (silently wrong supervision); pass "
                "cylindrical='pinhole' for pinhole views cut from each panorama, or output='views'")
        fr = scene.frames[i]
        t1 = time.perf_counter()
        with_labels = lut is not None and len(lut) > 1
        image = self._decode(scene, i, cam, "image", fr)
        depth = self._decode(scene, i, cam, self.depth_modality, fr)
        if depth.dtype != np.float32:
            depth = depth.astype(np.float32)
        nearest: dict[str, np.ndarray] = {"depth": depth}
        if self.non_ambiguous_modality:
            nearest["non_ambiguous"] = np.asarray(self._decode(scene, i, cam, self.non_ambiguous_modality, fr),
                                                  dtype=bool)
        if with_labels:
            nearest["labels"] = self._decode(scene, i, cam, self.label_modality, fr)
        t2 = time.perf_counter()
        if times is not None:
            times["metadata"] = times.get("metadata", 0.0) + (t1 - t0)
            times["decode"] = times.get("decode", 0.0) + (t2 - t1)
        if cam.model == CYLINDRICAL and self.cylindrical == "pinhole":
            outs = []
            offset = float(rng.uniform(0.0, 2.0 * math.pi))
            others = {k: v for k, v in nearest.items() if k != "depth"}
            for j in range(self.pinhole_views):
                yaw = offset + 2.0 * math.pi * j / self.pinhole_views
                pin, img, z, R, maps = pinhole_from_panorama(cam, image, depth, yaw, res, self.pinhole_hfov_deg,
                                                             others)
                Tp = pose.copy()
                Tp[:3, :3] = pose[:3, :3] @ R
                maps["depth"] = z
                outs.append(self._record(scene, i, pin, Tp, img, maps, lut, photo, fr))
        else:
            extra = int(rng.integers(0, self.aug_crop + 1)) if self.aug_crop else 0
            # depth and masks stay views into their resized arrays: the layouts copy them once anyway
            cam2, img, maps = crop_resize(cam, res, image, nearest, crop=self.crop, extra=extra, copy_maps=False)
            outs = [self._record(scene, i, cam2, pose, img, maps, lut, photo, fr)]
        if times is not None:
            times["resize"] = times.get("resize", 0.0) + (time.perf_counter() - t2)
        return outs

    def _record(self, scene: Scene, i: int, cam: Camera, pose: np.ndarray, img: np.ndarray,
                maps: dict[str, np.ndarray], lut: np.ndarray | None,
                rng: np.random.Generator | None = None, fr: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.transform != "imgnorm" and rng is not None:
            img = color_augment(img, self.transform, rng)
        depth = maps["depth"]
        if self.max_depth is not None:
            depth = np.where(depth > self.max_depth, np.float32(0.0), depth)
        weights = None
        if lut is not None:
            weights = lut[maps["labels"]] if "labels" in maps else np.ones(depth.shape, dtype=np.float32)
        meta = scene.meta
        return {
            "image": img, "depth": depth, "camera": cam, "pose": pose,
            "non_ambiguous": maps.get("non_ambiguous"), "loss_weights": weights,
            "is_metric_scale": meta.get("scale_type", "metric") == "metric",
            "is_synthetic": str(meta.get("dataset_name", "")) in SYNTHETIC_DATASETS,
            "dataset": str(meta.get("dataset_name", "")), "label": str(meta.get("scene_name", scene.path.name)),
            "instance": f"images/{(scene.frames[i] if fr is None else fr)['frame_name']}", "frame_idx": i,
        }

    def _parse_index(self, idx: Any) -> tuple[int, int, int | None]:
        """``(sample_idx, resolution_idx, num_views or None)`` of an int or MapAnything tuple index.

        The tuple's third element is MapAnything's num-views index into ``num_views_options``. For backward
        compatibility a value that is not a valid index but is one of the allowed view counts is that count.
        """
        if isinstance(idx, (tuple, list)):
            if len(idx) not in (2, 3):
                raise LoaderConfigError(f"index {idx!r}: expected sample_idx, (sample_idx, aspect_ratio_idx) or "
                                        "(sample_idx, aspect_ratio_idx, num_views_idx)")
            s, r = int(idx[0]), int(idx[1])
            if not 0 <= r < len(self.resolutions):
                raise LoaderConfigError(f"resolution_idx {r} out of range: {len(self.resolutions)} resolution(s) "
                                        f"{self.resolutions}")
            if len(idx) == 2:
                return s, r, None
            k = int(idx[2])
            if 0 <= k < len(self.num_views_options):
                return s, r, self.num_views_options[k]
            if k in self.num_views_options:
                return s, r, k
            raise LoaderConfigError(f"num_views_idx {k} in index {tuple(idx)!r} out of range: num_views options are "
                                    f"{self.num_views_options}")
        return int(idx), 0, None

    def _set_worker_threads(self) -> None:
        """In a DataLoader worker: OpenCV threads (``worker_threads``) and glibc keeping freed buffers."""
        self._threads_set = True
        if torch.utils.data.get_worker_info() is None:
            return
        if self.worker_threads is not None and not _FORKED:
            # spawned workers start fresh; a forked one keeps the count its parent set in __init__ (see there)
            codecs.cv2.setNumThreads(int(self.worker_threads))
        if self.malloc_tuning:
            tune_worker_malloc()

    def load_raw(self, sample_idx: int, num_views: int, resolution: tuple[int, int], rng: np.random.Generator,
                 resolution_idx: int = 0) -> list[dict[str, Any]]:
        """Per-view records (image uint8, depth, camera, pose, ...) of ``num_views`` views of a sample at
        ``resolution`` (W, H); what both layouts are built from (``wai.loaders.vggt`` uses it directly).
        """
        if not self._threads_set:
            self._set_worker_threads()
        times = self.profile_stages
        t0 = time.perf_counter()
        _, scene_dir = self.locate(sample_idx)
        scene = self._scene(scene_dir)
        lut = self._weight_lut(scene)
        per = self.pinhole_views if (self.cylindrical == "pinhole"
                                     and scene.meta.get("camera_model") == CYLINDRICAL) else 1
        t1 = time.perf_counter()
        chosen = self._select(scene, -(-num_views // per), rng)
        t2 = time.perf_counter()
        if times is not None:
            times["metadata"] = times.get("metadata", 0.0) + (t1 - t0)
            times["sampling"] = times.get("sampling", 0.0) + (t2 - t1)
        # photometric draws come from their own stream, so augmenting never changes frames or geometry
        photo = None if self.transform == "imgnorm" else np.random.default_rng(
            [self.seed, self.epoch, sample_idx, num_views, resolution[0], resolution[1], 0x9E3779B9])
        raw: list[dict[str, Any]] = []
        for i in chosen:
            raw.extend(self._load_view(scene, i, resolution, lut, rng, times, photo))
        raw = raw[:num_views]
        for rec in raw:
            rec["idx"] = (sample_idx, resolution_idx, 0)
            rec["rng"] = int(rng.integers(0, 2**31 - 1))
        return raw

    def _raw_sample(self, idx: Any) -> list[dict[str, Any]]:
        """The raw per-view records of sample ``idx`` (int or MapAnything tuple), before the output layout."""
        s, r, v = self._parse_index(idx)
        rng = np.random.default_rng([self.seed, self.epoch, s, r, v or 0])
        if v is None:
            v = self.num_views_options[int(rng.integers(len(self.num_views_options)))]
        return self.load_raw(s, v, self.resolutions[r], rng, r)

    def get_sample(self, idx: Any) -> Any:
        """One sample without retries (what ``__getitem__`` returns when it succeeds)."""
        raw = self._raw_sample(idx)
        if self.output == "vggt":
            return to_vggt(raw, self.relative_to_first, self.profile_stages)
        return to_views(raw, self.relative_to_first, self.data_norm_type, self.profile_stages)

    def _retrying(self, idx: Any, fetch: Any) -> Any:
        """``fetch(idx)``; with ``max_retries``, an ``OSError``/``ValueError`` (other than configuration and
        path-escape errors) is retried on other samples drawn reproducibly from ``idx``."""
        try:
            return fetch(idx)
        except (OSError, ValueError) as e:
            if self.max_retries <= 0 or isinstance(e, (LoaderConfigError, PathEscapeError)):
                raise
            err = e
        s, r, v = self._parse_index(idx)
        rng = np.random.default_rng([self.seed, self.epoch, s, r, v or 0, 1])
        for _ in range(self.max_retries):
            other = int(rng.integers(len(self)))
            log.warning("sample %s failed (%s); retrying with sample %d", idx, err, other)
            try:
                retry = (other, *idx[1:]) if isinstance(idx, (tuple, list)) else other
                return fetch(retry)
            except (OSError, ValueError) as e:
                err = e
        raise err

    def __getitem__(self, idx: Any) -> Any:
        return self._retrying(idx, self.get_sample)

    def __getitems__(self, indices: Sequence[Any]) -> list[Any]:
        """The samples of ``indices`` (what a ``DataLoader`` with a batch sampler fetches per batch), equal to
        ``[self[i] for i in indices]``.

        ``views`` layout: when the samples share view count, view sizes and keys (a ``ViewBatchSampler`` batch
        does), every view is written straight into per-view batch tensors and a ``ViewBatch`` is returned,
        which ``collate_views`` passes through instead of copying each sample again (torch's
        ``default_collate`` still collates it like any list of samples). In a DataLoader worker whose
        ``collate_fn`` is ``collate_views`` the batch tensors are allocated in shared memory, as
        ``default_collate`` does, so handing the batch to the main process copies nothing.
        """
        indices = list(indices)
        if self.output != "views" or not indices:
            return [self[i] for i in indices]
        shared = _worker_collates_with(collate_views)
        # every sample decoded first, then written: decoding back to back keeps the decoders' buffers in cache
        # (writing ~11.6 MB of outputs per view between two decodes evicts them); measured 2-5 % per view
        raws = [self._retrying(i, self._raw_sample) for i in indices]
        batch = to_views_batch(raws, self.relative_to_first, self.data_norm_type, self.profile_stages, shared)
        if batch is not None:
            return batch
        # samples that do not share a layout: built one by one and collated by copying, as usual
        return [to_views(raw, self.relative_to_first, self.data_norm_type, self.profile_stages) for raw in raws]


def _worker_collates_with(fn: Any) -> bool:
    """True in a DataLoader worker whose fetcher (the caller of ``__getitems__``) collates with ``fn``.

    torch's ``_MapDatasetFetcher.fetch`` calls ``dataset.__getitems__(indices)`` and then its ``collate_fn``;
    the fetcher is found as ``self`` of a calling frame. Anything else (main process, another caller, another
    torch version) answers False, which only costs the copy into shared memory when the batch is sent.
    """
    if torch.utils.data.get_worker_info() is None:
        return False
    frame = sys._getframe(1)
    for _ in range(4):
        frame = frame.f_back
        if frame is None:
            return False
        fetcher = frame.f_locals.get("self")
        if fetcher is not None and hasattr(fetcher, "collate_fn") and hasattr(fetcher, "auto_collation"):
            return fetcher.collate_fn is fn
    return False


def random_walk(covis: np.ndarray, k: int, thres: float, rng: np.random.Generator, max_restarts: int = 4) -> list[int]:
    """``k`` frame indices forming a connected subgraph of the thresholded covisibility graph (WAI §4.3).

    At node c the scores ``(M[c, :] + M[:, c]) / 2`` are divided by their own ``[c]`` entry; neighbours above
    ``thres`` are adjacent. A random unvisited neighbour is taken, backtracking when none is left; up to
    ``max_restarts`` restarts exclude visited nodes; a walk shorter than ``k`` is padded with repeats.
    ``k == N`` gives a permutation, ``k > N`` sampling with replacement.
    """
    n = covis.shape[0]
    if k == n:
        return [int(i) for i in rng.permutation(n)]
    if k > n:
        return [int(i) for i in rng.choice(n, size=k, replace=True)]
    excluded = np.zeros(n, dtype=bool)
    best: list[int] = []
    rows: dict[int, np.ndarray] = {}
    for _ in range(max_restarts + 1):
        free = np.flatnonzero(~excluded)
        if len(free) == 0:
            break
        start = int(free[int(rng.integers(len(free)))])
        visited, stack = [start], [start]
        seen = np.zeros(n, dtype=bool)
        seen[start] = True
        while len(visited) < k and stack:
            c = stack[-1]
            adj = rows.get(c)
            if adj is None:
                row = (np.asarray(covis[c, :], dtype=np.float64) + np.asarray(covis[:, c], dtype=np.float64)) / 2.0
                if row[c] > 0:
                    row = row / row[c]
                row[c] = 0.0
                adj = rows[c] = row > thres
            nbrs = np.flatnonzero(adj & ~seen)
            if len(nbrs) == 0:
                stack.pop()
                continue
            nxt = int(nbrs[int(rng.integers(len(nbrs)))])
            seen[nxt] = True
            visited.append(nxt)
            stack.append(nxt)
        if len(visited) > len(best):
            best = visited
        if len(best) >= k:
            break
        excluded |= seen
    if len(best) < k:
        best = best + [int(i) for i in rng.choice(best, size=k - len(best))]
    return best


__all__ = ["LABEL_WEIGHT_PRESETS", "LOADER_TRIM_THRESHOLD", "RESOLUTION_PRESETS", "WAIDataset", "frame_camera",
           "frame_pose", "parse_resolutions", "random_walk", "tune_worker_malloc"]
