"""Per-frame coverage statistics, computed from the arrays as they are written (no second pass).

Columns (contract): ``dataset, scene, frame, width, height, valid_depth_ratio, depth_min, depth_p50,
depth_max`` and, where the source has them, ``n_points_projected, semantic_ratios, building_ratio,
mask_ratio, selected, drop_reason, sampling_bucket``. Extra depth modalities add
``<name>_valid_ratio``; binary modalities add ``<name>_ratio``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BASE_COLUMNS = (
    "dataset", "scene", "frame", "width", "height", "valid_depth_ratio", "depth_min", "depth_p50", "depth_max",
    "n_points_projected", "semantic_ratios", "building_ratio", "mask_ratio", "selected", "drop_reason",
    "sampling_bucket",
)


def depth_stats(depth: np.ndarray | None) -> dict[str, float | None]:
    """``valid_depth_ratio`` (depth > 0 over all pixels) and min/median/max over valid pixels."""
    if depth is None:
        return {"valid_depth_ratio": None, "depth_min": None, "depth_p50": None, "depth_max": None}
    valid = depth[depth > 0]
    if valid.size == 0:
        return {"valid_depth_ratio": 0.0, "depth_min": None, "depth_p50": None, "depth_max": None}
    return {
        "valid_depth_ratio": float(valid.size / depth.size),
        "depth_min": float(valid.min()),
        "depth_p50": float(np.median(valid)),
        "depth_max": float(valid.max()),
    }


def label_ratios(labels: np.ndarray, table: dict[str, str] | None) -> dict[str, float]:
    """Pixel fraction per class name (ids not in ``table`` are reported as ``id_<n>``); zero classes omitted."""
    counts = np.bincount(labels.ravel().astype(np.int64))
    n = labels.size
    out: dict[str, float] = {}
    for i in np.flatnonzero(counts):
        name = (table or {}).get(str(int(i)), f"id_{int(i)}")
        out[name] = out.get(name, 0.0) + float(counts[i] / n)
    return out


def empty_row(dataset: str, scene: str, frame: str, width: int, height: int) -> dict[str, Any]:
    """A row with every base column present (None where not applicable)."""
    row: dict[str, Any] = dict.fromkeys(BASE_COLUMNS)
    row.update(dataset=dataset, scene=scene, frame=frame, width=int(width), height=int(height), selected=True)
    return row
