"""Fake raw Co3D v2 rendered from ``wai.synthetic.world`` in the real layout (source_formats.md §4).

Layout written::

    <root>/car/
        frame_annotations.jgz  sequence_annotations.jgz       # gzip'd JSON lists (dump_dataclass_jgzip style)
        set_lists/set_lists_fewview_train.json                # {"train": [[seq, frame_number, image_path]], ...}
        set_lists/set_lists_manyview_test_0.json
        <sequence>/images/frame000001.jpg                     # frame_number 0 -> file 000001 (they differ)
                   depths/frame000001.jpg.geometric.png       # uint16 PNG holding float16 bits
                   depth_masks/frame000001.png                # 1-bit PNG
                   masks/frame000001.png                      # 8-bit Prob(fg) * 255

Geometry: each sequence orbits a car of the street world (object-centric, like a Co3D video). The Co3D world
is a similarity of the street world, ``x_co3d = SCALE * R_WORLD (x_street - car_centre)``, so depth and poses
are in an arbitrary relative unit (Co3D is not metric). Cameras are written as PyTorch3D ``ndc_isotropic``
viewpoints (``X_cam = X_world @ R + T``, camera +X left, +Y up) with ``image.size = [H, W]``; images are
120x160 portrait so a [H, W] swap cannot go unnoticed. The depth maps carry a masked-out block with wrong
values and two non-finite pixels inside the mask, which a converter must zero.

The third sequence has ``viewpoint_quality_score`` 0.3 (below the default ``--min-quality 0.5``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from wai.format.cameras import Camera
from wai.format.codecs import cv2, imwrite_bytes_safe
from wai.format.conventions import OPENCV_FROM_PYTORCH3D, invert_pose, rot_x, rot_z
from wai.synthetic.raw_synthetic import FakeInfo
from wai.synthetic.world import World, look_at

CATEGORY = "car"
#: (sequence name, viewpoint_quality_score, index of the orbited car, start azimuth in degrees)
SEQUENCES: tuple[tuple[str, float, int, float], ...] = (
    ("101_11758_21048", 0.93, 0, 10.0),
    ("102_11950_20630", 0.71, 1, 200.0),
    ("103_12073_21320", 0.30, 0, 100.0),
)
#: The Co3D world's unit in street metres is 1 / SCALE (an arbitrary relative scale).
SCALE = 0.37
R_WORLD = rot_x(0.4) @ rot_z(1.1)
W, H = 120, 160
#: Truth intrinsics (pixel centres at integer coordinates); the principal point is deliberately off-centre.
TRUE_CAMERA = Camera.pinhole(W, H, 132.0, 132.0, 61.0, 78.25)
#: A block of each depth map that the depth mask marks invalid (rows, cols); the PNG holds wrong depth there.
MASKED_BLOCK = (slice(100, 112), slice(10, 40))
NONFINITE_PIXELS = ((130, 60, np.inf), (131, 61, np.nan))


def co3d_from_street(car_center: np.ndarray) -> np.ndarray:
    """4x4 similarity taking street-world metres to the fake Co3D world (scale ``SCALE``)."""
    T = np.eye(4)
    T[:3, :3] = SCALE * R_WORLD
    T[:3, 3] = -SCALE * R_WORLD @ car_center
    return T


def car_center(world: World, index: int) -> np.ndarray:
    """Centre of the ``index``-th car of the street world (metres)."""
    cars = [b for b in world.boxes if b.cls == "car"]
    return np.asarray(cars[index].center, dtype=np.float64)


def orbit_poses(world: World, seq_index: int, n_frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(street-world OpenCV c2w, Co3D-world OpenCV c2w) of a sequence's frames (the ground truth)."""
    _, _, car, az0 = SEQUENCES[seq_index]
    c = car_center(world, car)
    S = co3d_from_street(c)
    street, co3d = [], []
    for i in range(n_frames):
        az = np.deg2rad(az0 + 35.0 * i)
        eye = c + np.array([5.0 * np.cos(az), 5.0 * np.sin(az), 1.3])
        c2w = look_at(eye, c)
        street.append(c2w)
        out = np.eye(4)
        out[:3, :3] = R_WORLD @ c2w[:3, :3]  # the similarity's rotation; its scale only moves the centre
        out[:3, 3] = (S @ c2w[:, 3])[:3]
        co3d.append(out)
    return street, co3d


def pytorch3d_viewpoint(c2w: np.ndarray, cam: Camera) -> dict:
    """A Co3D ``viewpoint`` dict (``ndc_isotropic``) for an OpenCV camera-to-world pose and pixel intrinsics."""
    w2c = invert_pose(c2w)
    F = OPENCV_FROM_PYTORCH3D
    R = w2c[:3, :3].T @ F  # X_cam_p3d = F (Rw X + tw) = X @ (Rw^T F) + F tw  (row vectors)
    T = F @ w2c[:3, 3]
    s = min(cam.w, cam.h) / 2.0
    # pixel centres at integer coordinates -> PyTorch3D screen (+0.5) -> NDC (+x left, +y up)
    px = (cam.w / 2.0 - (cam.cx + 0.5)) / s
    py = (cam.h / 2.0 - (cam.cy + 0.5)) / s
    return {"R": R.tolist(), "T": T.tolist(), "focal_length": [cam.fl_x / s, cam.fl_y / s],
            "principal_point": [px, py], "intrinsics_format": "ndc_isotropic"}


def _dump_jgz(path: Path, obj: object) -> None:
    with gzip.GzipFile(path, "wb") as f:
        f.write(json.dumps(obj).encode("utf8"))


def make_fake(root: str | Path, n_frames: int = 3, seed: int = 0, scale: int = 1,
              real_shapes: bool = False) -> FakeInfo:
    """Write one category with three orbit sequences (the third below the quality threshold).

    ``scale`` multiplies the 120x160 size (and the intrinsics, masked block and non-finite pixels);
    ``scale=4`` gives 480x640, about the 479x640 of the real example in docs/sources/co3d.md (the benchmark).

    ``real_shapes`` makes the second sequence's entries look like the real v2 annotation quoted in
    source_formats.md §4.2: ``frame_number`` 1 pairs with ``frame000001.jpg`` (numbers equal to the file
    suffix, starting at 1), ``frame_timestamp`` 0.0 first, v1-style ``meta.frame_splits`` next to
    ``ndc_isotropic`` viewpoints, and ``camera_name: null``.
    """
    root = Path(root)
    k = int(scale)
    cam = TRUE_CAMERA if k == 1 else TRUE_CAMERA.resized(W * k, H * k)
    block = tuple(slice(b.start * k, b.stop * k) for b in MASKED_BLOCK)
    cd = root / CATEGORY
    world = World.street(seed)
    frames, seqs = [], []
    fewview: dict[str, list] = {"train": [], "val": [], "test": []}
    manyview: dict[str, list] = {"train": [], "val": [], "test": []}
    for si, (seq, quality, car, _) in enumerate(SEQUENCES):
        for sub in ("images", "depths", "depth_masks", "masks"):
            (cd / seq / sub).mkdir(parents=True, exist_ok=True)
        car_inst = [b for b in world.boxes if b.cls == "car"][car].instance
        street, co3d = orbit_poses(world, si, n_frames)
        real = real_shapes and si == 1
        for i in range(n_frames):
            r = world.render(cam, street[i])
            stem = f"frame{i + 1:06d}"
            number = i + 1 if real else i
            rel = f"{CATEGORY}/{seq}"
            imwrite_bytes_safe(cd / seq / "images" / f"{stem}.jpg", r["rgb"][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            depth = (r["depth"] * SCALE).astype(np.float32)
            valid = r["valid"].copy()
            valid[block] = False
            depth[block] = depth[block] * 1.5 + 0.2  # wrong values that only the mask removes
            for v, u, val in NONFINITE_PIXELS:
                depth[v * k, u * k] = val
            bits = np.frombuffer(depth.astype(np.float16).tobytes(), np.uint16).reshape(depth.shape)
            imwrite_bytes_safe(cd / seq / "depths" / f"{stem}.jpg.geometric.png", bits)
            imwrite_bytes_safe(cd / seq / "depth_masks" / f"{stem}.png", valid.astype(np.uint8) * 255,
                        [cv2.IMWRITE_PNG_BILEVEL, 1])
            fg = cv2.blur((r["instance"] == car_inst).astype(np.float32), (3, 3))  # soft edges: Prob(fg)
            imwrite_bytes_safe(cd / seq / "masks" / f"{stem}.png", np.round(fg * 255).astype(np.uint8))
            entry_meta = {"frame_type": "train_known", "frame_splits": [], "eval_batch_maps": []}
            if real:
                entry_meta = {"frame_type": "dev_known", "eval_batch_maps": [],
                              "frame_splits": [f"singlesequence_{CATEGORY}_dev_1_known",
                                               f"multisequence_{CATEGORY}_dev_known"]}
            frames.append({
                "sequence_name": seq, "frame_number": number, "frame_timestamp": i / 30.0,
                "image": {"path": f"{rel}/images/{stem}.jpg", "size": [cam.h, cam.w]},
                "depth": {"path": f"{rel}/depths/{stem}.jpg.geometric.png", "scale_adjustment": 1.0,
                          "mask_path": f"{rel}/depth_masks/{stem}.png"},
                "mask": {"path": f"{rel}/masks/{stem}.png", "mass": float(np.round(fg * 255).sum() / 255)},
                "viewpoint": pytorch3d_viewpoint(co3d[i], cam),
                "meta": entry_meta,
                **({"camera_name": None} if real else {}),
            })
            entry = [seq, number, f"{rel}/images/{stem}.jpg"]
            if si < 2:
                fewview["train" if si == 0 else "val"].append(entry)
            if si == 0:
                manyview["train" if i < n_frames - 1 else "test"].append(entry)
        seqs.append({"sequence_name": seq, "category": CATEGORY, "video": None,
                     "point_cloud": None, "viewpoint_quality_score": quality})
    _dump_jgz(cd / "frame_annotations.jgz", frames)
    _dump_jgz(cd / "sequence_annotations.jgz", seqs)
    (cd / "set_lists").mkdir(exist_ok=True)
    (cd / "set_lists" / "set_lists_fewview_train.json").write_text(json.dumps(fewview))
    (cd / "set_lists" / "set_lists_manyview_test_0.json").write_text(json.dumps(manyview))
    n_good = sum(1 for s in SEQUENCES if s[1] >= 0.5)
    return FakeInfo(root, n_good, n_good * n_frames, options={"set_list": "fewview_train"})


