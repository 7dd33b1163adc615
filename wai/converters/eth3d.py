"""ETH3D high-resolution multi-view (DSLR) scenes: undistorted images, COLMAP poses, sparse and ground-truth depth.

Source: https://www.eth3d.net (Schöps et al., CVPR 2017). Data licence CC BY-NC-SA 4.0 (unverified, see
source_formats.md §7): never ship real files; tests use ``wai.synthetic.fake_eth3d``.

Expected layout (archives ``<scene>_dslr_{jpg,undistorted,depth,occlusion}.7z`` unpacked into ``<scene>/``)::

    ETH3D_ROOT/                                   (or a single scene folder itself)
      <scene>/
        images/dslr_images_undistorted/DSC_0286.JPG       undistorted RGB (what is converted)
        images/dslr_images/DSC_0286.JPG                   distorted RGB (not converted)
        dslr_calibration_undistorted/{cameras,images,points3D}.txt   PINHOLE model (required)
        dslr_calibration_jpg/{cameras,images,points3D}.txt           THIN_PRISM_FISHEYE model (needed with
                                                                     ground-truth depth or masks)
        ground_truth_depth/dslr_images/DSC_0286.JPG       raw float32 z-depth, +inf = no data (optional)
        masks_for_images/dslr_images/DSC_0286.png         uint8 0/1/2 (optional)

Source conventions: COLMAP models read by pycolmap (``wai.converters._colmap``); camera ids may start at 0.
``images.txt`` poses are world-to-camera (``x_cam = R(q) x_world + t``, quaternion scalar first), camera axes
x right / y down / z forward (OpenCV), metres (the laser scans are metric). COLMAP pixel centres are at
+0.5. Ground-truth depth and masks live in the *distorted* camera, whose pose equals the undistorted one.

Transform chain per frame: pose inverted to camera-to-world (world frame unchanged,
``_applied_transforms.world_from_source = I``); principal point shifted by -0.5; with ``--max-size`` the
intrinsics are scaled by ``Camera.resized``. Depth:

* ``sparse_depth``: ``points3D`` points observed in >= 2 images, projected into every image of their track,
  z-buffered (``wai.format.projection``), exact z;
* ``depth``: the ground truth resampled by nearest neighbour into the output camera (for each output pixel:
  unproject with the pinhole, project with the distorted camera's pycolmap ``img_from_cam``), or, for
  scenes without ``ground_truth_depth/``, equal to ``sparse_depth`` (``scene_meta.source.depth_source``);
* both are 0 where the resampled mask is 2 (and 1 with ``--drop-mask-1``).

Not converted / limitations:
* the distorted images (``images/dslr_images``), the laser scans (``scan_clean``, ``scan_eval``), the raw
  images and ``occlusion/`` folder; ``masks_for_cameras/`` is not read;
* "originally portrait" images stay as stored (MapAnything rotates a hard-coded list of them);
* ``.gz``-compressed depth maps (``--compress_depth_maps`` of the ETH3D pipeline) are not read;
* the rig/low-res camera sets (``rig_*``, ``*_lowres``) are not converted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from wai.converters import _colmap
from wai.converters._media import decode_image, verify_image
from wai.converters._rawio import (
    bad_name_reason,
    broken_problems,
    broken_scene,
    dir_problem,
    is_dir,
    is_file,
    list_dir,
    raise_if_broken,
)
from wai.converters.base import Converter, ConverterOptions, SceneRef, option
from wai.errors import SourceLayoutError, SourceNotFoundError, UsageError, WaiError, layout_error
from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import COLMAP_TO_OPENCV_PRINCIPAL_SHIFT, invert_pose
from wai.format.paths import resolve_inside
from wai.format.projection import project_to_depth
from wai.format.scene import Modality, SceneWriter

#: Training scenes (with ground truth) [V map-anything download_eth3d.py] and test scenes [M].
TRAINING_SCENES = ("courtyard", "delivery_area", "electro", "facade", "kicker", "meadow", "office", "pipes",
                   "playground", "relief", "relief_2", "terrace", "terrains")
TEST_SCENES = ("botanical_garden", "boulders", "bridge", "door", "exhibition_hall", "lecture_room", "living_room",
               "lounge", "observatory", "old_computer", "statue", "terrace_2")

UNDISTORTED = "dslr_calibration_undistorted"
DISTORTED = "dslr_calibration_jpg"
IMAGE_ROOT = "images"
UNDISTORTED_IMAGES = "images/dslr_images_undistorted"
GT_DIR = "ground_truth_depth/dslr_images"
MASK_DIR = "masks_for_images/dslr_images"

#: ETH3D mask values (dataset-pipeline ``MaskType``), stored unchanged; 255 marks output pixels that fall
#: outside the distorted image (no source pixel).
MASK_MASKED, MASK_OCCLUDED, MASK_NO_SOURCE = 1, 2, 255
MASK_LABELS = {0: "valid", MASK_MASKED: "masked", MASK_OCCLUDED: "occluded", MASK_NO_SOURCE: "no_source"}
LABEL_TABLE = "eth3d_mask"
#: Points must be observed in at least this many images to enter ``sparse_depth`` (as ETH3D's own GT rule).
MIN_TRACK_IMAGES = 2
#: Ground-truth depth beyond this (metres) is no data, like +inf: ETH3D scenes span < 100 m, and a float32 map has
#: no checksum (a damaged value is still a float; one beyond float16 range could not even be stored).
MAX_GT_DEPTH_M = 1e4
#: Largest difference allowed between the distorted and undistorted pose of one image (metres, radians).
POSE_TOL = (1e-3, 1e-4)


@dataclass
class ETH3DOptions(ConverterOptions):
    """Options of the ETH3D converter."""

    image_format: str = option("jpg", "jpg: copy the undistorted JPEGs unchanged (re-encoded only when resized); "
                                      "png: re-encode losslessly", choices=("jpg", "png"))
    max_size: int | None = option(None, "downscale so the long image side is at most N pixels (intrinsics scaled; "
                                        "depth and masks resampled by nearest neighbour)")
    drop_mask_1: bool = option(False, "also remove depth under mask value 1 (reflections, lens flare), "
                                      "not only under value 2")


def _is_scene(d: Path) -> bool:
    return any(is_dir(d / sub) or dir_problem(d / sub) not in ("missing", "not a directory")
               for sub in (UNDISTORTED, DISTORTED, IMAGE_ROOT))


def _base(name: str) -> str:
    """File name of an ``images.txt`` NAME (``dslr_images_undistorted/DSC_0286.JPG`` -> ``DSC_0286.JPG``)."""
    return name.replace("\\", "/").rsplit("/", 1)[-1]


class ETH3DConverter(Converter):
    """ETH3D high-res multi-view DSLR scenes (undistorted PINHOLE frames)."""

    name = "eth3d"
    provides = frozenset({"image", "depth", "sparse_depth"})
    Options = ETH3DOptions
    layout_hint = ("ETH3D root: <scene>/dslr_calibration_undistorted/{cameras,images,points3D}.txt and "
                   "<scene>/images/dslr_images_undistorted/*.JPG (or --input one scene folder)")

    def validate_options(self) -> None:
        """Option values that can never work raise ``UsageError`` before any scene starts."""
        m = self.opts.max_size
        if m is not None and not 16 <= int(m) <= _colmap.MAX_IMAGE_SIDE:
            raise UsageError(f"--max-size {m}: expected 16..{_colmap.MAX_IMAGE_SIDE} pixels")
        if self.opts.image_format not in ("jpg", "png"):
            raise UsageError(f"--image-format {self.opts.image_format!r}: expected jpg or png")

    @property
    def opts(self) -> ETH3DOptions:
        """The options, typed."""
        return self.options  # type: ignore[return-value]

    def writer_options(self, scene: SceneRef) -> dict[str, Any]:
        """PNG output extension with ``--image-format png``."""
        out = super().writer_options(scene)
        out["image_ext"] = ".png" if self.opts.image_format == "png" else ".jpg"
        return out

    # --- listing ---------------------------------------------------------------------------------
    def iter_scenes(self) -> Iterator[SceneRef]:
        """One scene per folder holding ETH3D calibration or image folders (or the root itself), sorted.

        A folder under the root that cannot be listed, or whose name cannot name a scene, becomes a scene that
        fails with the reason (it may hold a scene; it is never skipped silently).
        """
        if self.opts.max_size is not None and self.opts.max_size < 16:
            raise UsageError(f"--max-size {self.opts.max_size}: expected at least 16 pixels")
        if _is_scene(self.root):
            dirs = [self.root]
        else:
            dirs = []
            for d in list_dir(self.root, "ETH3D root (--input)"):
                problem = dir_problem(d)
                if problem == "not a directory":
                    continue
                if problem is not None:
                    yield broken_scene(d.name, f"{d}: folder is {problem} (an ETH3D scene?)")
                elif _is_scene(d):
                    dirs.append(d)
        for d in dirs:
            reason = bad_name_reason(d.name, d)
            if reason is not None:
                yield broken_scene(d.name, reason)
                continue
            imgs = d / UNDISTORTED_IMAGES
            try:
                n = sum(1 for p in imgs.iterdir() if p.is_file()) if is_dir(imgs) else None
            except OSError:
                n = None
            yield SceneRef(d.name, "test" if d.name in TEST_SCENES else "train", data=str(d), n_frames=n)

    def _image_path(self, sd: Path, image: Any) -> Path:
        """The image file of an ``images.txt`` NAME (relative to ``<scene>/images``), inside ``--input``."""
        return self._inside(sd, IMAGE_ROOT, image.name, _colmap.model_files(sd / UNDISTORTED)["images"],
                            f"image {image.image_id} NAME")

    def _inside(self, sd: Path, prefix: str, name: str, source: Path, entry: str) -> Path:
        """``<scene>/<prefix>/<name>`` resolved inside ``--input``: ``name`` comes from raw metadata, so an
        absolute path, a ``..`` component or a symlink leaving ``--input`` raises ``PathEscapeError`` naming
        ``source`` and ``entry``."""
        norm = str(name).replace("\\", "/")
        if not norm or PurePosixPath(norm).is_absolute() or ".." in PurePosixPath(norm).parts:
            resolve_inside(self.root, norm or name, source=source, entry=entry, what="path")  # raises
        scene_rel = PurePosixPath(*sd.relative_to(self.root).parts) if sd != self.root else PurePosixPath()
        return resolve_inside(self.root, (scene_rel / prefix / norm).as_posix(), source=source, entry=entry,
                              what="path")

    def check_scene(self, scene: SceneRef) -> list[str]:
        """Every problem conversion would meet, before it starts: the COLMAP models (numbers included), each
        image (inside ``--input``, a complete JPEG of its camera's size), each mask (a complete 8-bit PNG of the
        distorted camera's size), each ground-truth depth (size of the distorted camera), the points3D."""
        broken = broken_problems(scene)
        if broken is not None:
            return broken
        sd = Path(scene.data)
        problems: list[str] = []
        try:
            und = _colmap.read_model(sd / UNDISTORTED)
            _colmap.check_points(_colmap.model_files(sd / UNDISTORTED)["points3D"], _colmap.point_table(und))
        except WaiError as e:
            return [str(e)]
        needs_dist = self._needs_distorted(sd)
        dist = None
        if needs_dist:
            try:
                dist = _colmap.read_model(sd / DISTORTED)
            except WaiError as e:
                problems.append(f"{e} (needed to resample {GT_DIR} / {MASK_DIR})")
        for folder in (UNDISTORTED_IMAGES, GT_DIR, MASK_DIR):
            problem = dir_problem(sd / folder)
            if problem not in (None, "missing"):
                problems.append(f"{sd / folder}: folder is {problem}")
        cams_file = _colmap.model_files(sd / UNDISTORTED)["cameras"]
        for image in und.images.values():
            if not image.has_pose:
                continue
            try:
                p = self._image_path(sd, image)
                cam0 = _colmap.to_pinhole(und.cameras[image.camera_id], cams_file)
                self._verify_image(p, cam0, image)
            except WaiError as e:
                problems.append(str(e))
            base = _base(image.name)
            images_txt = _colmap.model_files(sd / UNDISTORTED)["images"]
            dcam = None
            if dist is not None:
                try:
                    dimage = self._dist_image(dist, base, sd)
                    self._check_same_pose(dimage, _colmap.cam_to_world(image), sd, base)
                    dcam = dist.cameras[dimage.camera_id]
                except WaiError as e:
                    problems.append(str(e))
            if is_dir(sd / MASK_DIR):
                try:
                    mpath = self._inside(sd, MASK_DIR, f"{Path(base).stem}.png", images_txt,
                                         f"image {image.image_id} NAME")
                    if not is_file(mpath):
                        problems.append(f"missing mask {mpath}")
                    elif dcam is not None:
                        self._verify_mask(mpath, dcam)
                except WaiError as e:
                    problems.append(str(e))
            if is_dir(sd / GT_DIR):
                try:
                    gt = self._inside(sd, GT_DIR, base, images_txt, f"image {image.image_id} NAME")
                    if not is_file(gt):
                        problems.append(f"missing ground-truth depth {gt}")
                    elif dcam is not None and gt.stat().st_size != dcam.width * dcam.height * 4:
                        problems.append(f"{gt}: {gt.stat().st_size} bytes, expected {dcam.width}x{dcam.height}x4 "
                                        f"(raw float32 of the distorted camera)")
                except WaiError as e:
                    problems.append(str(e))
        return problems

    def _needs_distorted(self, sd: Path) -> bool:
        """Ground truth or masks are present (or their folders exist but cannot be read)."""
        return any(dir_problem(sd / d) != "missing" for d in (GT_DIR, MASK_DIR))

    # --- conversion ------------------------------------------------------------------------------
    def _dist_image(self, dist: Any, base: str, sd: Path) -> Any:
        for im in dist.images.values():
            if _base(im.name) == base:
                return im
        raise layout_error(sd / DISTORTED / "images.txt", f"no image named .../{base}; ground-truth depth and "
                                                          "masks of that image cannot be resampled")

    def _camera(self, cam0: Camera) -> Camera:
        m = self.opts.max_size
        if m is None or max(cam0.w, cam0.h) <= m:
            return cam0
        s = m / max(cam0.w, cam0.h)
        return cam0.resized(max(1, round(cam0.w * s)), max(1, round(cam0.h * s)))

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        """Write every registered image of ``dslr_calibration_undistorted`` in name order.

        Any damaged raw file (a COLMAP model, an image, a mask, a ground-truth depth map) fails the scene with
        a message naming it (``check_scene`` lists them all first); an image without a pose is dropped.
        """
        raise_if_broken(scene)
        sd = Path(scene.data)
        und = _colmap.read_model(sd / UNDISTORTED)
        und_files = _colmap.model_files(sd / UNDISTORTED)
        und_cams_file = und_files["cameras"]
        for folder in (UNDISTORTED_IMAGES, GT_DIR, MASK_DIR):
            problem = dir_problem(sd / folder)
            if problem not in (None, "missing"):
                raise layout_error(sd / folder, f"folder is {problem}")
        has_gt, has_masks = is_dir(sd / GT_DIR), is_dir(sd / MASK_DIR)
        dist = _colmap.read_model(sd / DISTORTED) if (has_gt or has_masks) else None
        points = _colmap.point_table(und)
        _colmap.check_points(und_files["points3D"], points)
        lookups: dict[tuple[int, Camera], np.ndarray] = {}

        writer.add_transform("world_from_source", np.eye(4))
        if has_masks:
            writer.add_label_table(LABEL_TABLE, MASK_LABELS)
        removed = (MASK_OCCLUDED, MASK_MASKED) if self.opts.drop_mask_1 else (MASK_OCCLUDED,)
        writer.set_filters({"depth_removed_under_mask_values": list(removed) if has_masks else [],
                            "sparse_depth_min_track_images": MIN_TRACK_IMAGES})
        writer.source.update({
            "scene_root": scene.name,
            "calibration": f"{UNDISTORTED}/{_colmap.model_files(sd / UNDISTORTED)['images'].name}",
            "images": UNDISTORTED_IMAGES,
            "depth_source": (f"{GT_DIR} (raw float32, distorted camera of {DISTORTED}, nearest-neighbour "
                             "resampled into the undistorted camera)") if has_gt
                            else "sparse_depth (COLMAP points3D, no ground_truth_depth/)",
            "sparse_depth_source": f"{UNDISTORTED}/points3D (points in >= {MIN_TRACK_IMAGES} images, z-buffered)",
            "occlusion_mask_source": f"{MASK_DIR} (nearest-neighbour resampled)" if has_masks else None,
            "principal_point_shift": COLMAP_TO_OPENCV_PRINCIPAL_SHIFT,
            "pose_convention": "images.txt world-to-camera, inverted to camera-to-world",
        })

        n_proj_total = 0
        for image in sorted(und.images.values(), key=lambda im: _base(im.name)):
            base = _base(image.name)
            frame = Path(base).stem
            if not image.has_pose:
                writer.drop_frame(frame, f"no pose in {UNDISTORTED}/images.txt")
                continue
            img_path = self._image_path(sd, image)
            if not is_file(img_path):
                raise SourceNotFoundError(f"missing undistorted image: expected a file at {img_path}; listed in "
                                          f"{und_files['images']} (image {image.image_id})")
            cam0 = _colmap.to_pinhole(und.cameras[image.camera_id], und_cams_file)
            self._verify_image(img_path, cam0, image)
            cam = self._camera(cam0)
            c2w = _colmap.cam_to_world(image)

            rows = points.seen_by(image.image_id, MIN_TRACK_IMAGES)
            sparse, n_proj = project_to_depth(cam, invert_pose(c2w), points.xyz[rows])
            n_proj_total += n_proj
            mods: dict[str, Modality] = {}
            cov: dict[str, Any] = {"n_points_projected": n_proj}
            depth = sparse
            if dist is not None:
                dimage = self._dist_image(dist, base, sd)
                self._check_same_pose(dimage, c2w, sd, base)
                dcam = dist.cameras[dimage.camera_id]
                key = (int(dimage.camera_id), cam)
                if key not in lookups:
                    lookups[key] = _colmap.nearest_lookup(dcam, cam)
                lut = lookups[key]
                remove = np.zeros(cam.shape, dtype=bool)
                if has_masks:
                    mpath = self._inside(sd, MASK_DIR, f"{Path(base).stem}.png", und_files["images"],
                                         f"image {image.image_id} NAME")
                    mask = _colmap.resample(self._read_mask(mpath, dcam), lut, cam, MASK_NO_SOURCE)
                    remove = np.isin(mask, removed)
                    mods["occlusion_mask"] = Modality("labels", mask, LABEL_TABLE)
                    cov["occluded_ratio"] = float(np.count_nonzero(mask == MASK_OCCLUDED) / mask.size)
                    cov["masked_ratio"] = float(np.count_nonzero(mask == MASK_MASKED) / mask.size)
                    cov["mask_ratio"] = float(np.count_nonzero(remove) / mask.size)
                sparse = np.where(remove, 0.0, sparse).astype(np.float32)
                depth = sparse
                if has_gt:
                    gpath = self._inside(sd, GT_DIR, base, und_files["images"], f"image {image.image_id} NAME")
                    gt = _colmap.resample(self._read_gt(gpath, dcam), lut, cam, 0.0)
                    depth = np.where(remove, 0.0, gt).astype(np.float32)
            mods["sparse_depth"] = Modality("depth", sparse)
            writer.add_frame(
                frame, cam, c2w, image=self._image(img_path, cam0, cam), depth=depth, modalities=mods,
                extras={"source_frame": image.name, "colmap_image_id": int(image.image_id),
                        "colmap_camera_id": int(image.camera_id)},
                coverage=cov,
            )
        return {"depth_source": "ground_truth" if has_gt else "sparse", "n_points3D": int(len(points.ids)),
                "n_points_projected": int(n_proj_total)}

    # --- per-file readers ------------------------------------------------------------------------
    def _verify_image(self, path: Path, cam0: Camera, image: Any) -> None:
        """A complete JPEG whose size is its camera's in ``cameras.txt`` (a distorted 6048x4032 image in the
        undistorted folder, whose camera is e.g. 6220x4141, is refused: same name, other size)."""
        verify_image(path, "ETH3D undistorted image", fmt="jpeg", size=(cam0.w, cam0.h),
                     size_source=f"{UNDISTORTED}/cameras.txt (camera {image.camera_id})", channels=(1, 3),
                     bit_depth=(8,))

    def _image(self, path: Path, cam0: Camera, cam: Camera) -> np.ndarray | Path:
        """The source JPEG path (copied unchanged; verified by ``_verify_image``) or the decoded, resized RGB
        array to re-encode."""
        if cam == cam0 and self.opts.image_format == "jpg" and path.suffix.lower() in (".jpg", ".jpeg"):
            return path
        rgb = decode_image(path, cv2.IMREAD_COLOR_RGB, "ETH3D undistorted image")
        if rgb.shape[:2] != cam0.shape:
            raise layout_error(path, f"image is {rgb.shape[1]}x{rgb.shape[0]}, but its camera in {UNDISTORTED}/"
                                     f"cameras.txt is {cam0.w}x{cam0.h}")
        if cam != cam0:
            rgb = cv2.resize(rgb, (cam.w, cam.h), interpolation=cv2.INTER_AREA)
        return rgb

    @staticmethod
    def _read_gt(path: Path, dcam: Any) -> np.ndarray:
        """Raw float32 z-depth of the distorted camera (size from its cameras.txt); +inf (the file's own "no data"),
        NaN, <= 0 and beyond ``MAX_GT_DEPTH_M`` -> 0 (no data)."""
        if not is_file(path):
            raise SourceNotFoundError(f"missing ground-truth depth (raw float32 named like the image): expected a "
                                      f"file at {path}")
        n = dcam.width * dcam.height
        size = path.stat().st_size
        if size != 4 * n:
            raise layout_error(path, f"{size} bytes; expected {dcam.width}x{dcam.height} float32 = {4 * n} bytes "
                                     f"(the distorted camera {dcam.camera_id} of {DISTORTED}/cameras.txt)")
        d = np.fromfile(path, dtype="<f4").reshape(dcam.height, dcam.width)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(d) & (d > 0) & (d <= MAX_GT_DEPTH_M), d, 0.0).astype(np.float32)

    @staticmethod
    def _verify_mask(path: Path, dcam: Any) -> None:
        if not is_file(path):
            raise SourceNotFoundError(f"missing occlusion mask (masks_for_images/dslr_images/<stem>.png): expected "
                                      f"a file at {path}")
        verify_image(path, "ETH3D occlusion mask", fmt="png", size=(dcam.width, dcam.height),
                     size_source=f"{DISTORTED}/cameras.txt (camera {dcam.camera_id})", channels=(1,), bit_depth=(8,))

    @classmethod
    def _read_mask(cls, path: Path, dcam: Any) -> np.ndarray:
        """uint8 mask of the distorted camera with values in {0, 1, 2}."""
        cls._verify_mask(path, dcam)
        m = decode_image(path, cv2.IMREAD_UNCHANGED, "ETH3D occlusion mask")
        if m.ndim != 2 or m.dtype != np.uint8:
            raise layout_error(path, "expected an 8-bit single-channel PNG")
        if m.shape != (dcam.height, dcam.width):
            raise layout_error(path, f"mask is {m.shape[1]}x{m.shape[0]}, expected the distorted camera's "
                                     f"{dcam.width}x{dcam.height}")
        bad = np.setdiff1d(np.unique(m), [0, MASK_MASKED, MASK_OCCLUDED])
        if bad.size:
            raise layout_error(path, f"unexpected mask values {bad.tolist()[:5]}; expected 0, 1, 2")
        return m

    @staticmethod
    def _check_same_pose(dimage: Any, c2w: np.ndarray, sd: Path, base: str) -> None:
        """The distorted image must share the undistorted pose (the resampling assumes it)."""
        d = _colmap.cam_to_world(dimage)
        dc = float(np.linalg.norm(d[:3, 3] - c2w[:3, 3]))
        cosang = (np.trace(d[:3, :3].T @ c2w[:3, :3]) - 1.0) / 2.0
        da = float(np.arccos(np.clip(cosang, -1.0, 1.0)))
        if dc > POSE_TOL[0] * max(1.0, float(np.linalg.norm(c2w[:3, 3]))) or da > POSE_TOL[1]:
            raise SourceLayoutError(
                f"{sd / DISTORTED / 'images.txt'}: pose of {base} differs from {UNDISTORTED} by {dc:.4g} m / "
                f"{np.degrees(da):.4g} deg; ground truth and masks can only be resampled when they are equal")
