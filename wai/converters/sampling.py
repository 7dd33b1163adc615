"""Stratified frame sampling by a per-frame score (e.g. the building ratio of KITTI-360 frames).

Frames are put into buckets by thresholds on a score, then ``n`` frames are drawn with target
proportions per bucket. When a bucket holds fewer frames than its share, it gives all it has and the
missing share is redistributed to the other buckets in proportion to their weights (repeatedly, until
every bucket is either full or within its share). Draws are deterministic for a seed.

Used by the KITTI-360 converter; nothing here is source-specific.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wai.errors import WaiError

#: KITTI-360 buckets by building ratio: ``(name, lower bound)``, highest first; the last bound is 0.
BUILDING_BUCKETS: tuple[tuple[str, float], ...] = (("rich", 0.30), ("mixed", 0.10), ("road", 0.0))
#: Default target proportions of ``BUILDING_BUCKETS``.
DEFAULT_WEIGHTS: tuple[float, ...] = (0.5, 0.3, 0.2)


def bucket_of(score: float, buckets: Sequence[tuple[str, float]] = BUILDING_BUCKETS) -> str:
    """Name of the first bucket whose lower bound ``score`` reaches (``buckets`` sorted highest first)."""
    for name, lower in buckets:
        if score >= lower:
            return name
    return buckets[-1][0]


def parse_weights(text: str, names: Sequence[str]) -> dict[str, float]:
    """``"0.5,0.3,0.2"`` -> ``{name: weight}`` normalised to sum 1 (``WaiError`` on a bad value)."""
    parts = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        vals = [float(t) for t in parts]
    except ValueError as e:
        raise WaiError(f"--bucket-weights {text!r}: expected {len(names)} comma-separated numbers ({e})") from e
    if len(vals) != len(names) or any(v < 0 or not math.isfinite(v) for v in vals) or sum(vals) <= 0:
        raise WaiError(f"--bucket-weights {text!r}: expected {len(names)} non-negative numbers for buckets "
                       f"{', '.join(names)} with a positive sum, e.g. 0.5,0.3,0.2")
    s = sum(vals)
    return {n: v / s for n, v in zip(names, vals)}


def _round_to_total(quota: dict[str, float], caps: dict[str, int], total: int) -> dict[str, int]:
    """Integers summing to ``total`` (largest remainder), each at most its cap; ties broken by order."""
    out = {b: min(caps[b], math.floor(q + 1e-9)) for b, q in quota.items()}
    order = sorted(quota, key=lambda b: (-(quota[b] - math.floor(quota[b] + 1e-9)), list(quota).index(b)))
    short = total - sum(out.values())
    while short > 0:
        progressed = False
        for b in order:
            if short == 0:
                break
            if out[b] < caps[b] and quota[b] > out[b] - 1e-9:
                out[b] += 1
                short -= 1
                progressed = True
        if not progressed:
            break
    return out


def allocate(n: int, available: dict[str, int], weights: dict[str, float]) -> tuple[dict[str, int], dict[str, int]]:
    """``(requested, achieved)`` counts per bucket for ``n`` frames.

    ``requested`` is ``n`` split by ``weights`` (largest remainder). ``achieved`` never exceeds
    ``available``; the share of a bucket that is too small goes to the others in proportion to their
    weights, so ``sum(achieved) = min(n, frames in buckets of positive weight)``.
    """
    if n < 0:
        raise WaiError(f"sample size {n} must be >= 0")
    names = list(weights)
    wsum = sum(weights.values())
    w = {b: weights[b] / wsum for b in names}
    requested = _round_to_total({b: n * w[b] for b in names}, {b: n for b in names}, n)
    usable = {b: available.get(b, 0) if w[b] > 0 else 0 for b in names}
    total = min(n, sum(usable.values()))
    full: dict[str, int] = {}
    quota: dict[str, float] = {}
    while True:  # water-filling: saturate buckets below their share, re-split the rest
        active = [b for b in names if b not in full and w[b] > 0]
        rest = total - sum(full.values())
        aw = sum(w[b] for b in active)
        quota = {b: rest * w[b] / aw for b in active} if aw > 0 else {}
        over = [b for b in active if quota[b] >= usable[b]]
        if not over:
            break
        for b in over:
            full[b] = usable[b]
    quotas = {b: float(full[b]) if b in full else quota.get(b, 0.0) for b in names}
    achieved = _round_to_total(quotas, usable, total)
    return requested, achieved


@dataclass(frozen=True)
class SampleResult:
    """Which keys were picked and the per-bucket ``available`` / ``requested`` / ``achieved`` counts."""

    selected: frozenset[Hashable]
    bucket: dict[Hashable, str]
    report: dict[str, dict[str, int]]

    def summary(self) -> dict[str, Any]:
        """JSON-able report (for the manifest)."""
        return {b: dict(v) for b, v in self.report.items()}


def stratified_sample(
    scores: dict[Hashable, float],
    n: int,
    weights: dict[str, float],
    seed: int = 0,
    stream: str = "",
    buckets: Sequence[tuple[str, float]] = BUILDING_BUCKETS,
) -> SampleResult:
    """Pick ``n`` keys of ``scores`` stratified by ``bucket_of(score)`` with target ``weights``.

    Deterministic for ``(seed, stream)`` (``stream`` e.g. the sequence name, so sequences draw
    independently) and independent of the dict order (keys are sorted first).
    """
    keys = sorted(scores)  # type: ignore[type-var]
    bucket = {k: bucket_of(scores[k], buckets) for k in keys}
    names = [b for b, _ in buckets]
    if set(weights) != set(names):
        raise WaiError(f"bucket weights {sorted(weights)} do not match buckets {names}")
    members = {b: [k for k in keys if bucket[k] == b] for b in names}
    requested, achieved = allocate(n, {b: len(members[b]) for b in names}, {b: weights[b] for b in names})
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(stream.encode())])
    selected: set[Hashable] = set()
    for b in names:  # fixed bucket order: the draws do not depend on anything but seed and stream
        m = members[b]
        if achieved[b]:
            idx = rng.choice(len(m), size=achieved[b], replace=False)
            selected.update(m[i] for i in idx)
    report = {b: {"available": len(members[b]), "requested": requested[b], "achieved": achieved[b]} for b in names}
    return SampleResult(frozenset(selected), bucket, report)
