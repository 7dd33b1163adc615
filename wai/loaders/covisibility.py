"""Pairwise covisibility by depth reprojection (WAI's algorithm, ``wai_format.md`` §3.5), CPU/numpy.

For every frame i (source) and j (target), at a reduced resolution: unproject i's valid depth to world
points, transform them into j's camera, project with j's model (PINHOLE: z; CYLINDRICAL: range), keep the
points inside j's image with depth > ``min_depth``, read j's depth at the nearest pixel and accept a point if
``|d_exp - d_j| < abs_thres + rel_thres * d_exp - ln(0.5) * temp``. ``M[i, j] = #accepted / (H*W)``
(``denominator="full"``, WAI's default) or ``/ #valid_j`` (clamped to 1). The matrix is asymmetric, indexed in
``scene_meta["frames"]`` order, and its diagonal is about i's valid-pixel fraction.

Memory stays bounded for scenes of thousands of frames: target views are processed in chunks of at most
``max_chunk_points`` projected points, the reduced depth maps are spilled to a temporary memmap when they
exceed ``max_ram_bytes``, and ``write_covisibility`` fills the output through a memmap. A conservative
bounding-sphere/frustum pre-check skips pairs that cannot overlap.

Stored WAI-compatibly as ``<scene>/covisibility/v0/pairwise_covisibility--NxN.npy`` (a standard float32 .npy
with a 128-byte header, which WAI reads with ``np.memmap(offset=128)``), written to a temporary name and
renamed, plus ``scene_modalities.pairwise_covisibility = {"scene_key": ..., "format": "mmap"}``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from wai.errors import SceneNotFoundError, SchemaError, WaiError
from wai.format import atomic
from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import PINHOLE
from wai.format.paths import resolve_inside
from wai.format.scene import (
    FAILED,
    FINISHED,
    RUNNING,
    SCENE_META,
    Scene,
    load_frame,
    load_scene,
    set_process_state,
    update_scene_modalities,
)

log = logging.getLogger("wai.covisibility")

COVIS_DIR = "covisibility/v0"
COVIS_STEM = "pairwise_covisibility"
MODALITY_NAME = "pairwise_covisibility"
STAGE = "covisibility"
#: WAI defaults for ground-truth depth (``WP/configs/covisibility/*gt_depth*.yaml``).
DEFAULT_ABS_THRES = 0.1
DEFAULT_REL_THRES = 0.005
DEFAULT_TEMP = 0.1


def covisibility_filename(n: int) -> str:
    """``pairwise_covisibility--NxN.npy`` (WAI's mmap naming: the shape is in the file name)."""
    return f"{COVIS_STEM}--{n}x{n}.npy"


def reduced_size(w: int, h: int, target_size: int | tuple[int, int]) -> tuple[int, int]:
    """(w, h) for covisibility: ``target_size`` is the long side (never upsampled) or an explicit (w, h)."""
    if isinstance(target_size, (tuple, list)):
        return int(target_size[0]), int(target_size[1])
    long_side = max(w, h)
    if target_size >= long_side:
        return w, h
    s = target_size / long_side
    return max(1, round(w * s)), max(1, round(h * s))


def _pinhole_half_angle(cam: Camera) -> float:
    """Largest angle (radians) between the optical axis and a ray through an image corner (pixel edges)."""
    corners = np.array([[-0.5, -0.5], [cam.w - 0.5, -0.5], [-0.5, cam.h - 0.5], [cam.w - 0.5, cam.h - 0.5]])
    rays = cam.rays(corners, normalize=True)
    return float(np.arccos(np.clip(rays[:, 2], -1.0, 1.0)).max())


class _Frames:
    """Reduced depth maps, cameras and poses of a scene (depth spilled to a memmap above a RAM budget)."""

    def __init__(self, scene: Scene, size: tuple[int, int], depth_modality: str, max_ram_bytes: int,
                 tmp_dir: Path | None) -> None:
        n = len(scene.frames)
        w, h = size
        self.n, self.w, self.h = n, w, h
        self._tmp: str | None = None
        if n * w * h * 4 > max_ram_bytes:
            fd, self._tmp = tempfile.mkstemp(prefix=atomic.TMP_PREFIX + "covis-depth-", suffix=".npy", dir=tmp_dir)
            os.close(fd)
            self.depth = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.float32, shape=(n, h, w))
        else:
            self.depth = np.zeros((n, h, w), dtype=np.float32)
        self.cams: list[Camera] = []
        self.poses = np.zeros((n, 4, 4))
        self.far = np.zeros(n)
        self.center = np.zeros((n, 3))
        self.radius = np.zeros(n)
        self.n_valid = np.zeros(n, dtype=np.int64)
        for i in range(n):
            fr = load_frame(scene, i, modalities=[depth_modality])
            name = next(k for k in fr if k.endswith("_fname"))[: -len("_fname")]
            d = np.nan_to_num(np.asarray(fr[name], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            d[d < 0] = 0.0  # negative = ambiguous: not a valid measurement
            cam = scene.camera(i)
            if d.shape != (cam.h, cam.w):
                raise SchemaError(f"{scene.path / SCENE_META}: frame {i} depth {d.shape} != (h, w) {(cam.h, cam.w)}")
            if (cam.w, cam.h) != (w, h):
                d = cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
                cam = cam.resized(w, h)
            self.depth[i] = d
            self.cams.append(cam)
            self.poses[i] = scene.pose(i)
            valid = d > 0
            self.n_valid[i] = int(valid.sum())
            if self.n_valid[i]:
                self.far[i] = float(d[valid].max())
                pts = self.world_points(i)
                self.center[i] = pts.mean(axis=0)
                self.radius[i] = float(np.sqrt(((pts - self.center[i]) ** 2).sum(axis=1).max()))

    def world_points(self, i: int) -> np.ndarray:
        """``[P, 3]`` world points (metres) of frame i's valid reduced-resolution pixels."""
        d = np.asarray(self.depth[i])
        pts = self.cams[i].depth_to_points(d)[d > 0]
        T = self.poses[i]
        return pts @ T[:3, :3].T + T[:3, 3]

    def close(self) -> None:
        """Remove the temporary depth memmap, if any."""
        if self._tmp is not None:
            self.depth = np.zeros((0, self.h, self.w), dtype=np.float32)
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None


def _candidates(fr: _Frames, i: int, tol: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Targets j whose frustum (up to depth ``far_j + tol_j``) may contain part of i's bounding sphere."""
    if fr.n_valid[i] == 0:
        return np.zeros(fr.n, dtype=bool)
    R, t = fr.poses[:, :3, :3], fr.poses[:, :3, 3]
    c = np.matmul((fr.center[i] - t)[:, None, :], R)[:, 0]  # R_j^T (c - t_j) as rows, [N, 3]
    dist = np.linalg.norm(c, axis=1)
    r = fr.radius[i] + 1e-6
    cand = (dist - r <= fr.far + tol) & (fr.n_valid > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ang = np.arccos(np.clip(c[:, 2] / np.maximum(dist, 1e-12), -1.0, 1.0))
        widen = np.arcsin(np.clip(r / np.maximum(dist, 1e-12), 0.0, 1.0))
    cone_ok = (dist <= r) | (ang <= half + widen + 1e-6)
    return cand & (np.isnan(half) | cone_ok)


def compute_covisibility(
    scene_dir: str | Path,
    target_size: int | tuple[int, int] = 224,
    *,
    depth_modality: str = "depth|rendered_depth",
    abs_thres: float = DEFAULT_ABS_THRES,
    rel_thres: float = DEFAULT_REL_THRES,
    temp: float = DEFAULT_TEMP,
    min_depth: float = 0.04,
    denominator: str = "full",
    frustum_check: bool = True,
    max_chunk_points: int = 1_000_000,
    max_ram_bytes: int = 256 << 20,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Pairwise covisibility ``[N, N]`` float32 of a converted scene (rows: source i, columns: target j).

    ``target_size``: long side of the reduced resolution in pixels (224 as WAI; never upsampled) or (w, h).
    Thresholds in the scene's depth units (metres for metric scenes). ``out`` may be a preallocated ``[N, N]``
    float32 array (e.g. a memmap) to fill. The frame order is ``scene_meta["frames"]``.
    """
    if denominator not in ("full", "valid"):
        raise SchemaError(f"denominator {denominator!r}; expected 'full' or 'valid'")
    scene = load_scene(scene_dir)
    n = len(scene.frames)
    if n == 0:
        raise SchemaError(f"{scene.path / SCENE_META}: scene has no frames")
    cam0 = scene.camera(0)
    size = reduced_size(cam0.w, cam0.h, target_size)
    if out is None:
        out = np.zeros((n, n), dtype=np.float32)
    elif out.shape != (n, n):
        raise SchemaError(f"out has shape {out.shape}, expected {(n, n)}")
    tol_const = abs_thres - math.log(0.5) * temp
    fr = _Frames(scene, size, depth_modality, max_ram_bytes, scene.path)
    try:
        n_pix = size[0] * size[1]
        half = np.array([_pinhole_half_angle(c) if c.model == PINHOLE else np.nan for c in fr.cams])
        tol = tol_const + rel_thres * fr.far
        denom = np.full(n, float(n_pix)) if denominator == "full" else np.maximum(fr.n_valid, 1).astype(np.float64)
        for i in range(n):
            row = np.zeros(n, dtype=np.float32)
            if fr.n_valid[i]:
                pts = fr.world_points(i)
                targets = np.flatnonzero(_candidates(fr, i, tol, half)) if frustum_check else np.arange(n)
                for j_idx, cam in _chunks(fr, targets, len(pts), max_chunk_points):
                    row[j_idx] = _count(pts, fr, j_idx, cam, tol_const, rel_thres, min_depth) / denom[j_idx]
            if denominator == "valid":
                np.minimum(row, 1.0, out=row)
            out[i] = row
    finally:
        fr.close()
    return out


def _chunks(fr: _Frames, targets: np.ndarray, n_pts: int, max_points: int) -> Iterator[tuple[np.ndarray, Camera]]:
    """Groups of targets sharing one camera (so one ``Camera.project`` call), at most ``max_points`` points each."""
    groups: dict[Camera, list[int]] = {}
    for j in targets:
        groups.setdefault(fr.cams[j], []).append(int(j))
    per = max(1, max_points // max(n_pts, 1))
    for cam, idx in groups.items():
        for s in range(0, len(idx), per):
            yield np.asarray(idx[s : s + per], dtype=np.int64), cam


def _count(pts: np.ndarray, fr: _Frames, j_idx: np.ndarray, cam: Camera, tol_const: float, rel: float,
           min_depth: float) -> np.ndarray:
    """Number of ``pts`` (world, [P, 3]) that each target in ``j_idx`` sees at the depth it measured."""
    T = fr.poses[j_idx]
    R = T[:, :3, :3]
    local = np.matmul(pts[None], R) - np.matmul(T[:, None, :3, 3], R)  # R_j^T (p - t_j) as rows, [G, P, 3]
    g, p = local.shape[:2]
    uv, d_exp, ok = cam.project(local.reshape(-1, 3))
    col, row, inside = cam.pixel_index(uv)
    keep = ok & inside & (d_exp > min_depth)
    flat = np.repeat(np.arange(g), p) * (cam.h * cam.w) + np.where(keep, row * cam.w + col, 0)
    stack = np.asarray(fr.depth[j_idx]).reshape(-1)
    d_j = stack[flat]
    acc = keep & (d_j > 0) & (np.abs(d_exp - d_j) < tol_const + rel * d_exp)
    return acc.reshape(g, p).sum(axis=1).astype(np.float64)


def _inside(scene: Scene, rel: str, entry: str) -> Path:
    """``rel`` (relative to the scene) resolved, refusing anything that leaves the dataset root (``PathEscapeError``).

    The dataset root is the scene's parent, so a symlinked scene folder or ``covisibility/v0`` that points
    elsewhere is refused as well as ``../`` and absolute entries.
    """
    return resolve_inside(scene.path.parent, rel, under=scene.path.name, source=scene.path / SCENE_META,
                          entry=entry, what="covisibility path")


def covisibility_path(scene_dir: str | Path) -> Path | None:
    """The scene's covisibility file: the ``scene_modalities`` entry, else the first ``.npy`` in ``covisibility/v0``.

    Every candidate is resolved inside the dataset root; a ``scene_key`` or a symlink that leaves it raises
    ``PathEscapeError`` naming ``scene_meta.json`` and the entry.
    """
    scene = load_scene(scene_dir)
    mods = scene.meta.get("scene_modalities")
    entry = mods.get(MODALITY_NAME) if isinstance(mods, dict) else None
    if isinstance(entry, dict):
        key = next((k for k, v in entry.items() if k != "format" and isinstance(v, str)), None)
        if key is not None:
            path = _inside(scene, entry[key], f"scene_modalities.{MODALITY_NAME}.{key}")
            if path.is_file():
                return path
    d = _inside(scene, COVIS_DIR, COVIS_DIR)
    found = sorted(p for p in d.glob(f"{COVIS_STEM}--*.npy") if not p.is_symlink()) if d.is_dir() else []
    return found[0] if found else None


def write_covisibility(scene_dir: str | Path, overwrite: bool = False, **kwargs: Any) -> Path:
    """Compute and store a scene's covisibility (WAI layout, atomic) and register it in ``scene_modalities``.

    Skips the work when a matrix of the right size is already registered and ``overwrite`` is false.
    ``kwargs`` go to ``compute_covisibility``. Returns the file path.
    """
    scene = load_scene(scene_dir)
    n = len(scene.frames)
    name = covisibility_filename(n)
    rel = f"{COVIS_DIR}/{name}"
    final = scene.path / rel
    existing = covisibility_path(scene.path)
    if not overwrite and existing == final:
        return final
    # Never through a symlink that leaves the dataset: the folder is checked before and after creating it.
    out_dir = _inside(scene, COVIS_DIR, COVIS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = _inside(scene, COVIS_DIR, COVIS_DIR)
    final = out_dir / name
    fd, tmp = tempfile.mkstemp(prefix=f"{atomic.TMP_PREFIX}{name}.", dir=out_dir)
    os.fchmod(fd, atomic.FILE_MODE)  # mkstemp makes 0600; the rest of the output is 0644 (shared clusters)
    os.close(fd)
    set_process_state(scene.path, RUNNING, stage=STAGE)
    t0 = time.perf_counter()
    try:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, n))
        compute_covisibility(scene.path, out=mm, **kwargs)
        mm.flush()
        del mm
        os.replace(tmp, final)
        for old in out_dir.glob(f"{COVIS_STEM}--*.npy"):  # WAI's loader takes the first .npy it lists
            # our own naming, in a folder checked to be inside the dataset; a symlink is never followed
            if old != final and (old.is_symlink() or old.is_file()):
                old.unlink()
        update_scene_modalities(scene.path, {MODALITY_NAME: {"scene_key": rel, "format": "mmap"}})
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        set_process_state(scene.path, FAILED, f"{type(e).__name__}: {e}", stage=STAGE)
        raise
    set_process_state(scene.path, FINISHED, f"{n}x{n} in {time.perf_counter() - t0:.1f} s", stage=STAGE)
    return final


def find_scenes(root: str | Path, scenes: str | None = None) -> list[Path]:
    """Scene directories under ``root`` (or ``root`` itself when it is a scene), optionally filtered.

    ``scenes``: comma-separated names or a regex matched in full against the scene name.
    """
    root = Path(root)
    if (root / SCENE_META).is_file():
        found = [root]
    elif root.is_dir():
        found = sorted(p.parent for p in root.glob(f"*/{SCENE_META}"))
    else:
        raise SceneNotFoundError(f"{root} is not a directory; expected a converted dataset root or a scene")
    if not found:
        raise SceneNotFoundError(f"no converted scenes under {root}: no */{SCENE_META} found")
    if scenes:
        names = {s.strip() for s in scenes.split(",")}
        try:
            pat = re.compile(scenes)
        except re.error as e:
            raise WaiError(f"--scenes {scenes!r} is neither scene names nor a valid regex: {e}") from e
        chosen = [p for p in found if p.name in names or pat.fullmatch(p.name)]
        if not chosen:
            listed = ", ".join(p.name for p in found[:20]) + (" ..." if len(found) > 20 else "")
            raise SceneNotFoundError(f"--scenes {scenes!r} matches no scene under {root}; available: {listed}")
        found = chosen
    return found


def _one(args: tuple[str, str, bool, dict[str, Any]]) -> tuple[str, str | None]:
    root, scene_dir, overwrite, kwargs = args
    try:
        # a symlinked scene folder that leaves the dataset root is refused before anything is read
        resolve_inside(root, Path(scene_dir).name, source=root, entry="scene folder", what="scene folder")
        write_covisibility(scene_dir, overwrite=overwrite, **kwargs)
    except WaiError as e:
        return scene_dir, f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - one malformed scene must not abort the others; recorded with its type
        return scene_dir, f"{type(e).__name__}: {e} (unexpected; please report it)"
    return scene_dir, None


def run_covisibility(root: str | Path, scenes: str | None = None, workers: int = 1, overwrite: bool = False,
                     **kwargs: Any) -> dict[str, str | None]:
    """``write_covisibility`` for every scene under ``root`` (a failing scene never stops the run).

    Holds the dataset root's writer lock (``wai.run.OutputLock``) for the whole run: a conversion or a
    second covisibility run into the same root fails at once. Returns scene directory -> error message
    (None on success).
    """
    from concurrent.futures.process import BrokenProcessPool

    from wai.run.guards import OutputLock

    found = find_scenes(root, scenes)
    root = Path(root)
    dataset_root = root if found != [root] else root.parent  # one scene given: lock its dataset
    if workers < 1:
        raise WaiError(f"--workers {workers}: expected at least 1")
    jobs = [(str(dataset_root), str(p), overwrite, kwargs) for p in found]
    with OutputLock(dataset_root, purpose="wai-convert covisibility"):
        if workers <= 1 or len(jobs) <= 1:
            return dict(_one(j) for j in jobs)
        out: dict[str, str | None] = {}
        import multiprocessing as mp

        # spawn, not fork: a forked child of a process with threads (tqdm, torch, OpenCV) can deadlock
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
            futures = {ex.submit(_one, j): j[1] for j in jobs}
            for fut, scene_dir in futures.items():
                try:
                    out.update([fut.result()])
                except BrokenProcessPool as e:  # a worker died (OOM?): its scenes fail, the rest are reported
                    out[scene_dir] = f"worker died ({e}); rerun for this scene"
        return out


def _default_workers() -> int:
    from wai.run.types import default_workers

    return default_workers()


def click_command() -> Any:
    """The ``wai-convert covisibility OUT`` click command."""
    import click

    @click.command(name="covisibility", help="Compute pairwise covisibility (WAI covisibility/v0) of converted "
                                             "scenes by depth reprojection; OUT is a dataset root or one scene.")
    @click.argument("out", type=click.Path(path_type=Path))
    @click.option("--target-size", type=int, default=224, show_default=True,
                  help="long side (pixels) of the reduced resolution")
    @click.option("--scenes", default=None, help="comma-separated scene names, or a regex matched in full")
    @click.option("--workers", "-j", type=int, default=_default_workers(), show_default=True,
                  help="worker processes (one scene each; default: the cores this process may use)")
    @click.option("--overwrite", is_flag=True, help="recompute scenes that already have a matrix of the right size")
    @click.option("--depth-modality", default="depth|rendered_depth", show_default=True,
                  help="frame modality (or regex) holding the depth")
    @click.option("--abs-thres", type=float, default=DEFAULT_ABS_THRES, show_default=True,
                  help="absolute depth tolerance (scene depth units, metres for metric data)")
    @click.option("--rel-thres", type=float, default=DEFAULT_REL_THRES, show_default=True,
                  help="relative depth tolerance (fraction of the expected depth)")
    @click.option("--temp", type=float, default=DEFAULT_TEMP, show_default=True,
                  help="soft-threshold temperature; adds -ln(0.5)*temp to the tolerance (WAI)")
    @click.option("--denominator", type=click.Choice(["full", "valid"]), default="full", show_default=True,
                  help="divide accepted points by all pixels (WAI) or by the target's valid pixels")
    def covisibility(out: Path, target_size: int, scenes: str | None, workers: int, overwrite: bool,
                     depth_modality: str, abs_thres: float, rel_thres: float, temp: float, denominator: str) -> None:
        kwargs = dict(target_size=target_size, depth_modality=depth_modality, abs_thres=abs_thres,
                      rel_thres=rel_thres, temp=temp, denominator=denominator)
        try:
            results = run_covisibility(out, scenes, workers=workers, overwrite=overwrite, **kwargs)
        except WaiError as e:
            err = click.ClickException(f"{type(e).__name__}: {e}")
            err.exit_code = getattr(e, "exit_code", 1)
            raise err from e
        failed = {k: v for k, v in results.items() if v}
        click.echo(f"covisibility: {len(results) - len(failed)} scene(s) done, {len(failed)} failed -> {out}")
        for k, v in failed.items():
            click.echo(f"  FAILED {Path(k).name}: {v}", err=True)
        if failed:
            raise SystemExit(1)

    return covisibility
