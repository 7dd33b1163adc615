"""Geometric consistency of a scene: reproject each frame's depth into other frames and test what comes back.

Units: depth and camera centres in metres (``metric`` scenes) or scene units (``relative``); pixel
coordinates with pixel centres at integers; poses are camera-to-world, OpenCV axes. See docs/validation.md.

For a pair of frames ``(a, b)`` the valid depth pixels of ``a`` (at most ``MAX_POINTS``, a seeded random
subset) are lifted to camera points with ``Camera.unproject``, moved into ``b``'s camera with
``inv(T_b) @ T_a`` and projected with ``b``'s camera model. ``Camera.project`` returns the depth kind ``b``
stores (z for PINHOLE, range for CYLINDRICAL), so the predicted depth is compared directly with ``b``'s depth:

* **Interval test** (per point). The acceptance interval is ``[lo - tol(lo), hi + tol(hi)]`` with
  ``tol(d) = REL_TOL * d + abs_tol``. For dense depth ``lo``/``hi`` span the nearest pixel and the 2x2 pixels
  around the landing point; for sparse depth (LiDAR, SfM points) the valid pixels of a window whose radius
  follows the frame's density (``window_radius``). Behind the interval, or behind another point of ``a`` on
  the same pixel of ``b`` (a z-buffer): *occluded*, not compared. In front of it: a *conflict* (the point lies
  in space that ``b`` sees as empty). ``agreement = agree / (agree + conflict)``, both directions pooled.
* **Scale and depth-kind tests** (statistical). Where ``b``'s surface is smooth around the landing point, the
  point's signed distance ``e`` to it is kept (``compare``). A depth error that scales every map by
  ``1 + v`` is, seen from ``b``, a translation of ``a``'s points by ``v t``: ``e + v (n . t) = 0``, a few
  centimetres over short baselines (far inside the per-point tolerance) but with one sign. Storing the other
  depth kind leaves a known residual ``h`` per point. A robust weighted least-squares fit of
  ``e = -v g + a h`` over every pair that agrees (``fit_scale``) gives the stored scale ``1 + v`` and the
  depth-kind share ``a`` with standard errors from both the point scatter and the pair directions; each pair
  also gets its own scale fit, and pairs far off it are *biased* (a misplaced camera).
* **Frames on their own.** A frame in no evaluated pair, or in failing pairs, is read with each common
  convention error undone (``POSE_HYPOTHESES``: world-to-camera, transposed rotation, OpenGL axes) and, with
  a neighbour in frame order, with their poses swapped; a reading that clearly beats the stored one flags it.
  In a scene whose other frames mostly overlap (a sequence), a frame that overlaps nothing is also reported
  when its camera sits among the others (within ``REACH_SPACING`` camera spacings or ``REACH_DEPTH`` of the
  scene depth).

Pairs are chosen from the stored poses: each frame is paired with its best-overlapping partner (coverage:
a frame with a wrong pose is paired with the views its wrong pose claims to overlap) and with its
longest-baseline partner that still overlaps well (baselines long enough to see scale errors).
Everything is vectorised numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wai.format.cameras import Camera
from wai.format.conventions import CYLINDRICAL, PINHOLE

#: Relative depth tolerance of the interval test (float16 EXR rounding is 0.05 %).
REL_TOL = 0.02
#: Absolute depth tolerance in metres for ``metric`` scenes.
ABS_TOL_METRIC = 0.05
#: Absolute tolerance of ``relative`` scenes, as a fraction of the pair's median depth.
ABS_TOL_RELATIVE = 0.005
#: At most this many depth pixels of a frame are reprojected per direction.
MAX_POINTS = 2500
#: A pair needs this many comparable points (both directions), or a quarter of the sparser frame's valid
#: pixels when that is smaller (but never fewer than ``MIN_COMPARABLE_SPARSE``); otherwise it is skipped.
MIN_COMPARABLE = 200
MIN_COMPARABLE_SPARSE = 40
#: Depth points per frame used to score the overlap of candidate pairs.
OVERLAP_SAMPLES = 512
#: Pairs whose overlap score is below this are never chosen; a frame with no such partner is isolated.
MIN_OVERLAP = 0.05
#: A long-baseline partner must overlap at least this much.
PARALLAX_MIN_OVERLAP = 0.25
#: Parallax (baseline / depth) above which a longer baseline adds nothing to the choice of the partner.
PARALLAX_CAP = 0.5
#: Scenes with more frames than this only score each frame against its nearest/sequence neighbours.
ALL_PAIRS_LIMIT = 64
#: Nearest neighbours (by camera centre) scored per frame in large scenes, plus +-``SEQUENCE_WINDOW`` in order.
NEAREST_CANDIDATES = 24
SEQUENCE_WINDOW = 3
#: The scene's mean agreement must reach this.
MIN_AGREEMENT = 0.8
#: Every evaluated pair must reach this (catches one bad frame among many good pairs).
MIN_PAIR_AGREEMENT = 0.5
#: Sparse depth: frames whose valid pixels cover less than this fraction of their data region use windows.
DENSE_FRACTION = 0.3
#: Largest window radius (pixels) used to find a sparse frame's depth around a landing point.
MAX_WINDOW = 5
#: Scale test: smallest relative scale error reported, its significance (standard errors) and support.
MIN_SCALE_ERROR = 0.04
SCALE_Z = 5.0
MIN_SCALE_POINTS = 60
#: Depth-kind test: the residual pattern of the other depth kind must explain at least this share.
MIN_KIND = 0.5
#: A pair whose own scale factor is off by this much (and ``PAIR_SCALE_Z`` standard errors, with
#: ``PAIR_SCALE_POINTS`` points) is biased: one of its cameras is misplaced along the baseline.
PAIR_SCALE_ERROR = 0.5
PAIR_SCALE_Z = 6.0
PAIR_SCALE_POINTS = 30
PAIR_SCALE_SE_FLOOR = 0.05
#: Points per direction reprojected and kept for the scale test when a hypothesis is tried (a cheaper look).
HYPOTHESIS_POINTS = 1200
HYPOTHESIS_SCALE_POINTS = 500
#: Points per direction kept for the scale test, and the residual window (fraction of the depth).
SCALE_POINTS = 1200
SCALE_WINDOW = 0.3
#: Isolated frames: the scene counts as a sequence when this fraction of its frames overlap another one.
SEQUENCE_FRACTION = 0.6
#: An isolated frame is "among the others" within this many median camera spacings or this fraction of
#: the scene's median depth from the nearest overlapping frame.
REACH_SPACING = 3.0
REACH_DEPTH = 0.25
#: A reading of the data (a convention error undone) explains it when its pairs all pass, their mean agreement
#: reaches ``HYPOTHESIS_AGREEMENT`` and it beats the stored reading: by ``HYPOTHESIS_MARGIN`` of agreement, or
#: with a median point-to-surface residual at most ``HYPOTHESIS_RESIDUAL`` times the stored one (when that is
#: above ``RESIDUAL_FLOOR`` of the depth, i.e. not already at the noise floor).
HYPOTHESIS_AGREEMENT = 0.85
HYPOTHESIS_MARGIN = 0.05
HYPOTHESIS_RESIDUAL = 0.5
RESIDUAL_FLOOR = 0.002
#: Scene-wide readings are tried on at most this many consecutive frames and pairs.
HYPOTHESIS_FRAMES = 8
HYPOTHESIS_PAIRS = 4
#: Frames are not questioned one by one when the mean agreement reaches ``CLEAN_AGREEMENT`` and every pair
#: reaches ``CLEAN_PAIR_AGREEMENT`` (lonely frames and frames of bad pairs always are).
CLEAN_AGREEMENT = 0.9
CLEAN_PAIR_AGREEMENT = 0.8
#: At most this many frames get per-frame pose hypotheses, and this many pose swaps are tried.
MAX_SUSPECTS = 6
MAX_SWAPS = 12

OPENGL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def _world_to_camera(T: np.ndarray) -> np.ndarray:
    return np.linalg.inv(T)


def _transposed(T: np.ndarray) -> np.ndarray:
    out = T.copy()
    out[:3, :3] = T[:3, :3].T
    return out


def _opengl(T: np.ndarray) -> np.ndarray:
    return T @ OPENGL_FLIP


#: Pose conventions errors tried on suspicious frames: label -> the stored pose's correction. Each is an
#: involution, so undoing the error is applying it again.
POSE_HYPOTHESES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "world-to-camera (inverted)": _world_to_camera,
    "a transposed rotation": _transposed,
    "OpenGL camera axes (y and z flipped)": _opengl,
}


@dataclass
class FrameGeom:
    """What the geometric check needs of one frame with depth (the depth itself is re-read or cached)."""

    name: str
    camera: Camera
    c2w: np.ndarray
    w2c: np.ndarray
    depth_path: Path
    depth_rel: str
    sample_cam: np.ndarray  # [k, 3] camera-frame points of the overlap sample
    n_valid: int = 0
    window: int = 0  # radius of the sparse-depth window (0: dense)
    depth: np.ndarray | None = None  # float32 [h, w] when kept in memory
    index: int = 0

    @property
    def sample(self) -> np.ndarray:
        """World points of the overlap sample under the stored pose."""
        return self.sample_cam @ self.c2w[:3, :3].T + self.c2w[:3, 3]

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
    parallax: float = 0.0
    agree: int = 0
    conflict: int = 0
    occluded: int = 0
    skipped: bool = False
    min_comparable: int = MIN_COMPARABLE
    scale: ScaleFit | None = None  # the pair's own scale fit (both directions)
    residual: float = float("nan")  # median |point-to-surface distance| / depth over smooth points

    @property
    def biased(self) -> bool:
        """The pair's own residuals are biased far beyond a scale error (a misplaced camera, e.g. swapped poses)."""
        return not self.skipped and self.scale is not None and self.scale.significant(
            PAIR_SCALE_ERROR, PAIR_SCALE_Z, PAIR_SCALE_POINTS, PAIR_SCALE_SE_FLOOR)


    @property
    def comparable(self) -> int:
        """Points that could be compared (landed near a valid pixel of the other view, not occluded)."""
        return self.agree + self.conflict

    @property
    def agreement(self) -> float:
        """``agree / comparable`` (nan when nothing was comparable)."""
        return self.agree / self.comparable if self.comparable else float("nan")


@dataclass
class ScaleFit:
    """Result of the scale test: stored depth is ``factor`` times what the poses' baselines imply.

    ``factor`` = 1 for consistent data; 1.1 when every depth map is 10 % too large; 100 for centimetres. A
    negative factor means the baselines point the wrong way (e.g. forward motion read backwards).
    """

    factor: float
    se: float
    points: int
    directions: int
    kind: float = 0.0  # share of the residual explained by the other depth kind (1: the other kind is stored)
    kind_se: float = float("inf")

    @property
    def k(self) -> float:
        """Multiply depth by ``k = 1 / factor`` to agree with the poses (nan for a factor of 0)."""
        return 1.0 / self.factor if self.factor != 0 else float("nan")

    @property
    def error(self) -> float:
        """``factor - 1``."""
        return self.factor - 1.0

    def significant(self, min_error: float, z: float, min_points: int, se_floor: float = 0.0) -> bool:
        """Off by at least ``min_error`` and by ``z`` standard errors (at least ``se_floor``), with
        ``min_points`` points."""
        e = abs(self.error)
        return self.points >= min_points and e >= min_error and e >= z * max(self.se, se_floor)

    @property
    def failed(self) -> bool:
        """Significant (``SCALE_Z`` standard errors) and large (``MIN_SCALE_ERROR``) scale disagreement."""
        return self.significant(MIN_SCALE_ERROR, SCALE_Z, MIN_SCALE_POINTS)

    @property
    def kind_failed(self) -> bool:
        """The residuals follow the pattern of the other depth kind (``MIN_KIND`` of it, ``SCALE_Z`` errors)."""
        return (self.points >= MIN_SCALE_POINTS and abs(self.kind) >= MIN_KIND
                and abs(self.kind) >= SCALE_Z * self.kind_se)

    def to_json(self) -> dict[str, Any]:
        """``{factor, se, k, kind, kind_se, points, directions, failed, kind_failed}``."""
        return {"factor": _round(self.factor), "se": _round(self.se), "k": _round(self.k),
                "kind": _round(self.kind), "kind_se": _round(self.kind_se), "points": self.points,
                "directions": self.directions, "failed": self.failed, "kind_failed": self.kind_failed}


@dataclass
class SceneGeometry:
    """Result of ``check_scene``: evaluated pairs, isolated frames, the scale fit, and diagnoses."""

    frames_with_depth: int
    pairs: list[PairResult] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    note: str = ""
    scale: ScaleFit | None = None
    #: frame name (or "*" for every frame) -> what undoing a convention error explains
    diagnoses: dict[str, str] = field(default_factory=dict)
    #: frames reported on their own: index -> "hypothesis" (a convention fix makes it agree) or "near"
    #: (it overlaps nothing although its camera is among the others in a sequence)
    flagged: dict[int, str] = field(default_factory=dict)
    isolated: list[int] = field(default_factory=list)  # flagged frames that are in no evaluated pair
    lonely: list[int] = field(default_factory=list)  # frames in no evaluated pair (flagged or not)
    best_overlap: list[float] = field(default_factory=list)
    scene_flag: str | None = None  # "pose" / "depth": a scene-wide reading beats the stored one

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

    def bad_pairs(self) -> list[PairResult]:
        """Evaluated pairs below ``MIN_PAIR_AGREEMENT``, or biased with a frame whose other pairs are biased too
        (one biased pair alone can be noise of a short, sparse pair; a misplaced camera biases all of its pairs)."""
        ev = self.evaluated
        count: dict[int, int] = {}
        for p in ev:
            if p.biased:
                count[p.a] = count.get(p.a, 0) + 1
                count[p.b] = count.get(p.b, 0) + 1
        return [p for p in ev if p.agreement < MIN_PAIR_AGREEMENT
                or (p.biased and max(count.get(p.a, 0), count.get(p.b, 0)) >= 2)]

    @property
    def failed(self) -> bool:
        """True when the mean agreement is below ``MIN_AGREEMENT`` or any pair is bad (low agreement, or biased)."""
        mean = self.agreement
        if mean is None:
            return False
        return mean < MIN_AGREEMENT or bool(self.bad_pairs())

    @property
    def scale_failed(self) -> bool:
        """True when the scale test found a significant depth/pose scale disagreement."""
        return self.scale is not None and self.scale.failed

    @property
    def kind_failed(self) -> bool:
        """True when the residuals follow the pattern of the other depth kind (range vs z)."""
        return self.scale is not None and self.scale.kind_failed

    pinhole: bool = True  # every frame is PINHOLE (else CYLINDRICAL or mixed)

    def suspects(self) -> list[str]:
        """Frames that take part in the most failing pairs (most likely the bad ones)."""
        return [self.names[i] for i in self._suspect_ids()]

    def _suspect_ids(self) -> list[int]:
        bad = self.bad_pairs()
        if not bad and self.failed:
            bad = [p for p in self.evaluated if p.agreement < MIN_AGREEMENT]
        if not bad:
            return []
        counts: dict[int, int] = {}
        for p in bad:
            counts[p.a] = counts.get(p.a, 0) + 1
            counts[p.b] = counts.get(p.b, 0) + 1
        # a frame's share of failing pairs among all its evaluated pairs breaks ties
        total: dict[int, int] = {}
        for p in self.evaluated:
            total[p.a] = total.get(p.a, 0) + 1
            total[p.b] = total.get(p.b, 0) + 1
        top = max(counts.values())
        tied = [i for i in sorted(counts) if counts[i] == top]
        best = max(counts[i] / total[i] for i in tied)
        return [i for i in tied if counts[i] / total[i] >= best - 1e-9]

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
            "isolated": [self.names[i] for i in self.isolated],
            "flagged": [self.names[i] for i in sorted(self.flagged)],
            "scale": self.scale.to_json() if self.scale is not None else None,
            "diagnoses": dict(self.diagnoses),
            "note": self.note,
            "pair_details": [
                {"frames": [self.names[p.a], self.names[p.b]], "overlap": _round(p.overlap),
                 "parallax": _round(p.parallax), "comparable": p.comparable, "agree": p.agree,
                 "occluded": p.occluded, "agreement": None if p.skipped else _round(p.agreement),
                 "scale_factor": _round(p.scale.factor) if p.scale else None,
                 "scale_se": _round(p.scale.se) if p.scale else None, "biased": p.biased,
                 "residual": _round(p.residual), "skipped": p.skipped}
                for p in self.pairs
            ],
        }


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """float64 depth with NaN/inf/negative values set to 0 (no data)."""
    d = np.asarray(depth, dtype=np.float64)
    return np.where(np.isfinite(d) & (d > 0), d, 0.0)


def _valid_pixels(depth: np.ndarray, n: int, rng: np.random.Generator,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """At most ``n`` flat indices of valid pixels (a seeded random subset, sorted); ``valid`` caches them all."""
    idx = np.flatnonzero(depth > 0) if valid is None else valid
    if len(idx) > n:
        idx = np.sort(rng.choice(idx, size=n, replace=False))
    return idx


def window_radius(valid: np.ndarray) -> int:
    """Radius (pixels) of the window searched for depth around a landing point: 0 for dense maps.

    The density is measured inside the region that holds data (2nd to 98th percentile of the valid rows and
    columns), so a LiDAR band or a masked object is not mistaken for sparse depth; the radius is about the
    mean spacing of the valid pixels there, at most ``MAX_WINDOW``.
    """
    rows, cols = np.nonzero(valid)
    if len(rows) == 0:
        return 0
    r0, r1 = np.percentile(rows, [2, 98])
    c0, c1 = np.percentile(cols, [2, 98])
    area = max(1.0, (r1 - r0 + 1) * (c1 - c0 + 1))
    density = min(1.0, len(rows) / area)
    if density >= DENSE_FRACTION:
        return 0
    return int(min(MAX_WINDOW, max(1, math.ceil(0.8 / math.sqrt(density)))))


def make_frame(name: str, camera: Camera, c2w: np.ndarray, depth: np.ndarray, depth_path: Path,
               depth_rel: str, rng: np.random.Generator, *, index: int = 0,
               keep_depth: bool = True) -> FrameGeom | None:
    """A ``FrameGeom`` (with its overlap sample), or None when the pose is not invertible or depth is empty.

    ``depth`` must already be ``camera.h x camera.w`` (checked by the caller against the decoded file).
    """
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
    valid = d > 0
    n_valid = int(valid.sum())
    idx = _valid_pixels(d, OVERLAP_SAMPLES, rng)
    if len(idx) == 0:
        return None
    rows, cols = np.divmod(idx, camera.w)
    uv = np.stack([cols, rows], axis=-1).astype(np.float64)
    sample_cam = camera.unproject(uv, d.ravel()[idx])
    return FrameGeom(name, camera, c2w, w2c, depth_path, depth_rel, sample_cam, n_valid=n_valid,
                     window=window_radius(valid), depth=d.astype(np.float32) if keep_depth else None, index=index)


def _in_view(camera: Camera, w2c: np.ndarray, pts_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points into a camera: ``(camera-frame points, predicted depth, lands inside in front)``."""
    pc = pts_world @ w2c[:3, :3].T + w2c[:3, 3]
    uv, dpred, ok = camera.project(pc)
    uv = np.where(np.isfinite(uv), uv, -1e9)
    _, _, inside = camera.pixel_index(uv)
    return pc, dpred, ok & inside & np.isfinite(dpred)


def overlap_and_parallax(a: FrameGeom, b: FrameGeom, c2w_a: np.ndarray | None = None,
                         c2w_b: np.ndarray | None = None) -> tuple[float, float]:
    """Overlap score (mean over both directions of the fraction of samples landing inside the other image)
    and parallax (baseline / mean predicted depth of those samples)."""
    ta = a.c2w if c2w_a is None else c2w_a
    tb = b.c2w if c2w_b is None else c2w_b
    fracs, depths = [], []
    for src, dst, ts, td in ((a, b, ta, tb), (b, a, tb, ta)):
        if len(src.sample_cam) == 0:
            fracs.append(0.0)
            continue
        pts = src.sample_cam @ ts[:3, :3].T + ts[:3, 3]
        _, dpred, keep = _in_view(dst.camera, np.linalg.inv(td), pts)
        fracs.append(float(keep.mean()))
        if keep.any():
            depths.append(float(np.mean(dpred[keep])))
    base = float(np.linalg.norm(ta[:3, 3] - tb[:3, 3]))
    par = base / max(float(np.mean(depths)), 1e-9) if depths else 0.0
    return 0.5 * (fracs[0] + fracs[1]), par


def overlap_score(a: FrameGeom, b: FrameGeom) -> float:
    """Mean over both directions of the fraction of overlap samples that land inside the other image."""
    return overlap_and_parallax(a, b)[0]


def _full_panorama(cam: Camera) -> bool:
    return cam.model == CYLINDRICAL and abs(cam.fl_x * 2.0 * math.pi - cam.w) < 1.0


_OFFSETS: dict[int, np.ndarray] = {}


def _offsets(r: int) -> np.ndarray:
    """``[m, 2]`` integer (dc, dr) offsets of the disc of radius ``r + 0.5``, nearest first."""
    if r not in _OFFSETS:
        d = np.arange(-r, r + 1)
        dc, dr = np.meshgrid(d, d)
        off = np.stack([dc.ravel(), dr.ravel()], axis=-1)
        dist = np.hypot(off[:, 0], off[:, 1])
        keep = dist <= r + 0.5
        order = np.lexsort((off[keep][:, 1], off[keep][:, 0], dist[keep]))
        _OFFSETS[r] = off[keep][order]
    return _OFFSETS[r]


@dataclass
class _Direction:
    """Counts of one direction and the signed residuals kept for the scale test."""

    agree: int = 0
    conflict: int = 0
    occluded: int = 0
    e: np.ndarray = field(default_factory=lambda: np.zeros(0))  # signed point-to-surface distances
    g: np.ndarray = field(default_factory=lambda: np.zeros(0))  # n . t: d e / d v (v = factor - 1)
    h: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the residual the other depth kind leaves
    sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rel: np.ndarray = field(default_factory=lambda: np.zeros(0))  # |distance| / depth of every smooth point


def _interval(dst: FrameGeom, d_dst: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, ...]:
    """Depth interval of ``dst`` around continuous landing points: ``(has data, lo, hi, flat pixel)``.

    Dense maps: the nearest pixel (which must hold depth) and the 2x2 pixels around the point. Sparse maps:
    every valid pixel of the window of radius ``dst.window`` around the nearest pixel.
    """
    cam = dst.camera
    flat = d_dst.ravel()
    col, row, inside = cam.pixel_index(uv)
    wrap = _full_panorama(cam)
    pix = np.where(inside, row * cam.w + col, 0)
    if dst.window == 0:
        near = np.where(inside, flat[pix], 0.0)
        lo, hi = near.copy(), near.copy()
        c0 = np.floor(uv[:, 0]).astype(np.int64)
        r0 = np.floor(uv[:, 1]).astype(np.int64)
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
        return near > 0, lo, hi, pix
    off = _offsets(dst.window)
    c = col[:, None] + off[None, :, 0]
    r = row[:, None] + off[None, :, 1]
    if wrap:
        c = np.mod(c, cam.w)
    inb = (c >= 0) & (c < cam.w) & (r >= 0) & (r < cam.h) & inside[:, None]
    val = np.where(inb, flat[np.where(inb, r * cam.w + c, 0)], 0.0)
    good = val > 0
    has = good.any(axis=1)
    lo = np.where(good, val, np.inf).min(axis=1)
    hi = np.where(good, val, 0.0).max(axis=1)
    return has, np.where(has, lo, 0.0), hi, pix


#: Local surface fit of the scale test: relative RMS residual above which a neighbourhood is not a surface.
FIT_MAX_RMS = 0.01


def _surface_fit(dst: FrameGeom, d_dst: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, ...]:
    """Fit ``1/depth`` as an affine function of the pixel offset around each landing point.

    Inverse z is exactly affine in the pixel coordinates over a plane, so the fit interpolates planar
    surfaces (the ground, facades) without the bias of the nearest sample. Returns ``(ok, depth, d depth/du,
    d depth/dv, rms)`` at the continuous points; ``ok`` is False where fewer than 3 samples spread in both
    directions exist or the samples do not lie on one surface (depth edges).
    """
    cam = dst.camera
    flat = d_dst.ravel()
    n = len(uv)
    r_fit = max(1, dst.window)
    off = _offsets(r_fit)
    col, row, _ = cam.pixel_index(uv)
    c = col[:, None] + off[None, :, 0]
    r = row[:, None] + off[None, :, 1]
    if _full_panorama(cam):
        c = np.mod(c, cam.w)
    inb = (c >= 0) & (c < cam.w) & (r >= 0) & (r < cam.h)
    val = np.where(inb, flat[np.where(inb, r * cam.w + c, 0)], 0.0)
    good = val > 0
    du = (col[:, None] + off[None, :, 0]) - uv[:, 0:1]
    dv = (row[:, None] + off[None, :, 1]) - uv[:, 1:2]
    s2 = (0.75 * r_fit) ** 2
    w = np.where(good, np.exp(-(du * du + dv * dv) / (2.0 * s2)), 0.0)
    y = np.where(good, 1.0 / np.where(good, val, 1.0), 0.0)
    sw = np.maximum(w.sum(axis=1), 1e-12)
    mu, mv, my = ((w * x).sum(axis=1) / sw for x in (du, dv, y))
    eu, ev, ey = du - mu[:, None], dv - mv[:, None], y - my[:, None]
    cuu, cvv, cuv = ((w * x * z).sum(axis=1) / sw for x, z in ((eu, eu), (ev, ev), (eu, ev)))
    cuy, cvy = ((w * x * ey).sum(axis=1) / sw for x in (eu, ev))
    tr, det = cuu + cvv, cuu * cvv - cuv * cuv
    lam_min = 0.5 * (tr - np.sqrt(np.maximum(tr * tr - 4.0 * det, 0.0)))
    # samples must cover both directions around the point (not a single LiDAR scan line)
    ok = (good.sum(axis=1) >= 3) & (lam_min >= 0.1)
    dets = np.where(ok, det, 1.0)
    gy_u = np.where(ok, (cvv * cuy - cuv * cvy) / dets, 0.0)  # d(1/depth)/du
    gy_v = np.where(ok, (cuu * cvy - cuv * cuy) / dets, 0.0)
    c0 = my - gy_u * mu - gy_v * mv
    ok &= c0 > 0
    depth = 1.0 / np.where(ok, c0, 1.0)
    res = (ey - gy_u[:, None] * eu - gy_v[:, None] * ev) / np.where(good, y, 1.0)
    rms = np.sqrt((w * res * res).sum(axis=1) / sw)
    ok &= rms <= FIT_MAX_RMS
    return ok, depth, -depth * depth * gy_u, -depth * depth * gy_v, rms * depth if n else rms


def compare(src: FrameGeom, d_src: np.ndarray, dst: FrameGeom, d_dst: np.ndarray, abs_tol: float,
            rng: np.random.Generator, c2w_src: np.ndarray | None = None, w2c_dst: np.ndarray | None = None,
            max_points: int = MAX_POINTS, scale_points: int = SCALE_POINTS,
            valid_src: np.ndarray | None = None) -> _Direction:
    """Reproject ``src``'s depth into ``dst``: counts of the interval test and the residuals of the scale test.

    For the scale test, where ``dst``'s surface is smooth around the landing point, the point's signed distance
    ``e = n . (p - s)`` to that surface (point ``s``, unit normal ``n``, from the fitted depth) is kept with its
    sensitivity to the depth scale: if stored depth is ``factor = 1 + v`` times the truth, dividing both maps
    by it is, seen from ``dst``, a translation of ``src``'s points by ``v t`` (``t``: ``src``'s camera centre in
    ``dst``'s frame), so ``e + v (n . t) = 0`` exactly. Surfaces parallel to the baseline (a road under forward
    motion) carry no scale information and get no weight.
    """
    out = _Direction()
    idx = _valid_pixels(d_src, max_points, rng, valid_src)
    if len(idx) == 0:
        return out
    ts = src.c2w if c2w_src is None else c2w_src
    wd = dst.w2c if w2c_dst is None else w2c_dst
    rows, cols = np.divmod(idx, src.camera.w)
    uv_src = np.stack([cols, rows], axis=-1).astype(np.float64)
    X = src.camera.unproject(uv_src, d_src.ravel()[idx])
    R = wd[:3, :3] @ ts[:3, :3]
    t = wd[:3, :3] @ ts[:3, 3] + wd[:3, 3]
    q = X @ R.T
    p = q + t
    cam = dst.camera
    uv, dpred, ok = cam.project(p)
    uv = np.where(np.isfinite(uv), uv, -1e9)
    _, _, inside = cam.pixel_index(uv)
    keep = ok & inside & np.isfinite(dpred)
    uv, dpred, p, q, uv_src = uv[keep], dpred[keep], p[keep], q[keep], uv_src[keep]
    has, lo, hi, pix = _interval(dst, d_dst, uv)
    uv, dpred, p, q, uv_src, lo, hi, pix = (x[has] for x in (uv, dpred, p, q, uv_src, lo, hi, pix))
    if len(pix) == 0:
        return out
    front = dpred < lo - (REL_TOL * lo + abs_tol)
    behind = dpred > hi + (REL_TOL * hi + abs_tol)
    # z-buffer of the landing points (nearest predicted depth per pixel of dst), without a full-size buffer
    order = np.lexsort((dpred, pix))
    sp = pix[order]
    first = np.ones(len(sp), dtype=bool)
    first[1:] = sp[1:] != sp[:-1]
    head = np.maximum.accumulate(np.where(first, np.arange(len(sp)), 0))  # first (nearest) of each pixel's run
    nearest = np.empty(len(pix))
    nearest[order] = dpred[order][head]
    hidden = dpred > nearest * (1.0 + REL_TOL) + abs_tol
    occluded = behind | hidden
    out.agree = int((~front & ~occluded).sum())
    out.conflict = int((front & ~hidden).sum())
    out.occluded = int(occluded.sum())
    cand = np.flatnonzero(~hidden)
    if len(cand) > scale_points:
        cand = np.sort(rng.choice(cand, size=scale_points, replace=False))
    fit_ok, obs, gu, gv, rms = _surface_fit(dst, d_dst, uv[cand])
    # dst's local surface at the landing point: its point s0 and unit normal n (from the fitted depth)
    uc = uv[cand]
    dep = [obs, obs + gu, obs + gv]
    pts = [cam.unproject(uc + off, d) for off, d in zip((0.0, np.array([1.0, 0.0]), np.array([0.0, 1.0])), dep)]
    n = np.cross(pts[1] - pts[0], pts[2] - pts[0])
    nn = np.linalg.norm(n, axis=1)
    fit_ok &= nn > 0
    n = n / np.where(nn > 0, nn, 1.0)[:, None]
    r = np.einsum("ij,ij->i", n, p[cand] - pts[0])
    g = n @ t
    # the residual the other depth kind would leave: psi = stored / true - 1 under that reading
    h = (_kind_error(src.camera, uv_src[cand]) * np.einsum("ij,ij->i", n, q[cand])
         - _kind_error(cam, uc) * np.einsum("ij,ij->i", n, pts[0]))
    fit_ok &= np.isfinite(r) & np.isfinite(h)
    out.rel = np.minimum(np.abs(r[fit_ok]) / obs[fit_ok], 1.0)
    use = fit_ok & (np.abs(r) <= SCALE_WINDOW * obs) & (np.abs(g) > 1e-12)
    sigma = rms + 0.002 * obs + 0.1 * abs_tol
    out.e, out.g, out.h, out.sigma = r[use], g[use], h[use], sigma[use]
    return out


def _kind_error(camera: Camera, uv: np.ndarray) -> np.ndarray:
    """``stored / true - 1`` per pixel if the other depth kind were stored: range where PINHOLE z belongs
    (``sqrt(1 + x'^2 + y'^2) - 1``), or the distance from the axis where CYLINDRICAL range belongs
    (``1 / sqrt(1 + t^2) - 1``)."""
    if camera.model == PINHOLE:
        x = (uv[:, 0] - camera.cx) / camera.fl_x
        y = (uv[:, 1] - camera.cy) / camera.fl_y
        return np.sqrt(1.0 + x * x + y * y) - 1.0
    t = (uv[:, 1] - camera.cy) / camera.fl_y
    return 1.0 / np.sqrt(1.0 + t * t) - 1.0


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


def fit_scale(directions: list[_Direction]) -> ScaleFit | None:
    """Robust joint fit of ``e = -v g + a h`` over every point of ``directions``.

    ``1 + v`` is the stored depth's scale relative to the poses' baselines; ``a`` the share of the residual
    explained by the other depth kind (1: every map holds the other kind). Weighted least squares (weights
    ``1/sigma^2``), started from a weighted median of the per-point scale solutions and refitted on points
    within 3 robust standard deviations. Standard errors are the larger of the point-scatter estimate and a
    cluster-robust (sandwich) estimate over pair directions.
    """
    dirs = [d for d in directions if len(d.e)]
    if not dirs:
        return None
    e = np.concatenate([d.e for d in dirs])
    g = np.concatenate([d.g for d in dirs])
    h = np.concatenate([d.h if len(d.h) == len(d.e) else np.zeros(len(d.e)) for d in dirs])
    sig = np.concatenate([d.sigma for d in dirs])
    gid = np.concatenate([np.full(len(d.e), j) for j, d in enumerate(dirs)])
    w = 1.0 / np.maximum(sig, 1e-12) ** 2
    if len(e) < 3 or float((w * g * g).sum()) <= 0:
        return None
    X = np.stack([-g, h], axis=1)
    use_h = float((w * h * h).sum()) > 0
    if not use_h:
        X = X[:, :1]
    beta = np.zeros(X.shape[1])
    beta[0] = _weighted_median(-e / g, w * g * g)
    inl = np.ones(len(e), dtype=bool)
    for it in range(6):
        r = (e - X @ beta) / sig
        sc = 1.4826 * float(np.median(np.abs(r))) + 1e-12
        inl = np.abs(r) <= (6.0 if it == 0 else 3.0) * sc
        if inl.sum() < 3:
            return None
        Xi, wi = X[inl], w[inl]
        A = (Xi * wi[:, None]).T @ Xi
        try:
            beta = np.linalg.solve(A + np.eye(len(beta)) * 1e-12 * np.trace(A), (Xi * wi[:, None]).T @ e[inl])
        except np.linalg.LinAlgError:
            return None
    Xi, wi, ri = X[inl], w[inl], (e - X @ beta)[inl]
    A = (Xi * wi[:, None]).T @ Xi
    Ainv = np.linalg.pinv(A)
    cov = Ainv * float(np.mean(wi * ri * ri))
    groups = np.unique(gid[inl])
    m = len(groups)
    if m >= 2:
        meat = np.zeros_like(A)
        for j in groups:
            sel = gid[inl] == j
            sj = (Xi[sel] * (wi[sel] * ri[sel])[:, None]).sum(axis=0)
            meat += np.outer(sj, sj)
        cov = np.maximum(cov, Ainv @ meat @ Ainv * (m / (m - 1)))
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return ScaleFit(factor=1.0 + float(beta[0]), se=float(se[0]), points=int(inl.sum()), directions=m,
                    kind=float(beta[1]) if use_h else 0.0, kind_se=float(se[1]) if use_h else float("inf"))


# --- pair selection ---------------------------------------------------------------------------------


def _candidates(frames: list[FrameGeom], a: int, centres: np.ndarray | None = None) -> list[int]:
    n = len(frames)
    if n <= ALL_PAIRS_LIMIT:
        return [b for b in range(n) if b != a]
    if centres is None:
        centres = np.stack([f.centre for f in frames])
    dist = np.linalg.norm(centres - centres[a], axis=1)
    dist[a] = np.inf
    near = set(np.argsort(dist, kind="stable")[:NEAREST_CANDIDATES].tolist())
    near |= {b for b in range(a - SEQUENCE_WINDOW, a + SEQUENCE_WINDOW + 1) if 0 <= b < n and b != a}
    return sorted(near)


def score_pairs(frames: list[FrameGeom]) -> dict[tuple[int, int], tuple[float, float]]:
    """``(a, b) -> (overlap, parallax)`` of every candidate pair (a < b), as ``overlap_and_parallax`` computes
    them; vectorised per destination frame (all sources' samples projected at once)."""
    n = len(frames)
    if n < 2:
        return {}
    centres = np.stack([f.centre for f in frames])
    keys: set[tuple[int, int]] = set()
    for a in range(n):
        keys |= {(min(a, b), max(a, b)) for b in _candidates(frames, a, centres)}
    sources: dict[int, list[int]] = {b: [] for b in range(n)}
    for a, b in keys:
        sources[b].append(a)
        sources[a].append(b)
    world = [f.sample for f in frames]
    frac = np.zeros((n, n))  # frac[a, b]: share of a's samples inside b
    dsum = np.zeros((n, n))
    for b in range(n):
        src = sorted(sources[b])
        if not src:
            continue
        pts = np.concatenate([world[a] for a in src])
        owner = np.concatenate([np.full(len(world[a]), k) for k, a in enumerate(src)])
        _, dpred, keep = _in_view(frames[b].camera, frames[b].w2c, pts)
        cnt = np.bincount(owner, minlength=len(src)).astype(np.float64)
        ins = np.bincount(owner[keep], minlength=len(src)).astype(np.float64)
        dep = np.bincount(owner[keep], weights=dpred[keep], minlength=len(src))
        frac[src, b] = ins / np.maximum(cnt, 1.0)
        dsum[src, b] = np.where(ins > 0, dep / np.maximum(ins, 1.0), 0.0)
    out: dict[tuple[int, int], tuple[float, float]] = {}
    for a, b in keys:
        ov = 0.5 * (frac[a, b] + frac[b, a])
        ds = [d for d in (dsum[a, b], dsum[b, a]) if d > 0]
        par = float(np.linalg.norm(centres[a] - centres[b])) / max(float(np.mean(ds)), 1e-9) if ds else 0.0
        out[(a, b)] = (float(ov), par)
    return out


def select_pairs(frames: list[FrameGeom], max_pairs: int | None = None,
                 scores: dict[tuple[int, int], tuple[float, float]] | None = None) -> list[tuple[int, int, float]]:
    """Overlapping pairs ``(a, b, overlap)``: every frame's best partner, then its longest-parallax partner.

    ``max_pairs`` (None: no limit) caps the total, coverage pairs first. Deterministic.
    """
    n = len(frames)
    if n < 2 or (max_pairs is not None and max_pairs <= 0):
        return []
    if scores is None:
        scores = score_pairs(frames)
    partners: dict[int, list[tuple[int, float, float]]] = {i: [] for i in range(n)}
    for (a, b), (ov, par) in scores.items():
        partners[a].append((b, ov, par))
        partners[b].append((a, ov, par))
    chosen: dict[tuple[int, int], float] = {}
    coverage: list[tuple[int, int]] = []
    longer: list[tuple[int, int]] = []
    for a in range(n):
        cands = [c for c in partners[a] if c[1] >= MIN_OVERLAP]
        if not cands:
            continue
        best = max(cands, key=lambda c: (c[1], -c[0]))
        key = (min(a, best[0]), max(a, best[0]))
        if key not in chosen:
            chosen[key] = best[1]
            coverage.append(key)
        far = [c for c in cands if c[1] >= PARALLAX_MIN_OVERLAP]
        if far:
            lng = max(far, key=lambda c: (c[1] * min(c[2], PARALLAX_CAP), -c[0]))
            key = (min(a, lng[0]), max(a, lng[0]))
            if key not in chosen:
                chosen[key] = lng[1]
                longer.append(key)
    keys = coverage + longer
    if max_pairs is not None:
        keys = keys[:max_pairs]
    return [(a, b, chosen[(a, b)]) for a, b in sorted(keys)]


# --- the check ----------------------------------------------------------------------------------------


DepthFn = Callable[[FrameGeom, np.ndarray], np.ndarray]


@dataclass
class _Quality:
    """How well a set of pairs agrees: mean and worst agreement, median relative residual, scale fit."""

    pairs: list[PairResult]
    scale: ScaleFit | None

    @property
    def evaluated(self) -> list[PairResult]:
        return [p for p in self.pairs if not p.skipped]

    @property
    def agreement(self) -> float:
        ev = self.evaluated
        return float(np.mean([p.agreement for p in ev])) if ev else 0.0

    @property
    def residual(self) -> float:
        vals = [p.residual for p in self.evaluated if math.isfinite(p.residual)]
        return float(np.median(vals)) if vals else float("nan")

    @property
    def passes(self) -> bool:
        """Every pair evaluated passes, the mean reaches ``HYPOTHESIS_AGREEMENT``, scale and depth kind fit."""
        ev = self.evaluated
        return (bool(ev) and len(ev) == len(self.pairs) and self.agreement >= HYPOTHESIS_AGREEMENT
                and not any(p.agreement < MIN_PAIR_AGREEMENT or p.biased for p in ev)
                and not (self.scale is not None and (self.scale.failed or self.scale.kind_failed)))

    def beats(self, stored: _Quality | None) -> bool:
        """This reading explains the data clearly better than ``stored`` (which may have no evaluated pair)."""
        if not self.passes:
            return False
        if stored is None or not stored.evaluated:
            return True
        if self.agreement >= stored.agreement + HYPOTHESIS_MARGIN:
            return True
        r_new, r_old = self.residual, stored.residual
        return (math.isfinite(r_new) and math.isfinite(r_old) and r_new <= HYPOTHESIS_RESIDUAL * r_old
                and self.agreement >= stored.agreement - 0.02 and (not stored.passes or r_old > RESIDUAL_FLOOR))


class _Evaluator:
    """Evaluates pairs with optional pose overrides and a depth transform (the hypotheses)."""

    def __init__(self, frames: list[FrameGeom], read_depth: Callable[[FrameGeom], np.ndarray], metric: bool,
                 seed: int) -> None:
        self.frames = frames
        self.read_depth = read_depth
        self.metric = metric
        self.seed = seed
        self._cache: dict[int, np.ndarray] = {}
        self._valid: dict[int, np.ndarray] = {}
        self._order: list[int] = []

    def depth(self, i: int) -> np.ndarray:
        """Frame ``i``'s clean depth (float32; kept in memory, or re-read and kept for the next few pairs)."""
        f = self.frames[i]
        if f.depth is not None:
            return f.depth
        if i not in self._cache:
            self._cache[i] = clean_depth(self.read_depth(f)).astype(np.float32)
            self._order.append(i)
            if len(self._order) > 16:  # keep a few re-read maps (pairs are visited in order)
                old = self._order.pop(0)
                self._cache.pop(old, None)
                self._valid.pop(old, None)
        return self._cache[i]

    def valid(self, i: int, d: np.ndarray) -> np.ndarray:
        """Flat indices of frame ``i``'s valid depth pixels (cached with its depth)."""
        if i not in self._valid:
            self._valid[i] = np.flatnonzero(d > 0)
        return self._valid[i]

    def pair(self, a: int, b: int, overlap: float, parallax: float = 0.0,
             poses: dict[int, np.ndarray] | None = None, depth_fn: DepthFn | None = None,
             keep: list[_Direction] | None = None, cheap: bool = False) -> PairResult:
        fa, fb = self.frames[a], self.frames[b]
        da, db = self.depth(a), self.depth(b)
        if depth_fn is not None:
            da, db = depth_fn(fa, da), depth_fn(fb, db)
        if self.metric:
            abs_tol = ABS_TOL_METRIC
        else:
            med = np.median(np.concatenate([da[da > 0], db[db > 0]]))
            abs_tol = ABS_TOL_RELATIVE * float(med)
        poses = poses or {}
        ta, tb = poses.get(a, fa.c2w), poses.get(b, fb.c2w)
        need = max(MIN_COMPARABLE_SPARSE, min(MIN_COMPARABLE, min(fa.n_valid, fb.n_valid) // 4))
        r = PairResult(a, b, overlap, parallax, min_comparable=need)
        rng = np.random.default_rng([self.seed + 1, a, b])
        both = []
        va = self.valid(a, da) if depth_fn is None else None
        vb = self.valid(b, db) if depth_fn is None else None
        for src, ds, dst, dd, t_src, t_dst, vs in ((fa, da, fb, db, ta, tb, va), (fb, db, fa, da, tb, ta, vb)):
            d = compare(src, ds, dst, dd, abs_tol, rng, c2w_src=t_src, w2c_dst=np.linalg.inv(t_dst),
                        max_points=HYPOTHESIS_POINTS if cheap else MAX_POINTS,
                        scale_points=HYPOTHESIS_SCALE_POINTS if cheap else SCALE_POINTS, valid_src=vs)
            r.agree += d.agree
            r.conflict += d.conflict
            r.occluded += d.occluded
            both.append(d)
        r.skipped = r.comparable < need
        r.scale = fit_scale(both)
        rel = np.concatenate([d.rel for d in both])
        r.residual = float(np.median(rel)) if len(rel) else float("nan")
        # the scene-wide fit uses pairs that agree: a pair broken by one bad pose would bias it
        if keep is not None and not r.skipped and r.agreement >= MIN_PAIR_AGREEMENT and not r.biased:
            keep.extend(both)
        return r

    def run(self, pairs: list[tuple[int, int, float]], parallax: dict[tuple[int, int], float],
            poses: dict[int, np.ndarray] | None = None, depth_fn: DepthFn | None = None,
            cheap: bool = False) -> _Quality:
        dirs: list[_Direction] = []
        out = [self.pair(a, b, s, parallax.get((a, b), 0.0), poses, depth_fn, dirs, cheap) for a, b, s in pairs]
        return _Quality(out, fit_scale(dirs))


def _scaled(k: float) -> DepthFn:
    def fn(f: FrameGeom, d: np.ndarray) -> np.ndarray:
        return d * k
    return fn


#: Gross unit errors tried on the whole scene: label -> factor applied to the stored depth.
UNIT_HYPOTHESES = {"millimetres (x1000)": 1e-3, "centimetres (x100)": 1e-2, "decimetres (x10)": 1e-1,
                   "x0.1 (kilometres-like)": 10.0, "x0.01": 100.0, "x0.001": 1000.0}


class _Checker:
    """One scene's check: scores, pairs, tests and hypotheses."""

    def __init__(self, frames: list[FrameGeom], read_depth: Callable[[FrameGeom], np.ndarray], metric: bool,
                 max_pairs: int | None, seed: int) -> None:
        self.frames = frames
        self.n = len(frames)
        self.max_pairs = max_pairs
        self.ev = _Evaluator(frames, read_depth, metric, seed)
        self.scores = score_pairs(frames)
        self.parallax = {k: v[1] for k, v in self.scores.items()}

    def best_overlap(self) -> np.ndarray:
        best = np.zeros(self.n)
        for (a, b), (ov, _) in self.scores.items():
            best[a] = max(best[a], ov)
            best[b] = max(best[b], ov)
        return best

    def frame_quality(self, i: int, T: np.ndarray | None = None) -> _Quality | None:
        """Frame ``i`` (with pose ``T``, default its stored one) against its two best-overlapping partners."""
        return self.frames_quality({i: T} if T is not None else {}, [i])

    def frames_quality(self, poses: dict[int, np.ndarray], which: list[int]) -> _Quality | None:
        """Frames ``which`` (under the pose overrides ``poses``) against their two best-overlapping partners each."""
        chosen: dict[tuple[int, int], tuple[float, float]] = {}
        for i in which:
            cands = []
            for j in _candidates(self.frames, i):
                key = (min(i, j), max(i, j))
                if not poses:
                    ov, par = self.scores.get(key, (0.0, 0.0))
                else:
                    ta = poses.get(key[0], self.frames[key[0]].c2w)
                    tb = poses.get(key[1], self.frames[key[1]].c2w)
                    ov, par = overlap_and_parallax(self.frames[key[0]], self.frames[key[1]], ta, tb)
                if ov >= MIN_OVERLAP:
                    cands.append((ov, -j, key, par))
            cands.sort(reverse=True)
            for ov, _, key, par in cands[:2]:
                chosen[key] = (ov, par)
        if not chosen:
            return None
        pairs = [(a, b, ov) for (a, b), (ov, _) in sorted(chosen.items())]
        return self.ev.run(pairs, {k: v[1] for k, v in chosen.items()}, poses=poses or None, cheap=True)

    def swap_hypotheses(self, cands: list[int]) -> tuple[int, int, _Quality] | None:
        """Two frames near each other in order holding each other's poses: the swap that clearly explains it."""
        tried: set[tuple[int, int]] = set()
        found: list[tuple[float, int, int, _Quality]] = []
        for i in cands:
            for j in range(max(0, i - SEQUENCE_WINDOW), min(self.n, i + SEQUENCE_WINDOW + 1)):
                key = (min(i, j), max(i, j))
                if j == i or key in tried or len(tried) >= MAX_SWAPS:
                    continue
                tried.add(key)
                a, b = key
                stored = self.frames_quality({}, [a, b])
                swapped = {a: self.frames[b].c2w, b: self.frames[a].c2w}
                q = self.frames_quality(swapped, [a, b])
                if q is not None and q.beats(stored):
                    found.append((q.agreement, a, b, q))
        if not found:
            return None
        best = max(found, key=lambda x: x[0])
        return best[1], best[2], best[3]

    def frame_hypotheses(self, i: int, stored: _Quality | None) -> tuple[str, _Quality] | None:
        """Undo each pose convention error on frame ``i`` alone: the reading that clearly beats the stored one."""
        found: list[tuple[float, float, str, _Quality]] = []
        for label, fix in POSE_HYPOTHESES.items():
            q = self.frame_quality(i, fix(self.frames[i].c2w))
            if q is not None and q.beats(stored):
                found.append((q.agreement, -q.residual, label, q))
        if not found:
            return None
        best = max(found, key=lambda x: (x[0], x[1]))
        return best[2], best[3]

    def subset(self) -> list[int]:
        """At most ``HYPOTHESIS_FRAMES`` consecutive frames from the middle of the scene (scene-wide readings)."""
        k = min(self.n, HYPOTHESIS_FRAMES)
        start = (self.n - k) // 2
        return list(range(start, start + k))

    def scene_hypotheses(self, poses: bool) -> tuple[str, _Quality, _Quality, str] | None:
        """Read every frame's pose (with ``poses``) or the depth unit another way; the reading that clearly beats
        the stored one. Runs on ``HYPOTHESIS_FRAMES`` consecutive frames. Returns ``(label, its quality, the
        stored quality, kind)`` with kind ``pose`` or ``depth``.
        """
        sub = self.subset()
        frames = [self.frames[i] for i in sub]
        scores = {(sub[a], sub[b]): v for (a, b), v in score_pairs(frames).items()}
        pairs = select_pairs(self.frames, HYPOTHESIS_PAIRS, scores=scores)
        stored = self.ev.run(pairs, self.parallax, cheap=True) if pairs else None
        found: list[tuple[float, float, str, _Quality, str]] = []
        for label, fix in POSE_HYPOTHESES.items() if poses else ():
            fixed = {i: fix(self.frames[i].c2w) for i in sub}
            moved = [FrameGeom(f.name, f.camera, fixed[i], np.linalg.inv(fixed[i]), f.depth_path, f.depth_rel,
                               f.sample_cam, f.n_valid, f.window, None, f.index) for i, f in zip(sub, frames)]
            sc = {(sub[a], sub[b]): v for (a, b), v in score_pairs(moved).items()}
            hp = select_pairs(self.frames, HYPOTHESIS_PAIRS, scores=sc)
            if not hp:
                continue
            q = self.ev.run(hp, {k: v[1] for k, v in sc.items()}, poses=fixed, cheap=True)
            if q.beats(stored):
                found.append((q.agreement, -q.residual, f"every frame's transform_matrix looks like {label}", q,
                              "pose"))
        for label, k in UNIT_HYPOTHESES.items() if pairs else ():
            q = self.ev.run(pairs, self.parallax, depth_fn=_scaled(k), cheap=True)
            if q.beats(stored):
                found.append((q.agreement, -q.residual, f"depth looks like it is in the wrong unit: {label}", q,
                              "depth"))
        if not found:
            return None
        best = max(found, key=lambda x: (x[0], x[1]))
        return best[2], best[3], stored if stored is not None else _Quality([], None), best[4]

    def reach(self, connected: list[int]) -> float:
        """Distance from the nearest overlapping camera within which an isolated frame is 'among the others'."""
        centres = np.stack([self.frames[i].centre for i in connected])
        if len(connected) >= 2:
            dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
            np.fill_diagonal(dist, np.inf)
            spacing = float(np.median(dist.min(axis=1)))
        else:
            spacing = 0.0
        depths = np.concatenate([np.linalg.norm(f.sample_cam, axis=1) for f in self.frames])
        return max(REACH_SPACING * spacing, REACH_DEPTH * float(np.median(depths)) if len(depths) else 0.0)


def check_scene(frames: list[FrameGeom], read_depth: Callable[[FrameGeom], np.ndarray], *, metric: bool = True,
                max_pairs: int | None = None, seed: int = 0, diagnose: bool = True) -> SceneGeometry:
    """Choose pairs and run the interval, scale, depth-kind and isolation tests, and read suspicious frames with
    their convention errors undone (a reading that clearly beats the stored one flags the frame).
    ``read_depth(frame) -> array`` re-reads a frame's depth when it is not kept in memory. With ``diagnose``, a
    scene whose failure no single frame explains is also read with every pose (or the depth unit) changed, to
    name the cause."""
    out = SceneGeometry(frames_with_depth=len(frames), names=[f.name for f in frames],
                        pinhole=all(f.camera.model == PINHOLE for f in frames))
    if len(frames) < 2:
        out.note = "fewer than 2 frames with usable depth and pose: nothing to compare"
        return out
    if max_pairs is not None and max_pairs <= 0:
        out.note = "max_pairs is 0: geometry not checked"
        return out
    for i, f in enumerate(frames):
        f.index = i
    ck = _Checker(frames, read_depth, metric, max_pairs, seed)
    pairs = select_pairs(frames, max_pairs, scores=ck.scores)
    notes: list[str] = []
    if pairs:
        q = ck.ev.run(pairs, ck.parallax)
        out.pairs, out.scale = q.pairs, q.scale
    else:
        notes.append(f"no pair of frames overlaps (overlap score >= {MIN_OVERLAP})")
    best = ck.best_overlap()
    used = {i for p in out.evaluated for i in (p.a, p.b)}
    lonely = [i for i in range(ck.n) if i not in used]  # isolated, or only in skipped pairs
    connected = [i for i in range(ck.n) if i in used]
    # frame-level readings find frames whose pose is wrong (detection, not only diagnosis)
    ev = out.evaluated
    # pairs that agree well: nothing frame-specific to look for (a scale or depth-kind error is scene-wide)
    clean = (bool(ev) and not out.failed and out.agreement is not None and out.agreement >= CLEAN_AGREEMENT
             and min(p.agreement for p in ev) >= CLEAN_PAIR_AGREEMENT)
    # frames to question: lonely ones always; unless the pairs agree well, or a scene-wide scale or depth-kind
    # error already explains them, those of bad pairs (or of the two worst pairs)
    suspects = out._suspect_ids()
    scene_wide = out.scale_failed or out.kind_failed
    cands: list[int] = list(lonely)
    if not clean and not scene_wide:
        cands += [i for i in suspects if i not in cands]
        for p in sorted(ev, key=lambda p: p.agreement)[:2]:
            cands += [i for i in (p.a, p.b) if i not in cands]
    for i in cands[:MAX_SUSPECTS]:
        stored = ck.frame_quality(i) if i in used else None
        hyp = ck.frame_hypotheses(i, stored)
        if hyp is not None:
            out.diagnoses[frames[i].name] = (f"its transform_matrix looks like {hyp[0]} (read that way it "
                                             f"agrees {hyp[1].agreement:.2f} with its neighbours)")
            out.flagged[i] = "hypothesis"
    if not clean and not scene_wide:
        unexplained = [i for i in cands[:MAX_SUSPECTS] if i not in out.flagged and i in used]
        sw = ck.swap_hypotheses(unexplained) if unexplained else None
        if sw is not None:
            a, b, qs = sw
            for i, j in ((a, b), (b, a)):
                out.diagnoses[frames[i].name] = (f"frames[{frames[i].name}] and frames[{frames[j].name}] look "
                                                 f"like they hold each other's transform_matrix (swapped, they "
                                                 f"agree {qs.agreement:.2f} with their neighbours)")
                out.flagged[i] = "swap"
    sequence = len(connected) >= max(2, math.ceil(SEQUENCE_FRACTION * ck.n))
    if lonely and connected and sequence:
        reach = ck.reach(connected)
        centres = np.stack([frames[i].centre for i in connected])
        for i in lonely:  # overlapping nothing (not merely too sparse to compare) while among the others
            if best[i] < MIN_OVERLAP and float(np.linalg.norm(centres - frames[i].centre, axis=1).min()) <= reach:
                out.flagged.setdefault(i, "near")
    widespread = not pairs or (not clean and not out.flagged)
    factor = out.scale.factor if out.scale is not None else None
    far = factor is not None and not 0.5 <= factor <= 2.0
    if diagnose and (widespread or (out.scale_failed and far)):
        hyp2 = ck.scene_hypotheses(poses=widespread)
        if hyp2 is not None:
            label, qh, qs, kind = hyp2
            was = f"{qs.agreement:.2f}" if qs.evaluated else "no comparable pair"
            out.diagnoses["*"] = f"{label} (read that way the frames agree {qh.agreement:.2f}; as stored: {was})"
            out.scene_flag = kind
    out.isolated = sorted(i for i in out.flagged if i in lonely)
    out.lonely = lonely
    out.best_overlap = [float(x) for x in best]
    n_skip = sum(p.skipped for p in out.pairs)
    if n_skip:
        notes.append(f"{n_skip} of {len(out.pairs)} pairs skipped: too few comparable points")
    out.note = "; ".join(notes)
    return out
