"""The converter contract: what a source module implements.

A source module subclasses ``Converter`` and says only how to read its source:

* ``iter_scenes()`` lists the work (deterministic order, no pixel decoding);
* ``convert_scene(scene, writer)`` emits frames through a ``SceneWriter``;
* optionally ``check_scene(scene)`` lists missing or malformed raw files for ``--check-raw``.

Everything else (scene selection, resume, locks, worker pools, failure isolation, progress and the
dataset-level outputs) is the run machinery in ``wai.run``, which imports this module; this module never
imports ``wai.run``.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from wai import __version__
from wai.errors import SourceNotFoundError, WaiError
from wai.format.conventions import PINHOLE
from wai.format.scene import SceneWriter

log = logging.getLogger("wai.convert")


def option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:  # noqa: A002
    """A converter option: becomes ``--<name-with-dashes>`` on the CLI with this help text."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ConverterOptions:
    """Base of the per-source options dataclass. Each field (declared with ``option``) is a CLI option."""

    def to_dict(self) -> dict[str, Any]:
        """Options as JSON-able values (recorded in ``scene_meta.source`` and the manifest)."""
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass(frozen=True)
class SceneRef:
    """One unit of work: an output scene. ``data`` is converter-private and must be picklable."""

    name: str
    split: str = "train"
    data: Any = None
    n_frames: int | None = None


class Converter(ABC):
    """Base class of a source converter. Subclasses set the class attributes and two methods."""

    #: CLI name (``wai-convert <name>``) and the ``dataset_name`` written into scenes.
    name: ClassVar[str]
    #: Modalities every converted scene provides (checked by the conformance test).
    provides: ClassVar[frozenset[str]] = frozenset({"image", "depth"})
    #: The per-source options dataclass.
    Options: ClassVar[type[ConverterOptions]] = ConverterOptions
    camera_model: ClassVar[str] = PINHOLE
    scale_type: ClassVar[str] = "metric"
    image_ext: ClassVar[str] = ".jpg"
    #: What the raw root must contain (one or two lines), quoted when no scene is found under ``--input``.
    layout_hint: ClassVar[str] = ""

    def __init__(self, input_root: str | Path, options: ConverterOptions | None = None) -> None:
        self.root = Path(input_root)
        self.options = options if options is not None else self.Options()
        #: Source scenes that ``iter_scenes`` filtered out, with the reason (reported in the manifest).
        self.skipped_scenes: dict[str, str] = {}
        if not self.root.is_dir():
            raise SourceNotFoundError(
                f"raw {self.name} dataset not found: {self.root} is not a directory; pass --input <raw root>"
            )

    @abstractmethod
    def iter_scenes(self) -> Iterator[SceneRef]:
        """Yield the scenes in deterministic order; list files only, never decode pixels."""

    @abstractmethod
    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any] | None:
        """Write one scene's frames; raise a ``WaiError`` naming the file on bad input.

        May return a small JSON-able summary that is stored in the manifest (e.g. sampling counts).
        """

    def skip_scene(self, name: str, reason: str) -> None:
        """Record that ``iter_scenes`` left source scene ``name`` out on purpose (never skip silently)."""
        self.skipped_scenes[name] = reason
        log.info("%s: skipping %s: %s", self.name, name, reason)

    def validate_options(self) -> None:
        """Raise ``wai.errors.UsageError`` for option values that can never work (checked before any scene
        starts, so a bad value is one clear error instead of every scene failing). Default: no checks."""
        return None

    def check_scene(self, scene: SceneRef) -> list[str]:
        """Problems with the raw files of one scene (``--check-raw``); each names the file. Default: none."""
        return []

    def writer_options(self, scene: SceneRef) -> dict[str, Any]:
        """Keyword arguments for this scene's ``SceneWriter`` (camera model, scale type, image extension)."""
        return {"camera_model": self.camera_model, "scale_type": self.scale_type, "image_ext": self.image_ext}

    def source_info(self, scene: SceneRef) -> dict[str, Any]:
        """Provenance recorded in ``scene_meta.source``."""
        return {
            "dataset": self.name,
            "root": str(self.root.resolve()),
            "converter": f"wai.converters.{self.name}",
            "converter_version": __version__,
            "options": self.options.to_dict(),
        }


def options_from_dict(cls: type[ConverterOptions], values: dict[str, Any]) -> ConverterOptions:
    """Build an options dataclass from a dict, rejecting unknown keys."""
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise WaiError(f"unknown option(s) for {cls.__name__}: {sorted(unknown)}; known: {sorted(names)}")
    return cls(**values)


def option_fields(cls: type[ConverterOptions]) -> list[tuple[str, Any, str, tuple[str, ...] | None]]:
    """``(name, default, help, choices)`` of every option field (for the CLI)."""
    out = []
    for f in fields(cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)  # type: ignore[misc]
        out.append((f.name, default, f.metadata.get("help", ""), f.metadata.get("choices")))
    return out
