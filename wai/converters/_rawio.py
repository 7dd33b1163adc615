"""Defensive reading of raw metadata: bounded text reads, finite/plausible numbers, readable folders,
and placeholder scenes for raw trees that cannot even be listed.

Rules every source converter follows (see docs/sources/*.md):

* text files are read as bytes with a size cap and decoded strictly; undecodable bytes are a
  ``SourceLayoutError`` naming the file and line, never a ``UnicodeDecodeError``;
* every number is checked finite and inside a plausible range where it is read (``numbers``,
  ``number``), and the error names the file, the line or key, and what was expected;
* a folder that exists but cannot be listed (a symlink loop, no permission) is told apart from a missing
  one (``dir_problem``), so frames under it are dropped or the scene fails with that reason;
* a raw file that ``iter_scenes`` cannot parse does not abort the run: the listing yields a
  ``broken_scene`` that fails with the reason when converted (and is reported by ``--check-raw``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wai.converters.base import SceneRef
from wai.errors import SourceLayoutError, SourceNotFoundError, WaiError, layout_error
from wai.format.paths import max_json_bytes
from wai.format.schema import NAME_PATTERN

_NAME_RE = re.compile(NAME_PATTERN)


def read_bytes(path: str | Path, what: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a raw file, refusing files above ``max_bytes`` (default: the metadata cap of
    ``wai.format.paths``, ``WAI_MAX_JSON_MB``) before reading them."""
    p = Path(path)
    cap = max_json_bytes() if max_bytes is None else max_bytes
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > cap:
                raise layout_error(p, f"{what} is {size} bytes, above the {cap} byte cap on raw metadata files "
                                      "(damaged? raise WAI_MAX_JSON_MB if it is genuine)")
            data = fh.read(cap + 1)
    except FileNotFoundError as e:
        raise SourceNotFoundError(f"missing {what}: expected a file at {p}") from e
    except OSError as e:
        raise layout_error(p, f"cannot read {what} ({e.strerror or e})") from e
    if len(data) > cap:
        raise layout_error(p, f"{what} grew above the {cap} byte cap while being read")
    return data


def decode_text(path: str | Path, data: bytes, what: str) -> str:
    """``data`` decoded as UTF-8; an invalid byte is a ``SourceLayoutError`` naming the file and line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise layout_error(path, f"{what} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} "
                                 "(damaged file?)", line=line) from e


def read_text(path: str | Path, what: str, max_bytes: int | None = None, final_newline: bool = False) -> str:
    """A raw text file, bounded (``read_bytes``) and strictly decoded (``decode_text``).

    ``final_newline``: the file's writer always ends it with a newline, so a file that does not is truncated
    (a number cut short is still a number: ``1.800000`` -> ``1.8``); refused, naming the file and line.
    """
    data = read_bytes(path, what, max_bytes)
    if final_newline:
        require_final_newline(path, data, what)
    return decode_text(path, data, what)


def require_final_newline(path: str | Path, data: bytes, what: str) -> None:
    """Refuse a non-empty file whose last line lacks its newline (its writer always writes one)."""
    if data and not data.endswith(b"\n"):
        raise layout_error(path, f"{what} does not end with a newline: truncated? (its last line may be cut short)",
                           line=data.count(b"\n") + 1)


def numbers(path: str | Path, tokens: Iterable[Any], *, line: int | None = None, key: str | None = None,
            what: str = "values", lo: float | None = None, hi: float | None = None, n: int | None = None,
            ) -> np.ndarray:
    """float64 array of ``tokens`` (strings or numbers), each finite and in ``[lo, hi]``; ``n`` values if given.

    Errors name the file, the line or key, which value and what was expected.
    """
    vals: list[float] = []
    for i, t in enumerate(tokens):
        if isinstance(t, bool) or not isinstance(t, (int, float, str, np.floating, np.integer)):
            raise layout_error(path, f"{what}: value {i + 1} is {t!r}, expected a number", line=line, key=key)
        try:
            v = float(t)
        except (ValueError, OverflowError) as e:
            raise layout_error(path, f"{what}: value {i + 1} {str(t)[:40]!r} is not a number", line=line,
                               key=key) from e
        vals.append(v)
    arr = np.asarray(vals, dtype=np.float64)
    if n is not None and arr.size != n:
        raise layout_error(path, f"{what}: expected {n} numbers, got {arr.size}", line=line, key=key)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise layout_error(path, f"{what}: value {bad[0] + 1} is {arr[bad[0]]}; expected finite numbers",
                           line=line, key=key)
    if lo is not None or hi is not None:
        lo_ = -math.inf if lo is None else lo
        hi_ = math.inf if hi is None else hi
        out = np.flatnonzero((arr < lo_) | (arr > hi_))
        if out.size:
            raise layout_error(path, f"{what}: value {out[0] + 1} is {arr[out[0]]:.6g}; expected a value in "
                                     f"[{lo_:.6g}, {hi_:.6g}]", line=line, key=key)
    return arr


def number(path: str | Path, value: Any, *, line: int | None = None, key: str | None = None,
           what: str = "value", lo: float | None = None, hi: float | None = None) -> float:
    """One finite number in ``[lo, hi]`` (see ``numbers``)."""
    return float(numbers(path, [value], line=line, key=key, what=what, lo=lo, hi=hi)[0])


def integer(path: str | Path, value: Any, *, line: int | None = None, key: str | None = None,
            what: str = "value", lo: int | None = None, hi: int | None = None) -> int:
    """An integer-valued finite number in ``[lo, hi]`` (``'250'``, ``250``, ``'2.5e2'`` all give 250)."""
    v = number(path, value, line=line, key=key, what=what, lo=lo, hi=hi)
    if v != int(v):
        raise layout_error(path, f"{what} is {v}; expected an integer", line=line, key=key)
    return int(v)


def dir_problem(path: str | Path) -> str | None:
    """None when ``path`` is a directory that can be listed; else why not (missing / not a directory /
    unreadable, with the OS reason: a symlink loop, no permission)."""
    p = Path(path)
    try:
        with os.scandir(p):
            return None
    except FileNotFoundError:
        return "missing" if not os.path.lexists(p) else "unreadable (a dangling symlink)"
    except NotADirectoryError:
        return "not a directory"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"


def list_dir(path: str | Path, what: str) -> list[Path]:
    """The entries of a folder, sorted by name; ``SourceNotFoundError`` / ``SourceLayoutError`` naming it."""
    p = Path(path)
    problem = dir_problem(p)
    if problem == "missing":
        raise SourceNotFoundError(f"missing {what}: expected a directory at {p}")
    if problem is not None:
        raise layout_error(p, f"{what} is {problem}")
    try:
        return sorted(p.iterdir())
    except OSError as e:
        raise layout_error(p, f"{what} cannot be listed ({e.strerror or e})") from e


def is_dir(path: Path) -> bool:
    """``Path.is_dir`` that never raises."""
    try:
        return path.is_dir()
    except OSError:
        return False


def is_file(path: Path) -> bool:
    """``Path.is_file`` that never raises."""
    try:
        return path.is_file()
    except OSError:
        return False


def safe_scene_name(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9_.-]`` (including non-UTF-8 bytes) replaced by ``_``."""
    out = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"
    return out if _NAME_RE.match(out) else "_" + out


def bad_name_reason(name: str, where: str | Path) -> str | None:
    """Why ``name`` (a folder or sequence name that becomes a scene name) cannot name a scene, or None."""
    if _NAME_RE.match(name):
        return None
    return (f"{where}: name {name!r} has characters outside [A-Za-z0-9_.-] (scene names must be portable); "
            "rename it to convert it")


@dataclass(frozen=True)
class BrokenScene:
    """``SceneRef.data`` of a scene ``iter_scenes`` could not list: converting it fails with ``message``."""

    message: str


def broken_scene(name: str, message: str, split: str = "train") -> SceneRef:
    """A scene that fails with ``message`` (a raw file named in it could not be parsed while listing)."""
    return SceneRef(safe_scene_name(name), split, data=BrokenScene(message), n_frames=0)


def raise_if_broken(scene: SceneRef) -> None:
    """Raise the listing error of a ``broken_scene`` (first thing in ``convert_scene``)."""
    if isinstance(scene.data, BrokenScene):
        raise SourceLayoutError(scene.data.message)


def broken_problems(scene: SceneRef) -> list[str] | None:
    """``check_scene`` of a ``broken_scene``: its message; None for a regular scene."""
    return [scene.data.message] if isinstance(scene.data, BrokenScene) else None


def describe(e: BaseException) -> str:
    """The message of a WaiError, or type and message of anything else (for drop reasons)."""
    return str(e) if isinstance(e, WaiError) else f"{type(e).__name__}: {e}"


__all__ = ["BrokenScene", "bad_name_reason", "broken_problems", "broken_scene", "decode_text", "describe",
           "dir_problem", "integer", "is_dir", "is_file", "list_dir", "number", "numbers", "raise_if_broken",
           "read_bytes", "read_text", "require_final_newline", "safe_scene_name"]
