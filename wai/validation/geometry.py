"""Geometric consistency of a scene: reproject each frame's depth into overlapping frames.

For a pair of frames ``(a, b)`` the valid depth pixels of ``a`` (at most ``MAX_POINTS``, a seeded random
subset) are lifted to camera points with ``Camera.unproject``, moved to the world with ``a``'s
camera-to-world pose, then into ``b`` with the inverse of ``b``'s pose and projected with ``b``'s camera
model. ``Camera.project`` returns the depth kind ``b`` stores (z for PINHOLE, range for CYLINDRICAL), so
the predicted depth is compared directly with ``b``'s depth around the landing pixel:

* the acceptance interval is ``[lo - tol(lo), hi + tol(hi)]`` where ``lo``/``hi`` are the smallest and
  largest valid depths of the 2x2 pixels around the continuous landing point (and the nearest pixel), and
  ``tol(d) = REL_TOL * d + abs_tol``. Using the neighbourhood makes grazing surfaces and depth edges pass
  without loosening the tolerance on fronto-parallel surfaces; ``REL_TOL = 2 %`` is 40x the float16 EXR
  rounding (2^-11), so half-precision depth always passes.
* a point *behind* the interval is occluded in ``b`` (something ``b`` sees hides it) and is not compared;
  a point hidden behind another point of ``a`` landing on the same pixel (a z-buffer) is occluded too;
* a point *in front of* the interval lies in space that ``b`` sees as empty: a conflict.

``agreement = agree / (agree + conflict)``, pooled over both directions ``a -> b`` and ``b -> a`` (a depth
map scaled up pushes its points behind the other view's surfaces, but the other view's points then land in
front of the scaled surfaces). Pairs with fewer than ``MIN_COMPARABLE`` comparable points are skipped.

Pairs are chosen from the stored poses: a cheap overlap score (fraction of ``OVERLAP_SAMPLES`` depth
points of one frame that project inside the other, averaged over both directions) ranks partners; every
frame visited (in a seeded random order) is paired with its best partner first, so a frame with a wrong
pose is still paired with the views its wrong pose claims to overlap, then the best remaining pairs fill up
to ``max_pairs``. Everything is vectorised numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wai.format.cameras import Camera
from wai.format.conventions import CYLINDRICAL

#: Relative depth tolerance (float16 EXR rounding is 0.05 %).
REL_TOL = 0.02
#: Absolute depth tolerance in metres for ``metric`` scenes.
ABS_TOL_METRIC = 0.05
#: Absolute tolerance of ``relative`` scenes, as a fraction of the pair's median depth.
ABS_TOL_RELATIVE = 0.005
#: At most this many depth pixels of a frame are reprojected per direction.
MAX_POINTS = 20_000
#: A pair with fewer comparable points (both directions together) is skipped.
MIN_COMPARABLE = 200
#: Depth points per frame used to score the overlap of candidate pairs.
OVERLAP_SAMPLES = 512
#: Pairs whose overlap score is below this are never chosen.
MIN_OVERLAP = 0.05
#: Scenes with more frames than this only score each frame against its nearest/sequence neighbours.
ALL_PAIRS_LIMIT = 64
#: Nearest neighbours (by camera centre) scored per frame in large scenes.
NEAREST_CANDIDATES = 24
#: The scene's mean agreement must reach this.
MIN_AGREEMENT = 0.8
#: Every evaluated pair must reach this (catches one bad frame among many good pairs).
MIN_PAIR_AGREEMENT = 0.5


@dataclass
class FrameGeom:
    """What the geometric check needs of one frame with depth."""

    name: str
    camera: Camera
    c2w: np.ndarray
    w2c: np.ndarray
    depth_path: Path
    depth_rel: str
    sample: np.ndarray  # [k, 3] world points used for the overlap score

    @property
    def centre(self) -> np.ndarray:
        """Camera centre in the world."""
        return self.c2w[:3, 3]


@dataclass
class PairResult:
    """Agreement of one pair (both directions pooled)."""

    a: int
    b: int
    overlap: float
    agree: int = 0
    conflict: int = 0
    occluded: int = 0
    skipped: bool = False

    @property
    def comparable(self) -> int:
        """Points that could be compared (landed on a valid pixel of the other view, not occluded)."""
        return self.agree + self.conflict

    @property
    def agreement(self) -> float:
        """``agree / comparable`` (nan when nothing was comparable)."""
        return self.agree / self.comparable if self.comparable else float("nan")


@dataclass
class SceneGeometry:
    """Result of ``check_scene``: evaluated pairs and the summary that goes into the report."""

    frames_with_depth: int
    pairs: list[PairResult] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def evaluated(self) -> list[PairResult]:
        """Pairs that had enough comparable points."""
        return [p for p in self.pairs if not p.skipped]

    @property
    def agreement(self) -> float | None:
        """Mean agreement over evaluated pairs (None when none was evaluated)."""
        ev = self.evaluated
        return float(np.mean([p.agreement for p in ev])) if ev else None

    @property
    def worst(self) -> PairResult | None:
        """The evaluated pair with the lowest agreement."""
        ev = self.evaluated
        return min(ev, key=lambda p: p.agreement) if ev else None

    @property
    def failed(self) -> bool:
        """True when the mean or any pair is below its threshold."""
        mean, worst = self.agreement, self.worst
        if mean is None or worst is None:
            return False
        return mean < MIN_AGREEMENT or worst.agreement < MIN_PAIR_AGREEMENT

    def suspects(self) -> list[str]:
        """Frames that take part in the most failing pairs (most likely the bad ones)."""
        bad = [p for p in self.evaluated if p.agreement < MIN_PAIR_AGREEMENT]
        if not bad:
            return []
        counts: dict[int, int] = {}
        for p in bad:
            counts[p.a] = counts.get(p.a, 0) + 1
            counts[p.b] = counts.get(p.b, 0) + 1
        top = max(counts.values())
        return [self.names[i] for i in sorted(counts) if counts[i] == top]

    def unpaired(self) -> list[str]:
        """Frames with depth that take part in no evaluated pair (their depth and pose were not cross-checked)."""
        used = {i for p in self.evaluated for i in (p.a, p.b)}
        return [n for i, n in enumerate(self.names) if i not in used]

    def to_json(self) -> dict[str, Any]:
        """The scene's entry of ``Report.geometry`` (documented in docs/validation.md)."""
        worst = self.worst
        skipped = [p for p in self.pairs if p.skipped]
        return {
            "frames_with_depth": self.frames_with_depth,
            "pairs": len(self.evaluated),
            "agreement": _round(self.agreement),
            "min_agreement": _round(worst.agreement) if worst else None,
            "worst_pair": [self.names[worst.a], self.names[worst.b]] if worst else None,
            "skipped": len(skipped),
            "skipped_pairs": [[self.names[p.a], self.names[p.b]] for p in skipped],
            "unpaired": self.unpaired(),
            "note": self.note,
            "pair_details": [
                {"frames": [self.names[p.a], self.names[p.b]], "overlap": _round(p.overlap),
                 "comparable": p.comparable, "agree": p.agree, "occluded": p.occluded,
                 "agreement": None if p.skipped else _round(p.agreement), "skipped": p.skipped}
                for p in self.pairs
            ],
        }


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """float64 depth with NaN/inf/negative values set to 0 (no data)."""
    d = np.asarray(depth, dtype=np.float64)
    return np.where(np.isfinite(d) & (d > 0), d, 0.0)


def _valid_pixels(depth: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.flatnonzero(depth > 0)
    if len(idx) > n:
        idx = np.sort(rng.choice(idx, size=n, replace=False))
    return idx


def _lift(depth: np.ndarray, camera: Camera, c2w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """World points of the flat pixel indices ``idx`` of a (clean) depth map."""
    rows, cols = np.divmod(idx, camera.w)
    uv = np.stack([cols, rows], axis=-1).astype(np.float64)
    pc = camera.unproject(uv, depth.ravel()[idx])
    return pc @ c2w[:3, :3].T + c2w[:3, 3]


def make_frame(name: str, camera: Camera, c2w: np.ndarray, depth: np.ndarray, depth_path: Path,
               depth_rel: str, rng: np.random.Generator) -> FrameGeom | None:
    """A ``FrameGeom`` (with its overlap sample), or None when the pose is not invertible or depth is empty."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        return None
    try:
        w2c = np.linalg.inv(c2w)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(w2c)):
        return None
    d = clean_depth(depth)
    idx = _valid_pixels(d, OVERLAP_SAMPLES, rng)
    if len(idx) == 0:
        return None
    return FrameGeom(name, camera, c2w, w2c, depth_path, depth_rel, _lift(d, camera, c2w, idx))


def _project(frame: FrameGeom, pts_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World points into ``frame``: ``(uv, depth, flat nearest-pixel index, lands inside in front)``."""
    pc = pts_world @ frame.w2c[:3, :3].T + frame.w2c[:3, 3]
    uv, dpred, ok = frame.camera.project(pc)
    uv = np.where(np.isfinite(uv), uv, -1e9)
    col, row, inside = frame.camera.pixel_index(uv)
    keep = ok & inside & np.isfinite(dpred)
    pix = np.where(keep, row * frame.camera.w + col, 0)
    return uv, dpred, pix, keep


def overlap_score(a: FrameGeom, b: FrameGeom) -> float:
    """Mean over both directions of the fraction of overlap samples that land inside the other image."""
    fa = _project(b, a.sample)[3].mean() if len(a.sample) else 0.0
    fb = _project(a, b.sample)[3].mean() if len(b.sample) else 0.0
    return float(0.5 * (fa + fb))


def _full_panorama(cam: Camera) -> bool:
    return cam.model == CYLINDRICAL and abs(cam.fl_x * 2.0 * math.pi - cam.w) < 1.0


def compare(src: FrameGeom, d_src: np.ndarray, dst: FrameGeom, d_dst: np.ndarray, abs_tol: float,
            rng: np.random.Generator) -> tuple[int, int, int]:
    """Reproject ``src``'s depth into ``dst``: ``(agree, conflict, occluded)`` point counts."""
    idx = _valid_pixels(d_src, MAX_POINTS, rng)
    if len(idx) == 0:
        return 0, 0, 0
    uv, dpred, pix, keep = _project(dst, _lift(d_src, src.camera, src.c2w, idx))
    cam = dst.camera
    flat = d_dst.ravel()
    keep &= flat[pix] > 0
    uv, dpred, pix = uv[keep], dpred[keep], pix[keep]
    if len(pix) == 0:
        return 0, 0, 0
    near = flat[pix]
    lo, hi = near.copy(), near.copy()
    c0 = np.floor(uv[:, 0]).astype(np.int64)
    r0 = np.floor(uv[:, 1]).astype(np.int64)
    wrap = _full_panorama(cam)
    for dc in (0, 1):
        for dr in (0, 1):
            c, r = c0 + dc, r0 + dr
            if wrap:
                c = np.mod(c, cam.w)
            inb = (c >= 0) & (c < cam.w) & (r >= 0) & (r < cam.h)
            val = flat[np.where(inb, r * cam.w + c, 0)]
            good = inb & (val > 0)
            lo = np.where(good, np.minimum(lo, val), lo)
            hi = np.where(good, np.maximum(hi, val), hi)
    front = dpred < lo - (REL_TOL * lo + abs_tol)
    behind = dpred > hi + (REL_TOL * hi + abs_tol)
    zbuf = np.full(cam.w * cam.h, np.inf)
    np.minimum.at(zbuf, pix, dpred)
    hidden = dpred > zbuf[pix] * (1.0 + REL_TOL) + abs_tol
    occluded = behind | hidden
    agree = ~front & ~occluded
    conflict = front & ~hidden
    return int(agree.sum()), int(conflict.sum()), int(occluded.sum())


def _candidates(frames: list[FrameGeom], a: int) -> list[int]:
    n = len(frames)
    if n <= ALL_PAIRS_LIMIT:
        return [b for b in range(n) if b != a]
    centres = np.stack([f.centre for f in frames])
    dist = np.linalg.norm(centres - centres[a], axis=1)
    dist[a] = np.inf
    near = set(np.argsort(dist, kind="stable")[:NEAREST_CANDIDATES].tolist())
    near |= {b for b in (a - 2, a - 1, a + 1, a + 2) if 0 <= b < n}
    return sorted(near)


def select_pairs(frames: list[FrameGeom], max_pairs: int, seed: int) -> list[tuple[int, int, float]]:
    """Up to ``max_pairs`` overlapping pairs ``(a, b, overlap)``, deterministic for ``seed``."""
    n = len(frames)
    if n < 2 or max_pairs <= 0:
        return []
    rng = np.random.default_rng(seed)
    scores: dict[tuple[int, int], float] = {}

    def score(a: int, b: int) -> float:
        key = (min(a, b), max(a, b))
        if key not in scores:
            scores[key] = overlap_score(frames[key[0]], frames[key[1]])
        return scores[key]

    chosen: dict[tuple[int, int], float] = {}
    covered: set[int] = set()
    for a in rng.permutation(n).tolist():
        if len(chosen) >= max_pairs:
            break
        if a in covered:
            continue
        best, best_s = -1, MIN_OVERLAP
        for b in _candidates(frames, a):
            s = score(a, b)
            if s >= best_s and (s > best_s or best < 0):
                best, best_s = b, s
        if best >= 0:
            key = (min(a, best), max(a, best))
            chosen[key] = best_s
            covered |= set(key)
    rest = sorted((k for k, s in scores.items() if s >= MIN_OVERLAP and k not in chosen),
                  key=lambda k: (-scores[k], k))
    for k in rest[: max(0, max_pairs - len(chosen))]:
        chosen[k] = scores[k]
    return [(a, b, s) for (a, b), s in sorted(chosen.items())]


def check_scene(frames: list[FrameGeom], read_depth: Any, *, metric: bool = True, max_pairs: int = 8,
                seed: int = 0) -> SceneGeometry:
    """Choose pairs and measure their agreement. ``read_depth(frame) -> array`` re-reads a frame's depth."""
    out = SceneGeometry(frames_with_depth=len(frames), names=[f.name for f in frames])
    if len(frames) < 2:
        out.note = "fewer than 2 frames with usable depth and pose: nothing to compare"
        return out
    if max_pairs <= 0:
        out.note = "max_pairs is 0: geometry not checked"
        return out
    pairs = select_pairs(frames, max_pairs, seed)
    if not pairs:
        out.note = f"no pair of frames overlaps (overlap score >= {MIN_OVERLAP}); geometry not checked"
        return out
    rng = np.random.default_rng(seed + 1)
    cache: dict[int, np.ndarray] = {}

    def depth(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = clean_depth(read_depth(frames[i]))
        return cache[i]

    for a, b, s in pairs:
        da, db = depth(a), depth(b)
        if metric:
            abs_tol = ABS_TOL_METRIC
        else:
            med = np.median(np.concatenate([da[da > 0], db[db > 0]]))
            abs_tol = ABS_TOL_RELATIVE * float(med)
        r = PairResult(a, b, s)
        for src, ds, dst, dd in ((a, da, b, db), (b, db, a, da)):
            ag, cf, oc = compare(frames[src], ds, frames[dst], dd, abs_tol, rng)
            r.agree += ag
            r.conflict += cf
            r.occluded += oc
        r.skipped = r.comparable < MIN_COMPARABLE
        out.pairs.append(r)
    n_skip = sum(p.skipped for p in out.pairs)
    if n_skip:
        out.note = f"{n_skip} of {len(out.pairs)} pairs skipped: fewer than {MIN_COMPARABLE} comparable points"
    return out
