"""The ``WaiError`` hierarchy.

Every error raised for bad input names the file (and line or key) and says what was expected.
Each class also inherits the closest builtin so callers that catch ``FileNotFoundError`` or
``ValueError`` keep working.
"""

from __future__ import annotations

from pathlib import Path


class WaiError(Exception):
    """Base class of every error raised by wai on purpose."""


class SourceNotFoundError(WaiError, FileNotFoundError):
    """A raw file or directory that the source layout requires is missing."""


class SourceLayoutError(WaiError, ValueError):
    """A raw file exists but is malformed (wrong header, key, number of values, ...)."""


class SchemaError(WaiError, ValueError):
    """Scene metadata does not follow the canonical format contract."""


class SceneNotFoundError(WaiError, FileNotFoundError):
    """A converted scene (or one of its files) is missing."""


class MissingDependencyError(WaiError, ImportError):
    """An optional dependency (an extra) is not installed."""


class UnknownSourceError(WaiError, KeyError):
    """A converter name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConversionError(WaiError, RuntimeError):
    """A scene could not be converted (wraps the underlying cause)."""


class PathEscapeError(WaiError, ValueError):
    """A path read from data (raw metadata, a converted scene, a scene list) leaves the tree it belongs to."""


class UsageError(WaiError, ValueError):
    """The command as given can never work (bad option value, output overlapping input): exit code 2."""

    exit_code = 2


class OutputOverlapError(UsageError):
    """``--output`` equals, is inside, or contains ``--input``: converting would write into the raw data."""


class OutputLockedError(WaiError, RuntimeError):
    """Another run holds the output root's lock (one writer per output root)."""


class OutputWriteError(WaiError, OSError):
    """Writing into the output failed (disk full, permissions, read-only filesystem); names the file."""


class NotOursError(WaiError, FileExistsError):
    """Something at a path the library would write was not created by it; it is left untouched."""


def layout_error(path: str | Path, what: str, line: int | None = None, key: str | None = None) -> SourceLayoutError:
    """Build a ``SourceLayoutError`` whose message names file, line and key: ``path:line: [key] what``."""
    where = str(path)
    if line is not None:
        where += f":{line}"
    if key is not None:
        where += f" [{key}]"
    return SourceLayoutError(f"{where}: {what}")


def require_file(path: str | Path, what: str, fix: str = "") -> Path:
    """Return ``path`` if it is a file, else raise ``SourceNotFoundError`` saying what it should hold."""
    p = Path(path)
    if not p.is_file():
        msg = f"missing {what}: expected a file at {p}"
        if fix:
            msg += f"; {fix}"
        raise SourceNotFoundError(msg)
    return p


def require_dir(path: str | Path, what: str, fix: str = "") -> Path:
    """Return ``path`` if it is a directory, else raise ``SourceNotFoundError``."""
    p = Path(path)
    if not p.is_dir():
        msg = f"missing {what}: expected a directory at {p}"
        if fix:
            msg += f"; {fix}"
        raise SourceNotFoundError(msg)
    return p


def import_optional(module: str, extra: str):  # noqa: ANN201 - returns a module
    """Import an optional module or raise ``MissingDependencyError`` with the exact pip line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"'{module}' is required for this feature but is not installed: pip install 'wai[{extra}]'"
        ) from e
