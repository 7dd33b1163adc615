"""Canonical (already converted) scenes and datasets rendered from ``World.street`` for tests and benchmarks.

Everything is written with ``SceneWriter`` (so the files follow the format contract exactly) plus the WAI
scene lists ``<root>/_meta/<split>/<dataset>_scene_list_<split>.npy``. World frame: the street world's
(metres, z up); poses are OpenCV camera-to-world. Depth is float32 EXR (z for PINHOLE, range for
CYLINDRICAL) so geometry tests are not limited by half-float rounding.

* ``write_scene``: one scene from explicit poses (e.g. two views of the same facade);
* ``write_street_dataset``: ``n_scenes`` drives with ``n_agents`` cooperating vehicles per timestamp
  (frames carry ``timestamp`` and ``agent_id`` extras, as OPV2V scenes do);
* ``write_long_scene``: a scene of thousands of small frames made by re-encoding a few rendered views
  under new names and poses (for loader benchmarks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wai.errors import SchemaError
from wai.format import atomic
from wai.format.cameras import Camera
from wai.format.conventions import CYLINDRICAL, PINHOLE
from wai.format.scene import Modality, SceneWriter
from wai.synthetic.world import CLASS_NAMES, World, look_at

#: ``dataset_name`` of the scenes written here.
DATASET_NAME = "synthetic_street"
#: Name of the label table of the ``semantic`` modality (the street world's classes).
LABEL_TABLE = "street"


def make_camera(camera_model: str, size: tuple[int, int], hfov_deg: float = 70.0) -> Camera:
    """A pinhole camera of horizontal FOV ``hfov_deg`` or a 360-degree panorama (90 degrees vertical), size (w, h)."""
    w, h = int(size[0]), int(size[1])
    if camera_model == PINHOLE:
        f = (w / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return Camera.pinhole(w, h, f, f, (w - 1) / 2.0, (h - 1) / 2.0)
    if camera_model == CYLINDRICAL:
        return Camera.panorama(w, h, v_fov_deg=90.0)
    raise SchemaError(f"camera_model {camera_model!r}; expected {PINHOLE!r} or {CYLINDRICAL!r}")


def write_scene(
    root: str | Path,
    scene_name: str,
    camera: Camera,
    poses: Sequence[np.ndarray],
    *,
    world: World | None = None,
    dataset_name: str = DATASET_NAME,
    frame_names: Sequence[str] | None = None,
    extras: Sequence[dict[str, Any]] | None = None,
    overwrite: bool = True,
) -> Path:
    """Render ``poses`` (4x4 OpenCV camera-to-world, world metres) with ``camera`` and write one scene.

    Each frame has ``image`` (JPEG), ``depth`` (float32 EXR) and ``semantic`` (labels, table ``street``).
    Returns the scene directory.
    """
    world = world if world is not None else World.street(0)
    names = list(frame_names) if frame_names is not None else [f"{i:05d}" for i in range(len(poses))]
    with SceneWriter(root, scene_name, dataset_name, camera_model=camera.model, depth_precision="float32",
                     overwrite=overwrite, source={"generator": "wai.synthetic.scenes"}) as w:
        w.add_label_table(LABEL_TABLE, CLASS_NAMES)
        for i, (name, pose) in enumerate(zip(names, poses)):
            r = world.render(camera, pose)
            w.add_frame(name, camera, pose, image=r["rgb"], depth=r["depth"],
                        modalities={"semantic": Modality("labels", r["semantic"], labels=LABEL_TABLE)},
                        extras=dict(extras[i]) if extras is not None else None)
    return Path(root) / scene_name


def write_scene_lists(root: str | Path, scenes: dict[str, list[str]], dataset_name: str = DATASET_NAME) -> None:
    """Write ``<root>/_meta/<split>/<dataset>_scene_list_<split>.npy`` for each split (numpy str arrays)."""
    for split, names in scenes.items():
        atomic.write_npy(Path(root) / "_meta" / split / f"{dataset_name}_scene_list_{split}.npy",
                         np.array(sorted(names)))


def _drive_poses(n_frames: int, agent: int, n_agents: int, camera_model: str, rng: np.random.Generator,
                 x_span: float) -> list[np.ndarray]:
    """Poses of one vehicle driving along +x inside the car-free strip (level for panoramas)."""
    step = x_span / max(n_frames - 1, 1)
    lateral = (agent - (n_agents - 1) / 2.0) * 1.6
    x0 = -x_span / 2.0 + agent * 0.7
    out = []
    for t in range(n_frames):
        eye = np.array([x0 + t * step, lateral + rng.uniform(-0.2, 0.2), 1.7 + rng.uniform(-0.1, 0.1)])
        yaw = math.radians(rng.uniform(-10.0, 10.0)) + (math.pi if (camera_model == PINHOLE and agent % 2) else 0.0)
        pitch = -0.08 if camera_model == PINHOLE else 0.0
        out.append(look_at(eye, eye + np.array([math.cos(yaw), math.sin(yaw), pitch])))
    return out


def write_street_dataset(
    root: str | Path,
    n_scenes: int = 2,
    n_frames: int = 6,
    camera_model: str = PINHOLE,
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
    *,
    n_agents: int = 1,
    split: str = "train",
    dataset_name: str = DATASET_NAME,
) -> list[Path]:
    """Write ``n_scenes`` scenes of ``n_frames`` timestamps x ``n_agents`` vehicles, plus the scene list.

    Frames are named ``<t>_a<agent>`` and carry ``timestamp`` (seconds, 10 Hz) and ``agent_id``; with two or
    more pinhole agents the odd ones look backwards. ``size`` is (w, h) in pixels. Scene ``k`` uses the street
    world of seed ``seed + k``. Returns the scene directories.
    """
    cam = make_camera(camera_model, size)
    dirs = []
    for k in range(n_scenes):
        rng = np.random.default_rng([seed, k])
        world = World.street(seed + k)
        poses, names, extras = [], [], []
        per_agent = [_drive_poses(n_frames, a, n_agents, camera_model, rng, x_span=12.0) for a in range(n_agents)]
        for t in range(n_frames):
            for a in range(n_agents):
                poses.append(per_agent[a][t])
                names.append(f"{t:05d}_a{a}")
                extras.append({"timestamp": round(0.1 * t, 3), "agent_id": a})
        name = f"street_{seed:03d}_{k:03d}"
        dirs.append(write_scene(root, name, cam, poses, world=world, dataset_name=dataset_name,
                                frame_names=names, extras=extras))
    write_scene_lists(root, {split: [d.name for d in dirs]}, dataset_name)
    return dirs


def write_long_scene(
    root: str | Path,
    n_frames: int = 2000,
    size: tuple[int, int] = (64, 48),
    n_unique: int = 8,
    seed: int = 0,
    *,
    scene_name: str = "long_000",
    split: str = "train",
    dataset_name: str = DATASET_NAME,
) -> Path:
    """A pinhole scene of ``n_frames`` frames built from ``n_unique`` rendered facade views.

    Frame ``k`` re-encodes render ``k % n_unique`` and shifts its pose by ``500 m * (k // n_unique)`` along x, so
    depth and poses stay mutually consistent (as if the street repeated every 500 m): covisibility is
    block-diagonal with ``n_unique`` x ``n_unique`` blocks. Writes the scene list too. Returns the scene directory.
    """
    cam = make_camera(PINHOLE, size)
    world = World.street(seed)
    rng = np.random.default_rng(seed)
    base_poses = []
    for i in range(n_unique):
        x = -6.0 + 12.0 * i / max(n_unique - 1, 1)
        eye = np.array([x, rng.uniform(-1.5, 1.5), 1.7])
        side = 1.0 if i % 2 == 0 else -1.0
        base_poses.append(look_at(eye, np.array([x + rng.uniform(-3, 3), side * 12.0, 3.0])))
    renders = [world.render(cam, p) for p in base_poses]
    with SceneWriter(root, scene_name, dataset_name, camera_model=PINHOLE, depth_precision="float32",
                     overwrite=True, source={"generator": "wai.synthetic.scenes.write_long_scene"}) as w:
        w.add_label_table(LABEL_TABLE, CLASS_NAMES)
        for k in range(n_frames):
            r = renders[k % n_unique]
            pose = base_poses[k % n_unique].copy()
            pose[0, 3] += 500.0 * (k // n_unique)
            w.add_frame(f"{k:06d}", cam, pose, image=r["rgb"], depth=r["depth"],
                        modalities={"semantic": Modality("labels", r["semantic"], labels=LABEL_TABLE)},
                        extras={"timestamp": round(0.1 * k, 3), "agent_id": 0})
    write_scene_lists(root, {split: [scene_name]}, dataset_name)
    return Path(root) / scene_name
