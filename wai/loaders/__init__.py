"""Training-side loaders for converted datasets: covisibility, multi-view dataset, distributed batch sampler,
and the entry points MapAnything (``WAIDataset`` + ``make_sampler``) and VGGT (``WAIVGGTDataset``,
``WAIVGGTLoader``) drive unchanged.

``wai.loaders.covisibility`` and ``wai.loaders.mapanything`` need only numpy/OpenCV. The datasets, samplers
and ``collate_views`` need torch (the ``wai[torch]`` extra); they are imported lazily, on first attribute
access, so ``import wai.loaders`` (and the ``wai-convert covisibility`` command) never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "WAIDataset": "wai.loaders.dataset",
    "LABEL_WEIGHT_PRESETS": "wai.loaders.dataset",
    "RESOLUTION_PRESETS": "wai.loaders.dataset",
    "ViewBatchSampler": "wai.loaders.sampler",
    "WAIVGGTDataset": "wai.loaders.vggt",
    "WAIVGGTLoader": "wai.loaders.vggt",
    "DATA_NORM_TYPES": "wai.loaders.views",
    "CAMERA_MODEL_IDS": "wai.loaders.views",
    "collate_views": "wai.loaders.views",
    "ViewBatch": "wai.loaders.views",
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
