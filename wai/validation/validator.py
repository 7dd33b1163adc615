"""The validator: checks a converted scene or dataset against the format contract and reports every problem.

``validate(path)`` accepts one scene directory (it holds ``scene_meta.json`` or ``_process_log.json``) or a
dataset root (scenes as subdirectories, plus an optional ``_meta/``). It never stops at the first problem:
every finding becomes an ``Issue`` with a stable ``code``; ``Report.to_json()`` is the machine-readable
form (documented and stable, see ``docs/validation.md``) and ``format_report`` the one-screen summary.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wai import FORMAT_VERSION, WAI_VERSION
from wai.errors import SceneNotFoundError, WaiError
from wai.format import codecs
from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import CAMERA_MODELS, DEPTH_TYPE_OF_MODEL, PINHOLE, is_proper_rotation
from wai.format.scene import (
    COVERAGE_JSON,
    FAILED,
    FINISHED,
    PROCESS_LOG,
    SCENE_META,
    STAGE,
    get_process_log,
    scene_state,
)
from wai.format.schema import check_meta
from wai.validation import geometry as geo

#: Version of the JSON report layout (``Report.to_json()["version"]``); bumped on incompatible changes.
REPORT_VERSION = "1.0"
ERROR, WARNING = "error", "warning"
META_DIR = "_meta"

#: Leading bytes of each container, to catch a file whose extension lies about its content.
_MAGIC = {".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",), ".png": (b"\x89PNG\r\n\x1a\n",),
          ".exr": (b"\x76\x2f\x31\x01",), ".npy": (b"\x93NUMPY",), ".npz": (b"PK\x03\x04",)}
_EXTENSIONS = {"image": (".jpg", ".jpeg", ".png"), "depth": (".exr",), "binary": (".png",),
               "labels": (".png",), "numpy": (".npy", ".npz")}
_DECODE_ERRORS = (WaiError, OSError, ValueError, EOFError, cv2.error)


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
    """Everything ``validate`` found. ``geometry`` maps scene name -> geometric-check summary."""

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


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot be read ({e})"
    except ValueError as e:
        return None, f"is not valid JSON ({e})"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_scene_dir(p: Path) -> bool:
    return (p / SCENE_META).is_file() or (p / PROCESS_LOG).is_file()


# --- per-scene checks ----------------------------------------------------------------------------


@dataclass
class _SceneCtx:
    dir: Path
    prefix: str  # path of the scene relative to the validated root ("" for a single scene)
    sink: _Sink
    meta_rel: str = ""

    def rel(self, p: str) -> str:
        return _join(self.prefix, p)


def _check_state(ctx: _SceneCtx) -> str | None:
    log_path = ctx.dir / PROCESS_LOG
    if log_path.is_file():
        data, err = _read_json(log_path)
        if err:
            ctx.sink.error(ctx.rel(PROCESS_LOG), "", "invalid_json",
                           f"{ctx.rel(PROCESS_LOG)} {err}; re-run the conversion of this scene")
    state = scene_state(ctx.dir)
    if state == FAILED:
        entry = get_process_log(ctx.dir).get(STAGE, {})
        msg = _last_line(entry.get("message", "") if isinstance(entry, dict) else "")
        ctx.sink.error(ctx.rel(PROCESS_LOG), f"{STAGE}.state", "conversion_failed",
                       f"{ctx.rel(PROCESS_LOG)}: conversion failed: {msg}; fix the cause and re-run the converter "
                       "(it redoes incomplete scenes)")
    elif state != FINISHED:
        why = (f"{SCENE_META} is missing" if not (ctx.dir / SCENE_META).is_file()
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
    models = {mm for mm in models if mm in CAMERA_MODELS}
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
    except (WaiError, TypeError, ValueError):
        return None
    if cam.w <= 0 or cam.h <= 0 or not all(math.isfinite(x) for x in (cam.fl_x, cam.fl_y, cam.cx, cam.cy)):
        return None
    return cam


def _read_raw(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise WaiError(f"{path}: could not decode (corrupt file or wrong extension)")
    return img


def _check_file(ctx: _SceneCtx, label: str, key: str, fmt: str, rel: Any, w: Any, h: Any) -> np.ndarray | None:
    """Existence, extension/content, decoding, shape and value checks of one modality file."""
    m = ctx.meta_rel
    fld = f"{label}.{key}"
    if not isinstance(rel, str) or not rel:
        return None  # check_meta reports the missing key
    rp = Path(rel)
    if rp.is_absolute() or ".." in rp.parts:
        ctx.sink.error(m, fld, "bad_path", f"{m}: {fld} = {rel!r} must be a relative path inside the scene folder")
        return None
    where = ctx.rel(rel)
    p = ctx.dir / rp
    if not p.is_file():
        ctx.sink.error(where, fld, "missing_file",
                       f"{where} is missing ({m} {fld} points to it); re-run the conversion of this scene or "
                       "fix the path")
        return None
    ext = p.suffix.lower()
    allowed = _EXTENSIONS.get(fmt, ())
    if allowed and ext not in allowed:
        ctx.sink.error(where, fld, "bad_extension",
                       f"{where}: a `{fmt}` file must end in {'/'.join(allowed)}, not {ext!r}")
    try:
        with p.open("rb") as fh:
            head = fh.read(8)
    except OSError as e:
        ctx.sink.error(where, fld, "decode_failed", f"{where} cannot be read ({e})")
        return None
    magic = _MAGIC.get(ext)
    if magic and not any(head.startswith(mg) for mg in magic):
        ctx.sink.error(where, fld, "extension_mismatch",
                       f"{where}: content does not match its extension {ext!r}; re-encode it or fix the extension")
        return None
    try:
        arr = _read_raw(p) if fmt == "binary" else codecs.decode(p, fmt)
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


def _check_scene(scene_dir: Path, prefix: str, sink: _Sink, *, geometry: bool, max_pairs: int,
                 seed: int) -> tuple[int, dict[str, Any] | None, bool]:
    """Check one scene; returns (frames, geometry summary or None, complete)."""
    ctx = _SceneCtx(scene_dir, prefix, sink, meta_rel=_join(prefix, SCENE_META))
    state = _check_state(ctx)
    meta_path = scene_dir / SCENE_META
    if not meta_path.is_file():
        return 0, None, False
    m = ctx.meta_rel
    meta, err = _read_json(meta_path)
    if err:
        sink.error(m, "", "invalid_json", f"{m} {err}; re-run the conversion of this scene")
        return 0, None, False
    n_before = len(sink.issues)
    schema_issues = check_meta(meta)
    if not isinstance(meta, dict):
        for fld, msg in schema_issues:
            sink.error(m, fld, "schema", f"{m}: {msg}")
        return 0, None, state == FINISHED
    _check_top(ctx, meta)
    frames = meta.get("frames") if isinstance(meta.get("frames"), list) else []
    mods = meta.get("frame_modalities") if isinstance(meta.get("frame_modalities"), dict) else {}
    default_model = meta.get("camera_model", PINHOLE)
    metric = meta.get("scale_type", "metric") != "relative"
    depth_key = None
    for name, spec in mods.items():
        if isinstance(spec, dict) and spec.get("format") == "depth" and (name == "depth" or depth_key is None):
            depth_key = spec.get("frame_key")
    rng = np.random.default_rng(seed)
    geo_frames: list[geo.FrameGeom] = []
    for i, fr in enumerate(frames):
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
            if key == depth_key and arr is not None:
                depth = arr
        if (geometry and depth is not None and cam is not None and T is not None
                and depth.shape == (cam.h, cam.w)):
            g = geo.make_frame(str(fr.get("frame_name", i)), cam, T, depth, scene_dir / fr[depth_key],
                               ctx.rel(fr[depth_key]), rng)
            if g is not None:
                geo_frames.append(g)
    # A specific issue on a field replaces the generic schema message for the same field.
    specific = {(iss.path, iss.field) for iss in sink.issues[n_before:]}
    for fld, msg in schema_issues:
        if (m, fld) not in specific:
            sink.error(m, fld, "schema", f"{m}: {fld}: {msg}; fix the converter to write it as docs/format.md says")
    if not (scene_dir / COVERAGE_JSON).is_file():
        sink.warning(ctx.rel(COVERAGE_JSON), "", "missing_coverage",
                     f"{ctx.rel(COVERAGE_JSON)} is missing; re-run the conversion to write coverage statistics")
    summary = None
    if geometry:
        res = geo.check_scene(geo_frames, lambda f: codecs.read_depth(f.depth_path), metric=metric,
                              max_pairs=max_pairs, seed=seed)
        summary = res.to_json()
        if res.failed and res.worst is not None:
            _geometry_issue(ctx, res)
    return len(frames), summary, state == FINISHED


def _geometry_issue(ctx: _SceneCtx, res: geo.SceneGeometry) -> None:
    worst = res.worst
    if worst is None:
        return
    a, b = res.names[worst.a], res.names[worst.b]
    suspects = res.suspects() or [a, b]
    name = ctx.prefix or ctx.dir.name
    m = ctx.meta_rel
    fld = f"frames[{suspects[0]}]" if len(suspects) == 1 else f"frames[{a}]"
    sus = ", ".join(f"frames[{s}]" for s in suspects)
    ctx.sink.error(
        ctx.prefix or ".", fld, "depth_reprojection",
        f"scene {name}: depth reprojected between frames disagrees: mean agreement {res.agreement:.3f} over "
        f"{len(res.evaluated)} pairs (need >= {geo.MIN_AGREEMENT}, every pair >= {geo.MIN_PAIR_AGREEMENT}); worst "
        f"pair {a} <-> {b}: {worst.agreement:.3f} of {worst.comparable} points agree. Most likely wrong: {sus}. "
        f"Check its transform_matrix in {m} (camera-to-world, OpenCV axes, not world-to-camera, not transposed), "
        "and its depth file (metres, z for PINHOLE / range for CYLINDRICAL, not rescaled)")


# --- dataset-level checks --------------------------------------------------------------------


def _check_scene_lists(root: Path, scenes: dict[str, bool], sink: _Sink) -> None:
    meta = root / META_DIR
    if not meta.is_dir():
        return
    if not (meta / "manifest.json").is_file():
        sink.warning(_join(META_DIR, "manifest.json"), "", "missing_manifest",
                     f"{META_DIR}/manifest.json is missing; the converter writes it at the end of a run")
    else:
        _, err = _read_json(meta / "manifest.json")
        if err:
            sink.error(_join(META_DIR, "manifest.json"), "", "invalid_json",
                       f"{META_DIR}/manifest.json {err}; re-run the converter")
    lists = sorted(meta.glob("*/*_scene_list_*.npy"))
    listed: set[str] = set()
    for lp in lists:
        rel = lp.relative_to(root).as_posix()
        split = lp.parent.name
        if not lp.stem.endswith(f"_scene_list_{split}"):
            sink.warning(rel, "", "scene_list_name",
                         f"{rel}: a scene list in {META_DIR}/{split}/ must be named <dataset>_scene_list_{split}.npy")
        try:
            arr = np.load(lp, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            sink.error(rel, "", "scene_list_invalid",
                       f"{rel} cannot be read as a numpy array of str ({e}); re-write it")
            continue
        if arr.dtype.kind not in "US" or arr.ndim != 1:
            sink.error(rel, "", "scene_list_invalid",
                       f"{rel} holds {arr.dtype} of shape {arr.shape}, expected a 1-D numpy array of str")
            continue
        for s in arr.tolist():
            s = s.decode() if isinstance(s, bytes) else str(s)
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
                sink.warning(s, "", "scene_not_listed",
                             f"scene {s} is complete but in no {META_DIR}/<split>/*_scene_list_<split>.npy; add it "
                             "to a split or remove it")


# --- entry point -------------------------------------------------------------------------------


def validate(path: str | Path, strict: bool = False, geometry: bool = True, max_pairs: int = 8, seed: int = 0,
             progress: bool = False) -> Report:
    """Check a scene directory or a dataset root and return a ``Report`` listing every problem.

    Raises ``SceneNotFoundError`` when ``path`` does not exist or is not a directory.
    """
    p = Path(path)
    if p.is_file() and p.name == SCENE_META:
        p = p.parent
    if not p.exists():
        raise SceneNotFoundError(f"{p}: no such directory; pass a scene folder (with {SCENE_META}) or a dataset root")
    if not p.is_dir():
        raise SceneNotFoundError(f"{p} is not a directory; pass a scene folder (with {SCENE_META}) or a dataset root")
    if max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0, got {max_pairs}")
    report = Report(root=str(p), strict=strict)
    sink = _Sink()
    say: Callable[[str], None] = (lambda s: print(s, file=sys.stderr)) if progress else (lambda s: None)
    if _is_scene_dir(p):
        say(f"validating scene {p}")
        n, summ, _ = _check_scene(p, "", sink, geometry=geometry, max_pairs=max_pairs, seed=seed)
        report.scenes, report.frames = 1, n
        if summ is not None:
            report.geometry[p.name] = summ
    else:
        subdirs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
        scenes = [d for d in subdirs if _is_scene_dir(d)]
        for d in subdirs:
            if d not in scenes:
                sink.warning(d.name, "", "not_a_scene",
                             f"{d.name}/ has neither {SCENE_META} nor {PROCESS_LOG}; it is not a scene (remove it)")
        if not scenes:
            sink.error(".", "", "no_scenes",
                       f"{p} holds no scene folders (with {SCENE_META}); is this the converter's --output?")
        complete: dict[str, bool] = {}
        for k, d in enumerate(scenes):
            say(f"[{k + 1}/{len(scenes)}] {d.name}")
            n, summ, done = _check_scene(d, d.name, sink, geometry=geometry, max_pairs=max_pairs, seed=seed)
            report.frames += n
            complete[d.name] = done
            if summ is not None:
                report.geometry[d.name] = summ
        report.scenes = len(scenes)
        _check_scene_lists(p, complete, sink)
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
