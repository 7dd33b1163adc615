"""Containment of paths read from data, and bounded reads of JSON metadata.

Every path that comes out of a file (a raw dataset's metadata, a converted scene's ``scene_meta.json``, a
scene list, a covisibility entry) is untrusted: it may be absolute, climb out with ``..``, or go through a
symlink that leaves the tree. ``resolve_inside`` is the one function that turns such a path into a real
path, and refuses (``PathEscapeError``, naming the file and the entry) whatever leaves its root.

``read_json`` is the one bounded JSON reader for metadata: it refuses files above a size cap before reading
them (a 10 GB sparse ``scene_meta.json`` must not be read whole) and turns nesting deeper than the parser's
recursion limit (~1,000 levels; ours nest 5) into a ``SchemaError`` naming the file instead of a
``RecursionError``. The cap defaults to ``DEFAULT_MAX_JSON_MB``
and can be raised with the ``WAI_MAX_JSON_MB`` environment variable.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from wai.errors import PathEscapeError, SchemaError

#: Default size cap of a JSON metadata file, in MiB. The largest real scene_meta.json we know of (a
#: 100,000-frame sequence) is about 90 MB; 1 GiB leaves an order of magnitude of headroom.
DEFAULT_MAX_JSON_MB = 1024
#: Environment variable that overrides the cap (MiB).
MAX_JSON_ENV = "WAI_MAX_JSON_MB"


def max_json_bytes() -> int:
    """The JSON size cap in bytes (``WAI_MAX_JSON_MB`` or the default)."""
    raw = os.environ.get(MAX_JSON_ENV)
    if raw is None:
        return DEFAULT_MAX_JSON_MB << 20
    try:
        mb = float(raw)
    except ValueError as e:
        raise SchemaError(f"{MAX_JSON_ENV}={raw!r}: expected a size in MiB, e.g. 4096") from e
    if not mb > 0:
        raise SchemaError(f"{MAX_JSON_ENV}={raw!r}: expected a positive size in MiB")
    return int(mb * (1 << 20))


def read_json(path: str | Path, *, what: str = "JSON file", max_bytes: int | None = None) -> Any:
    """Parse a JSON metadata file with a size cap and a nesting cap; errors name the file and the fix."""
    p = Path(path)
    cap = max_json_bytes() if max_bytes is None else max_bytes
    with open(p, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > cap:
            raise SchemaError(
                f"{p}: {what} is {size / 2**20:.0f} MiB, above the {cap / 2**20:.0f} MiB cap on metadata files "
                f"(a damaged or crafted file?); if it is genuine, raise the cap: export {MAX_JSON_ENV}=<MiB>")
        data = fh.read(cap + 1)
    if len(data) > cap:  # grew while we read it
        raise SchemaError(f"{p}: {what} is above the {cap / 2**20:.0f} MiB cap; raise it with {MAX_JSON_ENV}")
    try:
        return json.loads(data)
    except RecursionError as e:
        # CPython's parser recurses once per level and stops at the interpreter's recursion limit (~1,000)
        raise SchemaError(f"{p}: {what} nests deeper than the parser allows (~{sys.getrecursionlimit()} levels; "
                          "ours nest 5 deep): a damaged or crafted file?") from e
    except ValueError as e:
        raise SchemaError(f"{p}: {what} is not valid JSON ({e})") from e


def is_inside(path: Path, root: Path) -> bool:
    """True when the *resolved* ``path`` is ``root`` or below it (``root`` must be resolved already)."""
    return path == root or root in path.parents


def resolve_inside(root: str | Path, rel: str | os.PathLike[str], *, source: str | Path | None = None,
                   entry: str | None = None, what: str = "path", under: str | None = None) -> Path:
    """Resolve ``rel`` (a path read from data) against ``root``; refuse anything that leaves ``root``.

    Absolute paths, ``..`` components and symlinks (anywhere on the way, the last component included)
    whose target is outside ``root`` raise ``PathEscapeError`` naming ``source`` (the file the path was
    read from) and ``entry`` (its key or line). Symlinks that stay inside ``root`` are allowed. ``under``: a
    folder name inside ``root`` that ``rel`` is relative to (e.g. the scene folder, with ``root`` the dataset,
    so that a symlinked scene folder is caught too). Returns the resolved path (it need not exist).
    """
    where = f"{source}" if source is not None else str(root)
    if entry:
        where += f" [{entry}]"
    text = os.fspath(rel)
    if not isinstance(text, str) or not text:
        raise PathEscapeError(f"{where}: {what} {rel!r} is empty or not a string; expected a path relative "
                              f"to {root}")
    if "\x00" in text:
        raise PathEscapeError(f"{where}: {what} {text!r} contains a NUL byte")
    rp = Path(text)
    if rp.is_absolute() or ".." in rp.parts:
        raise PathEscapeError(f"{where}: {what} {text!r} leaves {root}: paths read from data must be relative, "
                              "without '..'")
    real_root = Path(root).resolve()
    if under is not None:
        rp = Path(under) / rp
    try:
        target = (real_root / rp).resolve()
    except (OSError, RuntimeError) as e:  # symlink loop
        raise PathEscapeError(f"{where}: {what} {text!r} cannot be resolved ({e})") from e
    if not is_inside(target, real_root):
        raise PathEscapeError(f"{where}: {what} {text!r} resolves to {target}, outside {real_root} (a symlink "
                              "that leaves the tree); refusing to follow it")
    return target


def check_dir_inside(path: str | Path, root: str | Path, *, what: str = "directory") -> Path:
    """``path`` resolved, refusing a directory that (through symlinks) lies outside ``root``. For writers."""
    real_root = Path(root).resolve()
    target = Path(path).resolve()
    if not is_inside(target, real_root):
        raise PathEscapeError(f"{path}: {what} resolves to {target}, outside {real_root} (a symlink?); "
                              "wai never writes outside the output root")
    return target


__all__ = ["DEFAULT_MAX_JSON_MB", "MAX_JSON_ENV", "check_dir_inside", "is_inside",
           "max_json_bytes", "read_json", "resolve_inside"]
