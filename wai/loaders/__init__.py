"""Training-side loaders for converted datasets: covisibility, multi-view dataset, distributed batch sampler.

``wai.loaders.covisibility`` needs only numpy/OpenCV. ``WAIDataset``, ``ViewBatchSampler`` and
``collate_views`` need torch (the ``wai[torch]`` extra); they are imported lazily, on first attribute access,
so ``import wai.loaders`` (and the ``wai-convert covisibility`` command) never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "WAIDataset": "wai.loaders.dataset",
    "LABEL_WEIGHT_PRESETS": "wai.loaders.dataset",
    "ViewBatchSampler": "wai.loaders.sampler",
    "collate_views": "wai.loaders.views",
    "LoaderConfigError": "wai.loaders.errors",
    "compute_covisibility": "wai.loaders.covisibility",
    "write_covisibility": "wai.loaders.covisibility",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wai.loaders' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
