"""Per-frame coverage statistics equal numpy's on the values as stored (float16 rounding included)."""

from __future__ import annotations

import numpy as np
import pytest

from wai.format.framestats import depth_stats, label_ratios


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_depth_stats_match_numpy_on_stored_values(precision: str) -> None:
    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(1, 2000))
        d = (rng.random(n) * rng.choice([1e-7, 1.0, 100.0, 60000.0])).astype(np.float32)
        d[rng.random(n) < rng.choice([0.3, 0.8, 0.99])] = 0  # dense (histogram) and sparse (partition) paths
        if trial % 7 == 0:  # around float16's rounding-to-zero boundary
            d[:3] = [2**-25, 2**-25 * 1.01, 2**-26]
        if trial % 5 == 0:  # never valid: NaN, negative; valid: +inf, and 7e4 which is +inf as float16
            d[-4:] = [np.nan, -1.0, np.inf, 7e4][: min(4, n)]
        with np.errstate(over="ignore"):  # 7e4 -> inf is the point
            stored = d.astype(np.float16).astype(np.float32) if precision == "float16" else d
        v = stored[stored > 0]
        exp = {"valid_depth_ratio": v.size / stored.size,
               "depth_min": float(v.min()) if v.size else None,
               "depth_p50": float(np.median(v)) if v.size else None,
               "depth_max": float(v.max()) if v.size else None}
        assert depth_stats(d, precision) == exp, trial


def test_label_ratios_count_every_class() -> None:
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    counts = np.bincount(lab.ravel().astype(np.int64))
    assert label_ratios(lab, None) == {f"id_{i}": counts[i] / lab.size for i in np.flatnonzero(counts)}
    lab16 = lab.astype(np.uint16) * 200  # ids above 255
    got = label_ratios(lab16, {"0": "void"})
    assert got["void"] == pytest.approx(counts[0] / lab.size) and sum(got.values()) == pytest.approx(1.0)
    assert f"id_{255 * 200}" in got
