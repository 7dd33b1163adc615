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


#: float16 bit patterns (as int16) of +inf; positive finite halves and +inf sort like their bit patterns.
_HALF_INF_BITS = 0x7C00


def _half_bits(d: np.ndarray) -> np.ndarray:
    """float16 bit patterns (int16, round-to-nearest-even) of a float32 map; OpenCV's F16C path is ~20x numpy's."""
    from wai.format.codecs import cv2  # here: wai.format imports this module

    if hasattr(cv2, "convertFp16"):
        return cv2.convertFp16(np.ascontiguousarray(d))
    return d.astype(np.float16).view(np.int16)


def _none_stats(ratio: float | None) -> dict[str, float | None]:
    return {"valid_depth_ratio": ratio, "depth_min": None, "depth_p50": None, "depth_max": None}


def depth_stats(depth: np.ndarray | None, precision: str = "float32") -> dict[str, float | None]:
    """``valid_depth_ratio`` (depth > 0 over all pixels) and min/median/max over valid pixels.

    With ``precision="float16"`` the figures describe the values as stored in a half EXR: a pixel is valid when
    its float16 value is > 0 (values <= 2**-25 round to 0, NaN is invalid), and the order statistics are those
    of the float16 values. Positive halves sort like their bit patterns, so these are computed on the int16
    bits: a 2^16-bin histogram for dense maps, a partition of the valid bits for sparse ones. The median
    averages the two middle values in float32, as ``np.median`` of the float32-decoded values.
    """
    if depth is None:
        return _none_stats(None)
    d = np.asarray(depth, dtype=np.float32)
    if precision == "float16":
        bits = _half_bits(d)
        valid = (bits > 0) & (bits <= _HALF_INF_BITS)
        n = int(np.count_nonzero(valid))
        if n == 0:
            return _none_stats(0.0)
        k = (n - 1) // 2
        order = [k] if n % 2 else [k, k + 1]
        if n >= d.size // 4:  # dense: one histogram pass beats partitioning ~10^5+ values
            hist = np.bincount(bits.view(np.uint16).ravel(), minlength=1 << 16)[: _HALF_INF_BITS + 1]
            hist[0] = 0
            nz = np.flatnonzero(hist)
            mids_bits = np.searchsorted(np.cumsum(hist), np.asarray(order), side="right")
            sel = np.array([nz[0], *mids_bits, nz[-1]], dtype=np.int16)
        else:
            v = bits[valid]
            sel = np.array([v.min(), *np.partition(v, order)[order], v.max()], dtype=np.int16)
        vals = sel.view(np.float16).astype(np.float32)
        lo, mids, hi = vals[0], vals[1:-1], vals[-1]
    else:
        v = d[d > 0.0]
        n = v.size
        if n == 0:
            return _none_stats(0.0)
        k = (n - 1) // 2
        mids = np.partition(v, k)[k : k + 1] if n % 2 else np.partition(v, [k, k + 1])[k : k + 2]
        lo, hi = v.min(), v.max()
    return {
        "valid_depth_ratio": float(n / d.size),
        "depth_min": float(lo),
        "depth_p50": float(np.mean(mids, dtype=np.float32)),  # float32 mean of the middle one or two, like np.median
        "depth_max": float(hi),
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
