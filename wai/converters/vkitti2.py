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
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wai.converters.base import Converter, ConverterOptions, SceneRef, option
from wai.errors import SourceLayoutError, SourceNotFoundError, WaiError, layout_error, require_dir, require_file
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
    """Rows of a textgt file keyed by ``(frame, cameraID)``: ``n_values`` floats after the two ids."""
    lines = require_file(path, f"VKITTI2 {path.name}", "extract vkitti_2.0.3_textgt.tar.gz").read_text().splitlines()
    if not lines or lines[0].split() != header.split():
        got = lines[0] if lines else "<empty file>"
        raise layout_error(path, f"expected the header {header!r}, got {got!r}", line=1)
    rows: dict[tuple[int, int], np.ndarray] = {}
    for i, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != n_values + 2:
            raise layout_error(path, f"expected {n_values + 2} space-separated values, got {len(parts)}", line=i)
        try:
            key = (int(parts[0]), int(parts[1]))
            vals = np.array([float(x) for x in parts[2:]])
        except ValueError as e:
            raise layout_error(path, f"non-numeric value ({e})", line=i) from e
        if key in rows:
            raise layout_error(path, f"duplicate row for frame {key[0]} camera {key[1]}", line=i)
        rows[key] = vals
    return rows


def read_colors(path: Path) -> tuple[dict[int, str], np.ndarray, np.ndarray]:
    """``colors.txt`` -> (id -> name table, sorted packed RGB keys, their ids). Ids are 1-based rows."""
    lines = require_file(path, "VKITTI2 colors.txt", "extract vkitti_2.0.3_textgt.tar.gz").read_text().splitlines()
    if not lines or lines[0].split() != COLORS_HEADER.split():
        raise layout_error(path, f"expected the header {COLORS_HEADER!r}", line=1)
    table = {UNDEFINED_ID: "undefined"}
    keys, ids = [], []
    for i, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise layout_error(path, f"expected 'Category r g b', got {line!r}", line=i)
        try:
            r, g, b = (int(x) for x in parts[1:])
        except ValueError as e:
            raise layout_error(path, f"non-integer colour ({e})", line=i) from e
        key = (r << 16) | (g << 8) | b
        if key in keys:
            raise layout_error(path, f"colour ({r}, {g}, {b}) is listed twice", line=i)
        cid = UNDEFINED_ID if parts[0].lower() == "undefined" else len(table)
        table[cid] = parts[0] if cid else "undefined"
        keys.append(key)
        ids.append(cid)
    order = np.argsort(keys)
    return table, np.asarray(keys, dtype=np.int64)[order], np.asarray(ids, dtype=np.uint8)[order]


def colors_to_ids(rgb: np.ndarray, keys: np.ndarray, ids: np.ndarray, bgr: bool = False) -> np.ndarray:
    """uint8 class ids of an RGB (or, with ``bgr``, OpenCV BGR) ``[H, W, 3]`` colour image (``UNDEFINED_ID`` for
    unknown colours); ``keys`` are the packed ``r << 16 | g << 8 | b`` colours of ``read_colors``."""
    # BGRA bytes read as little-endian uint32 are exactly b | g << 8 | r << 16 | a << 24: one colour
    # conversion and a 2^24-entry table lookup instead of int64 packing and a binary search per pixel.
    code = cv2.COLOR_BGR2BGRA if bgr else cv2.COLOR_RGB2BGRA
    bgra = cv2.cvtColor(np.ascontiguousarray(rgb), code)
    packed = bgra.view(np.uint32)[..., 0] & np.uint32(0xFFFFFF)
    return _color_table(keys.astype(np.int64).tobytes(), ids.astype(np.uint8).tobytes())[packed]


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
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
        raise layout_error(path, f"last matrix row is {T[3].tolist()}, expected [0, 0, 0, 1]", key=where)
    if not is_proper_rotation(T[:3, :3], tol=_ROT_TOL):
        raise layout_error(path, "rotation block is not a proper rotation (orthonormal, det +1)", key=where)
    T = T.copy()
    T[:3, :3] = orthonormalize(T[:3, :3])  # only removes the text rounding (< 1e-4)
    return invert_pose(T)


class VKitti2Converter(Converter):
    """Virtual KITTI 2 stereo sequences: one scene per (scene, variation), both cameras."""

    name = "vkitti2"
    provides = frozenset({"image", "depth", "semantic"})
    Options = VKitti2Options

    def _cameras(self) -> list[int]:
        try:
            cams = sorted({int(c) for c in _csv(self.options.cameras) or []})  # type: ignore[attr-defined]
        except ValueError as e:
            raise WaiError(f"--cameras {self.options.cameras!r}: expected ids like 0,1") from e  # type: ignore[attr-defined]
        if not cams or any(c not in (0, 1) for c in cams):
            raise WaiError(f"--cameras {self.options.cameras!r}: VKITTI2 has cameras 0 and 1")  # type: ignore[attr-defined]
        return cams

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
        """``Scene*/<variation>`` folders, sorted; names ``<Scene>_<variation>``."""
        self._cameras()
        opts = self.options
        scenes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and _SCENE_RE.fullmatch(p.name))
        scenes = self._select(scenes, _csv(opts.vkitti_scenes), "--vkitti-scenes", self.root)  # type: ignore[attr-defined]
        wanted_var = _csv(opts.variations)  # type: ignore[attr-defined]
        for scene in scenes:
            found = sorted(p.name for p in (self.root / scene).iterdir() if p.is_dir())
            for var in self._select(found, wanted_var, "--variations", self.root / scene):
                yield SceneRef(f"{scene}_{var}", "train", data=(scene, var))

    # --- reading ------------------------------------------------------------------------------
    def _frames(self, vd: Path) -> list[tuple[int, int, Path]]:
        """``(frame, camera, rgb path)`` of every rgb image of the selected cameras, by frame then camera."""
        out = []
        for cid in self._cameras():
            d = require_dir(vd / "frames" / "rgb" / f"Camera_{cid}", f"rgb folder of camera {cid}",
                            "extract vkitti_2.0.3_rgb.tar into the same root")
            for p in d.iterdir():
                m = _RGB_RE.fullmatch(p.name)
                if m:
                    out.append((int(m.group(1)), cid, p))
        return sorted(out, key=lambda x: (x[0], x[1]))

    def check_scene(self, scene: SceneRef) -> list[str]:
        """Missing or malformed textgt files and per-frame files."""
        vd = self.root / scene.data[0] / scene.data[1]
        problems: list[str] = []
        try:
            intr = read_table(vd / "intrinsic.txt", INTRINSIC_HEADER, 4)
            extr = read_table(vd / "extrinsic.txt", EXTRINSIC_HEADER, 16)
            if self.options.semantic:  # type: ignore[attr-defined]
                read_colors(vd / "colors.txt")
            frames = self._frames(vd)
        except (SourceLayoutError, SourceNotFoundError) as e:
            return [str(e)]
        if not frames:
            problems.append(f"no rgb_<frame>.jpg images under {vd / 'frames' / 'rgb'}")
        for frame, cid, _ in frames:
            for table, name in ((intr, "intrinsic.txt"), (extr, "extrinsic.txt")):
                if (frame, cid) not in table:
                    problems.append(f"{vd / name}: no row for frame {frame} camera {cid}")
            for p in self._paths(vd, frame, cid)[1:]:
                if not p.is_file():
                    problems.append(f"missing {p}")
        return problems

    def _paths(self, vd: Path, frame: int, cid: int) -> list[Path]:
        f, c = f"{frame:05d}", f"Camera_{cid}"
        paths = [vd / "frames" / "rgb" / c / f"rgb_{f}.jpg", vd / "frames" / "depth" / c / f"depth_{f}.png"]
        if self.options.semantic:  # type: ignore[attr-defined]
            paths.append(vd / "frames" / "classSegmentation" / c / f"classgt_{f}.png")
        return paths

    def read_depth(self, path: Path) -> np.ndarray:
        """float32 metres from a centimetre uint16 PNG; sky (65535) and depth beyond ``--max-depth`` -> 0."""
        raw = cv2.imread(str(require_file(path, "VKITTI2 depth PNG", "extract vkitti_2.0.3_depth.tar")),
                         cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
        if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
            got = "undecodable" if raw is None else f"{raw.dtype} {raw.shape}"
            raise layout_error(path, f"expected a single-channel 16-bit PNG (centimetres), got {got}")
        depth = raw.astype(np.float32) * np.float32(DEPTH_SCALE)
        depth[raw == DEPTH_SKY] = 0.0
        max_depth = self.options.max_depth  # type: ignore[attr-defined]
        if max_depth is not None:
            depth[depth > max_depth] = 0.0
        return depth

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        """Write both cameras' frames of one (scene, variation)."""
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
        frames = self._frames(vd)
        if not frames:
            raise SourceNotFoundError(f"no rgb_<frame:05d>.jpg images under {vd / 'frames' / 'rgb'}")
        n_sky = 0
        for frame, cid, _ in frames:
            key = (frame, cid)
            for table_rows, path in ((intr, intr_path), (extr, extr_path)):
                if key not in table_rows:
                    raise layout_error(path, f"no row for frame {frame} camera {cid}")
            paths = self._paths(vd, frame, cid)
            depth = self.read_depth(paths[1])
            h, w = depth.shape
            img = cv2.imread(str(paths[0]), cv2.IMREAD_REDUCED_COLOR_8)  # header check only, cheap decode
            if img is None:
                raise layout_error(paths[0], "could not decode the JPEG")
            if img.shape[:2] != ((h + 7) // 8, (w + 7) // 8):
                raise layout_error(paths[0], f"image size does not match the depth map {w}x{h} of {paths[1]}")
            fx, fy, cx, cy = intr[key]
            cam = Camera.pinhole(w, h, fx, fy, cx, cy)
            c2w = w2c_to_c2w(extr[key], extr_path, key)
            mods = {}
            if semantic:
                cls_bgr = cv2.imread(str(require_file(paths[2], "VKITTI2 classgt PNG",
                                                      "extract vkitti_2.0.3_classSegmentation.tar")), cv2.IMREAD_COLOR)
                if cls_bgr is None or cls_bgr.shape[:2] != (h, w):
                    got = "undecodable" if cls_bgr is None else f"{cls_bgr.shape[1]}x{cls_bgr.shape[0]}"
                    raise layout_error(paths[2], f"expected a {w}x{h} RGB class image, got {got}")
                mods["semantic"] = Modality("labels", colors_to_ids(cls_bgr, keys, ids, bgr=True), "vkitti2")
            n_sky += int(np.count_nonzero(depth == 0))
            writer.add_frame(f"{frame:05d}_cam{cid}", cam, c2w, image=paths[0], depth=depth, modalities=mods,
                             extras={"camera_id": cid, "source_frame": frame})
        return {"frames": len(frames), "pixels_without_depth": n_sky}
