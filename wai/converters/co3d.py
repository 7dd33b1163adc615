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
import io
import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from wai.converters._media import decode_image, verify_image
from wai.converters._rawio import (
    bad_name_reason,
    broken_problems,
    broken_scene,
    dir_problem,
    integer,
    is_file,
    list_dir,
    numbers,
    raise_if_broken,
    read_bytes,
)
from wai.converters.base import Converter, ConverterOptions, SceneRef, option
from wai.errors import SourceNotFoundError, UsageError, WaiError, layout_error, require_file
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
from wai.format.paths import max_json_bytes, resolve_inside
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
_SUBSET_RE = re.compile(r"[A-Za-z0-9_]+")
#: Folders of a category that are not sequences.
_CATEGORY_SUBFOLDERS = frozenset({"set_lists", "eval_batches"})

# Plausible ranges of annotation numbers (anything outside is a damaged file, reported with file and key).
#: Image side (pixels); real Co3D frames are at most ~2000 px.
MAX_IMAGE_SIDE = 32768
#: |T| of a viewpoint (scene units; real sequences are within ~100).
MAX_TRANSLATION = 1e6
#: NDC focal length (real: ~1-5) and |principal point| (real: within ~0.1).
MAX_NDC_FOCAL = 1e3
MAX_NDC_PRINCIPAL = 100.0
#: |frame_timestamp| (seconds of video).
MAX_TIMESTAMP_S = 1e7
#: Largest frame_number.
MAX_FRAME_NUMBER = 10**9


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
    raw = decode_image(path, cv2.IMREAD_UNCHANGED, "Co3D depth PNG")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise layout_error(path, f"expected a single-channel 16-bit PNG holding float16 bits, got {raw.dtype} "
                                 f"{raw.shape}")
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


@lru_cache(maxsize=4)
def _load_jgz(path: str, mtime_ns: int) -> Any:
    """Parse a gzip'd JSON file, bounded: the compressed file and the decompressed text are capped
    (``WAI_MAX_JSON_MB``) so a gzip bomb or a huge file cannot exhaust memory."""
    cap = max_json_bytes()
    raw = read_bytes(path, "gzip'd JSON file")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            text = f.read(cap + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise layout_error(path, f"not a gzip'd JSON file ({e})") from e
    if len(text) > cap:
        raise layout_error(path, f"decompresses to more than the {cap} byte cap on metadata (raise WAI_MAX_JSON_MB "
                                 "if it is genuine)")
    try:
        return json.loads(text)
    except RecursionError as e:
        raise layout_error(path, "not a gzip'd JSON file (nested too deep)") from e
    except ValueError as e:  # includes UnicodeDecodeError
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
    """Entries grouped by sequence, in file order (each sequence's numbers are checked when it is converted)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for i, fa in enumerate(_load_jgz(path, mtime_ns)):
        if not isinstance(fa, dict) or not isinstance(fa.get("sequence_name"), str):
            raise layout_error(path, "entry is not an object with a string sequence_name", key=f"[{i}]")
        out.setdefault(fa["sequence_name"], []).append(fa)
    return out


def _get(d: dict[str, Any], path: Path, key: str, where: str) -> Any:
    """``d[k1][k2]...`` for a dotted ``key``; a missing key is a layout error naming the file, frame and key."""
    cur: Any = d
    for k in key.split("."):
        if not isinstance(cur, dict) or cur.get(k) is None:
            raise layout_error(path, "missing key", key=f"{where}.{key}")
        cur = cur[k]
    return cur


def _opt_dict(fa: dict[str, Any], name: str, ann: Path, where: str) -> dict[str, Any] | None:
    """``fa[name]`` when it is an object, None when absent or null; anything else is a layout error."""
    v = fa.get(name)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise layout_error(ann, f"expected an object or null, got {type(v).__name__}", key=f"{where}.{name}")
    return v


@dataclass(frozen=True)
class _FramePlan:
    """One annotated frame, every number and path checked and every file verified (nothing decoded)."""

    number: int
    name: str
    w: int
    h: int
    timestamp: float
    camera: Camera | None  # None: no viewpoint (dropped)
    c2w: np.ndarray | None
    image: Path | None
    depth: Path | None
    depth_scale: float
    depth_mask: Path | None
    fg_mask: Path | None


class Co3DConverter(Converter):
    """Co3D v2 sequences: one scene per sequence, relative scale."""

    name = "co3d"
    provides = frozenset({"image", "depth", "depth_mask", "fg_mask"})
    Options = Co3DOptions
    scale_type = SCALE_RELATIVE
    layout_hint = ("Co3D v2 root: <category>/frame_annotations.jgz, <category>/sequence_annotations.jgz, "
                   "<category>/<sequence>/images/frame*.jpg")

    def validate_options(self) -> None:
        """Option values that can never work raise ``UsageError`` before any scene starts."""
        o = self.options
        if not math.isfinite(float(o.min_quality)):  # type: ignore[attr-defined]
            raise UsageError(f"--min-quality {o.min_quality}: expected a finite score")  # type: ignore[attr-defined]
        subset = o.set_list  # type: ignore[attr-defined]
        if subset is not None and not _SUBSET_RE.fullmatch(str(subset)):
            raise UsageError(f"--set-list {subset!r}: expected a subset name like fewview_train (letters, digits, "
                             "'_'; it names set_lists/set_lists_<subset>.json)")
        cats = o.categories  # type: ignore[attr-defined]
        if cats is not None and any(not _NAME_RE.fullmatch(c.strip()) for c in str(cats).split(",") if c.strip()):
            raise UsageError(f"--categories {cats!r}: expected comma-separated category names, e.g. apple,car")

    def _categories(self) -> tuple[list[str], list[tuple[str, str]]]:
        """Category folders (with a frame_annotations.jgz), and folders that cannot be listed (with why)."""
        found, unreadable = [], []
        for p in list_dir(self.root, "Co3D root (--input)"):
            problem = dir_problem(p)
            if problem == "not a directory":
                continue
            if problem is not None:
                unreadable.append((p.name, f"{p}: folder is {problem} (a Co3D category?)"))
            elif is_file(p / FRAME_ANNOTATIONS):
                found.append(p.name)
        wanted = self.options.categories  # type: ignore[attr-defined]
        if wanted is None:
            return found, unreadable
        names = [c.strip() for c in str(wanted).split(",") if c.strip()]
        missing = [c for c in names if c not in found and c not in dict(unreadable)]
        if missing:
            raise SourceNotFoundError(f"--categories {','.join(missing)}: no <category>/{FRAME_ANNOTATIONS} under "
                                      f"{self.root}; available: {', '.join(found) or 'none'}")
        return [c for c in found if c in names], [u for u in unreadable if u[0] in names]

    def _set_list_path(self, category: str) -> Path | None:
        subset = self.options.set_list  # type: ignore[attr-defined]
        return None if subset is None else self.root / category / "set_lists" / f"set_lists_{subset}.json"

    def _set_list(self, category: str) -> dict[str, dict[int, str]] | None:
        """sequence -> {frame_number: split} of ``--set-list`` (None without the option)."""
        path = self._set_list_path(category)
        if path is None:
            return None
        path = require_file(path, f"set list {self.options.set_list!r}",  # type: ignore[attr-defined]
                            "check --set-list against the files in <category>/set_lists/")
        try:
            data = json.loads(read_bytes(path, "Co3D set list"))
        except RecursionError as e:
            raise layout_error(path, "invalid JSON (nested too deep)") from e
        except ValueError as e:
            raise layout_error(path, f"invalid JSON ({e})") from e
        if not isinstance(data, dict) or not set(data) <= set(SPLITS):
            raise layout_error(path, f"expected an object with keys among {SPLITS}")
        out: dict[str, dict[int, str]] = {}
        for split in SPLITS:
            entries = data.get(split, [])
            if not isinstance(entries, list):
                raise layout_error(path, "expected a list of [sequence, frame_number, image_path]", key=split)
            for j, entry in enumerate(entries):
                if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[0], str):
                    raise layout_error(path, "expected [sequence, frame_number, image_path]", key=f"{split}[{j}]")
                num = integer(path, entry[1], key=f"{split}[{j}][1]", what="frame_number", lo=0,
                              hi=MAX_FRAME_NUMBER)
                out.setdefault(entry[0], {})[num] = split
        return out

    def iter_scenes(self) -> Iterator[SceneRef]:
        """Sequences of ``sequence_annotations.jgz`` passing ``--min-quality`` (and in ``--set-list``).

        A category whose annotation or set-list file cannot be read, or a sequence entry that is malformed,
        becomes a scene that fails with the reason (other categories and sequences are unaffected). Only when
        no category has the ``--set-list`` file does the listing raise (the option is wrong).
        """
        min_q = float(self.options.min_quality)  # type: ignore[attr-defined]
        cats, unreadable = self._categories()
        for name, reason in unreadable:
            yield broken_scene(name, reason)
        missing_set_lists = []
        for cat in cats:
            sl = self._set_list_path(cat)
            if sl is not None and not is_file(sl):
                missing_set_lists.append(sl)
        if cats and len(missing_set_lists) == len(cats):
            raise SourceNotFoundError(f"missing set list {self.options.set_list!r}: expected a file at "  # type: ignore[attr-defined]
                                      f"{missing_set_lists[0]} (no category has it); check --set-list against the "
                                      "files in <category>/set_lists/")
        for cat in cats:
            try:
                refs = list(self._category_scenes(cat, min_q))
            except WaiError as e:
                yield broken_scene(cat, str(e))
                continue
            yield from refs

    def _category_scenes(self, cat: str, min_q: float) -> Iterator[SceneRef]:
        seq_path = self.root / cat / SEQUENCE_ANNOTATIONS
        set_list = self._set_list(cat)
        entries = load_jgz(seq_path, "Co3D sequence annotations")
        listed = {sa.get("sequence_name") for sa in entries if isinstance(sa, dict)}
        for d in sorted((self.root / cat).iterdir()):
            if d.name not in listed and d.name not in _CATEGORY_SUBFOLDERS and dir_problem(d) != "not a directory":
                # a sequence folder that sequence_annotations.jgz does not list: not converted, said so
                self.skip_scene(f"{cat}_{d.name}", f"folder {d} has no entry in {seq_path}")
        for i, sa in enumerate(entries):
            if not isinstance(sa, dict) or not isinstance(sa.get("sequence_name"), str):
                raise layout_error(seq_path, "entry lacks a string sequence_name", key=f"[{i}]")
            seq = sa["sequence_name"]
            name = f"{cat}_{seq}"
            reason = bad_name_reason(name, f"{seq_path} [{i}].sequence_name")
            if reason is not None:
                yield broken_scene(name, reason)
                continue
            score = sa.get("viewpoint_quality_score")
            if score is not None:
                try:
                    score = numbers(seq_path, [score], key=f"[{i}].viewpoint_quality_score",
                                    what="viewpoint_quality_score")[0]
                except WaiError as e:
                    yield broken_scene(name, str(e))
                    continue
            if (score is None and min_q > 0) or (score is not None and float(score) < min_q):
                self.skip_scene(name, f"viewpoint_quality_score {score} < --min-quality {min_q}")
                continue
            split, frame_splits = "train", None
            if set_list is not None:
                frame_splits = set_list.get(seq)
                if not frame_splits:
                    self.skip_scene(name, f"not in set list {self.options.set_list}")  # type: ignore[attr-defined]
                    continue
                counts = [sum(1 for s in frame_splits.values() if s == sp) for sp in SPLITS]
                split = SPLITS[int(np.argmax(counts))]
            yield SceneRef(name, split, data={"category": cat, "sequence": seq, "frame_splits": frame_splits})

    # --- one sequence ---------------------------------------------------------------------------
    def _annotations(self, scene: SceneRef) -> tuple[Path, list[dict[str, Any]]]:
        """The sequence's frame annotations, ordered by frame_number (integers, unique)."""
        path = require_file(self.root / scene.data["category"] / FRAME_ANNOTATIONS, "Co3D frame annotations")
        frames = _frames_by_sequence(str(path), path.stat().st_mtime_ns).get(scene.data["sequence"], [])
        seen: dict[int, int] = {}
        keyed = []
        for fa in frames:
            where = f"{scene.data['sequence']}"
            num = integer(path, fa.get("frame_number"), key=f"{where}.frame_number", what="frame_number", lo=0,
                          hi=MAX_FRAME_NUMBER)
            if num in seen:
                raise layout_error(path, f"frame_number {num} appears twice in sequence {where}",
                                   key=f"{where}/{num}")
            seen[num] = 1
            keyed.append((num, fa))
        keyed.sort(key=lambda t: t[0])
        return path, [fa for _, fa in keyed]

    def _path(self, ann: Path, rel: Any, entry: str) -> Path:
        """A path from the annotations, resolved inside ``--input`` (``PathEscapeError`` otherwise)."""
        if not isinstance(rel, str):
            raise layout_error(ann, f"expected a path string relative to the Co3D root, got {rel!r}", key=entry)
        return resolve_inside(self.root, rel, source=ann, entry=entry, what="path")

    def _plan(self, fa: dict[str, Any], ann: Path, seq: str) -> _FramePlan:
        """Check one annotation entry (numbers finite and plausible, paths inside ``--input``) and verify its
        files (complete JPEG/PNGs of ``image.size``); decodes nothing. Errors name the file and key."""
        num = integer(ann, fa.get("frame_number"), key=f"{seq}.frame_number", what="frame_number", lo=0)
        key = f"{seq}/{num}"
        image = _opt_dict(fa, "image", ann, key)
        if image is None:
            raise layout_error(ann, "missing key", key=f"{key}.image")
        img_rel = _get(fa, ann, "image.path", key)
        img_path = self._path(ann, img_rel, f"{key}.image.path")
        name = Path(str(img_rel)).stem
        size = _get(fa, ann, "image.size", key)
        if not (isinstance(size, list) and len(size) == 2):
            raise layout_error(ann, f"image.size {size!r}: expected [H, W]", key=key)
        h, w = (integer(ann, v, key=f"{key}.image.size", what="image.size [H, W] (pixels)", lo=1, hi=MAX_IMAGE_SIDE)
                for v in size)  # Co3D stores [H, W]
        ts = fa.get("frame_timestamp")
        timestamp = -1.0 if ts is None else float(numbers(ann, [ts], key=f"{key}.frame_timestamp",
                                                          what="frame_timestamp (seconds)", lo=-MAX_TIMESTAMP_S,
                                                          hi=MAX_TIMESTAMP_S)[0])
        cam = c2w = None
        vp = _opt_dict(fa, "viewpoint", ann, key)
        if vp is not None:
            fmt = vp.get("intrinsics_format", "ndc_norm_image_bounds")
            if fmt not in NDC_FORMATS:
                raise layout_error(ann, f"malformed viewpoint (intrinsics_format {fmt!r}; expected one of "
                                        f"{NDC_FORMATS})", key=f"{key}.viewpoint")
            try:
                focal = vp["focal_length"]
                principal = vp["principal_point"]
                R_raw, T_raw = vp["R"], vp["T"]
            except KeyError as e:
                raise layout_error(ann, f"malformed viewpoint (KeyError: {e})", key=f"{key}.viewpoint") from e
            f = numbers(ann, _flat(focal, 2), key=f"{key}.viewpoint.focal_length", what="NDC focal length",
                        lo=1e-6, hi=MAX_NDC_FOCAL, n=2)
            pp = numbers(ann, _flat(principal, 2), key=f"{key}.viewpoint.principal_point",
                         what="NDC principal point", lo=-MAX_NDC_PRINCIPAL, hi=MAX_NDC_PRINCIPAL, n=2)
            R = numbers(ann, _flat(R_raw, 9), key=f"{key}.viewpoint.R", what="rotation R (3x3)", lo=-1.001, hi=1.001,
                        n=9).reshape(3, 3)
            T = numbers(ann, _flat(T_raw, 3), key=f"{key}.viewpoint.T", what="translation T", lo=-MAX_TRANSLATION,
                        hi=MAX_TRANSLATION, n=3)
            if not is_proper_rotation(R, tol=_ROT_TOL):
                raise layout_error(ann, "viewpoint.R is not a proper rotation", key=key)
            cam = intrinsics_from_ndc(f, pp, str(fmt), w, h)
            c2w = c2w_from_pytorch3d(R, T)
        if cam is not None:
            if not is_file(img_path):
                raise SourceNotFoundError(f"missing Co3D image: expected a file at {img_path}; named by {ann} [{key}]")
            hdr = verify_image(img_path, "Co3D image", fmt="jpeg", channels=(1, 3), bit_depth=(8,))
            if hdr.size != (w, h):
                raise layout_error(img_path, f"does not decode to image.size [H, W] = [{h}, {w}] of {ann} [{key}] "
                                             f"(the JPEG is {hdr.width}x{hdr.height})")
        depth = dmask = fg = None
        scale = 1.0
        dinfo = _opt_dict(fa, "depth", ann, key)
        if dinfo is not None and cam is not None:
            depth = self._media(ann, _get(fa, ann, "depth.path", key), f"{key}.depth.path", "Co3D depth PNG", w, h,
                                channels=(1,), bit_depth=(16,))
            sa = dinfo.get("scale_adjustment")
            scale = 1.0 if sa is None else float(numbers(ann, [sa], key=f"{key}.depth.scale_adjustment",
                                                         what="depth scale_adjustment", lo=1e-9, hi=1e9)[0])
            if dinfo.get("mask_path"):
                dmask = self._media(ann, dinfo["mask_path"], f"{key}.depth.mask_path", "Co3D depth mask", w, h,
                                    channels=(1, 2, 3, 4))
        minfo = _opt_dict(fa, "mask", ann, key)
        if minfo is not None and minfo.get("path") and cam is not None:
            fg = self._media(ann, minfo["path"], f"{key}.mask.path", "Co3D foreground mask", w, h,
                             channels=(1, 2, 3, 4))
        return _FramePlan(num, name, w, h, timestamp, cam, c2w, img_path, depth, scale, dmask, fg)

    def _media(self, ann: Path, rel: Any, entry: str, what: str, w: int, h: int,
               channels: tuple[int, ...], bit_depth: tuple[int, ...] | None = None) -> Path:
        """A PNG named by the annotations: inside ``--input``, present, complete, of the image's size."""
        path = self._path(ann, rel, entry)
        if not is_file(path):
            raise SourceNotFoundError(f"missing {what}: expected a file at {path}; named by {ann} [{entry}]")
        verify_image(path, what, fmt="png", size=(w, h), size_source=f"{ann.name} [{entry.rsplit('.', 2)[0]}] "
                     "image.size", channels=channels, bit_depth=bit_depth)
        return path

    def check_scene(self, scene: SceneRef) -> list[str]:
        """Every problem conversion would meet, before it starts: each annotation entry of the sequence
        (numbers, paths inside ``--input``) and each file it names (a complete JPEG/PNG of ``image.size``)."""
        broken = broken_problems(scene)
        if broken is not None:
            return broken
        try:
            ann, frames = self._annotations(scene)
        except WaiError as e:
            return [str(e)]
        if not frames:
            return [f"{ann}: no frame of sequence {scene.data['sequence']}"]
        problems = []
        for fa in frames:
            try:
                self._plan(fa, ann, scene.data["sequence"])
            except WaiError as e:
                problems.append(str(e))
        return problems

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        """Write every frame of one sequence.

        Any malformed annotation entry or missing/damaged file it names fails the scene with a message naming
        the file and key (``check_scene`` lists them all first); a frame without a viewpoint is dropped.
        """
        raise_if_broken(scene)
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
        plans = [self._plan(fa, ann, seq) for fa in frames]  # every entry checked before anything is written
        names = [pl.name for pl in plans]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise layout_error(ann, f"several frames of sequence {seq} name the same image {dup[:3]}",
                               key=f"{seq}.image.path")
        for pl in plans:
            self._frame(pl, scene, writer, frame_splits)
        for extra in self._unannotated_images(scene, plans):
            writer.drop_frame(extra.stem, f"no frame annotation: {extra} is not named by any entry of {ann}")
        return {}

    def _unannotated_images(self, scene: SceneRef, plans: list[_FramePlan]) -> list[Path]:
        """Images in ``<category>/<sequence>/images/`` that no annotation entry names (recorded as drops, so a
        lost annotation never makes a frame vanish silently)."""
        d = self.root / scene.data["category"] / scene.data["sequence"] / "images"
        if dir_problem(d) is not None:
            return []
        named = {pl.image.resolve() for pl in plans if pl.image is not None}
        return sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                      and p.resolve() not in named)

    def _frame(self, pl: _FramePlan, scene: SceneRef, writer: SceneWriter,
               frame_splits: dict[int, str] | None) -> None:
        num, name, w, h = pl.number, pl.name, pl.w, pl.h
        if frame_splits is not None:
            split = frame_splits.get(num)
            if split is None:
                writer.drop_frame(name, f"not in set list {self.options.set_list}", w, h)  # type: ignore[attr-defined]
                return
            if split != scene.split:
                writer.drop_frame(name, f"set list puts it in '{split}', the scene is in '{scene.split}'", w, h)
                return
        if pl.camera is None or pl.c2w is None or pl.image is None:
            writer.drop_frame(name, "no viewpoint (camera) annotation", w, h)
            return
        depth = np.zeros((h, w), dtype=np.float32)
        dmask = np.zeros((h, w), dtype=bool)
        if pl.depth is not None:
            depth = decode_depth_png(pl.depth) * np.float32(pl.depth_scale)
            if depth.shape != (h, w):
                raise layout_error(pl.depth, f"shape {depth.shape} != image.size [H, W] = [{h}, {w}]")
            dmask = self._read_gray(pl.depth_mask, h, w) > 0 if pl.depth_mask is not None else np.ones((h, w), bool)
            with np.errstate(invalid="ignore", over="ignore"):
                dmask &= np.isfinite(depth) & (depth > 0)
            depth = np.where(dmask, depth, 0.0).astype(np.float32)
        mods = {"depth_mask": Modality("binary", dmask)}
        if pl.fg_mask is not None:
            mods["fg_mask"] = Modality("labels", self._read_gray(pl.fg_mask, h, w), "co3d_fg")
        extras: dict[str, Any] = {"source_frame": num, "timestamp": pl.timestamp}
        if frame_splits is not None:
            extras["set_list_split"] = frame_splits[num]
        writer.add_frame(name, pl.camera, pl.c2w, image=pl.image, depth=depth, modalities=mods, extras=extras)

    @staticmethod
    def _read_gray(path: Path, h: int, w: int) -> np.ndarray:
        m = decode_image(path, cv2.IMREAD_UNCHANGED, "Co3D mask PNG")
        if m.ndim == 3:
            m = m[..., 0]
        if m.shape != (h, w):
            raise layout_error(path, f"shape {m.shape} != image.size [H, W] = [{h}, {w}]")
        return m.astype(np.uint8) if m.dtype == np.uint8 else (m > 0).astype(np.uint8) * 255


def _flat(value: Any, n: int) -> list[Any]:
    """A nested list flattened (a 3x3 R or a 2-list); anything else yields a list the number check rejects."""
    if isinstance(value, (list, tuple)):
        out: list[Any] = []
        for v in value:
            out.extend(v if isinstance(v, (list, tuple)) else [v])
        return out
    return [value]
