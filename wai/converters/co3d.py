"""Co3D v2 (Common Objects in 3D, Meta AI): object-centric turntable-like videos with COLMAP cameras and MVS depth.

Licence: CC BY-NC 4.0 (non-commercial; the converted output inherits it). Cite Reizenstein et al., ICCV 2021.

Expected layout (source_formats.md §4; every path inside the annotations is relative to ``<root>``)::

    <root>/<category>/
        frame_annotations.jgz      gzip'd JSON list of FrameAnnotation (image.size is [H, W])
        sequence_annotations.jgz   gzip'd JSON list of SequenceAnnotation (viewpoint_quality_score)
        set_lists/set_lists_<subset>.json   {"train"|"val"|"test": [[sequence, frame_number, image_path], ...]}
        <sequence>/images/frame000001.jpg
                   depths/frame000001.jpg.geometric.png    16-bit PNG whose words are float16 bits
                   depth_masks/frame000001.png             1-bit validity mask
                   masks/frame000001.png                   8-bit Prob(foreground) * 255

Source conventions:

* Cameras are PyTorch3D (row vectors): ``X_cam = X_world @ R + T`` with camera axes +X left, +Y up, +Z forward.
  OpenCV world->camera is ``[F R^T | F T]`` with ``F = OPENCV_FROM_PYTORCH3D = diag(-1, -1, 1)``; the converter
  inverts it to camera-to-world. The Co3D world frame (per sequence, arbitrary scale) is kept.
* Intrinsics are NDC: ``ndc_isotropic`` (v2; ``s = min(W, H) / 2``) or ``ndc_norm_image_bounds``
  (v1; ``s = (W/2, H/2)`` per axis). PyTorch3D pixels: ``f_px = f * s``, ``c_px = (W/2, H/2) - p * s`` with the
  origin at the top-left *corner* of the image (pixel centres at +0.5). The format contract puts pixel centres
  at integer coordinates, so ``cx = W/2 - p_x s - 0.5`` (``PYTORCH3D_TO_OPENCV_PRINCIPAL_SHIFT``, recorded in
  ``source.intrinsics_conversion``).
* Depth: float16 bits in a uint16 PNG, in the units of ``T``, times ``depth.scale_adjustment``; 0 = unknown.
  Depth outside ``depth_masks`` and non-finite depth become 0. ``scale_type`` is ``relative``.

Output: one scene per sequence, ``<category>_<sequence>``; frames named after the image (``frame000001``) in
``frame_number`` order, extras ``source_frame`` (frame_number), ``timestamp`` (frame_timestamp, seconds) and,
with ``--set-list``, ``set_list_split``. Modalities: ``depth``, ``depth_mask`` (binary), ``fg_mask`` (8-bit
Prob(fg) * 255, label table ``co3d_fg``).

Not converted / limitations: ``pointcloud.ply``, eval batches, videos; v1's single ``set_lists.json``
(``train_known``/...) is not read (v1 annotations with ``ndc_norm_image_bounds`` are). Sequences missing from
``sequence_annotations.jgz`` are skipped, like those below ``--min-quality``. A sequence whose frames a set list
puts in several splits (many-view subsets) becomes a scene of the split holding most of its frames; its other
frames are dropped with the reason.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from wai.converters.base import Converter, ConverterOptions, SceneRef, option
from wai.errors import SourceLayoutError, SourceNotFoundError, layout_error, require_file
from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import (
    OPENCV_FROM_PYTORCH3D,
    SCALE_RELATIVE,
    invert_pose,
    is_proper_rotation,
    make_pose,
    orthonormalize,
)
from wai.format.scene import Modality, SceneWriter
from wai.format.schema import NAME_PATTERN

FRAME_ANNOTATIONS = "frame_annotations.jgz"
SEQUENCE_ANNOTATIONS = "sequence_annotations.jgz"
#: PyTorch3D screen coordinates (origin at the image corner) -> pixel centres at integer coordinates.
PYTORCH3D_TO_OPENCV_PRINCIPAL_SHIFT = -0.5
NDC_FORMATS = ("ndc_isotropic", "ndc_norm_image_bounds")
SPLITS = ("train", "val", "test")
FG_TABLE = {0: "background", 255: "foreground"}  # values in between: Prob(fg) * 255
_ROT_TOL = 1e-4  # annotations are float32
_NAME_RE = re.compile(NAME_PATTERN)


@dataclass
class Co3DOptions(ConverterOptions):
    """Options of the Co3D v2 source."""

    categories: str | None = option(None, "comma-separated categories, e.g. apple,car (default: every category "
                                          "folder with a frame_annotations.jgz)")
    min_quality: float = option(0.5, "keep sequences whose viewpoint_quality_score >= this (a missing score "
                                     "passes only when this is <= 0)")
    set_list: str | None = option(None, "subset whose set_lists/set_lists_<subset>.json assigns frames to "
                                        "train/val/test, e.g. fewview_train, fewview_dev, manyview_dev_0 "
                                        "(default: every frame, split train)")


# --- parsing (pure functions, unit-tested with hand-worked numbers) ---------------------------------


def intrinsics_from_ndc(focal: Any, principal: Any, fmt: str, w: int, h: int) -> Camera:
    """OpenCV pixel intrinsics (pixel centres at integer coordinates) of a PyTorch3D NDC viewpoint."""
    half = np.array([w / 2.0, h / 2.0])
    if fmt == "ndc_isotropic":
        rescale = np.full(2, half.min())
    elif fmt == "ndc_norm_image_bounds":
        rescale = half
    else:
        raise ValueError(f"intrinsics_format {fmt!r}; expected one of {NDC_FORMATS}")
    f_px = np.asarray(focal, dtype=np.float64).reshape(2) * rescale
    c_px = half - np.asarray(principal, dtype=np.float64).reshape(2) * rescale + PYTORCH3D_TO_OPENCV_PRINCIPAL_SHIFT
    return Camera.pinhole(w, h, f_px[0], f_px[1], c_px[0], c_px[1])


def c2w_from_pytorch3d(R: Any, T: Any) -> np.ndarray:
    """OpenCV camera-to-world of a PyTorch3D camera (``X_cam = X_world @ R + T``, camera +X left, +Y up)."""
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    F = OPENCV_FROM_PYTORCH3D
    w2c = make_pose(F @ orthonormalize(R).T, F @ np.asarray(T, dtype=np.float64).reshape(3))
    return invert_pose(w2c)


def decode_depth_png(path: Path) -> np.ndarray:
    """float32 depth of a Co3D depth PNG: the uint16 words reinterpreted as float16 bits."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
        got = "undecodable" if raw is None else f"{raw.dtype} {raw.shape}"
        raise layout_error(path, f"expected a single-channel 16-bit PNG holding float16 bits, got {got}")
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


@lru_cache(maxsize=4)
def _load_jgz(path: str, mtime_ns: int) -> Any:
    try:
        with gzip.open(path, "rt", encoding="utf8") as f:
            return json.load(f)
    except (OSError, EOFError, ValueError) as e:
        raise layout_error(path, f"not a gzip'd JSON file ({e})") from e


def load_jgz(path: Path, what: str) -> list[dict[str, Any]]:
    """A gzip'd JSON list (cached per process by path and mtime)."""
    p = require_file(path, what, "download the Co3D category archive and extract it into --input")
    data = _load_jgz(str(p), p.stat().st_mtime_ns)
    if not isinstance(data, list):
        raise layout_error(p, f"expected a JSON list, got {type(data).__name__}")
    return data


@lru_cache(maxsize=4)
def _frames_by_sequence(path: str, mtime_ns: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for i, fa in enumerate(_load_jgz(path, mtime_ns)):
        if not isinstance(fa, dict) or "sequence_name" not in fa or "frame_number" not in fa:
            raise layout_error(path, "entry lacks sequence_name/frame_number", key=f"[{i}]")
        out.setdefault(str(fa["sequence_name"]), []).append(fa)
    for v in out.values():
        v.sort(key=lambda fa: int(fa["frame_number"]))
    return out


def _get(d: dict[str, Any], path: Path, key: str, where: str) -> Any:
    """``d[k1][k2]...`` for a dotted ``key``; a missing key is a layout error naming the file, frame and key."""
    cur: Any = d
    for k in key.split("."):
        if not isinstance(cur, dict) or cur.get(k) is None:
            raise layout_error(path, "missing key", key=f"{where}.{key}")
        cur = cur[k]
    return cur


class Co3DConverter(Converter):
    """Co3D v2 sequences: one scene per sequence, relative scale."""

    name = "co3d"
    provides = frozenset({"image", "depth", "depth_mask", "fg_mask"})
    Options = Co3DOptions
    scale_type = SCALE_RELATIVE

    def _categories(self) -> list[str]:
        found = sorted(p.name for p in self.root.iterdir() if (p / FRAME_ANNOTATIONS).is_file())
        wanted = self.options.categories  # type: ignore[attr-defined]
        if wanted is None:
            return found
        names = [c.strip() for c in str(wanted).split(",") if c.strip()]
        missing = [c for c in names if c not in found]
        if missing:
            raise SourceNotFoundError(f"--categories {','.join(missing)}: no <category>/{FRAME_ANNOTATIONS} under "
                                      f"{self.root}; available: {', '.join(found) or 'none'}")
        return [c for c in found if c in names]

    def _set_list(self, category: str) -> dict[str, dict[int, str]] | None:
        """sequence -> {frame_number: split} of ``--set-list`` (None without the option)."""
        subset = self.options.set_list  # type: ignore[attr-defined]
        if subset is None:
            return None
        path = require_file(self.root / category / "set_lists" / f"set_lists_{subset}.json", f"set list {subset!r}",
                            "check --set-list against the files in <category>/set_lists/")
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise layout_error(path, f"invalid JSON ({e})") from e
        if not isinstance(data, dict) or not set(data) <= set(SPLITS):
            raise layout_error(path, f"expected an object with keys among {SPLITS}")
        out: dict[str, dict[int, str]] = {}
        for split in SPLITS:
            for j, entry in enumerate(data.get(split, [])):
                if not isinstance(entry, list) or len(entry) < 2:
                    raise layout_error(path, "expected [sequence, frame_number, image_path]", key=f"{split}[{j}]")
                out.setdefault(str(entry[0]), {})[int(entry[1])] = split
        return out

    def iter_scenes(self) -> Iterator[SceneRef]:
        """Sequences of ``sequence_annotations.jgz`` passing ``--min-quality`` (and in ``--set-list``)."""
        min_q = float(self.options.min_quality)  # type: ignore[attr-defined]
        for cat in self._categories():
            seq_path = self.root / cat / SEQUENCE_ANNOTATIONS
            set_list = self._set_list(cat)
            for i, sa in enumerate(load_jgz(seq_path, "Co3D sequence annotations")):
                if not isinstance(sa, dict) or "sequence_name" not in sa:
                    raise layout_error(seq_path, "entry lacks sequence_name", key=f"[{i}]")
                seq = str(sa["sequence_name"])
                score = sa.get("viewpoint_quality_score")
                if (score is None and min_q > 0) or (score is not None and float(score) < min_q):
                    self.skip_scene(f"{cat}_{seq}", f"viewpoint_quality_score {score} < --min-quality {min_q}")
                    continue
                split, frame_splits = "train", None
                if set_list is not None:
                    frame_splits = set_list.get(seq)
                    if not frame_splits:
                        self.skip_scene(f"{cat}_{seq}", f"not in set list {self.options.set_list}")  # type: ignore[attr-defined]
                        continue
                    counts = [sum(1 for s in frame_splits.values() if s == sp) for sp in SPLITS]
                    split = SPLITS[int(np.argmax(counts))]
                name = f"{cat}_{seq}"
                if not _NAME_RE.match(name):
                    raise layout_error(seq_path, f"sequence name {seq!r} has characters outside [A-Za-z0-9_.-]")
                yield SceneRef(name, split, data={"category": cat, "sequence": seq, "frame_splits": frame_splits})

    # --- one sequence ---------------------------------------------------------------------------
    def _annotations(self, scene: SceneRef) -> tuple[Path, list[dict[str, Any]]]:
        path = require_file(self.root / scene.data["category"] / FRAME_ANNOTATIONS, "Co3D frame annotations")
        frames = _frames_by_sequence(str(path), path.stat().st_mtime_ns).get(scene.data["sequence"], [])
        return path, frames

    def check_scene(self, scene: SceneRef) -> list[str]:
        """Missing image/depth/mask files named by the frame annotations."""
        try:
            ann, frames = self._annotations(scene)
        except (SourceLayoutError, SourceNotFoundError) as e:
            return [str(e)]
        if not frames:
            return [f"{ann}: no frame of sequence {scene.data['sequence']}"]
        problems = []
        for fa in frames:
            for key in ("image.path", "depth.path", "depth.mask_path", "mask.path"):
                rel = (fa.get(key.split(".")[0]) or {}).get(key.split(".")[1])
                if rel and not (self.root / rel).is_file():
                    problems.append(f"missing {self.root / rel} ({ann} [{fa['frame_number']}.{key}])")
        return problems

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        """Write every frame of one sequence."""
        ann, frames = self._annotations(scene)
        if not frames:
            raise layout_error(ann, f"no frame of sequence {scene.data['sequence']!r}")
        writer.add_transform("opencv_from_pytorch3d_camera", np.diag([-1.0, -1.0, 1.0, 1.0]))
        writer.add_label_table("co3d_fg", FG_TABLE)
        cat, seq = scene.data["category"], scene.data["sequence"]
        writer.source.update(
            frame_annotations=f"{cat}/{FRAME_ANNOTATIONS}", sequence_annotations=f"{cat}/{SEQUENCE_ANNOTATIONS}",
            sequence=seq, category=cat,
            pose_source="PyTorch3D X_cam = X_world @ R + T; OpenCV w2c = [F R^T | F T], F = diag(-1,-1,1); inverted",
            intrinsics_conversion={"pixel_centre_shift_px": PYTORCH3D_TO_OPENCV_PRINCIPAL_SHIFT,
                                   "formula": "c = (W/2, H/2) - principal_point * s - 0.5, f = focal_length * s"},
        )
        frame_splits = scene.data.get("frame_splits")
        if frame_splits is not None:
            writer.source["set_list"] = f"{cat}/set_lists/set_lists_{self.options.set_list}.json"  # type: ignore[attr-defined]
        for fa in frames:
            self._frame(fa, ann, scene, writer, frame_splits)
        return {}

    def _frame(self, fa: dict[str, Any], ann: Path, scene: SceneRef, writer: SceneWriter,
               frame_splits: dict[int, str] | None) -> None:
        num = int(fa["frame_number"])
        key = f"{scene.data['sequence']}/{num}"
        img_rel = str(_get(fa, ann, "image.path", key))
        name = Path(img_rel).stem
        size = _get(fa, ann, "image.size", key)
        if not (isinstance(size, list) and len(size) == 2):
            raise layout_error(ann, f"image.size {size!r}: expected [H, W]", key=key)
        h, w = int(size[0]), int(size[1])  # Co3D stores [H, W]
        if frame_splits is not None:
            split = frame_splits.get(num)
            if split is None:
                writer.drop_frame(name, f"not in set list {self.options.set_list}", w, h)  # type: ignore[attr-defined]
                return
            if split != scene.split:
                writer.drop_frame(name, f"set list puts it in '{split}', the scene is in '{scene.split}'", w, h)
                return
        vp = fa.get("viewpoint")
        if vp is None:
            writer.drop_frame(name, "no viewpoint (camera) annotation", w, h)
            return
        try:
            fmt = str(vp.get("intrinsics_format", "ndc_norm_image_bounds"))
            cam = intrinsics_from_ndc(vp["focal_length"], vp["principal_point"], fmt, w, h)
            R = np.asarray(vp["R"], dtype=np.float64).reshape(3, 3)
            T = np.asarray(vp["T"], dtype=np.float64).reshape(3)
        except (KeyError, TypeError, ValueError) as e:
            raise layout_error(ann, f"malformed viewpoint ({type(e).__name__}: {e})", key=f"{key}.viewpoint") from e
        if not is_proper_rotation(R, tol=_ROT_TOL):
            raise layout_error(ann, "viewpoint.R is not a proper rotation", key=key)

        img_path = require_file(self.root / img_rel, "Co3D image", f"named by {ann} [{key}]")
        img = cv2.imread(str(img_path), cv2.IMREAD_REDUCED_COLOR_8)  # size check only, cheap decode
        if img is None or img.shape[:2] != ((h + 7) // 8, (w + 7) // 8):
            raise layout_error(img_path, f"does not decode to image.size [H, W] = [{h}, {w}] of {ann} [{key}]")

        depth = np.zeros((h, w), dtype=np.float32)
        dmask = np.zeros((h, w), dtype=bool)
        dinfo = fa.get("depth")
        if dinfo is not None:
            dpath = require_file(self.root / _get(fa, ann, "depth.path", key), "Co3D depth PNG",
                                 f"named by {ann} [{key}]")
            depth = decode_depth_png(dpath) * np.float32(dinfo.get("scale_adjustment") or 1.0)
            if depth.shape != (h, w):
                raise layout_error(dpath, f"shape {depth.shape} != image.size [H, W] = [{h}, {w}]")
            if dinfo.get("mask_path"):
                mpath = require_file(self.root / dinfo["mask_path"], "Co3D depth mask", f"named by {ann} [{key}]")
                dmask = self._read_gray(mpath, h, w) > 0
            else:
                dmask = np.ones((h, w), dtype=bool)
            dmask &= np.isfinite(depth) & (depth > 0)
            depth = np.where(dmask, depth, 0.0).astype(np.float32)
        mods = {"depth_mask": Modality("binary", dmask)}
        minfo = fa.get("mask")
        if minfo is not None and minfo.get("path"):
            fpath = require_file(self.root / minfo["path"], "Co3D foreground mask", f"named by {ann} [{key}]")
            mods["fg_mask"] = Modality("labels", self._read_gray(fpath, h, w), "co3d_fg")
        extras: dict[str, Any] = {"source_frame": num, "timestamp": float(fa.get("frame_timestamp", -1.0))}
        if frame_splits is not None:
            extras["set_list_split"] = frame_splits[num]
        writer.add_frame(name, cam, c2w_from_pytorch3d(R, T), image=img_path, depth=depth, modalities=mods,
                         extras=extras)

    @staticmethod
    def _read_gray(path: Path, h: int, w: int) -> np.ndarray:
        m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if m is None:
            raise layout_error(path, "could not decode the PNG")
        if m.ndim == 3:
            m = m[..., 0]
        if m.shape != (h, w):
            raise layout_error(path, f"shape {m.shape} != image.size [H, W] = [{h}, {w}]")
        return m.astype(np.uint8) if m.dtype == np.uint8 else (m > 0).astype(np.uint8) * 255
