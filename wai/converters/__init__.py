"""Converter registry keyed by CLI name; modules are imported lazily, on use.

Adding a source = one module ``wai/converters/<name>.py``, one line in ``REGISTRY``, one fake-data
factory in ``wai.synthetic.FAKES`` and its test (see ``docs/contributing.md``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wai.errors import MissingDependencyError, UnknownSourceError

if TYPE_CHECKING:
    from wai.converters.base import Converter


@dataclass(frozen=True)
class Entry:
    """A registered source: where its class lives, a one-line description, and the extra it needs."""

    target: str  # "module:Class"
    summary: str
    extra: str | None = None


REGISTRY: dict[str, Entry] = {
    "synthetic": Entry("wai.converters.synthetic:SyntheticConverter",
                       "built-in procedural scenes (the demo and the framework tests)"),
    "opv2v": Entry("wai.converters.opv2v:OPV2VConverter",
                   "OPV2V (CARLA cooperative driving): 4 cameras per vehicle -> one 360-degree cylindrical panorama"),
    "kitti360": Entry("wai.converters.kitti360:Kitti360Converter",
                      "KITTI-360 perspective cameras with Velodyne depth, building filtering and stratified sampling"),
    "eth3d": Entry("wai.converters.eth3d:ETH3DConverter",
                   "ETH3D high-res multi-view: COLMAP sparse depth, ground-truth depth, occlusion masks",
                   extra="eth3d"),
    "co3d": Entry("wai.converters.co3d:Co3DConverter", "Co3D v2 object-centric sequences (relative scale)"),
    "vkitti2": Entry("wai.converters.vkitti2:VKitti2Converter", "Virtual KITTI 2 stereo driving sequences"),
}


def load_class(target: str) -> type[Converter]:
    """Import ``module:Class``; a missing optional dependency becomes ``MissingDependencyError``."""
    mod_name, _, cls_name = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except MissingDependencyError:
        raise
    except ImportError as e:
        extra = next((en.extra for en in REGISTRY.values() if en.target == target and en.extra), None)
        hint = f"pip install 'wai[{extra}]'" if extra else "reinstall wai"
        raise MissingDependencyError(f"cannot import {mod_name} ({e}); fix: {hint}") from e
    return getattr(mod, cls_name)


def get_converter(name: str) -> type[Converter]:
    """The converter class registered as ``name``."""
    if name not in REGISTRY:
        raise UnknownSourceError(f"unknown source {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return load_class(REGISTRY[name].target)


def class_path(cls: type) -> str:
    """``module:Class`` of a converter class (how worker processes re-import it)."""
    return f"{cls.__module__}:{cls.__qualname__}"


__all__ = ["REGISTRY", "Entry", "class_path", "get_converter", "load_class"]
