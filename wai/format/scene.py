"""Scene writer and reader.

``SceneWriter`` is the only code that writes a scene. Every file goes through ``wai.format.atomic``;
``scene_meta.json`` is written last and ``_process_log.json`` records ``running`` -> ``finished`` /
``failed`` (with the message), so a scene without ``scene_meta.json`` or whose log does not say
``finished`` is incomplete and is redone on resume.

``load_scene`` / ``load_frame`` read with WAI semantics (``frame_modalities`` lookup, regex modality
names, ``<name>_fname`` keys) and cache parsed metadata per process, keyed by file and mtime.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from wai import FORMAT_VERSION, WAI_VERSION
from wai.errors import NotOursError, SceneNotFoundError, SchemaError
from wai.format import atomic, codecs, exif
from wai.format.cameras import Camera
from wai.format.conventions import (
    CAMERA_CONVENTION,
    DEPTH_TYPE_OF_MODEL,
    PINHOLE,
    SCALE_TYPES,
    is_proper_rotation,
)
from wai.format.framestats import depth_stats, empty_row, label_ratios
from wai.format.frametable import FRAME_TABLE, write_frame_table
from wai.format.paths import read_json, resolve_inside
from wai.format.schema import NAME_PATTERN, Frame, ModalitySpec, SceneMeta

logger = logging.getLogger(__name__)

SCENE_META = "scene_meta.json"
PROCESS_LOG = "_process_log.json"
COVERAGE_JSON = "coverage.json"
STAGE = "conversion"
RUNNING, FINISHED, FAILED = "running", "finished", "failed"
#: A scene result (not a logged state): converted, but every frame was dropped, so no directory is kept.
EMPTY = "empty"

#: Default directory and extension of each modality format.
_EXT = {"depth": ".exr", "binary": ".png", "labels": ".png", "numpy": ".npy"}
_NAME_RE = re.compile(NAME_PATTERN)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- process state -----------------------------------------------------------------------------

#: Key of ``_process_log.json`` that marks a scene folder as created by this library. Only such a folder
#: (or an empty one) is ever removed or redone; anything else at a scene's path is left untouched.
OWNER_KEY = "created_by"
OWNER = "wai"


def get_process_log(scene_dir: str | Path) -> dict[str, Any]:
    """The scene's ``_process_log.json`` ({} when missing or unreadable)."""
    return atomic.read_json_object(Path(scene_dir) / PROCESS_LOG)


def set_process_state(scene_dir: str | Path, state: str, message: str = "", stage: str = STAGE,
                      summary: dict[str, Any] | None = None) -> None:
    """Record ``state`` (running / finished / failed) of ``stage`` with a message, a timestamp and, when
    given, the scene's summary (kept with the scene so a rebuilt manifest loses nothing)."""
    log = get_process_log(scene_dir)
    log[stage] = {"state": state, "message": message, "date": _now()}
    if summary:
        log[stage]["summary"] = summary
    atomic.write_json(Path(scene_dir) / PROCESS_LOG, log)


def is_ours(scene_dir: str | Path) -> bool:
    """True when ``scene_dir`` is a real folder (not a symlink) that this library created (its marker)."""
    d = Path(scene_dir)
    if d.is_symlink() or not d.is_dir():
        return False
    entry = get_process_log(d).get(OWNER_KEY)
    return isinstance(entry, dict) and entry.get("library") == OWNER


def claim_scene_dir(scene_dir: Path, dataset: str, redo: bool) -> None:
    """Create ``scene_dir`` for writing, marked as ours; or empty it when it is ours and ``redo`` is set.

    Raises ``NotOursError`` (and deletes nothing) when something else is at that path: a symlink, a file, or a
    folder without this library's marker (raw data, the user's files, another tool's output). An empty folder
    is taken over (nothing can be lost). Raises ``FileExistsError`` for a folder of ours when not ``redo``.
    """
    if scene_dir.is_symlink() or (scene_dir.exists() and not scene_dir.is_dir()):
        raise NotOursError(f"{scene_dir} is a symlink or a file, not a folder wai created; nothing was changed. "
                           "Move it away, or convert into another --output")
    if scene_dir.is_dir():
        if any(scene_dir.iterdir()):
            if not is_ours(scene_dir):
                raise NotOursError(
                    f"{scene_dir} exists and was not created by wai (its {PROCESS_LOG} lacks the "
                    f"'{OWNER_KEY}' marker); nothing was deleted. If it is raw data, --output points into the "
                    "raw tree: choose a separate output folder; otherwise move it away")
            if not redo:
                raise FileExistsError(f"{scene_dir} is already converted; pass overwrite=True to redo it")
            # Ours (marker checked above, not a symlink): rmtree does not follow symlinks inside it.
            shutil.rmtree(scene_dir)
            scene_dir.mkdir()
    else:
        scene_dir.mkdir(parents=True)
    log = {OWNER_KEY: {"library": OWNER, "dataset": dataset, "scene": scene_dir.name, "pid": os.getpid(),
                       "host": socket.gethostname(), "date": _now()}}
    atomic.write_json(scene_dir / PROCESS_LOG, log)


def scene_state(scene_dir: str | Path, stage: str = STAGE) -> str | None:
    """``finished`` only when the log says so *and* ``scene_meta.json`` exists; else the logged state or None."""
    entry = get_process_log(scene_dir).get(stage, {})
    state = entry.get("state") if isinstance(entry, dict) else None
    if state == FINISHED and not (Path(scene_dir) / SCENE_META).is_file():
        return RUNNING
    return state


def is_complete(scene_dir: str | Path) -> bool:
    """True when the scene finished converting (its files are all final)."""
    return scene_state(scene_dir) == FINISHED


# --- writer ------------------------------------------------------------------------------------


@dataclass
class Modality:
    """An array to write as a frame modality: ``fmt`` is ``depth``, ``binary``, ``labels`` or ``numpy``."""

    fmt: str
    data: np.ndarray
    labels: str | None = None  # label-table name for ``labels``


@dataclass
class _State:
    frames: list[Frame] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    modalities: dict[str, ModalitySpec] = field(default_factory=dict)
    coverage: list[dict[str, Any]] = field(default_factory=list)


class SceneWriter:
    """Writes one scene. Use as a context manager::

        with SceneWriter(out, "seq_0000_0099", "kitti360") as w:
            w.add_frame("0000000001_00", camera, cam_to_world, image=rgb, depth=depth)

    On success the scene's ``coverage.json``, then ``scene_meta.json``, then the ``finished`` state are
    written; on an exception the state becomes ``failed`` with the traceback and the exception propagates.
    After ``discard()`` a clean exit removes the scene directory instead (nothing of the scene is left).
    An existing scene directory is redone only when this library created it (``claim_scene_dir``): when
    ``overwrite`` is true or it is incomplete; a complete one raises ``FileExistsError``. Anything else at
    the scene's path raises ``NotOursError`` and is left untouched.
    """

    def __init__(
        self,
        root: str | Path,
        scene_name: str,
        dataset_name: str,
        *,
        camera_model: str = PINHOLE,
        scale_type: str = "metric",
        depth_precision: str = "float16",
        image_ext: str = ".jpg",
        overwrite: bool = False,
        source: dict[str, Any] | None = None,
    ) -> None:
        if not _NAME_RE.match(scene_name):
            raise SchemaError(f"scene name {scene_name!r} may only contain letters, digits, '_', '.', '-'")
        if scale_type not in SCALE_TYPES:
            raise SchemaError(f"scale_type {scale_type!r}; expected one of {SCALE_TYPES}")
        if depth_precision not in codecs.DEPTH_PRECISIONS:
            raise SchemaError(f"depth precision {depth_precision!r}; expected one of {codecs.DEPTH_PRECISIONS}")
        self.root = Path(root)
        self.dir = self.root / scene_name
        self.scene_name = scene_name
        self.dataset_name = dataset_name
        self.camera_model = camera_model
        self.scale_type = scale_type
        self.depth_precision = depth_precision
        self.image_ext = image_ext
        self.overwrite = overwrite
        self.source: dict[str, Any] = dict(source or {})
        self.applied_transforms: dict[str, np.ndarray] = {}
        self.filters: dict[str, Any] | None = None
        self.label_tables: dict[str, dict[str, str]] = {}
        self.scene_modalities: dict[str, Any] = {}
        self._s = _State()
        self._open = False
        self._discard = False
        #: Small JSON-able summary of the scene (e.g. sampling counts), stored in ``_process_log.json``.
        self.summary: dict[str, Any] = {}
        #: Copied source images whose EXIF orientation block was dropped (see ``wai.format.exif``).
        self.exif_orientation_removed = 0
        #: Called after every written or dropped frame (progress bars).
        self.on_frame: Callable[[], None] | None = None

    # -- lifecycle --
    def __enter__(self) -> SceneWriter:
        # An incomplete scene of ours is redone; a complete one only with `overwrite`; anything not ours
        # (raw data, user files, symlinks) makes this scene fail and is never touched.
        claim_scene_dir(self.dir, self.dataset_name, redo=self.overwrite or not is_complete(self.dir))
        set_process_state(self.dir, RUNNING)
        self._open = True
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self._open = False
        if exc is not None:
            msg = "".join(traceback.format_exception(exc_type, exc, tb))
            set_process_state(self.dir, FAILED, msg)
            return False
        if self._discard:
            # The folder is ours: claim_scene_dir created (or emptied) it in __enter__.
            shutil.rmtree(self.dir)
            return False
        try:
            self._finish()
        except BaseException as e:
            set_process_state(self.dir, FAILED, "".join(traceback.format_exception(type(e), e, e.__traceback__)))
            raise
        return False

    def discard(self) -> None:
        """Leave no scene: a clean exit of the ``with`` block removes the directory instead of finishing it.

        For a scene whose every frame was dropped (``n_frames == 0``): a scene without frames would break
        the format contract. An exception in the block still marks the scene ``failed``.
        """
        if not self._open:
            raise RuntimeError("SceneWriter.discard called outside its `with` block")
        self._discard = True

    # -- declarations --
    def add_transform(self, name: str, matrix: np.ndarray) -> None:
        """Record a transform applied to source poses or the world frame (``_applied_transforms``)."""
        self.applied_transforms[name] = np.asarray(matrix, dtype=np.float64)

    def add_label_table(self, name: str, table: dict[int, str]) -> None:
        """Declare an id table (id -> class name) referenced by ``labels`` modalities."""
        self.label_tables[name] = {str(int(k)): str(v) for k, v in sorted(table.items())}

    def set_filters(self, filters: dict[str, Any]) -> None:
        """Record what was filtered and with which thresholds."""
        self.filters = dict(filters)

    # -- frames --
    def _path(self, modality: str, frame_name: str, ext: str) -> str:
        d = "images" if modality == "image" else modality
        return f"{d}/{frame_name}{ext}"

    def _declare(self, name: str, fmt: str, labels: str | None = None) -> None:
        spec = ModalitySpec(frame_key=name, format=fmt, labels=labels)
        old = self._s.modalities.get(name)
        if old is not None and old != spec:
            raise SchemaError(f"modality {name!r} declared as {old} and then as {spec}")
        self._s.modalities[name] = spec

    def add_frame(
        self,
        frame_name: str,
        camera: Camera,
        cam_to_world: np.ndarray,
        *,
        image: np.ndarray | str | Path,
        depth: np.ndarray | None = None,
        modalities: dict[str, Modality] | None = None,
        extras: dict[str, Any] | None = None,
        coverage: dict[str, Any] | None = None,
    ) -> Frame:
        """Write one frame's files and record its metadata and coverage row.

        ``image`` is an RGB uint8 ``[H, W, 3]`` array (encoded with ``image_ext``) or the path of an
        existing JPEG/PNG, copied unchanged (its extension is kept, so name and content agree).
        ``depth`` is metres (0 = no data) of the camera's depth type. ``coverage`` adds or overrides
        columns of the frame's coverage row (e.g. ``n_points_projected``).
        """
        if not self._open:
            raise RuntimeError("SceneWriter.add_frame called outside its `with` block")
        if not _NAME_RE.match(frame_name):
            raise SchemaError(f"frame name {frame_name!r} may only contain letters, digits, '_', '.', '-'")
        if frame_name in self._s.names:
            raise SchemaError(f"duplicate frame name {frame_name!r} in scene {self.scene_name}")
        T = np.asarray(cam_to_world, dtype=np.float64)
        if T.shape != (4, 4) or not is_proper_rotation(T[:3, :3]) or not np.all(np.isfinite(T)):
            raise SchemaError(f"frame {frame_name}: cam_to_world must be a finite 4x4 with a proper rotation")
        hw = (camera.h, camera.w)

        if isinstance(image, (str, Path)):
            src = Path(image)
            ext = src.suffix.lower()
            if ext not in (".jpg", ".jpeg", ".png"):
                raise SchemaError(f"{src}: image must be .jpg or .png to be copied")
            img_rel = self._path("image", frame_name, ".jpg" if ext == ".jpeg" else ext)
            # an EXIF orientation would make orientation-honouring readers (MapAnything's cv2.imread) turn the
            # image away from its calibration: dropped from the copy, pixels untouched (wai.format.exif)
            data, n_exif = exif.without_orientation(codecs.read_bytes(src, "image"))
            if n_exif:
                self.exif_orientation_removed += 1
            atomic.write_bytes(self.dir / img_rel, data)
        else:
            if image.shape[:2] != hw:
                raise SchemaError(f"frame {frame_name}: image {image.shape[:2]} != camera (h, w) {hw}")
            img_rel = self._path("image", frame_name, self.image_ext)
            atomic.write_bytes(self.dir / img_rel, codecs.encode_image(image, self.image_ext))
        self._declare("image", "image")

        mods: dict[str, Modality] = {}
        if depth is not None:
            mods["depth"] = Modality("depth", depth)
        mods.update(modalities or {})
        paths: dict[str, str] = {}
        row = empty_row(self.dataset_name, self.scene_name, frame_name, camera.w, camera.h)
        # statistics describe the stored values (after float16 rounding), not the pre-encoding ones
        row.update(depth_stats(depth, self.depth_precision))
        for name, m in mods.items():
            if m.data.shape[:2] != hw:
                raise SchemaError(f"frame {frame_name}: modality {name} {m.data.shape[:2]} != camera (h, w) {hw}")
            rel = self._path(name, frame_name, _EXT[m.fmt])
            if m.fmt == "depth":
                data = codecs.encode_depth(m.data, self.depth_precision)
                if name != "depth":
                    row[f"{name}_valid_ratio"] = float(np.count_nonzero(m.data > 0) / m.data.size)
            elif m.fmt == "binary":
                data = codecs.encode_mask(m.data)
                ratio = float(np.count_nonzero(m.data) / m.data.size)
                row[f"{name}_ratio"] = ratio
                if row["mask_ratio"] is None:
                    row["mask_ratio"] = ratio
            elif m.fmt == "labels":
                data = codecs.encode_labels(m.data)
                if m.labels is not None and m.labels not in self.label_tables:
                    raise SchemaError(f"modality {name}: label table {m.labels!r} not declared (add_label_table)")
                if name == "semantic":
                    row["semantic_ratios"] = label_ratios(m.data, self.label_tables.get(m.labels or ""))
            elif m.fmt == "numpy":
                atomic.write_npy(self.dir / rel, m.data)
                data = None
            else:
                raise SchemaError(f"modality {name}: unknown format {m.fmt!r}")
            if data is not None:
                atomic.write_bytes(self.dir / rel, data)
            self._declare(name, m.fmt, m.labels)
            paths[name] = rel
        row.update(coverage or {})

        cam_d = camera.to_dict()
        frame = Frame(
            frame_name=frame_name, file_path=img_rel, image=img_rel, transform_matrix=T.tolist(),
            w=camera.w, h=camera.h, fl_x=camera.fl_x, fl_y=camera.fl_y, cx=camera.cx, cy=camera.cy,
            camera_model=None if cam_d["camera_model"] == self.camera_model else cam_d["camera_model"],
            modalities=paths, extras=dict(extras or {}),
        )
        self._s.frames.append(frame)
        self._s.names.add(frame_name)
        self._s.coverage.append(row)
        if self.on_frame is not None:
            self.on_frame()
        return frame

    def drop_frame(self, frame_name: str, reason: str, width: int = 0, height: int = 0, **columns: Any) -> None:
        """Record a frame that is not written, with the reason (it appears in the coverage table)."""
        row = empty_row(self.dataset_name, self.scene_name, frame_name, width, height)
        row.update(columns)
        row.update(selected=False, drop_reason=reason)
        self._s.coverage.append(row)
        if self.on_frame is not None:
            self.on_frame()

    @property
    def coverage_rows(self) -> list[dict[str, Any]]:
        """Coverage rows recorded so far (written frames and dropped ones)."""
        return list(self._s.coverage)

    @property
    def n_frames(self) -> int:
        """Number of frames written so far."""
        return len(self._s.frames)

    def _finish(self) -> None:
        models = {f.camera_model or self.camera_model for f in self._s.frames} or {self.camera_model}
        if len(models) > 1 and "depth" in self._s.modalities:
            raise SchemaError(f"scene {self.scene_name}: frames mix camera models {sorted(models)} "
                              "but one scene has one depth_type; write them as separate scenes")
        meta = SceneMeta(
            scene_name=self.scene_name, dataset_name=self.dataset_name, version=WAI_VERSION,
            format_version=FORMAT_VERSION, last_modified=_now(), camera_convention=CAMERA_CONVENTION,
            camera_model=self.camera_model, shared_intrinsics=False, scale_type=self.scale_type,
            depth_type=DEPTH_TYPE_OF_MODEL[models.pop()], frames=list(self._s.frames),
            frame_modalities=dict(self._s.modalities), scene_modalities=dict(self.scene_modalities),
            applied_transforms={k: v.tolist() for k, v in self.applied_transforms.items()},
            source=self.source, filters=self.filters, label_tables=self.label_tables,
        )
        atomic.write_json(self.dir / COVERAGE_JSON, {"scene": self.scene_name, "frames": self._s.coverage})
        meta_dict = meta.to_dict()
        atomic.write_json(self.dir / SCENE_META, meta_dict)
        write_frame_table(self.dir, meta_dict)  # derived from scene_meta.json, after it (its fingerprint)
        if self.exif_orientation_removed:
            self.summary = {**self.summary, "exif_orientation_removed": self.exif_orientation_removed}
            logger.warning("scene %s: %d copied image(s) carried an EXIF orientation; written without it (wai's "
                           "pixels are the stored grid the calibration refers to)", self.scene_name,
                           self.exif_orientation_removed)
        set_process_state(self.dir, FINISHED, f"{len(self._s.frames)} frames written", summary=self.summary)


def update_scene_modalities(scene_dir: str | Path, entries: dict[str, Any]) -> None:
    """Add scene-level modality entries (e.g. covisibility) to an existing ``scene_meta.json`` atomically.

    The read-modify-write holds ``scene_meta.json.lock`` (``atomic.locked``), so concurrent updates from
    several processes all land; the file itself is replaced atomically, so readers need no lock.
    """
    p = Path(scene_dir) / SCENE_META
    if not p.is_file():
        raise SceneNotFoundError(f"no scene at {scene_dir}: {p} is missing (is the scene converted?)")
    with atomic.locked(p):
        meta = read_json(p, what="scene_meta.json")
        if not isinstance(meta, dict):
            raise SchemaError(f"{p}: expected a JSON object")
        meta.setdefault("scene_modalities", {}).update(entries)
        meta["last_modified"] = _now()
        atomic.write_json(p, meta)
        if (p.parent / FRAME_TABLE).is_file():  # keep the derived table fresh
            write_frame_table(p.parent, meta)
    _CACHE.pop(str(p), None)


# --- reader ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """A parsed scene: its directory, raw metadata dict and the frame-name index."""

    path: Path
    meta: dict[str, Any]
    frame_names: dict[str, int]

    @property
    def frames(self) -> list[dict[str, Any]]:
        """Frame dicts in stored order."""
        return self.meta["frames"]

    def frame(self, key: int | str) -> dict[str, Any]:
        """Frame dict by index or name."""
        if isinstance(key, str):
            if key not in self.frame_names:
                raise SceneNotFoundError(f"{self.path / SCENE_META}: no frame named {key!r}")
            key = self.frame_names[key]
        return self.frames[key]

    def camera(self, key: int | str) -> Camera:
        """The frame's camera model and intrinsics."""
        return Camera.from_frame(self.frame(key), self.meta.get("camera_model", PINHOLE))

    def pose(self, key: int | str) -> np.ndarray:
        """The frame's 4x4 camera-to-world matrix (float64)."""
        return np.asarray(self.frame(key)["transform_matrix"], dtype=np.float64)


#: Parsed scene metadata costs about 2.4x its JSON size in Python objects; charged at 3x to stay under budget.
PARSED_BYTES_PER_JSON_BYTE = 3
#: Per-process budget of the parsed-scene cache, MiB (``WAI_SCENE_CACHE_MB``; 0 disables caching).
DEFAULT_SCENE_CACHE_MB = 256


class _SceneCache:
    """LRU of parsed scenes, bounded by an estimate of their bytes (each DataLoader worker holds one)."""

    def __init__(self) -> None:
        from collections import OrderedDict

        self._d: OrderedDict[str, tuple[int, int, Scene]] = OrderedDict()
        self.bytes = 0

    @staticmethod
    def budget() -> int:
        raw = os.environ.get("WAI_SCENE_CACHE_MB")
        try:
            return int(float(raw) * (1 << 20)) if raw is not None else DEFAULT_SCENE_CACHE_MB << 20
        except ValueError as e:
            raise SchemaError(f"WAI_SCENE_CACHE_MB={raw!r}: expected a size in MiB, e.g. 256") from e

    def get(self, key: str, mtime: int) -> Scene | None:
        hit = self._d.get(key)
        if hit is None or hit[0] != mtime:
            return None
        self._d.move_to_end(key)
        return hit[2]

    def put(self, key: str, mtime: int, size: int, scene: Scene) -> None:
        self.pop(key)
        cost = size * PARSED_BYTES_PER_JSON_BYTE
        budget = self.budget()
        if cost > budget:
            return
        self._d[key] = (mtime, cost, scene)
        self.bytes += cost
        while self.bytes > budget:
            _, (_, c, _) = self._d.popitem(last=False)
            self.bytes -= c

    def pop(self, key: str, default: Any = None) -> Any:
        hit = self._d.pop(key, None)
        if hit is not None:
            self.bytes -= hit[1]
        return default

    def __len__(self) -> int:
        return len(self._d)


_CACHE = _SceneCache()


def load_scene(path: str | Path, validate: bool = False) -> Scene:
    """Parse ``<path>/scene_meta.json`` (cached per process by path and mtime, LRU within
    ``WAI_SCENE_CACHE_MB``, default 256 MiB of parsed objects).

    With ``validate`` the dict is checked against the schema and a ``SchemaError`` lists every problem.
    """
    p = Path(path)
    meta_path = p / SCENE_META if p.is_dir() or not p.name.endswith(".json") else p
    try:
        st = meta_path.stat()
    except OSError as e:
        raise SceneNotFoundError(f"no scene at {p}: {meta_path} is missing (is the scene converted?)") from e
    hit = _CACHE.get(str(meta_path), st.st_mtime_ns)
    if hit is not None:
        return hit
    meta = read_json(meta_path, what="scene_meta.json")
    if validate:
        SceneMeta.from_dict(meta, str(meta_path))
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise SchemaError(f"{meta_path}: expected an object with a `frames` list")
    names = {str(f.get("frame_name")): i for i, f in enumerate(meta["frames"])}
    scene = Scene(meta_path.parent, meta, names)
    _CACHE.put(str(meta_path), st.st_mtime_ns, st.st_size, scene)
    return scene


def _resolve_modalities(meta: dict[str, Any], wanted: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    mods = meta.get("frame_modalities", {})
    out: list[tuple[str, dict[str, Any]]] = []
    for w in wanted:
        if w in mods:
            out.append((w, mods[w]))
            continue
        if any(c in w for c in ".|*+?()[]{}^$\\"):  # a regex: first match, as WAI does
            match = next((k for k in mods if re.fullmatch(w, k)), None)
            if match is not None:
                out.append((match, mods[match]))
                continue
        raise SchemaError(f"scene {meta.get('scene_name')}: no frame modality {w!r}; has {sorted(mods)}")
    return out


def frame_file(sc: Scene, fr: dict[str, Any], key: str, idx: int | None = None) -> Path:
    """The resolved path of frame entry ``key``; ``PathEscapeError`` when it leaves the scene's dataset.

    Paths in ``scene_meta.json`` are relative to the scene directory. Symlinks are followed only while they
    stay inside the scene directory's parent (the dataset root), so a crafted scene cannot make a reader
    open files elsewhere.
    """
    where = f"frames[{idx}].{key}" if idx is not None else f"frame {fr.get('frame_name')!r}.{key}"
    rel = fr[key]
    if not isinstance(rel, str):
        raise SchemaError(f"{sc.path / SCENE_META} [{where}]: expected a relative path string, got {rel!r}")
    # Resolved against the dataset root (the scene's parent) so that a symlinked scene folder is caught too.
    return resolve_inside(sc.path.parent, rel, under=sc.path.name, source=sc.path / SCENE_META, entry=where,
                          what="frame path")


def load_frame(
    scene: Scene | str | Path, frame: int | str, modalities: str | Iterable[str] | None = None
) -> dict[str, Any]:
    """Load one frame with WAI semantics.

    Returns ``frame_name``, ``frame_idx``, ``camera_model``, ``w``, ``h``, ``intrinsics`` (3x3 float32),
    ``extrinsics`` (4x4 camera-to-world float32) and, for each requested modality (default: all),
    ``<name>`` (decoded array: image uint8 ``[H, W, 3]`` RGB, depth float32 ``[H, W]``, masks bool,
    labels uint8/uint16) and ``<name>_fname`` (its path).
    """
    sc = scene if isinstance(scene, Scene) else load_scene(scene)
    fr = sc.frame(frame)
    idx = frame if isinstance(frame, int) else sc.frame_names[frame]
    cam = Camera.from_frame(fr, sc.meta.get("camera_model", PINHOLE))
    out: dict[str, Any] = {
        "frame_name": fr["frame_name"], "frame_idx": idx, "camera_model": cam.model, "w": cam.w, "h": cam.h,
        "intrinsics": cam.K.astype(np.float32), "extrinsics": sc.pose(idx).astype(np.float32),
    }
    wanted = list(sc.meta.get("frame_modalities", {})) if modalities is None else (
        [modalities] if isinstance(modalities, str) else list(modalities))
    for name, spec in _resolve_modalities(sc.meta, wanted):
        key = spec.get("frame_key", name)
        if key not in fr:
            raise SchemaError(f"{sc.path / SCENE_META}: frame {fr['frame_name']} has no `{key}` path")
        fpath = frame_file(sc, fr, key, idx)
        arr = codecs.decode(fpath, spec.get("format", "image"))
        if arr.shape[:2] != (cam.h, cam.w) and spec.get("format") != "numpy":
            raise SchemaError(f"{fpath}: decoded {name} is {arr.shape[1]}x{arr.shape[0]} but {sc.path / SCENE_META} "
                              f"frame {fr['frame_name']} says w x h = {cam.w}x{cam.h}")
        out[name] = arr
        out[f"{name}_fname"] = fpath
    return out
