"""Deterministic procedural 3D street world: the ground truth every test renders from.

World frame: right-handed, metres, **z up**. The scene is an infinite ground plane ``z = 0`` (class by
``|y|``: ``road`` < 4 m <= ``sidewalk`` < 7 m <= ``terrain``) plus oriented boxes (yaw about z) along a
street on the x axis: buildings, trees (``vegetation``), poles and cars. Rays that hit nothing see ``sky``.

Ray casting is vectorised numpy. Rays are put into a coherent order (Morton order of their direction,
grouped by origin cell), cut into small chunks, and each chunk's bounding cone culls the boxes before an
all-rays x surviving-boxes slab test. No per-ray Python loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wai.format.cameras import Camera
from wai.format.conventions import CYLINDRICAL

CLASSES: dict[str, int] = {
    "sky": 0,
    "road": 1,
    "sidewalk": 2,
    "terrain": 3,
    "building": 4,
    "vegetation": 5,
    "car": 6,
    "pole": 7,
}
CLASS_NAMES: dict[int, str] = {v: k for k, v in CLASSES.items()}

#: Constant sky colour (RGB in [0, 1]).
SKY_COLOR = np.array([0.55, 0.75, 0.95])
#: Base colours of the ground classes (RGB in [0, 1]).
GROUND_COLORS: dict[str, np.ndarray] = {
    "road": np.array([0.36, 0.36, 0.40]),
    "sidewalk": np.array([0.70, 0.66, 0.60]),
    "terrain": np.array([0.34, 0.52, 0.22]),
}
#: Spatial period of the smooth texture, metres.
TEXTURE_PERIOD = 1.5
#: Street half-width limits (metres, along |y|).
ROAD_HALF_WIDTH = 4.0
SIDEWALK_OUTER = 7.0
BUILDING_LINE = 9.0
STREET_X = (-80.0, 80.0)
#: Cars never intersect ``|y| < 2.5`` for ``x`` in this range (test vehicles drive there).
CAR_FREE_X = (-10.0, 10.0)
CAR_FREE_HALF_Y = 2.5

_GROUND_TABLE = np.stack([np.zeros(3)] + [GROUND_COLORS[k] for k in ("road", "sidewalk", "terrain")])
_T_EPS = 1e-6  # minimum accepted hit distance, metres
_CHUNK = 2048  # rays per culling chunk
_SHADE_CHUNK = 32768  # rays per shading block


def texture(base: np.ndarray, a: np.ndarray, b: np.ndarray, period: float = TEXTURE_PERIOD) -> np.ndarray:
    """Smooth texture ``base * (0.75 + 0.25 sin(2 pi a/P) sin(2 pi b/P))``; ``a, b`` in-surface metres.

    ``base`` is ``[N, 3]`` (or ``[3]``), result ``[N, 3]`` in ``[0, 1]``.
    """
    k = 2.0 * math.pi / period
    f = 0.75 + 0.25 * np.sin(k * a) * np.sin(k * b)
    return np.clip(np.asarray(base) * f[:, None], 0.0, 1.0)


def ground_class(y: np.ndarray) -> np.ndarray:
    """Class id of the ground plane at world ``y`` (metres)."""
    ay = np.abs(y)
    return np.where(
        ay < ROAD_HALF_WIDTH,
        CLASSES["road"],
        np.where(ay < SIDEWALK_OUTER, CLASSES["sidewalk"], CLASSES["terrain"]),
    ).astype(np.int64)


@dataclass(frozen=True)
class Box:
    """Oriented box: ``center`` (3,) world metres, ``size`` (3,) full extents along its local x, y, z,
    ``yaw`` radians about world z (local = ``rot_z(yaw)^T (p - center)``), class name, instance id,
    base ``color`` (3,) RGB in [0, 1]."""

    center: np.ndarray
    size: np.ndarray
    yaw: float
    cls: str
    instance: int
    color: np.ndarray

    def to_local(self, pts: np.ndarray) -> np.ndarray:
        """World points ``[N, 3]`` -> box-local points (box centre at origin, axes along the box edges)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 3) - self.center
        return np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]], axis=-1)

    def contains(self, pts: np.ndarray, tol: float = 0.0) -> np.ndarray:
        """Whether world points ``[N, 3]`` lie inside the box (grown by ``tol`` metres)."""
        return np.all(np.abs(self.to_local(pts)) <= self.size / 2.0 + tol, axis=-1)


@dataclass
class Hits:
    """Result of ``World.cast`` for N rays (world frame, metres).

    ``t`` distance along the unit ray (``inf`` where nothing is hit), ``points`` [N, 3] (nan where no
    hit), ``normals`` [N, 3] outward unit normals (nan where no hit), ``cls`` class ids (sky = 0 where
    no hit), ``instance`` (0 for ground and sky), ``rgb`` [N, 3] in [0, 1] (sky colour where no hit).
    """

    t: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    cls: np.ndarray
    instance: np.ndarray
    rgb: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        """``[N]`` bool: the ray hit a surface within ``max_t``."""
        return np.isfinite(self.t)


def _part1by1(x: np.ndarray) -> np.ndarray:
    """Spread the low 16 bits of ``x`` to the even bits (Morton interleave helper)."""
    x = x.astype(np.uint64) & np.uint64(0xFFFF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x00FF00FF)
    x = (x | (x << np.uint64(4))) & np.uint64(0x0F0F0F0F)
    x = (x | (x << np.uint64(2))) & np.uint64(0x33333333)
    x = (x | (x << np.uint64(1))) & np.uint64(0x55555555)
    return x


def _coherent_order(origins: np.ndarray, dirs: np.ndarray, same_origin: bool) -> np.ndarray:
    """Permutation putting rays with similar origin and direction next to each other."""
    az = np.arctan2(dirs[:, 1], dirs[:, 0])
    el = np.arcsin(np.clip(dirs[:, 2], -1.0, 1.0))
    step = math.radians(0.25)
    ai = np.floor((az + math.pi) / step).astype(np.int64)
    ei = np.floor((el + math.pi / 2) / step).astype(np.int64)
    key = _part1by1(ai) | (_part1by1(ei) << np.uint64(1))
    if not same_origin:
        # 4 m origin cells, 10 bits per axis (cells 4 km apart share a key: only coherence suffers).
        cell = np.floor(origins / 4.0).astype(np.int64) & 0x3FF
        okey = (cell[:, 0] << 20) | (cell[:, 1] << 10) | cell[:, 2]
        key = key | (okey.astype(np.uint64) << np.uint64(32))
    return np.argsort(key, kind="stable")


@dataclass
class World:
    """A set of oriented boxes on the ground plane ``z = 0`` (world frame, metres, z up)."""

    boxes: list[Box] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._pack()

    def _pack(self) -> None:
        """Cache box parameters as arrays for vectorised casting."""
        n = len(self.boxes)
        self._centers = np.array([b.center for b in self.boxes], dtype=np.float64).reshape(n, 3)
        self._half = np.array([b.size for b in self.boxes], dtype=np.float64).reshape(n, 3) / 2.0
        yaw = np.array([b.yaw for b in self.boxes], dtype=np.float64)
        self._cos, self._sin = np.cos(yaw), np.sin(yaw)
        self._radius = np.linalg.norm(self._half, axis=-1)
        self._cls = np.array([CLASSES[b.cls] for b in self.boxes], dtype=np.int64)
        self._inst = np.array([b.instance for b in self.boxes], dtype=np.int64)
        self._color = np.array([b.color for b in self.boxes], dtype=np.float64).reshape(n, 3)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def street(cls, seed: int = 0) -> World:
        """The default street world (deterministic for ``seed``); see module docstring."""
        rng = np.random.default_rng(seed)
        specs: list[tuple[np.ndarray, np.ndarray, float, str, np.ndarray]] = []
        x0, x1 = STREET_X

        # Buildings: a row on each side, near facade beyond |y| >= BUILDING_LINE even when yawed.
        for side in (-1.0, 1.0):
            x = x0 + rng.uniform(0.0, 2.0)
            while True:
                width = rng.uniform(6.0, 15.0)
                if x + width > x1:
                    break
                depth = rng.uniform(8.0, 15.0)
                height = rng.uniform(6.0, 25.0)
                yaw = math.radians(rng.uniform(-4.0, 4.0))
                # Yaw pushes a near corner by at most (width/2)|sin yaw| towards the street.
                margin = 0.5 * width * abs(math.sin(yaw)) + 0.3
                cy = side * (BUILDING_LINE + margin + depth / 2.0)
                grey = rng.uniform(0.45, 0.85)
                tint = rng.uniform(-0.1, 0.1, size=3)
                color = np.clip(grey + tint, 0.05, 0.95)
                specs.append(
                    (
                        np.array([x + width / 2.0, cy, height / 2.0]),
                        np.array([width, depth, height]),
                        yaw,
                        "building",
                        color,
                    )
                )
                x += width + rng.uniform(1.5, 4.0)

        # Trees and poles on the sidewalks.
        for side in (-1.0, 1.0):
            for xt in np.arange(x0 + 6.0, x1 - 6.0, 12.0):
                xt = xt + rng.uniform(-2.0, 2.0)
                w = rng.uniform(0.6, 1.2)
                h = rng.uniform(4.0, 8.0)
                color = np.array([rng.uniform(0.1, 0.25), rng.uniform(0.4, 0.65), rng.uniform(0.1, 0.25)])
                specs.append(
                    (
                        np.array([xt, side * rng.uniform(5.3, 6.0), h / 2.0]),
                        np.array([w, w, h]),
                        math.radians(rng.uniform(0.0, 90.0)),
                        "vegetation",
                        color,
                    )
                )
            for xp in np.arange(x0 + 12.0, x1 - 6.0, 24.0):
                xp = xp + rng.uniform(-1.0, 1.0)
                h = rng.uniform(5.0, 8.0)
                specs.append(
                    (
                        np.array([xp, side * 4.5, h / 2.0]),
                        np.array([0.2, 0.2, h]),
                        0.0,
                        "pole",
                        np.array([0.55, 0.55, 0.58]),
                    )
                )

        # Cars on the road, away from the test strip and from each other.
        car_size = np.array([4.5, 1.9, 1.5])
        car_radius = 0.5 * math.hypot(car_size[0], car_size[1])
        cars: list[np.ndarray] = []
        while len(cars) < 10:
            cx = rng.uniform(x0 + 5.0, x1 - 5.0)
            cy = rng.uniform(-2.0, 2.0)
            yaw = rng.uniform(0.0, 2.0 * math.pi)
            if CAR_FREE_X[0] - car_radius < cx < CAR_FREE_X[1] + car_radius:
                continue
            if any(math.hypot(cx - c[0], cy - c[1]) < 2.0 * car_radius + 0.5 for c in cars):
                continue
            cars.append(np.array([cx, cy]))
            color = rng.uniform(0.1, 0.9, size=3)
            specs.append((np.array([cx, cy, car_size[2] / 2.0]), car_size.copy(), yaw, "car", color))

        boxes = [
            Box(center=c, size=s, yaw=float(y), cls=k, instance=i + 1, color=col)
            for i, (c, s, y, k, col) in enumerate(specs)
        ]
        return cls(boxes)

    # --- ray casting --------------------------------------------------------------------
    def cast(self, origins: np.ndarray, dirs: np.ndarray, max_t: float = 1000.0) -> Hits:
        """Cast rays against the ground plane and all boxes (world frame, metres).

        ``origins`` [N, 3] or [3]; ``dirs`` [N, 3] unit vectors. Hits closer than 1e-6 m or farther
        than ``max_t`` are ignored; a ray starting inside a box does not see that box.
        """
        dirs = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
        n = len(dirs)
        origins = np.asarray(origins, dtype=np.float64)
        same_origin = origins.shape == (3,)
        origins = np.broadcast_to(origins.reshape(-1, 3), (n, 3)) if same_origin else origins.reshape(n, 3)
        if not same_origin and n > 0 and np.all(origins == origins[0]):
            same_origin = True

        order = _coherent_order(origins, dirs, same_origin) if n > _CHUNK else np.arange(n)
        o_s = origins[:1] if same_origin else np.take(origins, order, axis=0)
        d_s = np.take(dirs, order, axis=0)
        best_t = np.full(n, np.inf)
        best_box = np.full(n, -2, dtype=np.int64)  # -2 nothing, -1 ground, >= 0 box index

        # Ground plane z = 0.
        dz = d_s[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            tg = -o_s[:, 2] / dz
        ok = (dz != 0.0) & (tg > _T_EPS) & (tg <= max_t)
        best_t[ok] = tg[ok]
        best_box[ok] = -1

        for s in range(0, n, _CHUNK):
            sl = slice(s, min(s + _CHUNK, n))
            o_c = o_s if same_origin else o_s[sl]
            # Nothing behind the ground hits can be seen: cull by the chunk's farthest current hit.
            idx = self._cull(o_c, d_s[sl], min(max_t, float(best_t[sl].max())))
            if len(idx) == 0:
                continue
            t, j = self._slab(o_c, d_s[sl], idx)
            better = t < best_t[sl]
            best_t[sl] = np.where(better, t, best_t[sl])
            best_box[sl] = np.where(better, idx[j], best_box[sl])

        inv = np.empty(n, dtype=np.int64)
        inv[order] = np.arange(n)
        t_all, box_all = np.take(best_t, inv), np.take(best_box, inv)
        out = Hits(
            t=np.empty(n),
            points=np.empty((n, 3)),
            normals=np.empty((n, 3)),
            cls=np.empty(n, dtype=np.int64),
            instance=np.empty(n, dtype=np.int64),
            rgb=np.empty((n, 3)),
        )
        for s in range(0, n, _SHADE_CHUNK):  # cache-sized blocks
            sl = slice(s, min(s + _SHADE_CHUNK, n))
            h = self._shade(origins[sl], dirs[sl], t_all[sl], box_all[sl])
            for name in ("t", "points", "normals", "cls", "instance", "rgb"):
                getattr(out, name)[sl] = getattr(h, name)
        return out

    def _cull(self, o: np.ndarray, d: np.ndarray, max_t: float) -> np.ndarray:
        """Indices of boxes whose bounding sphere may meet the chunk's bounding cone of rays."""
        if len(self.boxes) == 0:
            return np.zeros(0, dtype=np.int64)
        if len(o) == 1:
            oc, r_o = o[0], 0.0
        else:
            oc = o.mean(axis=0)
            r_o = math.sqrt(float(((o - oc) ** 2).sum(axis=1).max()))
        dm = d.sum(axis=0)
        nm = math.sqrt(float(dm @ dm))
        v = self._centers - oc
        L = np.sqrt((v * v).sum(axis=1))
        R = self._radius + (r_o + 1e-6)
        keep = L - R <= max_t
        if nm > 1e-3 * len(d):
            dm = dm / nm
            alpha = math.acos(min(1.0, max(-1.0, float((d @ dm).min()))))
            with np.errstate(divide="ignore", invalid="ignore"):
                ang = np.arccos(np.minimum(np.maximum((v @ dm) / L, -1.0), 1.0))
                widen = np.arcsin(np.minimum(R / L, 1.0))
            keep &= (L <= R) | (ang <= alpha + widen + 1e-9)
        return np.flatnonzero(keep)

    def _slab(self, o: np.ndarray, d: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slab test of K rays x boxes ``idx``: nearest entry ``t`` [K] (inf if none) and which of ``idx``.

        ``o`` is [K, 3] or [1, 3] (shared origin); ``d`` is [K, 3].
        """
        c, s = self._cos[idx], self._sin[idx]
        h = self._half[idx]
        p = o[:, None, :] - self._centers[idx][None, :, :]  # [K or 1, M, 3]
        lo = (c * p[..., 0] + s * p[..., 1], c * p[..., 1] - s * p[..., 0], p[..., 2])
        dx, dy = d[:, 0:1], d[:, 1:2]
        ld = (dx * c + dy * s, dy * c - dx * s, d[:, 2:3])
        tnear = tfar = None
        for a in range(3):
            da = ld[a]
            inv = 1.0 / np.where(da == 0.0, 1e-300, da)
            tmid = -lo[a] * inv
            th = h[:, a] * np.abs(inv)
            t0, t1 = tmid - th, tmid + th
            tnear = t0 if tnear is None else np.maximum(tnear, t0)
            tfar = t1 if tfar is None else np.minimum(tfar, t1)
        tn = np.where((tnear <= tfar) & (tnear > _T_EPS), tnear, np.inf)
        j = np.argmin(tn, axis=1)
        return np.take_along_axis(tn, j[:, None], axis=1)[:, 0], j

    def _shade(self, o: np.ndarray, d: np.ndarray, t: np.ndarray, box: np.ndarray) -> Hits:
        """Points, normals, classes, instances and texture colours of the nearest hits."""
        n = len(t)
        hit = box > -2
        g = box == -1
        b = box >= 0
        tt = np.where(hit, t, 0.0)
        px = o[:, 0] + tt * d[:, 0]
        py = o[:, 1] + tt * d[:, 1]
        pz = np.where(g, 0.0, o[:, 2] + tt * d[:, 2])  # ground hits exactly on the plane
        if len(self.boxes):
            bi = np.maximum(box, 0)
            c, s = np.take(self._cos, bi), np.take(self._sin, bi)
            qx = px - np.take(self._centers[:, 0], bi)
            qy = py - np.take(self._centers[:, 1], bi)
            lz = pz - np.take(self._centers[:, 2], bi)
            lx, ly = c * qx + s * qy, c * qy - s * qx
            rx = np.abs(lx) / np.take(self._half[:, 0], bi)
            ry = np.abs(ly) / np.take(self._half[:, 1], bi)
            rz = np.abs(lz) / np.take(self._half[:, 2], bi)
            fx = b & (rx >= ry) & (rx >= rz)
            fy = b & ~fx & (ry >= rz)
            fz = ~(fx | fy)  # box top/bottom, or the ground (normal +z)
            nlx = np.where(fx, np.sign(lx), 0.0)
            nly = np.where(fy, np.sign(ly), 0.0)
            nz = np.where(b, np.where(fz, np.sign(lz), 0.0), 1.0)
            nx, ny = c * nlx - s * nly, s * nlx + c * nly
            # In-surface texture coordinates: box-local for boxes, world (x, y) for the ground.
            ua = np.where(b, np.where(fx, ly, lx), px)
            ub = np.where(b, np.where(fz, ly, lz), py)
            box_cls = np.take(self._cls, bi)
            box_inst = np.take(self._inst, bi)
            box_color = np.take(self._color, bi, axis=0)
        else:
            nx, ny, nz = np.zeros(n), np.zeros(n), np.ones(n)
            ua, ub = px, py
            box_cls = box_inst = np.zeros(n, dtype=np.int64)
            box_color = np.zeros((n, 3))
        gcls = ground_class(py)
        cls = np.where(b, box_cls, np.where(g, gcls, 0))
        inst = np.where(b, box_inst, 0)
        base = np.where(b[:, None], box_color, np.take(_GROUND_TABLE, gcls, axis=0))
        rgb = np.where(hit[:, None], texture(base, ua, ub), SKY_COLOR)
        nan = np.nan
        pts = np.stack([np.where(hit, px, nan), np.where(hit, py, nan), np.where(hit, pz, nan)], axis=-1)
        nrm = np.stack([np.where(hit, nx, nan), np.where(hit, ny, nan), np.where(hit, nz, nan)], axis=-1)
        return Hits(
            t=np.where(hit, t, np.inf),
            points=pts,
            normals=nrm,
            cls=cls.astype(np.int64),
            instance=inst.astype(np.int64),
            rgb=rgb,
        )

    # --- rendering ----------------------------------------------------------------------
    def render(self, camera: Camera, cam_to_world: np.ndarray, max_t: float = 1000.0) -> dict[str, np.ndarray]:
        """Render one image; ``cam_to_world`` is a 4x4 OpenCV camera-to-world pose (metres).

        Returns ``rgb`` uint8 [h, w, 3] (RGB order), ``depth`` float32 [h, w] (``camera.depth_type``:
        planar z for PINHOLE, range for CYLINDRICAL; 0 for sky), ``semantic`` uint8 [h, w] class ids,
        ``instance`` uint16 [h, w], ``points`` float32 [h, w, 3] world points (nan for sky) and
        ``valid`` bool [h, w] (a surface was hit).
        """
        T = np.asarray(cam_to_world, dtype=np.float64)
        d_cam = camera.ray_directions(normalize=True).reshape(-1, 3)
        d_world = d_cam @ T[:3, :3].T
        d_world /= np.linalg.norm(d_world, axis=1, keepdims=True)
        hits = self.cast(T[:3, 3], d_world, max_t=max_t)
        valid = hits.hit
        if camera.model == CYLINDRICAL:
            depth = hits.t
        else:
            depth = hits.t * d_cam[:, 2]
        depth = np.where(valid, depth, 0.0)
        h, w = camera.h, camera.w
        return {
            "rgb": np.round(hits.rgb * 255.0).clip(0, 255).astype(np.uint8).reshape(h, w, 3),
            "depth": depth.astype(np.float32).reshape(h, w),
            "semantic": hits.cls.astype(np.uint8).reshape(h, w),
            "instance": hits.instance.astype(np.uint16).reshape(h, w),
            "points": hits.points.astype(np.float32).reshape(h, w, 3),
            "valid": valid.reshape(h, w),
        }


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 OpenCV camera-to-world pose at ``eye`` looking at ``target`` (world metres).

    Camera z points at the target, x right, y down (``up`` projects to image-up). If the view direction
    is parallel to ``up``, the world axis least aligned with it is used as ``up`` instead.
    """
    eye = np.asarray(eye, dtype=np.float64).reshape(3)
    z = np.asarray(target, dtype=np.float64).reshape(3) - eye
    nz = np.linalg.norm(z)
    if nz < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    z /= nz
    upv = np.asarray(up, dtype=np.float64).reshape(3)
    x = np.cross(z, upv)
    if np.linalg.norm(x) < 1e-9 * max(1.0, np.linalg.norm(upv)):
        x = np.cross(z, np.eye(3)[int(np.argmin(np.abs(z)))])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T
