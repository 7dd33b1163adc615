"""KITTI-360 perspective cameras with metric depth from the Velodyne, building filtering and stratified sampling.

Source: KITTI-360 (Liao, Xie, Geiger, TPAMI 2022), https://www.cvlibs.net/datasets/kitti-360/. Data licence
CC BY-NC-SA 3.0; the label table shipped in ``converters/data/kitti360_labels.json`` comes from the MIT-licensed
``kitti360Scripts`` (``helpers/labels.py``).

Expected layout (only what is read)::

    KITTI-360/
      calibration/perspective.txt          P_rect_0k (3x4), R_rect_0k (3x3), S_rect_0k (W H)
      calibration/calib_cam_to_pose.txt    image_00: 12 numbers (unrectified cam 00 -> GPS/IMU)
      calibration/calib_cam_to_velo.txt    one line, 12 numbers (unrectified cam 00 -> Velodyne)
      data_2d_raw/<seq>/image_0{0,1}/data_rect/<frame:010d>.png
      data_2d_semantics/train/<seq>/image_0{0,1}/semantic/<frame:010d>.png   (optional, 8-bit ids)
      data_2d_semantics/train/2013_05_28_drive_{train,val}_frames.txt       (optional)
      data_3d_raw/<seq>/velodyne_points/data/<frame:010d>.bin               float32 x 4 per point
      data_poses/<seq>/cam0_to_world.txt   frame + 16 (rectified cam 00 -> world), or
      data_poses/<seq>/poses.txt           frame + 12 (GPS/IMU -> world)

Conventions: rectified cameras are OpenCV (x right, y down, z forward); the world is KITTI-360's own
(metres, z up), kept unchanged. Poses map camera to world. Velodyne frame x forward, y left, z up.
Camera 00 -> world is ``cam0_to_world`` or ``poses @ T_cam0->pose @ inv(R_rect_00)``; camera 01 is camera
00 shifted by the rectified baseline ``b = -P_rect_01[0,3] / P_rect_01[0,0]`` along its x axis. Depth is
z in the rectified camera from ``R_rect_00 @ inv(T_cam0->velo)`` (then ``- b x`` for camera 01), z-buffered.

Not converted / limitations:
- fisheye cameras 02/03, SICK scans, 3D semantics/bounding boxes, instance and confidence maps, OXTS;
- scans are not motion-compensated ("curled") and moving objects smear when ``--accumulate`` is used;
- LiDAR-camera parallax: a few background points can show through thin foreground objects;
- the 2D test sequences (``data_2d_test``) have no poses and are not converted.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wai.converters import _kitti360_io as kio
from wai.converters._media import decode_image, verify_image
from wai.converters._rawio import (
    bad_name_reason,
    broken_problems,
    broken_scene,
    dir_problem,
    is_file,
    list_dir,
    raise_if_broken,
)
from wai.converters.base import Converter, ConverterOptions, SceneRef, option
from wai.converters.sampling import BUILDING_BUCKETS, bucket_of, parse_weights, stratified_sample
from wai.errors import SourceNotFoundError, UsageError, WaiError, layout_error
from wai.format.codecs import cv2
from wai.format.conventions import invert_pose
from wai.format.projection import project_points, zbuffer
from wai.format.scene import Modality, SceneWriter

log = logging.getLogger("wai.convert.kitti360")
_FRAME_RE = re.compile(r"[0-9]{10}")

RAW = "data_2d_raw"
SEM = "data_2d_semantics/train"
VELO = "data_3d_raw"
POSES = "data_poses"


@dataclass
class Kitti360Options(ConverterOptions):
    """Options of the KITTI-360 converter (see docs/sources/kitti360.md)."""

    cameras: str = option("00", "rectified perspective cameras, comma-separated: 00 or 00,01")
    sequences: str | None = option(None, "only these sequences: comma-separated names or ids (e.g. 0000,0003)")
    frames_per_scene: int = option(100, "consecutive selected frames per output scene")
    pose_source: str = option("auto", "camera poses from cam0_to_world.txt, or poses.txt composed with the "
                              "calibration; auto prefers cam0_to_world.txt",
                              choices=("auto", "cam0_to_world", "poses"))
    min_depth: float = option(0.5, "keep LiDAR points with camera z >= this (metres)")
    max_depth: float = option(80.0, "keep LiDAR points with camera z <= this (metres)")
    accumulate: int = option(0, "add the scans of the K previous and K next posed frames")
    occlusion_filter: bool = option(True, "drop depth pixels more than 10% behind a LiDAR return in their 9x7 window "
                                    "(points seen by the LiDAR but hidden from the camera)")
    building_only: bool = option(False, "set depth to 0 outside pixels labelled building (id 11)")
    min_building_ratio: float | None = option(None, "drop frames whose building pixel fraction is below this")
    min_valid_depth: int | None = option(None, "drop frames with fewer valid depth pixels on buildings "
                                         "(default 2000 with --building-only)")
    sample: int | None = option(None, "pick N frames per sequence, stratified by building ratio")
    bucket_weights: str = option("0.5,0.3,0.2", "target proportions of the buckets rich,mixed,road")
    seed: int = option(0, "random seed of --sample")


class Kitti360Converter(Converter):
    """KITTI-360 rectified perspective frames with Velodyne depth and 2D semantics."""

    name = "kitti360"
    provides = frozenset({"image", "depth", "semantic"})
    Options = Kitti360Options
    image_ext = ".png"
    layout_hint = ("KITTI-360 root: data_2d_raw/<seq>/image_00/data_rect/*.png, "
                   "data_3d_raw/<seq>/velodyne_points/data/*.bin, data_poses/<seq>/poses.txt, calibration/")

    # --- options -------------------------------------------------------------------------------
    @property
    def opts(self) -> Kitti360Options:
        """The options, typed."""
        return self.options  # type: ignore[return-value]

    @property
    def cams(self) -> list[str]:
        """Camera ids to convert ("00", "01"); ``0,1`` is accepted too (VKITTI2's spelling)."""
        cams = [c.strip() for c in str(self.opts.cameras).split(",") if c.strip()]
        cams = [c.zfill(2) if c.isdigit() and len(c) < 2 else c for c in cams]
        if not cams or any(c not in ("00", "01") for c in cams) or len(set(cams)) != len(cams):
            raise UsageError(f"--cameras {self.opts.cameras!r}: expected 00 or 00,01 (or 0,1)")
        return cams

    def validate_options(self) -> None:
        """Option values that can never work raise ``UsageError`` before any scene starts."""
        o = self.opts
        self.cams  # noqa: B018 - validates --cameras
        if int(o.frames_per_scene) < 1:
            raise UsageError(f"--frames-per-scene {o.frames_per_scene}: must be >= 1")
        lo, hi = float(o.min_depth), float(o.max_depth)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise UsageError(f"--min-depth {o.min_depth} / --max-depth {o.max_depth}: expected finite metres "
                             "with 0 <= min < max")
        if int(o.accumulate) < 0:
            raise UsageError(f"--accumulate {o.accumulate}: must be >= 0")
        if o.min_building_ratio is not None and not 0.0 <= float(o.min_building_ratio) <= 1.0:
            raise UsageError(f"--min-building-ratio {o.min_building_ratio}: expected a fraction in [0, 1]")
        if o.min_valid_depth is not None and int(o.min_valid_depth) < 0:
            raise UsageError(f"--min-valid-depth {o.min_valid_depth}: must be >= 0")
        if o.sample is not None and int(o.sample) < 1:
            raise UsageError(f"--sample {o.sample}: must be >= 1")
        try:
            parse_weights(o.bucket_weights, [b for b, _ in BUILDING_BUCKETS])
        except WaiError as e:
            raise UsageError(str(e)) from e
        if o.sequences:
            for k in (t.strip() for t in str(o.sequences).split(",") if t.strip()):
                if not (k.startswith(kio.SEQ_PREFIX) or k.isascii() and k.isdigit()):
                    raise UsageError(f"--sequences {o.sequences!r}: {k!r} is neither a sequence name "
                                     f"({kio.SEQ_PREFIX}0000_sync) nor a sequence id (0000)")

    def _min_valid_depth(self) -> int | None:
        o = self.opts
        if o.min_valid_depth is not None:
            return int(o.min_valid_depth)
        return 2000 if o.building_only else None

    # --- listing -------------------------------------------------------------------------------
    def _sequences(self) -> list[str]:
        """Sequence folders of ``data_2d_raw`` (none when it is missing: the run then says what --input must
        hold, with ``layout_hint``); an unreadable ``data_2d_raw`` raises naming it."""
        raw = self.root / RAW
        if dir_problem(raw) == "missing" and not self.opts.sequences:
            return []
        entries = list_dir(raw, "KITTI-360 data_2d_raw folder (pass --input <KITTI-360 root>)")
        seqs = sorted(d.name for d in entries if d.name.startswith(kio.SEQ_PREFIX))
        want = self.opts.sequences
        if want:
            keys = [s.strip() for s in str(want).split(",") if s.strip()]
            names = {k if k.startswith(kio.SEQ_PREFIX) else f"{kio.SEQ_PREFIX}{int(k):04d}_sync" for k in keys}
            missing = sorted(names - set(seqs))
            if missing:
                raise SourceNotFoundError(f"--sequences: {missing} not found under {raw}; available: {seqs}")
            seqs = [s for s in seqs if s in names]
        return seqs

    def _pose_file(self, seq: str) -> tuple[Path, str]:
        d = self.root / POSES / seq
        problem = dir_problem(d)
        if problem not in (None, "missing"):
            raise layout_error(d, f"pose folder of {seq} is {problem}")
        src = self.opts.pose_source
        c2w, imu = d / "cam0_to_world.txt", d / "poses.txt"
        if src in ("auto", "cam0_to_world") and c2w.is_file():
            return c2w, "cam0_to_world"
        if src in ("auto", "poses") and imu.is_file():
            return imu, "poses"
        want = {"auto": "cam0_to_world.txt or poses.txt", "cam0_to_world": "cam0_to_world.txt",
                "poses": "poses.txt"}[src]
        raise SourceNotFoundError(f"missing KITTI-360 poses of {seq}: expected {want} in {d}")

    def _frames(self, seq: str) -> list[int]:
        """Frame ids of camera 00's images (the sequence's time line); a folder that cannot be listed raises."""
        d = self.root / RAW / seq / "image_00" / "data_rect"
        out = []
        for p in list_dir(d, f"image folder of {seq} camera 00"):
            if p.suffix != ".png":
                continue
            if not _FRAME_RE.fullmatch(p.stem):
                raise layout_error(p, "expected a 10-digit frame id as file name, e.g. 0000000250.png")
            out.append(int(p.stem))
        return out

    def _sem_path(self, seq: str, cam: str, frame: int) -> Path:
        return self.root / SEM / seq / f"image_{cam}" / "semantic" / f"{frame:010d}.png"

    def _val_frames(self) -> set[tuple[str, int]] | None:
        p = self.root / SEM / "2013_05_28_drive_val_frames.txt"
        return kio.read_split_frames(p) if is_file(p) else None

    def _image_path(self, seq: str, cam: str, frame: int) -> Path:
        return self.root / RAW / seq / f"image_{cam}" / "data_rect" / f"{frame:010d}.png"

    def _building_ratio(self, seq: str, f: int) -> tuple[float | None, str | None]:
        """Building fraction of camera 00's semantic map of frame ``f`` (None without one) and a drop reason
        when the map exists but is damaged."""
        sp = self._sem_path(seq, "00", f)
        if not is_file(sp):
            return None, None
        try:
            return kio.building_ratio(self._read_semantic(sp, None)), None
        except WaiError as e:
            return None, f"bad_semantics: {e}"

    @staticmethod
    def _read_semantic(path: Path, size: tuple[int, int] | None) -> np.ndarray:
        """8-bit single-channel label map, verified (complete PNG, size = ``(w, h)``) and decoded."""
        verify_image(path, "KITTI-360 semantic map", fmt="png", size=size, size_source="perspective.txt S_rect",
                     channels=(1,), bit_depth=(8,))
        sem = decode_image(path, cv2.IMREAD_UNCHANGED, "KITTI-360 semantic map")
        if sem.ndim != 2 or sem.dtype != np.uint8:
            raise layout_error(path, f"expected an 8-bit single-channel label map, got {sem.dtype} {sem.shape}")
        return sem

    def iter_scenes(self) -> Iterator[SceneRef]:
        """Scenes = runs of ``frames_per_scene`` consecutive selected frames of one split per sequence.

        With ``--sample`` or ``--min-building-ratio`` the 8-bit semantic PNGs of camera 00 are decoded here,
        once, to get each frame's building ratio: the per-sequence draw must see the whole sequence while
        scenes stay independent units of work (each scene carries its frames' decisions).

        A sequence whose raw files cannot be listed or parsed here (pose file, image folder, split file)
        becomes one scene named after the sequence that fails with the reason: it never stops the others.
        """
        o = self.opts
        weights = parse_weights(o.bucket_weights, [b for b, _ in BUILDING_BUCKETS])
        n_cams = len(self.cams)
        for seq in self._sequences():
            reason = bad_name_reason(seq, self.root / RAW / seq)
            if reason is not None:
                yield broken_scene(seq, reason)
                continue
            try:
                refs = list(self._sequence_scenes(seq, weights, n_cams))
            except SourceNotFoundError as e:
                if self._has_no_poses(seq):
                    self.skip_scene(seq, str(e))
                    continue
                yield broken_scene(seq, str(e))
                continue
            except WaiError as e:
                yield broken_scene(seq, str(e))
                continue
            yield from refs

    def _has_no_poses(self, seq: str) -> bool:
        try:
            self._pose_file(seq)
        except SourceNotFoundError:
            return True
        except WaiError:
            return False
        return False

    def _sequence_scenes(self, seq: str, weights: dict[str, float], n_cams: int) -> Iterator[SceneRef]:
        o = self.opts
        val = self._val_frames()
        pose_path, _ = self._pose_file(seq)
        posed = set(kio.read_pose_file(pose_path))
        frames = self._frames(seq)
        need_ratio = o.sample is not None or o.min_building_ratio is not None
        ratio: dict[int, float | None] = {}
        status: dict[int, str | None] = {}
        for f in frames:
            status[f] = None if f in posed else "no_pose"
            ratio[f] = None
            if need_ratio and f in posed:
                ratio[f], bad = self._building_ratio(seq, f)
                if bad is not None:
                    status[f] = bad
        if o.min_building_ratio is not None:
            for f in frames:
                if status[f] is None:
                    if ratio[f] is None:
                        status[f] = "no_semantics"
                    elif ratio[f] < o.min_building_ratio:
                        status[f] = "low_building_ratio"
        report = None
        if o.sample is not None:
            for f in frames:
                if status[f] is None and ratio[f] is None:
                    status[f] = "no_semantics"
            elig = {f: float(ratio[f]) for f in frames if status[f] is None}  # type: ignore[arg-type]
            res = stratified_sample(elig, int(o.sample), weights, int(o.seed), seq)
            for f in elig:
                if f not in res.selected:
                    status[f] = "not_sampled"
            report = res.summary()
        rows = [{"frame": f, "status": status[f], "ratio": ratio[f],
                 "bucket": None if ratio[f] is None else bucket_of(ratio[f])} for f in frames]
        yield from self._chunk(seq, rows, val, report, n_cams)

    def _chunk(self, seq: str, rows: list[dict[str, Any]], val: set[tuple[str, int]] | None,
               report: dict[str, Any] | None, n_cams: int) -> Iterator[SceneRef]:
        """Cut a sequence into scenes; each dropped frame is recorded by the scene of the previous selected one."""
        fps = int(self.opts.frames_per_scene)
        if fps < 1:
            raise WaiError(f"--frames-per-scene {fps}: must be >= 1")
        groups: list[list[dict[str, Any]]] = []
        split_of: list[str] = []
        n_in_group = 0
        for r in rows:
            split = "val" if val is not None and (seq, r["frame"]) in val else "train"
            if r["status"] is None:
                if not groups or split != split_of[-1] or n_in_group >= fps:
                    groups.append([])
                    split_of.append(split)
                    n_in_group = 0
                n_in_group += 1
            if not groups:  # drops before the first selected frame
                groups.append([])
                split_of.append(split)
            groups[-1].append(r)
        pending: list[dict[str, Any]] = []
        for g, split in zip(groups, split_of):
            sel = [r["frame"] for r in g if r["status"] is None]
            if not sel:  # only drops (before the first selected frame): carried into the next scene
                pending.extend(g)
                continue
            g = pending + g
            pending = []
            name = f"{seq}_{sel[0]:010d}_{sel[-1]:010d}"
            yield SceneRef(name, split, data={"seq": seq, "rows": g, "sampling": report}, n_frames=len(sel) * n_cams)
        if pending:
            reasons = sorted({str(r["status"]) for r in pending})
            log.warning("%s: no frame selected; %d frames dropped (%s)", seq, len(pending), ", ".join(reasons))

    def check_scene(self, scene: SceneRef) -> list[str]:
        """Every problem with the raw files of the scene's selected frames, before conversion: calibration and
        pose file (numbers finite and plausible), image folders, each image (complete PNG of the S_rect size),
        each Velodyne scan (non-empty, whole points, finite), each semantic map that exists."""
        broken = broken_problems(scene)
        if broken is not None:
            return broken
        problems: list[str] = []
        seq = scene.data["seq"]
        calib = None
        try:
            calib = kio.read_calibration(self.root, self.cams)
        except WaiError as e:
            problems.append(str(e))
        try:
            kio.read_pose_file(self._pose_file(seq)[0])
        except WaiError as e:
            problems.append(str(e))
        folders = {}
        for c in self.cams:
            d = self.root / RAW / seq / f"image_{c}" / "data_rect"
            folders[c] = dir_problem(d)
            if folders[c] is not None:
                problems.append(f"{d}: image folder of camera {c} is {folders[c]}")
        for c in self.cams:
            d = self._sem_path(seq, c, 0).parent
            sem_problem = dir_problem(d)
            if sem_problem not in (None, "missing"):
                problems.append(f"{d}: semantic folder of camera {c} is {sem_problem}")
        for r in scene.data["rows"]:
            if r["status"] is not None:
                continue
            f = r["frame"]
            for c in self.cams:
                if folders[c] is not None:
                    continue
                img = self._image_path(seq, c, f)
                size = None if calib is None else (calib.cameras[c].camera.w, calib.cameras[c].camera.h)
                try:
                    verify_image(img, "KITTI-360 image", fmt="png", size=size,
                                 size_source=f"calibration/perspective.txt S_rect_{c}", channels=(3,), bit_depth=(8,))
                except WaiError as e:
                    problems.append(str(e))
                sp = self._sem_path(seq, c, f)
                if is_file(sp):
                    try:
                        verify_image(sp, "KITTI-360 semantic map", fmt="png", size=size,
                                     size_source=f"calibration/perspective.txt S_rect_{c}", channels=(1,),
                                     bit_depth=(8,))
                    except WaiError as e:
                        problems.append(str(e))
            velo = self._velo_path(seq, f)
            velo_problem = dir_problem(velo.parent)
            if velo_problem not in (None, "missing"):
                problems.append(f"{velo.parent}: Velodyne folder is {velo_problem}")
            elif not is_file(velo):
                problems.append(f"missing {velo}")
            else:
                try:
                    kio.read_velodyne(velo)
                except WaiError as e:
                    problems.append(str(e))
        return problems

    # --- conversion ----------------------------------------------------------------------------
    def _velo_path(self, seq: str, frame: int) -> Path:
        return self.root / VELO / seq / "velodyne_points" / "data" / f"{frame:010d}.bin"

    def _cam0_poses(self, seq: str, calib: kio.Calibration) -> tuple[dict[int, np.ndarray], str, Path]:
        path, kind = self._pose_file(seq)
        raw = kio.read_pose_file(path)
        if kind == "cam0_to_world":
            return raw, kind, path
        return {f: calib.rect0_to_world_from_imu(T) for f, T in raw.items()}, kind, path

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        """Write the scene's frames (both cameras per time step), drops with their reasons, and the sampling report.

        A damaged per-frame file (image, Velodyne scan, semantic map) or an unreadable image folder drops that
        frame with a reason naming the file; damaged calibration or poses fail the scene.
        """
        raise_if_broken(scene)
        o = self.opts
        seq = scene.data["seq"]
        cams = self.cams
        calib = kio.read_calibration(self.root, cams)
        poses, kind, pose_path = self._cam0_poses(seq, calib)
        posed = sorted(poses)
        index = {f: i for i, f in enumerate(posed)}
        mvd = self._min_valid_depth()
        K = int(o.accumulate)
        if K < 0:
            raise WaiError(f"--accumulate {K}: must be >= 0")

        writer.add_label_table("kitti360", kio.label_names())
        writer.add_transform("rect_cam_00_from_velodyne", calib.rect0_from_velo)
        if kind == "poses":
            writer.add_transform("imu_from_rect_cam_00", calib.cam0_to_pose @ np.linalg.inv(calib.R_rect0))
        if "01" in cams:
            writer.add_transform("rect_cam_00_from_rect_cam_01", invert_pose(calib.cameras["01"].rect_from_rect0))
        writer.source.update(sequence=seq, pose_source=kind, raw_paths={
            "poses": str(pose_path.relative_to(self.root)), **calib.files,
            "images": f"{RAW}/{seq}/image_0x/data_rect", "semantic": f"{SEM}/{seq}/image_0x/semantic",
            "velodyne": f"{VELO}/{seq}/velodyne_points/data"})
        writer.set_filters({
            "depth_range_m": [float(o.min_depth), float(o.max_depth)],
            "accumulate": K, "occlusion_filter": {"half_rows": kio.OCC_HALF_ROWS, "half_cols": kio.OCC_HALF_COLS,
                                                  "rel_tol": kio.OCC_REL_TOL} if o.occlusion_filter else None,
            "building_only": bool(o.building_only), "building_label_id": kio.BUILDING_ID,
            "min_building_ratio": o.min_building_ratio, "min_valid_depth": mvd,
            "sample": o.sample, "bucket_weights": o.bucket_weights if o.sample else None,
            "seed": o.seed if o.sample else None,
        })

        scans: dict[int, np.ndarray | None] = {}
        bad_scans: dict[int, str] = {}
        folders = {c: dir_problem(self.root / RAW / seq / f"image_{c}" / "data_rect") for c in cams}
        sem_folders = {c: dir_problem(self._sem_path(seq, c, 0).parent) for c in cams}

        velo_dir = self._velo_path(seq, 0).parent
        velo_problem = dir_problem(velo_dir)

        def scan(f: int) -> np.ndarray | None:
            if f not in scans:
                p = self._velo_path(seq, f)
                scans[f] = None
                if velo_problem not in (None, "missing"):
                    bad_scans[f] = f"no_lidar: {velo_dir} is {velo_problem}"
                elif is_file(p):
                    try:
                        scans[f] = kio.read_velodyne(p)[:, :3].astype(np.float64)
                    except WaiError as e:
                        bad_scans[f] = f"bad_lidar: {e}"
            return scans[f]

        counts: dict[str, int] = {}
        for r in scene.data["rows"]:
            f, bucket = r["frame"], r["bucket"]
            for c in list(scans):  # keep the sliding window of scans only
                if c not in index or f not in index or abs(index[c] - index[f]) > K:
                    scans.pop(c)
            if r["status"] is not None:
                for cam in cams:
                    self._drop(writer, calib, f, cam, r["status"], building_ratio=r["ratio"] if cam == "00" else None,
                               sampling_bucket=bucket)
                continue
            cur = scan(f)
            if cur is None:
                for cam in cams:
                    self._drop(writer, calib, f, cam, bad_scans.get(f, "no_lidar"), sampling_bucket=bucket)
                continue
            nb = [posed[j] for j in range(max(0, index[f] - K), min(len(posed), index[f] + K + 1)) if j != index[f]]
            nb = [g for g in nb if scan(g) is not None]
            for cam in cams:
                if folders[cam] is not None:
                    d = self.root / RAW / seq / f"image_{cam}" / "data_rect"
                    self._drop(writer, calib, f, cam, f"no_image: {d} is {folders[cam]}", sampling_bucket=bucket)
                    continue
                if sem_folders[cam] not in (None, "missing"):
                    d = self._sem_path(seq, cam, f).parent
                    self._drop(writer, calib, f, cam, f"bad_semantics: {d} is {sem_folders[cam]}",
                               sampling_bucket=bucket)
                    continue
                self._frame(writer, calib, poses, seq, f, cam, cur, [(g, scans[g]) for g in nb], bucket, mvd)
            if bucket is not None:
                counts[bucket] = counts.get(bucket, 0) + 1
        out: dict[str, Any] = {"sequence": seq}
        if scene.data["sampling"] is not None:
            out["sampling"] = scene.data["sampling"]
            out["frames_per_bucket_in_scene"] = counts
        return out

    def _drop(self, writer: SceneWriter, calib: kio.Calibration, f: int, cam: str, reason: str,
              **columns: Any) -> None:
        c = calib.cameras[cam].camera
        writer.drop_frame(f"{f:010d}_{cam}", reason, c.w, c.h, **columns)

    def _frame(self, writer: SceneWriter, calib: kio.Calibration, poses: dict[int, np.ndarray], seq: str, f: int,
               cam: str, cur: np.ndarray, neighbours: list[tuple[int, np.ndarray]], bucket: str | None,
               mvd: int | None) -> None:
        o = self.opts
        rc = calib.cameras[cam]
        camera = rc.camera
        name = f"{f:010d}_{cam}"
        img = self._image_path(seq, cam, f)
        if not is_file(img):
            self._drop(writer, calib, f, cam, "no_image", sampling_bucket=bucket)
            return
        try:  # copied verbatim below: a complete 8-bit RGB PNG of the calibrated size, or the frame is dropped
            verify_image(img, "KITTI-360 image", fmt="png", size=(camera.w, camera.h),
                         size_source=f"calibration/perspective.txt S_rect_{cam}", channels=(3,), bit_depth=(8,))
        except WaiError as e:
            self._drop(writer, calib, f, cam, f"bad_image: {e}", sampling_bucket=bucket)
            return
        sem_path = self._sem_path(seq, cam, f)
        sem = None
        if is_file(sem_path):
            try:
                sem = self._read_semantic(sem_path, (camera.w, camera.h))
            except WaiError as e:
                self._drop(writer, calib, f, cam, f"bad_semantics: {e}", sampling_bucket=bucket)
                return
        c2w = poses[f] @ invert_pose(rc.rect_from_rect0)
        depth, n_points = self._depth(calib, poses, f, cam, c2w, cur, neighbours)
        depth = self._occlusion(depth)
        n_proj = int(np.count_nonzero(depth > 0))
        ratio = kio.building_ratio(sem) if sem is not None else None
        building = sem == kio.BUILDING_ID if sem is not None else None
        if bucket is None and ratio is not None:  # not sampled: the frame's own bucket, for the statistics
            bucket = bucket_of(ratio)
        cols: dict[str, Any] = {"building_ratio": ratio, "sampling_bucket": bucket}
        needs_sem = o.building_only or mvd is not None
        if needs_sem and building is None:
            self._drop(writer, calib, f, cam, "no_semantics", **cols)
            return
        if o.building_only:
            depth = np.where(building, depth, 0.0).astype(np.float32)
        n_building = int(np.count_nonzero((depth > 0) & building)) if building is not None else None
        cols["building_valid_depth_pixels"] = n_building
        if mvd is not None and n_building is not None and n_building < mvd:
            self._drop(writer, calib, f, cam, "too_few_building_depth", **cols)
            return
        # Frames without a label map get an all-"unlabeled" (id 0) map so every frame has the modality;
        # their semantic statistics stay null.
        labels = sem if sem is not None else np.zeros(camera.shape, np.uint8)
        cols.update(n_points_projected=n_points, n_scans_accumulated=len(neighbours) + 1,
                    lidar_pixels=n_proj)
        if sem is None:
            cols["semantic_ratios"] = None
        writer.add_frame(name, camera, c2w, image=img, depth=depth,
                         modalities={"semantic": Modality("labels", labels, "kitti360")},
                         extras={"source_frame": f"{f:010d}", "camera_id": f"image_{cam}", "sequence": seq,
                                 "has_semantics": sem is not None},
                         coverage=cols)

    def _depth(self, calib: kio.Calibration, poses: dict[int, np.ndarray], f: int, cam: str, c2w: np.ndarray,
               cur: np.ndarray, neighbours: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, int]:
        """z-buffered depth of the current scan plus the visible points of the neighbour scans, and the number
        of points that landed in the image (within the depth range)."""
        o = self.opts
        camera = calib.cameras[cam].camera
        lo, hi = float(o.min_depth), float(o.max_depth)
        col, row, z = project_points(camera, calib.rect_from_velo(cam), cur, lo, hi)
        depth = zbuffer(col, row, z, camera.h, camera.w)
        if not neighbours:
            return depth, len(z)
        w2c = invert_pose(c2w)
        # velo(g) -> rectified cam 00 (g) -> world -> this camera, one 4x4 per neighbour scan
        pts = np.concatenate([s @ T[:3, :3].T + T[:3, 3] for T, s in
                              ((w2c @ poses[g] @ calib.rect0_from_velo, s) for g, s in neighbours)])
        ca, ra, za = project_points(camera, np.eye(4), pts, lo, hi)
        depth = zbuffer(np.concatenate([col, ca]), np.concatenate([row, ra]), np.concatenate([z, za]),
                        camera.h, camera.w)
        return depth, len(z) + len(za)

    def _occlusion(self, depth: np.ndarray) -> np.ndarray:
        if not self.opts.occlusion_filter:
            return depth
        return kio.remove_occluded(depth)


__all__ = ["Kitti360Converter", "Kitti360Options"]
