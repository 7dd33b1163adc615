"""Procedural ground truth: a 3D world, camera/LiDAR simulation and fake raw datasets per source.

``FAKES`` maps each registered source to its fake-data factory ``make_fake(root, ...) -> FakeInfo``,
imported lazily (the conformance test runs every registered converter on its fake).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

FAKES: dict[str, str] = {
    "synthetic": "wai.synthetic.raw_synthetic:make_fake",
    "opv2v": "wai.synthetic.fake_opv2v:make_fake",
    "kitti360": "wai.synthetic.fake_kitti360:make_fake",
    "eth3d": "wai.synthetic.fake_eth3d:make_fake",
    "co3d": "wai.synthetic.fake_co3d:make_fake",
    "vkitti2": "wai.synthetic.fake_vkitti2:make_fake",
}


def get_fake(name: str) -> Callable[..., Any]:
    """The fake-data factory of source ``name``."""
    mod, _, fn = FAKES[name].partition(":")
    return getattr(importlib.import_module(mod), fn)
