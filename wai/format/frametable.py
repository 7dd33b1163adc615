"""Frame tables: what a loader needs per frame, as a memory-mapped Arrow IPC file next to ``scene_meta.json``.

``scene_meta.json`` stays the source of truth (and MapAnything-compatible). ``<scene>/frames.arrow`` is
derived from it: one row per frame (name, camera model, ``w``/``h``/``fl_x``/``fl_y``/``cx``/``cy``, the 4x4
camera-to-world pose as 16 float64, every modality's relative path, and any other frame keys as one JSON
string), the scene-level metadata (everything but ``frames``) in the schema metadata, and a fingerprint of the
``scene_meta.json`` it was built from (size and mtime). Opened with ``pyarrow.memory_map``, its columns are
zero-copy numpy views backed by the page cache: every DataLoader worker on a node shares one copy instead of
each holding ~2 KB of parsed Python objects per frame.

A table whose fingerprint no longer matches ``scene_meta.json`` is stale: ``open_frame_table`` raises
``FrameTableStaleError`` naming the command that rebuilds it (``wai-convert frame-tables <root>``). The
scene writer writes the table after ``scene_meta.json``, and every later rewrite of ``scene_meta.json``
(covisibility registration) rewrites it too.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wai.errors import SchemaError, WaiError

FRAME_TABLE = "frames.arrow"
#: Bumped whenever the table's columns change; an older table is stale.
TABLE_VERSION = 1
_CAMERA_KEYS = ("w", "h", "fl_x", "fl_y", "cx", "cy")
_FIXED = {"frame_name", "camera_model", "transform_matrix", *_CAMERA_KEYS}
_PATH_PREFIX = "path:"
_EXTRAS = "extras_json"
_META_KEY = b"wai.frame_table"


class FrameTableStaleError(WaiError, RuntimeError):
    """A frame table is missing a required version or no longer matches its ``scene_meta.json``."""


def _fingerprint(meta_path: Path) -> dict[str, int]:
    st = meta_path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def rebuild_hint(scene_dir: Path) -> str:
    """The command that rebuilds the tables of the dataset holding ``scene_dir``."""
    return f"wai-convert frame-tables {scene_dir.parent}"


def write_frame_table(scene_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Build ``<scene_dir>/frames.arrow`` from ``scene_meta.json`` (``meta``: its parsed content, if at hand).

    Written atomically (temporary name, rename). The fingerprint is taken from the file on disk, so call
    this after ``scene_meta.json`` is final.
    """
    import pyarrow as pa

    from wai.format import atomic
    from wai.format.paths import read_json

    d = Path(scene_dir)
    meta_path = d / "scene_meta.json"
    fingerprint = _fingerprint(meta_path)
    if meta is None:
        meta = read_json(meta_path, what="scene_meta.json")
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise SchemaError(f"{meta_path}: expected a non-empty `frames` list to build {FRAME_TABLE}")
    default_model = str(meta.get("camera_model", "PINHOLE"))
    mods = meta.get("frame_modalities") or {}
    path_keys = ["file_path"] + sorted({str(v.get("frame_key", k)) for k, v in mods.items()
                                        if isinstance(v, dict)} - {"file_path"})
    try:
        poses = np.asarray([f["transform_matrix"] for f in frames], dtype=np.float64).reshape(len(frames), 16)
        cols: dict[str, Any] = {
            "frame_name": pa.array([str(f["frame_name"]) for f in frames], pa.string()),
            "camera_model": pa.array([str(f.get("camera_model") or default_model) for f in frames],
                                     pa.string()).dictionary_encode(),
            "w": pa.array([int(f["w"]) for f in frames], pa.int64()),
            "h": pa.array([int(f["h"]) for f in frames], pa.int64()),
        }
        for k in ("fl_x", "fl_y", "cx", "cy"):
            cols[k] = pa.array([float(f[k]) for f in frames], pa.float64())
    except (KeyError, TypeError, ValueError) as e:
        raise SchemaError(f"{meta_path}: cannot build {FRAME_TABLE}: a frame lacks or mistypes {e}") from e
    cols["transform_matrix"] = pa.FixedSizeListArray.from_arrays(pa.array(poses.ravel(), pa.float64()), 16)
    for k in path_keys:
        cols[_PATH_PREFIX + k] = pa.array([f.get(k) if isinstance(f.get(k), str) else None for f in frames],
                                          pa.string())
    # Everything else of a frame, verbatim, so that `frame(i)` returns exactly the JSON frame dict.
    fixed = _FIXED | set(path_keys)
    extras = [{k: v for k, v in f.items() if k not in fixed or (k == "camera_model" and v is None)}
              for f in frames]
    cols[_EXTRAS] = pa.array([json.dumps(e, separators=(",", ":")) if e else None for e in extras], pa.string())
    scene_meta = {k: v for k, v in meta.items() if k != "frames"}
    info = {"version": TABLE_VERSION, "scene_meta": fingerprint, "path_keys": path_keys,
            "had_camera_model": [("camera_model" in f) for f in frames] if any(
                "camera_model" in f for f in frames) else None}
    schema_meta = {_META_KEY: json.dumps(info).encode(), b"wai.scene": json.dumps(scene_meta).encode()}
    table = pa.table(cols).replace_schema_metadata(schema_meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:  # uncompressed, one record batch: zero-copy when mapped
        writer.write_batch(table.combine_chunks().to_batches()[0])
    return atomic.write_bytes(d / FRAME_TABLE, sink.getvalue().to_pybytes())


@dataclass
class _Columns:
    names: Any
    models: np.ndarray
    model_names: list[str]
    ints: tuple[np.ndarray, ...]  # w, h: [N] int64 each
    floats: tuple[np.ndarray, ...]  # fl_x, fl_y, cx, cy: [N] float64 each
    poses: np.ndarray  # [N, 4, 4] float64, camera-to-world
    paths: dict[str, Any]
    extras: Any


class FrameTable:
    """A scene's frames from its memory-mapped ``frames.arrow`` (read-only, zero-copy numeric columns).

    Offers the part of ``wai.format.scene.Scene`` a loader uses: ``path``, ``meta`` (scene-level keys; its
    ``frames`` is a lazy sequence of frame dicts), ``frame``, ``camera``, ``pose``, ``frame_index``.
    """

    def __init__(self, scene_dir: Path, batch: Any, info: dict[str, Any], scene_meta: dict[str, Any]) -> None:
        self.path = scene_dir
        self._info = info
        n = batch.num_rows
        self.n = n

        def col(name: str) -> Any:
            return batch.column(batch.schema.get_field_index(name))

        def num(name: str) -> np.ndarray:  # zero-copy view of the mapped file (no nulls, one record batch)
            return col(name).to_numpy(zero_copy_only=True)

        cm = col("camera_model")
        pose = col("transform_matrix").values.to_numpy(zero_copy_only=True)
        self._c = _Columns(
            names=col("frame_name"), models=cm.indices.to_numpy(zero_copy_only=False),
            model_names=[str(x) for x in cm.dictionary.to_pylist()], ints=(num("w"), num("h")),
            floats=(num("fl_x"), num("fl_y"), num("cx"), num("cy")), poses=pose.reshape(n, 4, 4),
            paths={k: col(_PATH_PREFIX + k) for k in info["path_keys"]}, extras=col(_EXTRAS))
        self.meta = dict(scene_meta)
        self.meta["frames"] = _LazyFrames(self)
        self._names: dict[str, int] | None = None

    # -- per-frame access (O(1), no JSON parsing) --
    def frame_name(self, i: int) -> str:
        """Name of frame ``i``."""
        return str(self._c.names[i].as_py())

    def frame_index(self, name: str) -> int:
        """Index of the frame called ``name`` (builds a name index on first use)."""
        if self._names is None:
            self._names = {str(v): i for i, v in enumerate(self._c.names.to_pylist())}
        if name not in self._names:
            raise SchemaError(f"{self.path / 'scene_meta.json'}: no frame named {name!r}")
        return self._names[name]

    def _idx(self, key: int | str) -> int:
        if isinstance(key, str):
            return self.frame_index(key)
        i = int(key)
        if not -self.n <= i < self.n:
            raise IndexError(f"frame {i} out of range for {self.n} frames of {self.path}")
        return i % self.n

    def pose(self, key: int | str) -> np.ndarray:
        """4x4 camera-to-world (float64, a copy)."""
        return self._c.poses[self._idx(key)].copy()

    def camera(self, key: int | str) -> Any:
        """The frame's ``Camera``."""
        from wai.format.cameras import Camera

        i = self._idx(key)
        w, h = (int(a[i]) for a in self._c.ints)
        fx, fy, cx, cy = (float(a[i]) for a in self._c.floats)
        return Camera(self._c.model_names[self._c.models[i]], w, h, fx, fy, cx, cy)

    def file(self, key: int | str, frame_key: str) -> str | None:
        """Relative path stored under ``frame_key`` (e.g. ``image``, ``depth``) for a frame."""
        col = self._c.paths.get(frame_key)
        return None if col is None else col[self._idx(key)].as_py()

    def frame(self, key: int | str) -> dict[str, Any]:
        """The frame dict exactly as in ``scene_meta.json`` (built from the row)."""
        i = self._idx(key)
        c = self._c
        out: dict[str, Any] = {"frame_name": self.frame_name(i)}
        for k in self._info["path_keys"]:
            v = c.paths[k][i].as_py()
            if v is not None:
                out[k] = v
        out["transform_matrix"] = c.poses[i].tolist()
        out["w"], out["h"] = (int(a[i]) for a in c.ints)
        out["fl_x"], out["fl_y"], out["cx"], out["cy"] = (float(a[i]) for a in c.floats)
        had = self._info.get("had_camera_model")
        if had is not None and had[i]:
            out["camera_model"] = c.model_names[c.models[i]]
        extra = c.extras[i].as_py()
        if extra:
            out.update(json.loads(extra))
        return out

    @property
    def frames(self) -> Sequence[dict[str, Any]]:
        """Lazy sequence of frame dicts (``scene.frames[i]``, ``len(scene.frames)``); valid while the table is."""
        return self.meta["frames"]


class _LazyFrames(Sequence):
    def __init__(self, table: FrameTable) -> None:
        # a weak proxy: a strong reference would make a cycle (table -> meta -> frames -> table) that keeps an
        # evicted table's mapping alive until the cycle collector runs
        self._t = weakref.proxy(table)

    def __len__(self) -> int:
        return self._t.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._t.frame(j) for j in range(*i.indices(self._t.n))]
        return self._t.frame(i)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._t.frame(i) for i in range(self._t.n))


def table_state(scene_dir: str | Path) -> str:
    """``fresh``, ``stale`` (older version or ``scene_meta.json`` changed since) or ``missing``."""
    try:
        _open(Path(scene_dir))
    except FileNotFoundError:
        return "missing"
    except FrameTableStaleError:
        return "stale"
    return "fresh"


def _open(d: Path) -> FrameTable:
    import pyarrow as pa

    path = d / FRAME_TABLE
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        if reader.num_record_batches != 1:
            raise ValueError(f"{reader.num_record_batches} record batches, expected 1")
        batch = reader.get_batch(0)  # zero-copy: its buffers point into the mapped file
        md = reader.schema.metadata or {}
        info = json.loads(md[_META_KEY])
        scene_meta = json.loads(md[b"wai.scene"])
    except (OSError, KeyError, ValueError, pa.ArrowException) as e:
        raise FrameTableStaleError(f"{path} is unreadable ({e}); rebuild it: {rebuild_hint(d)}") from e
    if info.get("version") != TABLE_VERSION:
        raise FrameTableStaleError(f"{path} has table version {info.get('version')}, this wai reads "
                                   f"{TABLE_VERSION}; rebuild it: {rebuild_hint(d)}")
    meta_path = d / "scene_meta.json"
    try:
        now = _fingerprint(meta_path)
    except OSError as e:
        raise FrameTableStaleError(f"{path}: its {meta_path} is missing; the scene is incomplete") from e
    if info.get("scene_meta") != now:
        raise FrameTableStaleError(f"{path} is stale: {meta_path} changed after the table was built (size/mtime "
                                   f"{info.get('scene_meta')} -> {now}); rebuild it: {rebuild_hint(d)}")
    return FrameTable(d, batch, info, scene_meta)


def open_frame_table(scene_dir: str | Path) -> FrameTable:
    """Open a scene's fresh frame table; ``FileNotFoundError`` when there is none, ``FrameTableStaleError``
    (naming the rebuild command) when it no longer matches ``scene_meta.json``."""
    return _open(Path(scene_dir))


#: Open frame tables kept per process (``WAI_TABLE_CACHE``): each costs ~50 bytes per frame of private memory
#: (the camera columns as numpy) plus mapped pages the kernel shares and can drop.
DEFAULT_TABLE_CACHE = 64
_OPEN: dict[str, tuple[int, FrameTable]] = {}


def open_scene(scene_dir: str | Path, metadata: str = "auto") -> Any:
    """A scene's frames for a reader: its ``FrameTable`` or its parsed ``Scene``.

    ``metadata``: ``tables`` (the frame table; missing or stale is an error naming the rebuild command),
    ``json`` (``load_scene``: parsed ``scene_meta.json``, cached per process within ``WAI_SCENE_CACHE_MB``),
    ``reparse`` (parse ``scene_meta.json`` on every call, MapAnything's pattern, no cache) or ``auto`` (the
    table when fresh, else JSON). Open tables are kept in a per-process LRU of ``WAI_TABLE_CACHE`` entries.
    """
    from wai.format.scene import SCENE_META, Scene, load_scene

    d = Path(scene_dir)
    if metadata == "json":
        return load_scene(d)
    if metadata == "reparse":
        from wai.format.paths import read_json

        meta = read_json(d / SCENE_META, what="scene_meta.json")
        if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
            raise SchemaError(f"{d / SCENE_META}: expected an object with a `frames` list")
        return Scene(d, meta, {str(f.get("frame_name")): i for i, f in enumerate(meta["frames"])})
    if metadata not in ("auto", "tables"):
        raise SchemaError(f"metadata={metadata!r}; expected 'auto', 'tables', 'json' or 'reparse'")
    key = str(d)
    try:
        mtime = (d / SCENE_META).stat().st_mtime_ns
    except OSError:
        mtime = -1
    hit = _OPEN.pop(key, None)
    if hit is not None and hit[0] == mtime:
        _OPEN[key] = hit  # most recently used last
        return hit[1]
    try:
        table = _open(d)
    except FileNotFoundError as e:
        if metadata == "auto":
            return load_scene(d)
        raise FrameTableStaleError(f"{d / FRAME_TABLE} is missing (converted by an older wai?); build it: "
                                   f"{rebuild_hint(d)}") from e
    except FrameTableStaleError:
        if metadata == "auto":
            return load_scene(d)
        raise
    _OPEN[key] = (mtime, table)
    limit = int(os.environ.get("WAI_TABLE_CACHE", DEFAULT_TABLE_CACHE))
    while len(_OPEN) > max(limit, 0):
        _OPEN.pop(next(iter(_OPEN)))
    return table


def build_frame_tables(root: str | Path, overwrite: bool = False) -> dict[str, str]:
    """Build missing or stale frame tables for every complete scene under ``root`` (a dataset or one scene).

    Returns scene name -> ``built``, ``fresh`` (kept) or an error message. Skips scenes that are not complete.
    """
    from wai.format.scene import SCENE_META, is_complete

    root = Path(root)
    scenes = [root] if (root / SCENE_META).is_file() else sorted(p.parent for p in root.glob(f"*/{SCENE_META}"))
    out: dict[str, str] = {}
    for d in scenes:
        if d.is_symlink() or not is_complete(d):
            out[d.name] = "skipped: not a complete scene folder of this dataset"
            continue
        if not overwrite and table_state(d) == "fresh":
            out[d.name] = "fresh"
            continue
        try:
            write_frame_table(d)
            out[d.name] = "built"
        except WaiError as e:
            out[d.name] = f"{type(e).__name__}: {e}"
    return out


def click_command() -> Any:
    """The ``wai-convert frame-tables OUT`` click command."""
    import click

    @click.command(name="frame-tables", help="Build or refresh the memory-mapped frame tables (frames.arrow) of "
                                             "converted scenes; OUT is a dataset root or one scene.")
    @click.argument("out", type=click.Path(path_type=Path, exists=True))
    @click.option("--overwrite", is_flag=True, help="rebuild tables that are still fresh")
    def frame_tables(out: Path, overwrite: bool) -> None:
        from wai.run.guards import OutputLock

        root = out if not (out / "scene_meta.json").is_file() else out.parent
        try:
            with OutputLock(root, purpose="wai-convert frame-tables"):
                res = build_frame_tables(out, overwrite=overwrite)
        except WaiError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from e
        bad = {k: v for k, v in res.items() if v not in ("built", "fresh") and not v.startswith("skipped")}
        click.echo(f"frame-tables: {sum(v == 'built' for v in res.values())} built, "
                   f"{sum(v == 'fresh' for v in res.values())} fresh, {len(bad)} failed -> {out}")
        for k, v in bad.items():
            click.echo(f"  FAILED {k}: {v}", err=True)
        if bad:
            raise SystemExit(1)

    return frame_tables


__all__ = ["FRAME_TABLE", "TABLE_VERSION", "FrameTable", "FrameTableStaleError", "build_frame_tables",
           "open_frame_table", "open_scene", "table_state", "write_frame_table"]
