"""Per-frame coverage statistics (in `wai.format` because the scene writer computes them as it writes).

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
#: float16 bit pattern (as int16) of +inf; positive halves and +inf sort like their bit patterns.
_HALF_INF_BITS = 0x7C00


def _none_stats(ratio: float | None) -> dict[str, float | None]:
    return {"valid_depth_ratio": ratio, "depth_min": None, "depth_p50": None, "depth_max": None}


def _half_order_stats(d: np.ndarray, n: int) -> np.ndarray:
    """Dense maps: ``[min, middle one or two, max]`` (float32) of the ``n > 0`` valid float16 values of ``d``.

    One 2^16-bin histogram of the float16 bit patterns (OpenCV's F16C conversion) replaces a partition of
    ~10^5+ values (~3x faster on a dense 1408x376 map).
    """
    from wai.format.codecs import cv2  # here: keeps this module importable without cv2 until needed

    if hasattr(cv2, "convertFp16"):
        bits = cv2.convertFp16(np.ascontiguousarray(d))  # int16 bit patterns, round to nearest even
    else:
        bits = d.astype(np.float16).view(np.int16)
    hist = np.bincount(bits.view(np.uint16).ravel(), minlength=1 << 16)[: _HALF_INF_BITS + 1]
    hist[0] = 0  # 0 and values rounding to 0 are not valid; negatives and NaN are above +inf's bits
    cum = np.cumsum(hist)  # cum[-1] == n: valid means > 2**-25 and not NaN, i.e. bits in 1..+inf
    nz = np.flatnonzero(hist)
    k = (n - 1) // 2
    mids = np.searchsorted(cum, np.array([k] if n % 2 else [k, k + 1]), side="right")
    sel = np.array([nz[0], *mids, nz[-1]], dtype=np.int16)
    return sel.view(np.float16).astype(np.float32)


def depth_stats(depth: np.ndarray | None, precision: str = "float32") -> dict[str, float | None]:
    """``valid_depth_ratio`` (depth > 0 over all pixels) and min/median/max over valid pixels.

    With ``precision="float16"`` the figures describe the values as stored in a half EXR (values <= 2**-25
    round to 0 and are not valid), computed without decoding a converted map: rounding to float16 is monotonic,
    so the rounded min, max and middle order statistics of the float32 values are those of the stored ones.
    Dense maps go through a histogram of the float16 bit patterns instead of a partition. The median averages
    the two middle values in float32, as ``np.median``.
    """
    if depth is None:
        return _none_stats(None)
    d = np.asarray(depth, dtype=np.float32)
    half = precision == "float16"
    valid = d > (_FLOAT16_ZERO if half else 0.0)
    n = int(np.count_nonzero(valid))
    if n == 0:
        return _none_stats(0.0)
    if half and n >= d.size // 4:
        vals = _half_order_stats(d, n)
        lo, mids, hi = vals[0], vals[1:-1], vals[-1]
    else:
        v = d[valid]
        k = (n - 1) // 2
        mids = np.partition(v, k)[k : k + 1] if n % 2 else np.partition(v, [k, k + 1])[k : k + 2]
        ext = np.array([v.min(), v.max()], dtype=np.float32)
        if half:  # above 65504 a half holds inf (the writer refuses such maps; stats still describe them)
            with np.errstate(over="ignore"):
                mids, ext = (a.astype(np.float16).astype(np.float32) for a in (mids, ext))
        lo, hi = ext
    return {
        "valid_depth_ratio": float(n / d.size),
        "depth_min": float(lo),
        "depth_p50": float(np.mean(mids, dtype=np.float32)),  # float32 mean of the middle one or two, like np.median
        "depth_max": float(hi),
    }


def label_ratios(labels: np.ndarray, table: dict[str, str] | None) -> dict[str, float]:
    """Pixel fraction per class name (ids not in ``table`` are reported as ``id_<n>``); zero classes omitted."""
    from wai.format.codecs import cv2  # here: keeps this module importable without cv2 until needed

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


def format_counts(counts: dict[str, int]) -> str:
    """``{reason: n}`` as ``"a: 3, b: 1"``, most frequent first (drop reasons in summaries and reports)."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def empty_row(dataset: str, scene: str, frame: str, width: int, height: int) -> dict[str, Any]:
    """A row with every base column present (None where not applicable)."""
    row: dict[str, Any] = dict.fromkeys(BASE_COLUMNS)
    row.update(dataset=dataset, scene=scene, frame=frame, width=int(width), height=int(height), selected=True)
    return row
