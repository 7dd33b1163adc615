"""COLMAP sparse models read through pycolmap, turned into the format's cameras, poses and point tables.

Any converter whose source ships a COLMAP model (``cameras``, ``images``, ``points3D`` as ``.txt`` or
``.bin`` in one folder) imports this module. Parsing is pycolmap's (COLMAP's own bindings, the ``eth3d``
extra): it handles comment lines, empty ``POINTS2D`` lines, camera ids starting at 0 and every camera
model. This module adds only what pycolmap does not do:

* pycolmap errors (``ValueError``/``IndexError`` without a file name) become ``SourceLayoutError``s that
  name the offending file and, for text models, the first offending line (found by re-reading prefixes
  of that file with pycolmap in a temporary folder, never in the source tree);
* numbers pycolmap accepts but no real model holds are refused, naming the file and line (or id): camera
  sizes and parameters (finite, positive focal lengths, principal point near the image), image poses (a
  unit quaternion to 1e-3, finite translation within ``MAX_TRANSLATION``) and 3D points (finite, within
  ``MAX_TRANSLATION``); pycolmap keeps a non-unit quaternion as written and the pose would silently be
  re-normalised;
* COLMAP conventions become the format's: pixel centres at +0.5 -> at integer coordinates
  (``COLMAP_TO_OPENCV_PRINCIPAL_SHIFT``), world-to-camera poses -> camera-to-world;
* vectorised helpers: a point table with track sizes, and nearest-neighbour resampling lookup tables
  from a distorted COLMAP camera into a format ``PINHOLE`` camera.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wai.converters._rawio import decode_text, dir_problem, require_final_newline
from wai.errors import SourceLayoutError, SourceNotFoundError, import_optional, layout_error
from wai.format.cameras import Camera
from wai.format.conventions import COLMAP_TO_OPENCV_PRINCIPAL_SHIFT, invert_pose, make_pose, qvec_to_rotmat

#: The three files of a COLMAP model, in the order COLMAP reads them.
MODEL_FILES = ("cameras", "images", "points3D")
#: Errors pycolmap raises for malformed models (C++ CHECK failures surface as ValueError, bad ids as IndexError).
_PYCOLMAP_ERRORS = (ValueError, IndexError, RuntimeError, KeyError)
_SHIFT = COLMAP_TO_OPENCV_PRINCIPAL_SHIFT
#: Largest image side in a camera (pixels); the largest real one is 6220x4141 (ETH3D undistorted).
MAX_IMAGE_SIDE = 32768
#: Largest focal length (pixels).
MAX_FOCAL_PX = 1e6
#: Largest |coordinate| of a camera centre / translation / 3D point (model units; ETH3D: metres).
MAX_TRANSLATION = 1e7
#: Largest deviation of a stored quaternion's norm from 1 (6 printed digits give ~1e-6).
QUAT_NORM_TOL = 1e-3
#: Largest |distortion parameter| (dimensionless; real THIN_PRISM_FISHEYE coefficients are below 1).
MAX_DISTORTION = 1e3


def pycolmap_module() -> Any:
    """The ``pycolmap`` module, or ``MissingDependencyError`` with the pip line of the ``eth3d`` extra."""
    return import_optional("pycolmap", "eth3d")


# --- reading --------------------------------------------------------------------------------------


def model_files(folder: str | Path) -> dict[str, Path]:
    """``{"cameras": path, "images": path, "points3D": path}`` of the model in ``folder``.

    Binary files win when both exist (as in COLMAP). A missing file raises ``SourceNotFoundError`` naming it.
    """
    folder = Path(folder)
    problem = dir_problem(folder)
    if problem not in (None, "missing"):
        raise layout_error(folder, f"COLMAP model folder is {problem}")
    binary = all((folder / f"{n}.bin").is_file() for n in MODEL_FILES)
    ext = ".bin" if binary else ".txt"
    out = {}
    for n in MODEL_FILES:
        p = folder / f"{n}{ext}"
        if not p.is_file():
            raise SourceNotFoundError(
                f"missing COLMAP model file: expected {p} (a COLMAP model is {', '.join(MODEL_FILES)} "
                f"as .txt or .bin in {folder})"
            )
        out[n] = p
    return out


def read_model(folder: str | Path) -> Any:
    """Read the COLMAP model in ``folder`` with pycolmap (``pycolmap.Reconstruction``).

    Raises ``SourceNotFoundError`` for a missing file and ``SourceLayoutError`` naming the malformed file
    (and line, for text models) with pycolmap's own message.
    """
    pycolmap = pycolmap_module()
    files = model_files(folder)
    check_text_syntax(files)
    try:
        rec = pycolmap.Reconstruction(str(Path(folder)))
    except _PYCOLMAP_ERRORS as e:
        raise _locate_error(files, e) from e
    except MemoryError as e:  # a corrupt .bin count makes COLMAP allocate without bound; re-reading would repeat it
        raise SourceLayoutError(f"{Path(folder)}: pycolmap ran out of memory reading this COLMAP model "
                                f"({', '.join(p.name for p in files.values())}); a truncated or corrupt binary "
                                "file?") from e
    _check_header_counts(files, rec)
    check_numbers(files, rec)
    return rec


# Unambiguous pieces (no two ways to split one input), so a failing match cannot backtrack exponentially.
_F = rb"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_I = rb"-?[0-9]+"
_S = rb"[ \t]+"
#: One data line of each text file (COLMAP doc/format.rst). pycolmap's C++ streams stop silently at the first
#: character that is not part of a number (``0.0{x`` reads as ``0.0``), so every line is matched in full first.
_CAMERA_LINE = re.compile(rb"[ \t]*[0-9]+" + _S + rb"[A-Z_]+" + _S + rb"[0-9]+" + _S + rb"[0-9]+(?:" + _S + _F
                          + rb")+[ \t]*")
_IMAGE_LINE = re.compile(rb"[ \t]*[0-9]+(?:" + _S + _F + rb"){7}" + _S + rb"[0-9]+" + _S + rb"\S.*")
_POINTS2D_LINE = re.compile(rb"(?:[ \t]+" + _F + _S + _F + _S + _I + rb")*[ \t]*|" + _F + _S + _F + _S + _I
                            + rb"(?:[ \t]+" + _F + _S + _F + _S + _I + rb")*[ \t]*")
_POINT_LINE = re.compile(rb"[ \t]*[0-9]+(?:" + _S + _F + rb"){3}(?:" + _S + rb"[0-9]+){3}" + _S + _F + rb"(?:" + _S
                         + rb"[0-9]+" + _S + rb"[0-9]+)*[ \t]*")
_LINE_FORMATS = {
    "cameras": (_CAMERA_LINE, "CAMERA_ID MODEL WIDTH HEIGHT PARAMS[] (numbers only)"),
    "images": (_IMAGE_LINE, "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"),
    "points3D": (_POINT_LINE, "POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID POINT2D_IDX) pairs"),
}


def check_text_syntax(files: dict[str, Path]) -> None:
    """Match every data line of a text model against its format (errors name the file and line).

    Catches what pycolmap reads leniently: junk inside a number, a missing or extra value, a truncated
    last line. A file without data lines and without COLMAP's ``# Number of ...`` header is refused too
    (COLMAP always writes the header: a 0-byte or header-truncated file is damaged, not an empty model).
    """
    for kind, path in files.items():
        if path.suffix != ".txt":
            continue
        regex, fmt = _LINE_FORMATS[kind]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise layout_error(path, f"cannot read ({e.strerror or e})") from e
        require_final_newline(path, data, f"COLMAP {kind} file")  # COLMAP ends every line with std::endl
        decode_text(path, data, f"COLMAP {kind} file")  # names must be UTF-8 (pycolmap's str() would raise)
        expect_points2d = False
        n_data = 0
        has_count = False
        for i, raw in enumerate(data.split(b"\n"), 1):
            line = raw.rstrip(b"\r")
            if expect_points2d:  # the second line of an image: its observations (may be empty)
                expect_points2d = False
                if not _POINTS2D_LINE.fullmatch(line):
                    raise layout_error(path, "expected the image's POINTS2D line: (X Y POINT3D_ID) triples, or an "
                                             "empty line", line=i)
                continue
            if line.startswith(b"#"):
                has_count = has_count or _COUNT_KEYS[kind].encode() in line
                continue
            if not line.strip():
                continue
            if not regex.fullmatch(line):
                raise layout_error(path, f"malformed line; expected {fmt}", line=i)
            n_data += 1
            expect_points2d = kind == "images"
        if expect_points2d:
            raise layout_error(path, "the last image has no POINTS2D line (each image takes two lines): "
                                     "truncated?")
        if n_data == 0 and not has_count:
            raise layout_error(path, f"no data lines and no COLMAP header ('{_COUNT_KEYS[kind]} N'): an empty or "
                                     "truncated file")


def _line_of(path: Path, first_token: str, every_other: bool = False) -> int | None:
    """1-based line of a text model file whose first token is ``first_token`` (None for binary files)."""
    if path.suffix != ".txt":
        return None
    try:
        with path.open("rb") as fh:
            data_lines = 0
            for i, raw in enumerate(fh, 1):
                if raw.startswith(b"#"):
                    continue
                data_lines += 1
                if every_other and data_lines % 2 == 0:  # the POINTS2D line of an image
                    continue
                if raw.split(maxsplit=1)[:1] == [first_token.encode()]:
                    return i
    except OSError:
        return None
    return None


def check_numbers(files: dict[str, Path], rec: Any) -> None:
    """Refuse numbers pycolmap reads but no real model holds; errors name the file, line (text) and id."""
    cams = files["cameras"]
    for cid, cam in rec.cameras.items():
        where = {"line": _line_of(cams, str(cid)), "key": f"camera {cid}"}
        if not (0 < cam.width <= MAX_IMAGE_SIDE and 0 < cam.height <= MAX_IMAGE_SIDE):
            raise layout_error(cams, f"size {cam.width}x{cam.height}; expected 1..{MAX_IMAGE_SIDE} pixels per side",
                               **where)
        params = np.asarray(cam.params, dtype=np.float64)
        if not np.all(np.isfinite(params)):
            raise layout_error(cams, f"non-finite parameter in {params.tolist()}", **where)
        focal = params[list(cam.focal_length_idxs())]
        if not np.all((focal > 0) & (focal <= MAX_FOCAL_PX)):
            raise layout_error(cams, f"focal length {focal.tolist()}; expected (0, {MAX_FOCAL_PX:g}] pixels", **where)
        cx, cy = params[list(cam.principal_point_idxs())]
        if not (-cam.width <= cx <= 2 * cam.width and -cam.height <= cy <= 2 * cam.height):
            raise layout_error(cams, f"principal point ({cx}, {cy}) is far outside the {cam.width}x{cam.height} "
                                     "image", **where)
        extra = params[list(cam.extra_params_idxs())]
        if extra.size and float(np.abs(extra).max()) > MAX_DISTORTION:
            raise layout_error(cams, f"distortion parameters {extra.tolist()}; expected |value| <= "
                                     f"{MAX_DISTORTION:g}", **where)
    imgs = files["images"]
    for iid, image in rec.images.items():
        try:
            image.name  # noqa: B018 - a binary model may hold a name that is not UTF-8
        except UnicodeDecodeError as e:
            raise layout_error(imgs, f"image {iid}'s name is not UTF-8 text ({e.reason})", key=f"image {iid}") from e
        if int(image.camera_id) not in rec.cameras:
            raise layout_error(imgs, f"image {iid} uses camera {image.camera_id}, which {cams.name} does not define",
                               line=_line_of(imgs, str(iid), every_other=True), key=f"image {iid}")
        if not image.has_pose:
            continue
        rig = image.cam_from_world
        rig = rig() if callable(rig) else rig
        q = np.asarray(rig.rotation.quat, dtype=np.float64)
        t = np.asarray(rig.translation, dtype=np.float64)
        where = {"line": _line_of(imgs, str(iid), every_other=True), "key": f"image {iid}"}
        with np.errstate(over="ignore", invalid="ignore"):  # a 1e308 component: refused below, quietly
            qnorm = float(np.linalg.norm(q))
        if not (np.all(np.isfinite(q)) and abs(qnorm - 1.0) <= QUAT_NORM_TOL):
            raise layout_error(imgs, f"quaternion (w, x, y, z) = {[q[3], *q[:3]]} is not a unit quaternion "
                                     f"(norm {qnorm:.6g}, tolerance {QUAT_NORM_TOL})", **where)
        if not (np.all(np.isfinite(t)) and float(np.abs(t).max()) <= MAX_TRANSLATION):
            raise layout_error(imgs, f"translation {t.tolist()}; expected finite values within {MAX_TRANSLATION:g}",
                               **where)
    _check_value_counts(files, rec)


def _data_tokens(path: Path) -> int:
    """Number of whitespace-separated values on the data (non-comment) lines of a text model file."""
    data = path.read_bytes()
    comments = sum(len(m.split()) for m in re.findall(rb"(?m)^#.*$", data))
    return len(data.split()) - comments


def _check_value_counts(files: dict[str, Path], rec: Any) -> None:
    """Every value of a text model must have been read: pycolmap's C++ streams stop silently at a value they
    cannot hold (an id beyond 32 bits ends a track early), so the values read are counted against the file."""
    counts = {
        "cameras": sum(4 + len(c.params) for c in rec.cameras.values()),
        "images": sum(9 + len(str(im.name).split()) + 3 * int(im.num_points2D()) for im in rec.images.values()),
        "points3D": sum(8 + 2 * int(pt.track.length()) for pt in rec.points3D.values()),
    }
    for kind, path in files.items():
        if path.suffix != ".txt":
            continue
        n = _data_tokens(path)
        if n != counts[kind]:
            raise layout_error(path, f"holds {n} values but pycolmap read {counts[kind]} (a value it cannot hold, "
                                     "e.g. an id beyond 32 bits, ends a line early; or a value too many)")


def check_points(points_file: Path, table: PointTable) -> None:
    """3D points finite and within ``MAX_TRANSLATION`` (errors name the file, line and point id)."""
    bad = ~np.all(np.isfinite(table.xyz) & (np.abs(table.xyz) <= MAX_TRANSLATION), axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        pid = int(table.ids[k])
        raise layout_error(points_file, f"point {pid} at {table.xyz[k].tolist()}; expected finite coordinates "
                                        f"within {MAX_TRANSLATION:g}", line=_line_of(points_file, str(pid)),
                           key=f"point {pid}")


#: Header comments COLMAP writes (``# Number of images: 14, mean observations ...``) -> what pycolmap must have read.
_COUNT_KEYS = {"cameras": "Number of cameras:", "images": "Number of images:", "points3D": "Number of points:"}


def _check_header_counts(files: dict[str, Path], rec: Any) -> None:
    """Compare COLMAP's ``# Number of ...`` header comment with what pycolmap read.

    pycolmap silently drops a last image whose POINTS2D line is missing (a truncated ``images.txt``); the
    header count written by COLMAP and ETH3D catches that. Files without the comment are not checked.
    """
    read = {"cameras": rec.num_cameras(), "images": rec.num_images(), "points3D": rec.num_points3D()}
    for n, path in files.items():
        if path.suffix != ".txt":
            continue
        with path.open("rb") as f:
            head = [f.readline().decode("utf-8", "replace") for _ in range(8)]
        for i, line in enumerate(head, 1):
            if not line.startswith("#"):
                break
            if _COUNT_KEYS[n] in line:
                field = line.split(_COUNT_KEYS[n], 1)[1].split(",")[0].strip()
                if field.isdigit() and int(field) != read[n]:
                    raise layout_error(path, f"the header says {field} {n} but pycolmap read {read[n]} "
                                             "(file truncated? each image needs two lines, the second may be empty)",
                                       line=i)


def _empty_model_file(path: Path) -> None:
    """An empty model file: no text lines, or a binary file holding the uint64 count 0."""
    path.write_bytes(np.uint64(0).tobytes() if path.suffix == ".bin" else b"")


def _reads(pycolmap: Any, tmp: Path) -> str | None:
    """pycolmap's error message for the model in ``tmp``, or None when it reads."""
    try:
        pycolmap.Reconstruction(str(tmp))
    except _PYCOLMAP_ERRORS as e:
        return str(e).strip() or type(e).__name__
    return None


def _locate_error(files: dict[str, Path], err: BaseException) -> SourceLayoutError:
    """Find the file (and line) pycolmap fails on by re-reading the model file by file, then by prefixes.

    Files are read in COLMAP's order, each later one replaced by an empty file, in a temporary folder; the
    first file whose addition fails is the culprit. For text files the shortest failing prefix names the line.
    """
    pycolmap = pycolmap_module()
    message = str(err).strip() or type(err).__name__
    with tempfile.TemporaryDirectory(prefix="wai_colmap_") as td:
        tmp = Path(td)
        for n in MODEL_FILES:
            _empty_model_file(tmp / files[n].name)
        for n in MODEL_FILES:
            src = files[n]
            shutil.copyfile(src, tmp / src.name)
            msg = _reads(pycolmap, tmp)
            if msg is None:
                continue
            line = _first_failing_line(pycolmap, src, tmp) if src.suffix == ".txt" else None
            hint = " (a track names an image that images.txt does not define)" if "Image with ID" in msg else ""
            return layout_error(src, f"pycolmap cannot read this COLMAP {n} file: {msg}{hint}; expected the "
                                     "COLMAP model format (colmap doc/format.rst)", line=line)
    # Every file reads on its own terms but not together (should not happen): name the folder.
    folder = next(iter(files.values())).parent
    return SourceLayoutError(f"{folder}: pycolmap cannot read this COLMAP model: {message}")


def _first_failing_line(pycolmap: Any, src: Path, tmp: Path) -> int | None:
    """1-based number of the line whose inclusion makes pycolmap fail (binary search over prefixes)."""
    try:
        lines = src.read_bytes().splitlines(keepends=True)
    except OSError:
        return None
    dst = tmp / src.name

    def fails(k: int) -> bool:
        dst.write_bytes(b"".join(lines[:k]))
        return _reads(pycolmap, tmp) is not None

    lo, hi = 0, len(lines)  # invariant: prefix lo reads, prefix hi fails
    if fails(lo) or not fails(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
    return hi


# --- cameras and poses ----------------------------------------------------------------------------


def is_pinhole(camera: Any) -> bool:
    """True for the distortion-free models ``PINHOLE`` and ``SIMPLE_PINHOLE``."""
    return camera.model_name in ("PINHOLE", "SIMPLE_PINHOLE")


def to_pinhole(camera: Any, where: str | Path) -> Camera:
    """The format's ``PINHOLE`` camera of a distortion-free COLMAP camera (principal point shifted by -0.5).

    ``where`` (the cameras file) names the source in the error raised for a model with distortion.
    """
    p = np.asarray(camera.params, dtype=np.float64)
    if camera.model_name == "PINHOLE":
        fx, fy, cx, cy = p
    elif camera.model_name == "SIMPLE_PINHOLE":
        fx, cx, cy = p
        fy = fx
    else:
        raise layout_error(where, f"camera {camera.camera_id} is {camera.model_name}; only PINHOLE and "
                                  "SIMPLE_PINHOLE (no distortion) map to the format's PINHOLE camera "
                                  "(use the undistorted model)", key=str(camera.camera_id))
    return Camera.pinhole(camera.width, camera.height, fx, fy, cx + _SHIFT, cy + _SHIFT)


def world_to_cam(image: Any) -> np.ndarray:
    """4x4 world-to-camera of a pycolmap image (quaternion re-normalised: text files carry 6 digits)."""
    rig = image.cam_from_world
    rig = rig() if callable(rig) else rig  # a method in pycolmap 4.x, a property in 3.x
    x, y, z, w = np.asarray(rig.rotation.quat, dtype=np.float64)  # Eigen order: scalar last
    return make_pose(qvec_to_rotmat(np.array([w, x, y, z])), np.asarray(rig.translation, dtype=np.float64))


def cam_to_world(image: Any) -> np.ndarray:
    """4x4 camera-to-world (OpenCV axes, as COLMAP's camera frame) of a pycolmap image."""
    return invert_pose(world_to_cam(image))


# --- projection through any COLMAP camera model (format pixel convention) -------------------------


def img_from_cam(camera: Any, pts_cam: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``[N, 2]`` (pixel centres at integers) of camera-frame points ``[N, 3]``.

    Uses the camera's full COLMAP model (e.g. ``THIN_PRISM_FISHEYE``); NaN for points behind the camera.
    """
    pts = np.ascontiguousarray(np.asarray(pts_cam, dtype=np.float64).reshape(-1, 3))
    return np.asarray(camera.img_from_cam(pts), dtype=np.float64).reshape(-1, 2) + _SHIFT


def cam_from_img(camera: Any, uv: np.ndarray) -> np.ndarray:
    """Un-normalised rays ``(x/z, y/z, 1)`` ``[N, 3]`` through pixel coordinates ``uv [N, 2]`` (centres at integers)."""
    uv = np.ascontiguousarray(np.asarray(uv, dtype=np.float64).reshape(-1, 2) - _SHIFT)
    xy = np.asarray(camera.cam_from_img(uv), dtype=np.float64).reshape(-1, 2)
    return np.concatenate([xy, np.ones((len(xy), 1))], axis=1)


def nearest_lookup(src: Any, dst: Camera, chunk: int = 1 << 20) -> np.ndarray:
    """For each pixel of ``dst`` (row-major), the flat index of the nearest ``src`` pixel, or -1.

    ``src`` is a pycolmap camera (any model), ``dst`` a format ``PINHOLE`` camera with the same camera
    centre and orientation: each ``dst`` pixel centre is unprojected with the pinhole and projected with
    ``src.img_from_cam``. Processed in chunks of ``chunk`` pixels to bound memory at full DSLR size.
    """
    out = np.empty(dst.h * dst.w, dtype=np.int64)
    rows_per_chunk = max(1, chunk // dst.w)
    for r0 in range(0, dst.h, rows_per_chunk):
        v, u = np.mgrid[r0 : min(r0 + rows_per_chunk, dst.h), 0 : dst.w]
        uv_dst = np.stack([u.ravel(), v.ravel()], axis=-1).astype(np.float64)
        uv = img_from_cam(src, dst.rays(uv_dst, normalize=False))
        good = np.all(np.isfinite(uv), axis=1)
        uv = np.where(good[:, None], uv, -1.0)
        col = np.floor(uv[:, 0] + 0.5).astype(np.int64)
        row = np.floor(uv[:, 1] + 0.5).astype(np.int64)
        inside = good & (col >= 0) & (col < src.width) & (row >= 0) & (row < src.height)
        out[r0 * dst.w : r0 * dst.w + len(uv)] = np.where(inside, row * src.width + col, -1)
    return out


def resample(src_img: np.ndarray, lookup: np.ndarray, dst: Camera, fill: Any) -> np.ndarray:
    """Nearest-neighbour resample ``src_img`` ``[H, W, ...]`` into ``dst`` with a ``nearest_lookup`` table."""
    flat = src_img.reshape(-1, *src_img.shape[2:])
    ok = lookup >= 0
    out = np.full((len(lookup), *src_img.shape[2:]), fill, dtype=src_img.dtype)
    out[ok] = flat[lookup[ok]]
    return out.reshape(dst.h, dst.w, *src_img.shape[2:])


# --- 3D points ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointTable:
    """The model's 3D points as arrays (world frame, the model's units).

    ``ids [N]`` point ids, ``xyz [N, 3]``, ``n_images [N]`` distinct images in each track, and the tracks
    flattened to (``obs_image [M]``, ``obs_point [M]``: row into ``ids``), one entry per (point, image).
    """

    ids: np.ndarray
    xyz: np.ndarray
    n_images: np.ndarray
    obs_image: np.ndarray
    obs_point: np.ndarray

    def seen_by(self, image_id: int, min_images: int = 1) -> np.ndarray:
        """Rows of the points whose track contains ``image_id`` and spans at least ``min_images`` images."""
        rows = self.obs_point[self.obs_image == image_id]
        return rows[self.n_images[rows] >= min_images]


def point_table(reconstruction: Any) -> PointTable:
    """Arrays of every 3D point of a pycolmap reconstruction with its track (one pass, ~5 us per point)."""
    ids, xyz, n_img, obs_i, obs_p = [], [], [], [], []
    for row, (pid, p) in enumerate(reconstruction.points3D.items()):
        imgs = sorted({int(e.image_id) for e in p.track.elements})
        ids.append(int(pid))
        xyz.append(np.asarray(p.xyz, dtype=np.float64))
        n_img.append(len(imgs))
        obs_i.extend(imgs)
        obs_p.extend([row] * len(imgs))
    return PointTable(
        ids=np.asarray(ids, dtype=np.int64),
        xyz=np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
        n_images=np.asarray(n_img, dtype=np.int64),
        obs_image=np.asarray(obs_i, dtype=np.int64),
        obs_point=np.asarray(obs_p, dtype=np.int64),
    )


__all__ = [
    "MODEL_FILES", "PointTable", "cam_from_img", "cam_to_world", "check_numbers", "check_points", "img_from_cam",
    "is_pinhole", "model_files",
    "nearest_lookup", "point_table", "pycolmap_module", "read_model", "resample", "to_pinhole", "world_to_cam",
]
