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


#: float16 rounds every value at or below 2**-25 to 0 (round half to even), so those are not valid once stored.
_FLOAT16_ZERO = 2.0**-25


def depth_stats(depth: np.ndarray | None, precision: str = "float32") -> dict[str, float | None]:
    """``valid_depth_ratio`` (depth > 0 over all pixels) and min/median/max over valid pixels.

    With ``precision="float16"`` the figures describe the values as stored in a half EXR, computed without
    converting the map: rounding to float16 is monotonic, so the rounded minimum, maximum and middle order
    statistics are the rounded float32 ones (the median averages the two middle values as ``np.median``).
    """
    if depth is None:
        return {"valid_depth_ratio": None, "depth_min": None, "depth_p50": None, "depth_max": None}
    d = np.asarray(depth, dtype=np.float32)
    half = precision == "float16"
    valid = d[d > (_FLOAT16_ZERO if half else 0.0)]
    if valid.size == 0:
        return {"valid_depth_ratio": 0.0, "depth_min": None, "depth_p50": None, "depth_max": None}
    n = valid.size
    k = (n - 1) // 2
    mids = np.partition(valid, k)[k : k + 1] if n % 2 else np.partition(valid, [k, k + 1])[k : k + 2]
    ext = np.array([valid.min(), valid.max()], dtype=np.float32)
    if half:
        mids, ext = (a.astype(np.float16).astype(np.float32) for a in (mids, ext))
    return {
        "valid_depth_ratio": float(n / d.size),
        "depth_min": float(ext[0]),
        "depth_p50": float(np.mean(mids)),  # float32 mean of the middle one or two, like np.median
        "depth_max": float(ext[1]),
    }


def label_ratios(labels: np.ndarray, table: dict[str, str] | None) -> dict[str, float]:
    """Pixel fraction per class name (ids not in ``table`` are reported as ``id_<n>``); zero classes omitted."""
    from wai.format.codecs import cv2  # here: wai.format imports this module

    lab = np.asarray(labels)
    if lab.dtype == np.uint8:  # a 256-bin histogram is ~10x faster than bincount's int64 cast
        counts = cv2.calcHist([np.ascontiguousarray(lab)], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    else:
        counts = np.bincount(lab.ravel())
    n = lab.size
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
