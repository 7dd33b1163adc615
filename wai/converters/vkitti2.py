"""Virtual KITTI 2 (v2.0.3): synthetic stereo driving sequences rendered in Unity (Naver Labs Europe).

Licence: CC BY-NC-SA 3.0 (non-commercial; the converted output inherits it). Cite Cabon et al. 2020,
"Virtual KITTI 2". Download: ``vkitti_2.0.3_{rgb,depth,classSegmentation,textgt}`` extracted into one root.

Expected layout (source_formats.md §5)::

    <root>/Scene{01,02,06,18,20}/<variation>/           variation: clone, fog, morning, 15-deg-left, ...
        extrinsic.txt     "frame cameraID r1,1 r1,2 r1,3 t1 ... r3,3 t3 0 0 0 1" + one row per (frame, camera)
        intrinsic.txt     "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"           + one row per (frame, camera)
        colors.txt        "Category r g b"                                        + one row per class
        frames/rgb/Camera_{0,1}/rgb_00000.jpg
        frames/depth/Camera_{0,1}/depth_00000.png
        frames/classSegmentation/Camera_{0,1}/classgt_00000.png
        (pose.txt, bbox.txt, info.txt, frames/instanceSegmentation/...: not read)

Source conventions:

* ``extrinsic.txt`` rows are row-major 4x4 **world->camera** matrices with OpenCV camera axes (x right,
  y down, z forward); the converter inverts them to camera-to-world. The world frame is kept as is.
* ``intrinsic.txt``: pinhole ``fx fy cx cy`` in pixels with pixel centres at integer coordinates
  (cx = 620.5 = (1242 - 1) / 2), used unchanged.
* Rows are looked up by (frame, camera), never by row index.
* ``depth_*.png``: uint16 z-depth in centimetres; 65535 (655.35 m) is sky/far and becomes 0 (no data).
* ``classgt_*.png``: RGB colours of ``colors.txt``; class ``i`` (1-based row of colors.txt) gets id ``i``,
  id 0 is ``undefined`` (any colour not in the table).

Output: one scene per (scene, variation), e.g. ``Scene01_clone``, frames ``<frame:05d>_cam<id>`` ordered by
frame then camera, extras ``camera_id`` and ``source_frame``; modalities ``depth`` (metres) and
``semantic`` (label table ``vkitti2``).

Not converted / limitations: instance segmentation, optical/scene flow, object poses and boxes
(``pose.txt``, ``bbox.txt``, ``info.txt``); there is no official split, so every scene is ``train``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wai.converters._media import decode_image, verify_image
from wai.converters._rawio import (
    bad_name_reason,
    broken_problems,
    broken_scene,
    dir_problem,
    integer,
    list_dir,
    numbers,
    raise_if_broken,
    read_text,
)
from wai.converters.base import Converter, ConverterOptions, SceneRef, option
from wai.errors import SourceNotFoundError, UsageError, WaiError, layout_error, require_dir, require_file
from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import invert_pose, is_proper_rotation, orthonormalize
from wai.format.scene import Modality, SceneWriter

INTRINSIC_HEADER = "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"
EXTRINSIC_HEADER = "frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1"
COLORS_HEADER = "Category r g b"
#: Depth PNG unit (centimetres) and its saturated sky/far value.
DEPTH_SCALE = 0.01
DEPTH_SKY = 65535
UNDEFINED_ID = 0
_SCENE_RE = re.compile(r"Scene\d+")
_RGB_RE = re.compile(r"rgb_(\d{5})\.jpg")
#: Rotations in the text files carry ~7 significant digits; beyond this they are not rotations.
_ROT_TOL = 1e-4
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")

# Plausible ranges of raw numbers (anything outside is a damaged file, reported with file and line).
#: Largest frame id (the longest sequence, Scene20, has 837 frames).
MAX_FRAME = 10**7
#: Focal length (pixels); the real one is 725.0087.
MAX_FOCAL_PX = 1e5
#: |principal point| (pixels); the real one is (620.5, 187).
MAX_PRINCIPAL_PX = 1e5
#: |translation| of a world->camera matrix (metres).
MAX_TRANSLATION_M = 1e6


@dataclass
class VKitti2Options(ConverterOptions):
    """Options of the Virtual KITTI 2 source."""

    vkitti_scenes: str | None = option(None, "comma-separated VKITTI2 scenes to read, e.g. Scene01,Scene20 "
                                             "(default: every Scene* folder)")
    variations: str | None = option(None, "comma-separated variations, e.g. clone,fog (default: all found)")
    cameras: str = option("0,1", "comma-separated camera ids (0 = left, 1 = right)")
    max_depth: float | None = option(None, "depth beyond this many metres becomes 0 (VGGT uses 80)")
    semantic: bool = option(True, "convert classSegmentation into the label map 'semantic'")


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in str(value).split(",") if v.strip()]


def read_table(path: Path, header: str, n_values: int) -> dict[tuple[int, int], np.ndarray]:
    """Rows of a textgt file keyed by ``(frame, cameraID)``: ``n_values`` finite floats after the two ids.

    Errors name the file and line: a different header, a wrong number of values, a non-numeric or non-finite
    value, a duplicate ``(frame, cameraID)``.
    """
    p = require_file(path, f"VKITTI2 {path.name}", "extract vkitti_2.0.3_textgt.tar.gz")
    lines = read_text(p, f"VKITTI2 {path.name}").splitlines()
    if not lines or lines[0].split() != header.split():
        got = lines[0] if lines else "<empty file>"
        raise layout_error(path, f"expected the header {header!r}, got {got[:200]!r}", line=1)
    rows: dict[tuple[int, int], np.ndarray] = {}
    for i, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != n_values + 2:
            raise layout_error(path, f"expected {n_values + 2} space-separated values, got {len(parts)}", line=i)
        key = (integer(path, parts[0], line=i, what="frame", lo=0, hi=MAX_FRAME),
               integer(path, parts[1], line=i, what="cameraID", lo=0, hi=1))
        vals = numbers(path, parts[2:], line=i, what="values")
        if key in rows:
            raise layout_error(path, f"duplicate row for frame {key[0]} camera {key[1]}", line=i)
        rows[key] = vals
    return rows


#: The classes of VKITTI2 v2.0.3's colors.txt, in its order: class ``CLASS_IDS[name]`` keeps its id whatever
#: the row order (a row missing from a damaged colors.txt must not shift the other ids); other names are refused.
VKITTI2_CLASSES = ("Terrain", "Sky", "Tree", "Vegetation", "Building", "Road", "GuardRail", "TrafficSign",
                   "TrafficLight", "Pole", "Misc", "Truck", "Car", "Van")
CLASS_IDS = {name: i + 1 for i, name in enumerate(VKITTI2_CLASSES)}


def read_colors(path: Path) -> tuple[dict[int, str], np.ndarray, np.ndarray]:
    """``colors.txt`` -> (id -> name table, sorted packed RGB keys, their ids).

    The real file has 15 rows after the header, the last ``Undefined 0 0 0`` (id 0, like unknown colours).
    The 14 VKITTI2 classes get the ids of their row in the real file (``CLASS_IDS``: Terrain 1 ... Van 14)
    wherever they appear; any other class name is refused (a damaged name must not silently shift ids).
    """
    p = require_file(path, "VKITTI2 colors.txt", "extract vkitti_2.0.3_textgt.tar.gz")
    lines = read_text(p, "VKITTI2 colors.txt").splitlines()
    if not lines or lines[0].split() != COLORS_HEADER.split():
        raise layout_error(path, f"expected the header {COLORS_HEADER!r}", line=1)
    table = {UNDEFINED_ID: "undefined"}
    keys, ids = [], []
    for i, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise layout_error(path, f"expected 'Category r g b', got {line[:120]!r}", line=i)
        r, g, b = (integer(path, x, line=i, what="colour component", lo=0, hi=255) for x in parts[1:])
        key = (r << 16) | (g << 8) | b
        if key in keys:
            raise layout_error(path, f"colour ({r}, {g}, {b}) is listed twice", line=i)
        name = parts[0]
        if name == "Undefined":
            cid = UNDEFINED_ID
        elif name in CLASS_IDS:
            cid = CLASS_IDS[name]
        else:
            raise layout_error(path, f"unknown class {name[:40]!r}; VKITTI2 v2.0.3 has {', '.join(VKITTI2_CLASSES)} "
                                     "and Undefined (a damaged name would silently change the class ids)", line=i)
        if cid != UNDEFINED_ID and cid in table:
            raise layout_error(path, f"class {name!r} is listed twice", line=i)
        table[cid] = name if cid else "undefined"
        keys.append(key)
        ids.append(cid)
    order = np.argsort(keys)
    return dict(sorted(table.items())), np.asarray(keys, dtype=np.int64)[order], np.asarray(ids, dtype=np.uint8)[order]


def colors_to_ids(rgb: np.ndarray, keys: np.ndarray, ids: np.ndarray, bgr: bool = False) -> np.ndarray:
    """uint8 class ids of an RGB (or, with ``bgr``, OpenCV BGR) ``[H, W, 3]`` colour image (``UNDEFINED_ID`` for
    unknown colours); ``keys`` are the packed ``r << 16 | g << 8 | b`` colours of ``read_colors``."""
    # BGRA bytes read as little-endian uint32 are exactly b | g << 8 | r << 16 | a << 24: one colour
    # conversion and a 2^24-entry table lookup instead of int64 packing and a binary search per pixel.
    code = cv2.COLOR_BGR2BGRA if bgr else cv2.COLOR_RGB2BGRA
    bgra = cv2.cvtColor(np.ascontiguousarray(rgb), code)
    packed = bgra.view(np.uint32)[..., 0] & np.uint32(0xFFFFFF)
    return _color_table(keys.astype(np.int64).tobytes(), ids.astype(np.uint8).tobytes())[packed]


def unknown_colors(rgb: np.ndarray, keys: np.ndarray, bgr: bool = False) -> list[tuple[int, int, int]]:
    """The distinct ``(r, g, b)`` colours of an image that ``keys`` (packed ``colors.txt`` colours) lacks."""
    code = cv2.COLOR_BGR2BGRA if bgr else cv2.COLOR_RGB2BGRA
    packed = cv2.cvtColor(np.ascontiguousarray(rgb), code).view(np.uint32)[..., 0] & np.uint32(0xFFFFFF)
    known = _known_table(keys.astype(np.int64).tobytes())
    bad = np.unique(packed[~known[packed]])
    return [(int(c) >> 16 & 255, int(c) >> 8 & 255, int(c) & 255) for c in bad[:5]]


@functools.lru_cache(maxsize=4)
def _known_table(keys: bytes) -> np.ndarray:
    """2^24-entry bool table: packed colour -> listed in colors.txt."""
    table = np.zeros(1 << 24, dtype=bool)
    table[np.frombuffer(keys, dtype=np.int64)] = True
    return table


@functools.lru_cache(maxsize=4)
def _color_table(keys: bytes, ids: bytes) -> np.ndarray:
    """16 MiB uint8 table: packed colour -> class id (built once per colour file and process)."""
    table = np.full(1 << 24, UNDEFINED_ID, dtype=np.uint8)
    table[np.frombuffer(keys, dtype=np.int64)] = np.frombuffer(ids, dtype=np.uint8)
    return table


def w2c_to_c2w(row: np.ndarray, path: Path, key: tuple[int, int]) -> np.ndarray:
    """OpenCV camera-to-world from one extrinsic row (16 values, row-major world->camera)."""
    T = row.reshape(4, 4)
    where = f"frame {key[0]} camera {key[1]}"
    if not np.all(np.isfinite(T)):
        raise layout_error(path, "non-finite value in the 4x4 matrix", key=where)
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
        raise layout_error(path, f"last matrix row is {T[3].tolist()}, expected [0, 0, 0, 1]", key=where)
    if np.abs(T[:3, :3]).max() > 1.0 + 1e-3 or not is_proper_rotation(T[:3, :3], tol=_ROT_TOL):
        raise layout_error(path, "rotation block is not a proper rotation (orthonormal, det +1)", key=where)
    if np.abs(T[:3, 3]).max() > MAX_TRANSLATION_M:
        raise layout_error(path, f"translation {T[:3, 3].tolist()} is beyond the plausible {MAX_TRANSLATION_M:g} m",
                           key=where)
    T = T.copy()
    T[:3, :3] = orthonormalize(T[:3, :3])  # only removes the text rounding (< 1e-4)
    return invert_pose(T)


def intrinsics(row: np.ndarray, path: Path, key: tuple[int, int], w: int, h: int) -> Camera:
    """The pinhole camera of one intrinsic row ``fx fy cx cy`` for a ``w x h`` image (plausibility checked)."""
    fx, fy, cx, cy = (float(v) for v in row)
    where = f"frame {key[0]} camera {key[1]}"
    if not (0 < fx <= MAX_FOCAL_PX and 0 < fy <= MAX_FOCAL_PX):
        raise layout_error(path, f"focal lengths ({fx}, {fy}); expected (0, {MAX_FOCAL_PX:g}] pixels", key=where)
    if not (-w <= cx <= 2 * w and -h <= cy <= 2 * h):
        raise layout_error(path, f"principal point ({cx}, {cy}) is far outside the {w}x{h} image", key=where)
    return Camera.pinhole(w, h, fx, fy, cx, cy)


class VKitti2Converter(Converter):
    """Virtual KITTI 2 stereo sequences: one scene per (scene, variation), both cameras."""

    name = "vkitti2"
    provides = frozenset({"image", "depth", "semantic"})
    Options = VKitti2Options
    layout_hint = ("Virtual KITTI 2 root: Scene*/<variation>/{extrinsic,intrinsic,colors}.txt and "
                   "Scene*/<variation>/frames/{rgb,depth,classSegmentation}/Camera_{0,1}/")

    def _cameras(self) -> list[int]:
        try:
            cams = sorted({int(c) for c in _csv(self.options.cameras) or []})  # type: ignore[attr-defined]
        except ValueError as e:
            raise UsageError(f"--cameras {self.options.cameras!r}: expected ids like 0,1") from e  # type: ignore[attr-defined]
        if not cams or any(c not in (0, 1) for c in cams):
            raise UsageError(f"--cameras {self.options.cameras!r}: VKITTI2 has cameras 0 and 1")  # type: ignore[attr-defined]
        return cams

    def validate_options(self) -> None:
        """Option values that can never work raise ``UsageError`` before any scene starts."""
        o = self.options
        self._cameras()
        md = o.max_depth  # type: ignore[attr-defined]
        if md is not None and not (math.isfinite(float(md)) and float(md) > 0):
            raise UsageError(f"--max-depth {md}: expected a positive distance in metres")
        for flag, value in (("--vkitti-scenes", o.vkitti_scenes), ("--variations", o.variations)):  # type: ignore[attr-defined]
            bad = [v for v in _csv(value) or [] if not _NAME_RE.fullmatch(v) or v in (".", "..")]
            if bad:
                raise UsageError(f"{flag} {value!r}: {bad[0]!r} is not a folder name (letters, digits, '_', '.', '-')")

    @staticmethod
    def _select(found: list[str], wanted: list[str] | None, flag: str, where: Path) -> list[str]:
        if wanted is None:
            return found
        missing = [w for w in wanted if w not in found]
        if missing:
            raise SourceNotFoundError(f"{flag} {','.join(missing)}: not found in {where}; available: "
                                      f"{', '.join(found) or 'none'}")
        return [f for f in found if f in wanted]

    def iter_scenes(self) -> Iterator[SceneRef]:
        """``Scene*/<variation>`` folders, sorted; names ``<Scene>_<variation>``.

        A scene or variation folder that cannot be listed, or whose name cannot name a scene, becomes a scene
        that fails with the reason (it is never skipped silently).
        """
        self._cameras()
        opts = self.options
        entries = [p for p in list_dir(self.root, "VKITTI2 root (--input)") if _SCENE_RE.fullmatch(p.name)]
        problems = {p.name: dir_problem(p) for p in entries}
        scenes = [n for n, pr in problems.items() if pr != "not a directory"]
        scenes = self._select(scenes, _csv(opts.vkitti_scenes), "--vkitti-scenes", self.root)  # type: ignore[attr-defined]
        wanted_var = _csv(opts.variations)  # type: ignore[attr-defined]
        for scene in scenes:
            if problems[scene] is not None:
                yield broken_scene(scene, f"{self.root / scene}: scene folder is {problems[scene]}")
                continue
            found, broken = [], []
            for p in sorted((self.root / scene).iterdir()):
                pr = dir_problem(p)
                if pr is None:
                    found.append(p.name)
                elif pr != "not a directory":
                    broken.append((p.name, f"{p}: variation folder is {pr}"))
            for var, why in broken:
                if wanted_var is None or var in wanted_var:
                    yield broken_scene(f"{scene}_{var}", why)
            for var in self._select(found + [b for b, _ in broken], wanted_var, "--variations", self.root / scene):
                if var in dict(broken):
                    continue
                reason = bad_name_reason(f"{scene}_{var}", self.root / scene / var)
                if reason is not None:
                    yield broken_scene(f"{scene}_{var}", reason)
                    continue
                yield SceneRef(f"{scene}_{var}", "train", data=(scene, var))

    # --- reading ------------------------------------------------------------------------------
    def _frame_dirs(self, vd: Path, cid: int) -> dict[str, Path]:
        """The per-camera folders a frame reads (rgb, depth, and classSegmentation with ``--semantic``)."""
        c = f"Camera_{cid}"
        dirs = {"rgb": vd / "frames" / "rgb" / c, "depth": vd / "frames" / "depth" / c}
        if self.options.semantic:  # type: ignore[attr-defined]
            dirs["classSegmentation"] = vd / "frames" / "classSegmentation" / c
        return dirs

    def _unreadable(self, vd: Path) -> dict[int, str]:
        """Camera id -> why one of its frame folders cannot be listed (a symlink loop, no permission)."""
        out = {}
        for cid in self._cameras():
            for d in self._frame_dirs(vd, cid).values():
                pr = dir_problem(d)
                if pr not in (None, "missing"):
                    out[cid] = f"{d} is {pr}"
                    break
        return out

    def _frames(self, vd: Path, skip: set[int] | frozenset[int] = frozenset()) -> list[tuple[int, int, Path]]:
        """``(frame, camera, rgb path)`` of every rgb image of the selected cameras, by frame then camera."""
        out = []
        for cid in self._cameras():
            if cid in skip:
                continue
            d = require_dir(vd / "frames" / "rgb" / f"Camera_{cid}", f"rgb folder of camera {cid}",
                            "extract vkitti_2.0.3_rgb.tar into the same root")
            for p in d.iterdir():
                m = _RGB_RE.fullmatch(p.name)
                if m:
                    out.append((int(m.group(1)), cid, p))
        return sorted(out, key=lambda x: (x[0], x[1]))

    def check_scene(self, scene: SceneRef) -> list[str]:
        """Every problem conversion would meet, before it starts: the textgt files (header, rows, numbers finite
        and plausible), unreadable frame folders, and per frame the rows and each file (a complete 16-bit depth
        PNG, a complete JPEG of the same size, a complete RGB classgt PNG of that size whose colours are all in
        colors.txt: the only file --check-raw decodes)."""
        broken = broken_problems(scene)
        if broken is not None:
            return broken
        vd = self.root / scene.data[0] / scene.data[1]
        problems: list[str] = []
        unreadable = self._unreadable(vd)
        problems += [f"frame folder of camera {c}: {why}" for c, why in unreadable.items()]
        keys = None
        try:
            intr = read_table(vd / "intrinsic.txt", INTRINSIC_HEADER, 4)
            extr = read_table(vd / "extrinsic.txt", EXTRINSIC_HEADER, 16)
            if self.options.semantic:  # type: ignore[attr-defined]
                keys = read_colors(vd / "colors.txt")[1]
            frames = self._frames(vd, set(unreadable))
        except WaiError as e:
            return [*problems, str(e)]
        if not frames and not unreadable:
            problems.append(f"no rgb_<frame>.jpg images under {vd / 'frames' / 'rgb'}")
        for frame, cid, _ in frames:
            key = (frame, cid)
            for table, name in ((intr, "intrinsic.txt"), (extr, "extrinsic.txt")):
                if key not in table:
                    problems.append(f"{vd / name}: no row for frame {frame} camera {cid}")
            try:
                if key in extr:
                    w2c_to_c2w(extr[key], vd / "extrinsic.txt", key)
                w, h = self._verify_frame(vd, frame, cid, intr.get(key))
                if keys is not None:  # the one decode of --check-raw: every class colour must be in colors.txt
                    self._read_classgt(self._paths(vd, frame, cid)[2], vd / "colors.txt", keys, w, h)
            except WaiError as e:
                problems.append(str(e))
        return problems

    def _paths(self, vd: Path, frame: int, cid: int) -> list[Path]:
        f, c = f"{frame:05d}", f"Camera_{cid}"
        paths = [vd / "frames" / "rgb" / c / f"rgb_{f}.jpg", vd / "frames" / "depth" / c / f"depth_{f}.png"]
        if self.options.semantic:  # type: ignore[attr-defined]
            paths.append(vd / "frames" / "classSegmentation" / c / f"classgt_{f}.png")
        return paths

    def _verify_frame(self, vd: Path, frame: int, cid: int, intr_row: np.ndarray | None) -> tuple[int, int]:
        """Verify a frame's files without decoding: the depth PNG (complete, 16-bit, one channel) sets the size;
        the JPEG and the classgt PNG must be complete and of that size. Returns ``(w, h)``."""
        paths = self._paths(vd, frame, cid)
        require_file(paths[1], "VKITTI2 depth PNG", "extract vkitti_2.0.3_depth.tar")
        d = verify_image(paths[1], "VKITTI2 depth PNG", fmt="png", channels=(1,), bit_depth=(16,))
        require_file(paths[0], "VKITTI2 rgb JPEG", "extract vkitti_2.0.3_rgb.tar")
        verify_image(paths[0], "VKITTI2 rgb JPEG", fmt="jpeg", size=d.size,
                     size_source=f"the depth map {paths[1].name}", channels=(3,), bit_depth=(8,))
        if len(paths) > 2:
            require_file(paths[2], "VKITTI2 classgt PNG", "extract vkitti_2.0.3_classSegmentation.tar")
            verify_image(paths[2], "VKITTI2 classgt PNG", fmt="png", size=d.size,
                         size_source=f"the depth map {paths[1].name}", channels=(3, 4), bit_depth=(8,))
        if intr_row is not None:
            intrinsics(intr_row, vd / "intrinsic.txt", (frame, cid), d.width, d.height)
        return d.size

    @staticmethod
    def _read_classgt(path: Path, colors: Path, keys: np.ndarray, w: int, h: int) -> np.ndarray:
        """Decoded (BGR) class image whose every colour is listed in ``colors.txt`` (the table must describe
        the images: a colour it lacks means a damaged or mismatched colors.txt, which would shift class ids)."""
        cls_bgr = decode_image(path, cv2.IMREAD_COLOR, "VKITTI2 classgt PNG")
        if cls_bgr.shape[:2] != (h, w):
            raise layout_error(path, f"expected a {w}x{h} RGB class image, got {cls_bgr.shape[1]}x{cls_bgr.shape[0]}")
        bad = unknown_colors(cls_bgr, keys, bgr=True)
        if bad:
            raise layout_error(path, f"colours {bad} are not listed in {colors} (r g b); a damaged or mismatched "
                                     "colors.txt would shift the class ids")
        return cls_bgr

    def read_depth(self, path: Path) -> np.ndarray:
        """float32 metres from a centimetre uint16 PNG; sky (65535) and depth beyond ``--max-depth`` -> 0."""
        raw = decode_image(require_file(path, "VKITTI2 depth PNG", "extract vkitti_2.0.3_depth.tar"),
                           cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH, "VKITTI2 depth PNG")
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise layout_error(path, f"expected a single-channel 16-bit PNG (centimetres), got {raw.dtype} "
                                     f"{raw.shape}")
        depth = raw.astype(np.float32) * np.float32(DEPTH_SCALE)
        depth[raw == DEPTH_SKY] = 0.0
        max_depth = self.options.max_depth  # type: ignore[attr-defined]
        if max_depth is not None:
            depth[depth > max_depth] = 0.0
        return depth

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        """Write both cameras' frames of one (scene, variation).

        A missing or damaged textgt file, row or frame file fails the scene with a message naming it
        (``check_scene`` lists them all first); a camera whose frame folder cannot be listed has its frames
        (the rows of extrinsic.txt) dropped with the reason.
        """
        raise_if_broken(scene)
        scene_dir, var = scene.data
        vd = require_dir(self.root / scene_dir / var, "VKITTI2 scene/variation folder")
        intr_path, extr_path = vd / "intrinsic.txt", vd / "extrinsic.txt"
        intr = read_table(intr_path, INTRINSIC_HEADER, 4)
        extr = read_table(extr_path, EXTRINSIC_HEADER, 16)
        semantic = bool(self.options.semantic)  # type: ignore[attr-defined]
        if semantic:
            table, keys, ids = read_colors(vd / "colors.txt")
            writer.add_label_table("vkitti2", table)
        writer.add_transform("world_from_source", np.eye(4))  # the VKITTI2 world is kept unchanged
        rel = f"{scene_dir}/{var}"
        writer.source.update(
            extrinsic=f"{rel}/extrinsic.txt", intrinsic=f"{rel}/intrinsic.txt", colors=f"{rel}/colors.txt",
            frames=f"{rel}/frames/{{rgb,depth,classSegmentation}}/Camera_<id>/<kind>_<frame:05d>.<ext>",
            pose_source="extrinsic.txt world->camera (OpenCV axes), inverted to camera-to-world",
            depth_source="depth PNG centimetres * 0.01; 65535 -> 0",
        )
        if self.options.max_depth is not None:  # type: ignore[attr-defined]
            writer.set_filters({"max_depth_m": float(self.options.max_depth)})  # type: ignore[attr-defined]
        unreadable = self._unreadable(vd)
        frames = self._frames(vd, set(unreadable))
        for cid, why in unreadable.items():
            for frame in sorted(f for f, c in extr if c == cid):
                writer.drop_frame(f"{frame:05d}_cam{cid}", f"frame folder unreadable: {why}")
        if not frames and not unreadable:
            raise SourceNotFoundError(f"no rgb_<frame:05d>.jpg images under {vd / 'frames' / 'rgb'}")
        n_sky = 0
        for frame, cid, _ in frames:
            key = (frame, cid)
            for table_rows, path in ((intr, intr_path), (extr, extr_path)):
                if key not in table_rows:
                    raise layout_error(path, f"no row for frame {frame} camera {cid}")
            paths = self._paths(vd, frame, cid)
            w, h = self._verify_frame(vd, frame, cid, intr[key])
            depth = self.read_depth(paths[1])
            if depth.shape != (h, w):
                raise layout_error(paths[1], f"decodes to {depth.shape[1]}x{depth.shape[0]}, its header says {w}x{h}")
            cam = intrinsics(intr[key], intr_path, key, w, h)
            c2w = w2c_to_c2w(extr[key], extr_path, key)
            mods = {}
            if semantic:
                cls_bgr = self._read_classgt(paths[2], vd / "colors.txt", keys, w, h)
                mods["semantic"] = Modality("labels", colors_to_ids(cls_bgr, keys, ids, bgr=True), "vkitti2")
            n_sky += int(np.count_nonzero(depth == 0))
            writer.add_frame(f"{frame:05d}_cam{cid}", cam, c2w, image=paths[0], depth=depth, modalities=mods,
                             extras={"camera_id": cid, "source_frame": frame})
        return {"frames": len(frames), "pixels_without_depth": n_sky}
