"""The validator: checks converted scenes and datasets against the format contract and reports every problem.

``validate(path)`` accepts one scene directory (it holds ``scene_meta.json`` or ``_process_log.json``), a
dataset root (scenes as subdirectories, plus an optional ``_meta/``) or a folder of dataset roots (e.g.
``converted/{co3d,kitti360}``). It never stops at the first problem: every finding becomes an ``Issue`` with a
stable ``code``; ``Report.to_json()`` is the machine-readable form (documented and stable, see
``docs/validation.md``) and ``format_report`` the one-screen summary. It only reads: nothing is written,
moved or deleted, and no path read from the data is followed outside the dataset (``resolve_inside``).
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wai import FORMAT_VERSION, WAI_VERSION
from wai.errors import PathEscapeError, SceneNotFoundError, WaiError
from wai.format import codecs, exif
from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import CAMERA_MODELS, DEPTH_TYPE_OF_MODEL, PINHOLE, is_proper_rotation
from wai.format.paths import read_json, resolve_inside
from wai.format.scene import COVERAGE_JSON, FAILED, FINISHED, PROCESS_LOG, RUNNING, SCENE_META, STAGE
from wai.format.schema import check_meta
from wai.validation import geometry as geo

#: Version of the JSON report layout (``Report.to_json()["version"]``); bumped when keys are added.
REPORT_VERSION = "1.1"
ERROR, WARNING = "error", "warning"
META_DIR = "_meta"
#: Decoded depth maps of one scene kept in memory for the geometric check (beyond it they are re-read).
DEPTH_CACHE_BYTES = 512 << 20

#: Leading bytes of each container, to catch a file whose extension lies about its content.
_MAGIC = {".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",), ".png": (b"\x89PNG\r\n\x1a\n",),
          ".exr": (b"\x76\x2f\x31\x01",), ".npy": (b"\x93NUMPY",), ".npz": (b"PK\x03\x04",)}
_EXTENSIONS = {"image": (".jpg", ".jpeg", ".png"), "depth": (".exr",), "binary": (".png",),
               "labels": (".png",), "numpy": (".npy", ".npz")}
_DECODE_ERRORS = (WaiError, OSError, ValueError, EOFError, cv2.error)

#: Folder names that mark raw (unconverted) datasets, per source (the converter's --input layout).
RAW_MARKERS: dict[str, tuple[str, ...]] = {
    "kitti360": ("calibration", "data_2d_raw", "data_3d_raw", "data_poses", "data_2d_semantics"),
    "eth3d": ("dslr_calibration_undistorted", "dslr_calibration_jpg", "dslr_images_undistorted",
              "ground_truth_depth", "masks_for_images"),
    "co3d": ("frame_annotations.jgz", "sequence_annotations.jgz", "set_lists"),
    "opv2v": ("data_protocol.yaml",),
    "vkitti2": ("vkitti_2.0.3_rgb", "vkitti_2.0.3_depth", "vkitti_2.0.3_textgt", "extrinsic.txt", "intrinsic.txt"),
}
#: File extensions of raw sensor data and source metadata (never written by the converters).
RAW_EXTENSIONS = (".bin", ".pcd", ".ply", ".txt", ".yaml", ".yml", ".jgz", ".gz", ".7z", ".zip", ".JPG", ".npz")
#: Entries listed per folder when sniffing for raw data (bounded, so a huge raw tree stays cheap).
_SNIFF = 200


@dataclass(frozen=True)
class Issue:
    """One problem. ``path`` is relative to the validated root; ``code`` is a stable machine id."""

    path: str
    field: str
    severity: str
    message: str
    code: str

    def to_json(self) -> dict[str, str]:
        """``{path, field, severity, code, message}``."""
        return {"path": self.path, "field": self.field, "severity": self.severity, "code": self.code,
                "message": self.message}


@dataclass
class Report:
    """Everything ``validate`` found. ``geometry`` maps scene path (relative to the root) -> summary."""

    root: str
    scenes: int = 0
    frames: int = 0
    issues: list[Issue] = field(default_factory=list)
    geometry: dict[str, dict[str, Any]] = field(default_factory=dict)
    strict: bool = False

    @property
    def errors(self) -> list[Issue]:
        """Issues of severity ``error``."""
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        """Issues of severity ``warning``."""
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        """No errors (and, in strict mode, no warnings either)."""
        return not self.errors and not (self.strict and self.warnings)

    @property
    def exit_code(self) -> int:
        """0 when ``ok``, else 1."""
        return 0 if self.ok else 1

    def mean_agreement(self) -> float | None:
        """Mean geometric agreement over scenes that had evaluated pairs."""
        vals = [g["agreement"] for g in self.geometry.values() if g.get("agreement") is not None]
        return float(np.mean(vals)) if vals else None

    def to_json(self) -> dict[str, Any]:
        """The stable machine-readable form (keys documented in docs/validation.md)."""
        return {
            "version": REPORT_VERSION,
            "root": self.root,
            "ok": self.ok,
            "n_scenes": self.scenes,
            "n_frames": self.frames,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "issues": [i.to_json() for i in self.issues],
            "geometry": self.geometry,
        }


# --- helpers -----------------------------------------------------------------------------------


class _Sink:
    """Collects issues for one validated root."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(self, path: str, fld: str, severity: str, code: str, message: str) -> None:
        self.issues.append(Issue(path=path or ".", field=fld, severity=severity, message=message, code=code))

    def error(self, path: str, fld: str, code: str, message: str) -> None:
        self.add(path, fld, ERROR, code, message)

    def warning(self, path: str, fld: str, code: str, message: str) -> None:
        self.add(path, fld, WARNING, code, message)


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


def _read_json(path: Path, what: str) -> tuple[Any, str | None]:
    """``read_json`` (size-capped, nesting-safe) as ``(data, problem)``."""
    try:
        return read_json(path, what=what), None
    except OSError as e:
        return None, f"cannot be read ({e})"
    except (WaiError, UnicodeDecodeError, ValueError) as e:
        msg = str(e)
        return None, msg.split(": ", 1)[1] if msg.startswith(str(path)) and ": " in msg else msg


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_scene_dir(p: Path) -> bool:
    return (p / SCENE_META).is_file() or (p / PROCESS_LOG).is_file()


def _is_dataset_dir(p: Path) -> bool:
    """A converted dataset root: ``_meta/manifest.json`` or at least one scene folder inside."""
    if (p / META_DIR / "manifest.json").is_file():
        return True
    try:
        return any(d.is_dir() and not d.name.startswith((".", "_")) and _is_scene_dir(d) for d in p.iterdir())
    except OSError:
        return False


def _listing(p: Path, limit: int = _SNIFF) -> list[Path]:
    out = []
    try:
        for k, d in enumerate(p.iterdir()):
            if k >= limit:
                break
            out.append(d)
    except OSError:
        pass
    return out


def raw_source_hint(p: Path) -> str | None:
    """``"<source>"`` (or ``"raw"``) when folder ``p`` looks like raw, unconverted data; None otherwise.

    Looks at most ``_SNIFF`` entries of ``p`` and of each of its first 20 subfolders for a source's layout
    markers (``RAW_MARKERS``) or raw file types (``RAW_EXTENSIONS``).
    """
    level1 = _listing(p)
    names = {d.name for d in level1}
    sub = [d for d in level1 if d.is_dir()][:20]
    level2 = [e for d in sub for e in _listing(d)]
    names2 = {e.name for e in level2}
    level3 = [e for d in [d for d in level2 if d.is_dir()][:20] for e in _listing(d, 50)]
    names3 = {e.name for e in level3}
    for source, markers in RAW_MARKERS.items():
        if any(m in names or m in names2 or m in names3 for m in markers):
            return source
    files = [e for e in [*level1, *level2] if e.suffix in RAW_EXTENSIONS and e.is_file()]
    return "raw" if files else None


def _raw_advice(name: str, source: str, shown: str) -> str:
    conv = f"wai-convert {source}" if source != "raw" else "wai-convert <source>"
    kind = f"raw {source} data" if source != "raw" else "raw (unconverted) data"
    return (f"{name} looks like {kind}, not converted output; convert it into a separate folder "
            f"(`{conv} --input {shown} --output <new folder>`) and validate that folder. wai-validate only reads: "
            "the raw data is left as it is")


# --- per-scene checks ----------------------------------------------------------------------------


@dataclass
class _Opts:
    geometry: bool
    max_pairs: int | None
    seed: int


@dataclass
class _SceneCtx:
    dir: Path
    prefix: str  # path of the scene relative to the validated root ("" for a single scene)
    sink: _Sink
    base: Path  # the dataset root (resolved): no path read from data may leave it
    in_base: str  # the scene folder relative to ``base``
    meta_rel: str = ""

    def rel(self, p: str) -> str:
        return _join(self.prefix, p)

    def resolve(self, rel: str, entry: str, what: str = "path") -> Path:
        """``rel`` (relative to the scene) resolved inside the dataset; ``PathEscapeError`` otherwise."""
        rp = Path(rel)
        joined = rel if rp.is_absolute() or ".." in rp.parts or not self.in_base else f"{self.in_base}/{rel}"
        return resolve_inside(self.base, joined, source=self.meta_rel or SCENE_META, entry=entry, what=what)


@dataclass
class _SceneResult:
    frames: int = 0
    summary: dict[str, Any] | None = None
    complete: bool = False
    frames_with_depth: int = 0  # frames whose depth has at least one valid pixel


def _escape(ctx: _SceneCtx, where: str, fld: str, e: PathEscapeError) -> None:
    ctx.sink.error(where, fld, "path_escape",
                   f"{e}; paths in a converted dataset must stay inside it: replace the link or path by the file "
                   "itself (the loaders refuse it too)")


def _fixed_file(ctx: _SceneCtx, name: str) -> Path | None:
    """A scene's own file (``scene_meta.json``, ``_process_log.json``, ...) resolved inside the dataset."""
    try:
        return resolve_inside(ctx.base, f"{ctx.in_base}/{name}" if ctx.in_base else name,
                              source=ctx.prefix or ctx.dir.name, entry=name, what="scene file")
    except PathEscapeError as e:
        _escape(ctx, ctx.rel(name), "", e)
        return None


def _check_state(ctx: _SceneCtx, meta_ok: bool) -> str | None:
    state = None
    log_path = _fixed_file(ctx, PROCESS_LOG) if (ctx.dir / PROCESS_LOG).exists() else None
    if log_path is not None and log_path.is_file():
        data, err = _read_json(log_path, PROCESS_LOG)
        if err:
            ctx.sink.error(ctx.rel(PROCESS_LOG), "", "invalid_json",
                           f"{ctx.rel(PROCESS_LOG)} {err}; re-run the conversion of this scene")
        entry = data.get(STAGE) if isinstance(data, dict) else None
        state = entry.get("state") if isinstance(entry, dict) else None
        if state == FINISHED and not meta_ok:
            state = RUNNING
        if state == FAILED:
            msg = _last_line(entry.get("message", "") if isinstance(entry, dict) else "")
            ctx.sink.error(ctx.rel(PROCESS_LOG), f"{STAGE}.state", "conversion_failed",
                           f"{ctx.rel(PROCESS_LOG)}: conversion failed: {msg}; fix the cause and re-run the "
                           "converter (it redoes incomplete scenes)")
            return state
    if state != FINISHED:
        why = (f"{SCENE_META} is missing" if not meta_ok
               else f"{PROCESS_LOG} says {state!r}, not 'finished'" if state else f"{PROCESS_LOG} is missing")
        ctx.sink.error(ctx.prefix or ".", "", "incomplete_scene",
                       f"scene {ctx.prefix or ctx.dir.name} is incomplete ({why}); re-run the converter, which "
                       "redoes incomplete scenes")
    return state


def _frame_label(fr: Any, i: int) -> str:
    name = fr.get("frame_name", i) if isinstance(fr, dict) else i
    return f"frames[{name}]"


def _check_top(ctx: _SceneCtx, meta: dict[str, Any]) -> None:
    m = ctx.meta_rel
    if meta.get("version") != WAI_VERSION:
        ctx.sink.error(m, "version", "version_mismatch",
                       f"{m}: version is {meta.get('version')!r}, expected {WAI_VERSION!r} (the WAI version); "
                       "re-convert with this library")
    if meta.get("format_version") != FORMAT_VERSION:
        ctx.sink.error(m, "format_version", "version_mismatch",
                       f"{m}: format_version is {meta.get('format_version')!r}, expected {FORMAT_VERSION!r}; "
                       "re-convert with this library version")
    folder = ctx.dir.name
    if meta.get("scene_name") != folder:
        ctx.sink.error(m, "scene_name", "scene_name_mismatch",
                       f"{m}: scene_name {meta.get('scene_name')!r} differs from the folder name {folder!r}; "
                       "rename the folder or fix scene_name")
    frames = meta.get("frames") if isinstance(meta.get("frames"), list) else []
    seen: dict[str, int] = {}
    for fr in frames:
        if isinstance(fr, dict) and isinstance(fr.get("frame_name"), str):
            seen[fr["frame_name"]] = seen.get(fr["frame_name"], 0) + 1
    for name, n in seen.items():
        if n > 1:
            ctx.sink.error(m, f"frames[{name}].frame_name", "duplicate_frame",
                           f"{m}: frame_name {name!r} is used by {n} frames; frame names must be unique in a scene")
    default = meta.get("camera_model", PINHOLE)
    models = {fr.get("camera_model", default) for fr in frames if isinstance(fr, dict)} or {default}
    models = {mm for mm in models if isinstance(mm, str) and mm in CAMERA_MODELS}
    expected = {DEPTH_TYPE_OF_MODEL[mm] for mm in models}
    dt = meta.get("depth_type")
    if len(expected) > 1:
        ctx.sink.error(m, "depth_type", "depth_type_mismatch",
                       f"{m}: frames mix camera models {sorted(models)} but a scene has one depth_type; "
                       "write them as separate scenes")
    elif expected and isinstance(dt, str) and dt not in expected:
        want = expected.pop()
        ctx.sink.error(m, "depth_type", "depth_type_mismatch",
                       f"{m}: depth_type is {dt!r} but camera model {sorted(models)[0]} stores {want!r} depth; "
                       f"set depth_type to {want!r} and store that kind of depth")
    for name, spec in (meta.get("frame_modalities") or {}).items():
        if isinstance(spec, dict) and spec.get("format") == "labels" and spec.get("labels") is not None:
            if spec["labels"] not in (meta.get("label_tables") or {}):
                ctx.sink.warning(m, f"frame_modalities.{name}.labels", "label_table_missing",
                                 f"{m}: modality {name} names label table {spec['labels']!r} which is not in "
                                 "label_tables; add the id table")


def _check_pose(ctx: _SceneCtx, label: str, T: Any) -> np.ndarray | None:
    m = ctx.meta_rel
    fld = f"{label}.transform_matrix"
    try:
        M = np.asarray(T, dtype=np.float64)
    except (TypeError, ValueError):
        return None  # check_meta reports the structure
    if M.shape != (4, 4):
        return None
    if not np.all(np.isfinite(M)):
        ctx.sink.error(m, fld, "pose_nonfinite", f"{m}: {fld} contains NaN or inf; write a finite camera-to-world pose")
        return None
    if not np.allclose(M[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        ctx.sink.error(m, fld, "pose_last_row",
                       f"{m}: {fld} last row is {M[3].tolist()}, expected [0, 0, 0, 1]; store a 4x4 rigid "
                       "camera-to-world matrix")
    R = M[:3, :3]
    if not is_proper_rotation(R):
        det = float(np.linalg.det(R))
        ortho = float(np.abs(R @ R.T - np.eye(3)).max())
        hint = ("a reflection: a left-handed source must be made right-handed (record world_from_source in "
                "_applied_transforms)" if det < 0 else "orthonormalise the rotation (scale or shear is not allowed)")
        ctx.sink.error(m, fld, "rotation_not_proper",
                       f"{m}: {fld} rotation has det {det:+.6f} and |R R^T - I| = {ortho:.2e} (must be det +1, "
                       f"orthonormal to 1e-5); {hint}")
    return M


def _check_intrinsics(ctx: _SceneCtx, label: str, fr: dict[str, Any], default_model: str) -> Camera | None:
    m = ctx.meta_rel
    ok = True
    for k in ("fl_x", "fl_y"):
        v = fr.get(k)
        if _is_number(v) and not (math.isfinite(v) and v > 0):
            ctx.sink.error(m, f"{label}.{k}", "intrinsics_invalid",
                           f"{m}: {label}.{k} = {v} must be a positive focal length in pixels")
            ok = False
    w, h = fr.get("w"), fr.get("h")
    for k, size in (("cx", w), ("cy", h)):
        v = fr.get(k)
        if _is_number(v) and _is_number(size) and size > 0 and not (-0.5 <= v <= size - 0.5):
            ctx.sink.error(m, f"{label}.{k}", "intrinsics_invalid",
                           f"{m}: {label}.{k} = {v} lies outside the image [-0.5, {size - 0.5}]; the principal "
                           "point must be inside (pixel centres at integer coordinates)")
    if not ok:
        return None
    try:
        cam = Camera.from_frame(fr, default_model)
    except (WaiError, TypeError, ValueError, OverflowError):
        return None
    if cam.w <= 0 or cam.h <= 0 or not all(math.isfinite(x) for x in (cam.fl_x, cam.fl_y, cam.cx, cam.cy)):
        return None
    return cam


def _decode(p: Path, ext: str, fmt: str, data: bytes | None) -> np.ndarray:
    """Decode a whole file (``data`` = its bytes, except for EXR depth, read by path as OpenCV needs)."""
    if fmt == "numpy":
        assert data is not None
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if isinstance(arr, np.lib.npyio.NpzFile):
            with arr:
                return arr[arr.files[0]] if arr.files else np.zeros(0)
        return arr
    if fmt == "depth":
        d = codecs.imread_bytes_safe(p, cv2.IMREAD_UNCHANGED, "depth")
        if d is None:
            raise WaiError("OpenCV cannot decode it (truncated or corrupt EXR)")
        return (d[..., 0] if d.ndim == 3 else d).astype(np.float32, copy=False)
    assert data is not None
    buf = np.frombuffer(data, dtype=np.uint8)
    flags = cv2.IMREAD_COLOR_RGB if fmt == "image" else cv2.IMREAD_UNCHANGED
    img = codecs.imdecode(buf, flags)  # the stored pixel grid (EXIF orientation ignored, reported above)
    if img is None:
        raise WaiError("OpenCV cannot decode it (truncated or corrupt file)")
    if fmt == "labels" and img.ndim == 3:
        img = img[..., 0]
    return img


def _check_file(ctx: _SceneCtx, label: str, key: str, fmt: str, rel: Any, w: Any, h: Any) -> np.ndarray | None:
    """Containment, existence, extension/content, full decoding, shape and value checks of one modality file."""
    m = ctx.meta_rel
    fld = f"{label}.{key}"
    if not isinstance(rel, str) or not rel:
        return None  # check_meta reports the missing key
    where = ctx.rel(rel)
    try:
        p = ctx.resolve(rel, fld, what="frame path")
    except PathEscapeError as e:
        _escape(ctx, m, fld, e)
        return None
    if not p.is_file():
        ctx.sink.error(where, fld, "missing_file",
                       f"{where} is missing ({m} {fld} points to it); re-run the converter or fix the path")
        return None
    ext = Path(rel).suffix.lower()
    allowed = _EXTENSIONS[fmt]
    if ext not in allowed:
        ctx.sink.error(where, fld, "bad_extension",
                       f"{where}: a `{fmt}` file must end in {'/'.join(allowed)}, not {ext!r}")
    try:
        with p.open("rb") as fh:
            data = fh.read(8) if fmt == "depth" else fh.read()
    except OSError as e:
        ctx.sink.error(where, fld, "decode_failed", f"{where} cannot be read ({e})")
        return None
    magic = _MAGIC.get(ext)
    if magic and not any(data.startswith(mg) for mg in magic):
        ctx.sink.error(where, fld, "extension_mismatch",
                       f"{where}: content does not match its extension {ext!r}; re-encode it or fix the extension")
        return None
    if fmt != "depth" and codecs.is_truncated(data, ext):
        ctx.sink.error(where, fld, "decode_failed",
                       f"{where} is truncated ({len(data)} bytes, no end marker); re-write it (a killed copy or "
                       "conversion?)")
        return None
    if fmt != "depth":
        orient = exif.exif_orientation(data)
        if orient != 1:
            msg = (f"{where} carries an EXIF orientation block ({f'orientation {orient}' if orient else 'unreadable'}"
                   "): readers that honour it (MapAnything's cv2.imread, PIL's exif_transpose) turn or flip the "
                   "image away from its depth and intrinsics, while wai reads the stored pixel grid; re-convert "
                   "with this wai (copies drop the tag) or strip the EXIF block")
            (ctx.sink.error if orient else ctx.sink.warning)(where, fld, "exif_orientation", msg)
    try:
        arr = _decode(p, ext, fmt, None if fmt == "depth" else data)
    except _DECODE_ERRORS as e:
        ctx.sink.error(where, fld, "decode_failed", f"{where} could not be decoded as `{fmt}` ({e}); re-write it")
        return None
    if fmt != "numpy" and _is_number(w) and _is_number(h):
        shp = arr.shape[:2]
        if shp != (h, w):
            which = [k for k, a, b in (("w", shp[1] if len(shp) > 1 else None, w), ("h", shp[0], h)) if a != b]
            sfld = f"{label}.{which[0]}" if len(which) == 1 else f"{label}.w/h"
            got = f"{shp[1]}x{shp[0]}" if len(shp) == 2 else str(arr.shape)
            ctx.sink.error(where, sfld, "shape_mismatch",
                           f"{where} is {got} (w x h) but {m} {label} says w={w}, h={h}; fix {sfld} in "
                           f"{SCENE_META} or re-write the file at that size")
    if fmt == "depth":
        bad = ~np.isfinite(arr)
        if bad.any():
            ctx.sink.error(where, fld, "depth_nonfinite",
                           f"{where}: {int(bad.sum())} depth pixels are NaN/inf; store 0 where there is no data")
        neg = np.isfinite(arr) & (arr < 0)
        if neg.any():
            ctx.sink.error(where, fld, "depth_negative",
                           f"{where}: {int(neg.sum())} depth pixels are negative (min {float(arr[neg].min()):.3g}); "
                           "depth is >= 0 with 0 = no data")
    elif fmt == "binary":
        if arr.dtype != np.uint8:
            ctx.sink.warning(where, fld, "mask_values",
                             f"{where}: binary mask is {arr.dtype}, expected 8-bit PNG with values 0/255")
        else:
            extra = np.setdiff1d(np.unique(arr), [0, 255])
            if extra.size:
                ctx.sink.warning(where, fld, "mask_values",
                                 f"{where}: binary mask holds values {extra[:5].tolist()} besides 0/255; store 0 and "
                                 "255 only (a mask with more than two values belongs in a `labels` modality)")
    elif fmt == "labels":
        if arr.dtype not in (np.uint8, np.uint16):
            ctx.sink.error(where, fld, "label_dtype",
                           f"{where}: label map is {arr.dtype}, expected an 8- or 16-bit PNG of ids")
    return arr


def _read_depth_for_geometry(f: geo.FrameGeom) -> np.ndarray:
    """Re-read a depth map already checked once (resolved path); zeros if it changed size meanwhile."""
    try:
        d = codecs.imread_bytes_safe(f.depth_path, cv2.IMREAD_UNCHANGED, "depth")
    except WaiError:  # removed since it was checked: the file check already reported what it found
        d = None
    if d is None:
        return np.zeros((f.camera.h, f.camera.w), dtype=np.float32)
    d = d[..., 0] if d.ndim == 3 else d
    return d if d.shape == (f.camera.h, f.camera.w) else np.zeros((f.camera.h, f.camera.w), dtype=np.float32)


def _pose_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Distance between camera centres and rotation angle (degrees) between two poses."""
    dist = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    c = (float(np.trace(a[:3, :3].T @ b[:3, :3])) - 1.0) / 2.0
    return dist, math.degrees(math.acos(min(1.0, max(-1.0, c))))


def _check_scene_modalities(ctx: _SceneCtx, meta: dict[str, Any]) -> None:
    """Scene-level files (e.g. covisibility ``scene_key``): inside the dataset and present."""
    mods = meta.get("scene_modalities")
    if not isinstance(mods, dict):
        return
    for name, entry in mods.items():
        if not isinstance(entry, dict):
            continue
        for k, v in entry.items():
            if k == "format" or not isinstance(v, str):
                continue
            fld = f"scene_modalities.{name}.{k}"
            try:
                p = ctx.resolve(v, fld, what="scene modality path")
            except PathEscapeError as e:
                _escape(ctx, ctx.meta_rel, fld, e)
                continue
            if not p.is_file():
                ctx.sink.warning(ctx.rel(v), fld, "missing_scene_file",
                                 f"{ctx.rel(v)} is missing ({ctx.meta_rel} {fld} points to it); loaders that use "
                                 f"`{name}` will fail: recompute it (e.g. `wai-convert covisibility`) or drop the "
                                 "entry")


def _check_scene(scene_dir: Path, prefix: str, sink: _Sink, base: Path, in_base: str, opts: _Opts,
                 bar: Any) -> _SceneResult:
    """Check one scene (files, metadata, geometry)."""
    ctx = _SceneCtx(scene_dir, prefix, sink, base, in_base, meta_rel=_join(prefix, SCENE_META))
    out = _SceneResult()
    meta_path = _fixed_file(ctx, SCENE_META) if (scene_dir / SCENE_META).exists() else None
    meta_ok = meta_path is not None and meta_path.is_file()
    state = _check_state(ctx, meta_ok)
    out.complete = state == FINISHED
    if not meta_ok or meta_path is None:
        return out
    m = ctx.meta_rel
    meta, err = _read_json(meta_path, SCENE_META)
    if err:
        sink.error(m, "", "invalid_json", f"{m} {err}; re-run the conversion of this scene")
        out.complete = False
        return out
    n_before = len(sink.issues)
    schema_issues = check_meta(meta)
    if not isinstance(meta, dict):
        for fld, msg in schema_issues:
            sink.error(m, fld, "schema", f"{m}: {msg}")
        return out
    _check_top(ctx, meta)
    _check_scene_modalities(ctx, meta)
    frames = meta.get("frames") if isinstance(meta.get("frames"), list) else []
    out.frames = len(frames)
    if bar is not None:
        bar.total = (bar.total or 0) + len(frames)
        bar.set_description(prefix or scene_dir.name)
        bar.refresh()
    mods = meta.get("frame_modalities") if isinstance(meta.get("frame_modalities"), dict) else {}
    default_model = meta.get("camera_model", PINHOLE)
    metric = meta.get("scale_type", "metric") != "relative"
    depth_key = None
    for name, spec in mods.items():
        if isinstance(spec, dict) and spec.get("format") == "depth" and (name == "depth" or depth_key is None):
            depth_key = spec.get("frame_key")
    rng = np.random.default_rng(opts.seed)
    geo_frames: list[geo.FrameGeom] = []
    kept_bytes = 0
    images: dict[bytes, tuple[str, np.ndarray | None, str, Path]] = {}
    for i, fr in enumerate(frames):
        if bar is not None:
            bar.update(1)
        if not isinstance(fr, dict):
            continue
        label = _frame_label(fr, i)
        fp, im = fr.get("file_path"), fr.get("image")
        if isinstance(fp, str) and isinstance(im, str) and fp != im:
            sink.error(m, f"{label}.file_path", "file_path_mismatch",
                       f"{m}: {label}.file_path {fp!r} differs from {label}.image {im!r}; both must name the RGB image")
        T = _check_pose(ctx, label, fr.get("transform_matrix"))
        cam = _check_intrinsics(ctx, label, fr, default_model)
        w, h = fr.get("w"), fr.get("h")
        depth = None
        for spec in mods.values():
            if not isinstance(spec, dict) or not isinstance(spec.get("frame_key"), str):
                continue
            key, fmt = spec["frame_key"], spec.get("format")
            if key not in fr or fmt not in _EXTENSIONS:
                continue
            arr = _check_file(ctx, label, key, fmt, fr[key], w, h)
            if arr is None:
                continue
            if key == depth_key:
                depth = arr
            elif fmt == "image" and key == "image":
                _check_duplicate(ctx, images, label, fr, arr, T, ctx.resolve(fr[key], f"{label}.{key}"))
        if depth is not None and cam is not None and depth.shape == (cam.h, cam.w):
            if bool(np.any(np.isfinite(depth) & (depth > 0))):
                out.frames_with_depth += 1
                if opts.geometry and T is not None:
                    dpath = ctx.resolve(fr[depth_key], f"{label}.{depth_key}")  # resolved once already
                    keep = kept_bytes + depth.size * 4 <= DEPTH_CACHE_BYTES
                    g = geo.make_frame(str(fr.get("frame_name", i)), cam, T, depth, dpath, ctx.rel(fr[depth_key]),
                                       rng, index=len(geo_frames), keep_depth=keep)
                    if g is not None:
                        kept_bytes += depth.size * 4 if keep else 0
                        geo_frames.append(g)
    # A specific issue on a field replaces the generic schema message for the same field.
    specific = {(iss.path, iss.field) for iss in sink.issues[n_before:]}
    for fld, msg in schema_issues:
        if (m, fld) not in specific:
            sink.error(m, fld, "schema", f"{m}: {fld}: {msg}; fix the converter to write it as docs/format.md says")
    cov = _fixed_file(ctx, COVERAGE_JSON) if (scene_dir / COVERAGE_JSON).exists() else None
    if not (scene_dir / COVERAGE_JSON).exists():
        sink.warning(ctx.rel(COVERAGE_JSON), "", "missing_coverage",
                     f"{ctx.rel(COVERAGE_JSON)} is missing; re-run the conversion to write coverage statistics")
    elif cov is not None:
        _, err = _read_json(cov, COVERAGE_JSON)
        if err:
            sink.error(ctx.rel(COVERAGE_JSON), "", "invalid_json",
                       f"{ctx.rel(COVERAGE_JSON)} {err}; re-run the conversion of this scene")
    if frames and out.frames_with_depth == 0:
        why = "has no depth modality" if depth_key is None else "has no frame with a valid depth pixel"
        sink.warning(ctx.prefix or ".", "", "no_depth",
                     f"scene {ctx.prefix or scene_dir.name} {why}: nothing in it can be used for depth supervision "
                     "or checked geometrically; check the converter's depth options and drop reasons")
    if opts.geometry:
        res = geo.check_scene(geo_frames, _read_depth_for_geometry, metric=metric, max_pairs=opts.max_pairs,
                              seed=opts.seed)
        out.summary = res.to_json()
        _geometry_issues(ctx, res, len(geo_frames))
    return out


def _check_duplicate(ctx: _SceneCtx, seen: dict[bytes, tuple[str, np.ndarray | None, str, Path]], label: str,
                     fr: dict[str, Any], arr: np.ndarray, T: np.ndarray | None, path: Path) -> None:
    """Two frames with pixel-identical images but different poses: one of them holds the wrong image.

    Images are keyed by a hash of every 4th pixel; a hit is confirmed on the full pixels before it is reported.
    """
    digest = hashlib.blake2b(np.ascontiguousarray(arr[::4, ::4]).tobytes(), digest_size=16).digest()
    digest += str(arr.shape).encode()
    prev = seen.get(digest)
    rel = str(fr.get("image"))
    if prev is None:
        seen[digest] = (label, T, rel, path)
        return
    plabel, pT, prel, ppath = prev
    if T is None or pT is None:
        return
    dist, ang = _pose_difference(pT, T)
    if dist <= 1e-6 * max(1.0, float(np.abs(T[:3, 3]).max())) and ang <= 1e-4:
        return  # same pose, same picture: a repeated frame, not a wrong one
    try:
        other = codecs.imread_bytes_safe(ppath, cv2.IMREAD_COLOR_RGB, "image")
    except WaiError:
        return  # unreadable: reported by that frame's own file check
    if other is None or other.shape != arr.shape or not np.array_equal(other, arr):
        return
    where = ctx.rel(rel)
    ctx.sink.error(where, f"{label}.image", "duplicate_image",
                   f"{where} ({label}) has exactly the same pixels as {ctx.rel(prel)} ({plabel}), but their poses "
                   f"differ by {dist:.3g} (scene units) and {ang:.1f} deg: one of the two frames holds another "
                   "frame's image; re-convert it")


def _diag(res: geo.SceneGeometry, names: list[str]) -> str:
    parts = [f"{'' if n == '*' or res.diagnoses[n].startswith('frames[') else 'frames[' + n + ']: '}"
             f"{res.diagnoses[n]}" for n in names if n in res.diagnoses]
    return (" Likely cause: " + "; ".join(parts) + ".") if parts else ""


def _geometry_issues(ctx: _SceneCtx, res: geo.SceneGeometry, n_frames: int) -> None:
    """Turn the geometric check's findings into issues (each names the frame, or says it is every frame)."""
    name = ctx.prefix or ctx.dir.name
    m = ctx.meta_rel
    where = ctx.prefix or "."
    check_pose = (f"Check the transform_matrix in {m} (camera-to-world, OpenCV axes: not world-to-camera, not "
                  "transposed, not OpenGL)")
    reported: set[str] = set()
    for i in sorted(res.flagged):
        if i not in res.lonely:
            continue
        fname = res.names[i]
        reported.add(fname)
        if res.best_overlap and res.best_overlap[i] < geo.MIN_OVERLAP:
            what = "overlaps no other frame (its depth lands in no other view)"
        else:
            what = "shares no comparable depth with any other frame (its depth lands only where they have none)"
        why = ("a convention fix makes it agree with them" if res.flagged[i] == "hypothesis"
               else "its camera is among theirs")
        ctx.sink.error(
            where, f"frames[{fname}].transform_matrix", "pose_isolated",
            f"scene {name}: frames[{fname}] {what}, although the other frames overlap each other and {why}."
            f"{_diag(res, [fname])} {check_pose} of frames[{fname}]")
    worst = res.worst
    scene_diag = res.scene_flag is not None
    if res.failed and worst is not None:
        a, b = res.names[worst.a], res.names[worst.b]
        suspects = res.suspects() or [a, b]
        fld = f"frames[{suspects[0]}]" if len(suspects) == 1 else f"frames[{a}]"
        sus = ", ".join(f"frames[{s}]" for s in suspects)
        biased = [p for p in res.bad_pairs() if p.biased]
        bias_txt = ""
        if biased:
            p0 = biased[0]
            bias_txt = (f" {len(biased)} pair(s) are biased: in {res.names[p0.a]} <-> {res.names[p0.b]} depth is "
                        f"x{p0.scale.factor:.3g} what the baseline implies (a misplaced camera).") if p0.scale else ""
        ctx.sink.error(
            where, fld, "depth_reprojection",
            f"scene {name}: depth reprojected between frames disagrees: mean agreement {res.agreement:.3f} over "
            f"{len(res.evaluated)} pairs (need >= {geo.MIN_AGREEMENT}, every pair >= {geo.MIN_PAIR_AGREEMENT}); "
            f"worst pair {a} <-> {b}: {worst.agreement:.3f} of {worst.comparable} points agree.{bias_txt} Most "
            f"likely wrong: {sus}.{_diag(res, [*suspects, '*'])} {check_pose}, and its depth file (metres, z for "
            "PINHOLE / range for CYLINDRICAL, not rescaled)")
        reported.update(suspects)
        scene_diag = False
    for i in sorted(res.flagged):
        fname = res.names[i]
        if fname in reported:
            continue
        swapped = [j for j in res.flagged if j != i and res.flagged[j] == "swap" and res.flagged[i] == "swap"]
        others = [res.names[j] for j in swapped if res.names[j] not in reported]
        reported.update([fname, *others])
        both = ", ".join(f"frames[{n}]" for n in [fname, *others])
        ctx.sink.error(
            where, f"frames[{fname}]", "depth_reprojection",
            f"scene {name}: {both} agree with their neighbours only when their poses are read another way."
            f"{_diag(res, [fname])} {check_pose} of {both}")
    sc = res.scale
    if res.scene_flag == "depth" and sc is not None and not res.scale_failed:
        sc = None  # reported below from the reading that explains it
    if res.scene_flag is not None and res.scene_flag != "depth":
        sc = None  # a pose convention error explains the scene; its scale and kind fits are artefacts of it
    if sc is not None and res.scale_failed:
        size = ("" if res.scene_flag == "depth" else  # the linear fit is meaningless for a gross unit error
                f"; the stored depth is x{sc.factor:.4g} +- {sc.se:.2g} what the poses' baselines imply")
        ctx.sink.error(
            where, "", "depth_scale_bias",
            f"scene {name}: depth and poses disagree in scale: the signed point-to-surface residuals of "
            f"{sc.directions} pair directions ({sc.points} points) are biased the same way{size} (all "
            f"{n_frames} frames).{_diag(res, ['*'])} Check the depth unit (metres; centimetres are x100), the "
            "depth kind (z for PINHOLE, range for CYLINDRICAL) and that depth and translations share one scale")
        scene_diag = False
    if res.kind_failed and sc is not None and res.scene_flag is None:
        kind = ("range (distance to the camera centre) where PINHOLE z belongs" if res.pinhole
                else "the distance from the cylinder's axis where CYLINDRICAL range belongs")
        ctx.sink.error(
            where, "", "depth_kind",
            f"scene {name}: the reprojection residuals of {sc.directions} pair directions ({sc.points} points) "
            f"follow the pattern of the other depth kind ({sc.kind:.2f} +- {sc.kind_se:.2f} of it; 0 for "
            f"consistent data, 1 when every map holds it): the depth maps look like {kind} (all {n_frames} "
            "frames). Store z for PINHOLE and range for CYLINDRICAL (docs/format.md, Camera models)")
        scene_diag = False
    if scene_diag:
        code = "depth_scale_bias" if res.scene_flag == "depth" else "depth_reprojection"
        what = "depth file" if res.scene_flag == "depth" else "transform_matrix"
        ctx.sink.error(
            where, "", code,
            f"scene {name}: poses and depth of its {n_frames} frames agree clearly better when read another "
            f"way.{_diag(res, ['*'])} Check every frame's {what} (see docs/conventions.md)")


# --- dataset-level checks --------------------------------------------------------------------


def _check_scene_lists(root: Path, prefix: str, scenes: dict[str, bool], sink: _Sink) -> None:
    meta = root / META_DIR
    if not meta.is_dir():
        return
    mrel = _join(prefix, META_DIR)
    real_root = root.resolve()
    if not (meta / "manifest.json").is_file():
        sink.warning(_join(mrel, "manifest.json"), "", "missing_manifest",
                     f"{mrel}/manifest.json is missing; the converter writes it at the end of a run")
    else:
        try:
            mp = resolve_inside(real_root, f"{META_DIR}/manifest.json", source=mrel, entry="manifest.json")
            _, err = _read_json(mp, "manifest.json")
            if err:
                sink.error(_join(mrel, "manifest.json"), "", "invalid_json",
                           f"{mrel}/manifest.json {err}; re-run the converter")
        except PathEscapeError as e:
            sink.error(_join(mrel, "manifest.json"), "", "path_escape", f"{e}; replace the link by the file itself")
    lists = sorted(meta.glob("*/*_scene_list_*.npy"))
    listed: set[str] = set()
    for lp in lists:
        rel = _join(prefix, lp.relative_to(root).as_posix())
        split = lp.parent.name
        if not lp.stem.endswith(f"_scene_list_{split}"):
            sink.warning(rel, "", "scene_list_name",
                         f"{rel}: a scene list in {META_DIR}/{split}/ must be named <dataset>_scene_list_{split}.npy")
        try:
            real = resolve_inside(real_root, lp.relative_to(root).as_posix(), source=rel, what="scene list")
            arr = np.load(real, allow_pickle=False)
        except PathEscapeError as e:
            sink.error(rel, "", "path_escape", f"{e}; replace the link by the file itself")
            continue
        except (OSError, ValueError, EOFError) as e:
            sink.error(rel, "", "scene_list_invalid",
                       f"{rel} cannot be read as a numpy array of str ({e}); re-write it")
            continue
        if arr.dtype.kind not in "US" or arr.ndim != 1:
            sink.error(rel, "", "scene_list_invalid",
                       f"{rel} holds {arr.dtype} of shape {arr.shape}, expected a 1-D numpy array of str")
            continue
        for k, s in enumerate(arr.tolist()):
            s = s.decode(errors="replace") if isinstance(s, bytes) else str(s)
            try:
                resolve_inside(real_root, s, source=rel, entry=f"[{k}]", what="scene name")
            except PathEscapeError as e:
                sink.error(rel, s, "path_escape", f"{e}; a scene list names scene folders of this dataset only")
                continue
            listed.add(s)
            if s not in scenes:
                sink.error(rel, s, "scene_list_missing_scene",
                           f"{rel} lists scene {s!r} which does not exist under the root; convert it or drop it "
                           "from the list")
            elif not scenes[s]:
                sink.error(rel, s, "scene_list_incomplete_scene",
                           f"{rel} lists scene {s!r} which is incomplete; re-run the converter")
    if lists:
        for s, complete in sorted(scenes.items()):
            if complete and s not in listed:
                sink.warning(_join(prefix, s), "", "scene_not_listed",
                             f"scene {_join(prefix, s)} is complete but in no {META_DIR}/<split>/*_scene_list_"
                             "<split>.npy; add it to a split (or re-run the converter, which rewrites the lists)")


def _check_dataset(root: Path, prefix: str, sink: _Sink, report: Report, opts: _Opts, bar: Any,
                   nested: bool) -> None:
    """Check a dataset root (``nested``: its subfolders may be dataset roots themselves)."""
    real_root = root.resolve()
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    scenes: list[Path] = []
    datasets: list[Path] = []
    others: list[Path] = []
    for d in subdirs:
        shown = _join(prefix, d.name)
        if d.is_symlink():
            try:
                resolve_inside(real_root, d.name, source=_join(prefix, ".") if prefix else ".", entry=d.name,
                               what="scene folder")
            except PathEscapeError as e:
                sink.error(shown, "", "path_escape", f"{e}; a dataset holds its scene folders itself (a symlinked "
                           "scene would be read from elsewhere); it was not checked")
                continue
        if _is_scene_dir(d):
            scenes.append(d)
        elif nested and _is_dataset_dir(d):
            datasets.append(d)
        else:
            others.append(d)
    raw_root = raw_source_hint(root) if not scenes and not datasets else None
    if not scenes and not datasets:
        where = prefix or "."
        if raw_root is not None:
            sink.error(where, "", "no_scenes", _raw_advice(str(root), raw_root, str(root)))
        else:
            sink.error(where, "", "no_scenes",
                       f"{root} holds no scene folders (with {SCENE_META}); is this the converter's --output?")
    for d in others if raw_root is None else ():  # a raw root gets one piece of advice, not one per folder
        shown = _join(prefix, d.name)
        source = raw_source_hint(d)
        if source is not None:
            sink.warning(shown, "", "not_a_scene", f"{_raw_advice(shown + '/', source, str(d))}; not checked")
        else:
            sink.warning(shown, "", "not_a_scene",
                         f"{shown}/ has neither {SCENE_META} nor {PROCESS_LOG}, so it is not a scene and was not "
                         "checked; if it should be one, re-run the converter for it (it writes both)")
    complete: dict[str, bool] = {}
    with_depth = 0
    for d in scenes:
        shown = _join(prefix, d.name)
        r = _check_scene(d, shown, sink, real_root, d.name, opts, bar)
        report.frames += r.frames
        report.scenes += 1
        complete[d.name] = r.complete
        with_depth += r.frames_with_depth
        if r.summary is not None:
            report.geometry[shown] = r.summary
    if scenes and with_depth == 0:
        sink.error(prefix or ".", "", "no_depth",
                   f"dataset {prefix or root}: none of its {len(scenes)} scenes has a frame with valid depth: "
                   "it cannot supervise depth and nothing could be checked geometrically; check the converter's "
                   "depth options (ranges, filters) and the drop reasons in _meta/manifest.json")
    _check_scene_lists(root, prefix, complete, sink)
    for d in datasets:
        _check_dataset(d, _join(prefix, d.name), sink, report, opts, bar, nested=False)


# --- entry point -------------------------------------------------------------------------------


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=0, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=True)


def validate(path: str | Path, strict: bool = False, geometry: bool = True, max_pairs: int | None = None,
             seed: int = 0, progress: bool | None = None) -> Report:
    """Check a scene directory, a dataset root or a folder of dataset roots; returns a ``Report``.

    ``max_pairs`` caps the frame pairs of the geometric check per scene (None: each frame's best and
    longest-baseline partners). ``progress``: a progress bar on stderr (None: only when stderr is a terminal).
    Raises ``SceneNotFoundError`` when ``path`` does not exist or is not a directory.
    """
    p = Path(path)
    if p.is_file() and p.name == SCENE_META:
        p = p.parent
    if not p.exists():
        raise SceneNotFoundError(f"{p}: no such directory; pass a scene folder (with {SCENE_META}) or a dataset root")
    if not p.is_dir():
        raise SceneNotFoundError(f"{p} is not a directory; pass a scene folder (with {SCENE_META}) or a dataset root")
    if max_pairs is not None and max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0 or None, got {max_pairs}")
    report = Report(root=str(p), strict=strict)
    sink = _Sink()
    opts = _Opts(geometry=geometry, max_pairs=max_pairs, seed=seed)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = _progress_bar(show)
    try:
        if _is_scene_dir(p):
            real = p.resolve()
            r = _check_scene(p, "", sink, real.parent, real.name, opts, bar)
            report.scenes, report.frames = 1, r.frames
            if r.summary is not None:
                report.geometry[p.name] = r.summary
        else:
            _check_dataset(p, "", sink, report, opts, bar, nested=True)
    finally:
        if bar is not None:
            bar.close()
    report.issues = sink.issues
    return report


# --- human summary -------------------------------------------------------------------------------


def _short(s: str, n: int = 150) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def format_report(report: Report, max_lines: int = 40) -> str:
    """One-screen summary: header, issues grouped by code (counts, first examples), then OK/FAILED."""
    mean = report.mean_agreement()
    n_pairs = sum(g.get("pairs", 0) for g in report.geometry.values())
    if mean is not None:
        geo_txt = f"geometric agreement {mean:.3f} ({n_pairs} pairs)"
    elif report.geometry:
        geo_txt = "geometric agreement n/a (no comparable pairs)"
    else:
        geo_txt = "geometric check off"
    header = (f"{report.root}: {report.scenes} scenes, {report.frames} frames, {len(report.errors)} errors, "
              f"{len(report.warnings)} warnings, {geo_txt}" + (" [strict]" if report.strict else ""))
    groups: dict[tuple[str, str], list[Issue]] = {}
    for iss in report.issues:
        groups.setdefault((iss.severity, iss.code), []).append(iss)
    order = sorted(groups, key=lambda k: (k[0] != ERROR, -len(groups[k]), k[1]))
    body: list[str] = []
    budget = max(0, max_lines - 2)
    per_code = 3 if len(order) * 4 <= budget else 1
    for n_done, key in enumerate(order):
        items = groups[key]
        shown = items[:per_code]
        need = 1 + len(shown) + (1 if len(items) > len(shown) else 0)
        left = len(order) - n_done
        if len(body) + need > budget - (1 if left > 1 else 0):
            body.append(f"... {left} more issue codes ({sum(len(groups[k]) for k in order[n_done:])} issues); "
                        "use --json for all")
            break
        body.append(f"{key[0].upper()} {key[1]} x{len(items)}")
        body.extend(f"    {_short(i.message)}" for i in shown)
        if len(items) > len(shown):
            body.append(f"    ... and {len(items) - len(shown)} more")
    verdict = "OK" if report.ok else "FAILED"
    if not report.ok and report.strict and not report.errors:
        verdict += " (strict: warnings count as errors)"
    return "\n".join([header, *body, verdict])
