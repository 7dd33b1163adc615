"""OPV2V (CARLA cooperative perception): each vehicle's 4 cameras -> one 360-degree ``CYLINDRICAL`` panorama.

Source: OPV2V (Xu et al., ICRA 2022), recorded in CARLA 0.9.11/0.9.12 with OpenCDA; several connected
vehicles (CAVs) per scenario, each with 4 RGB cameras (800x600, fov 100) and a LiDAR. Licence: academic,
non-commercial (OpenCOOD/OpenCDA terms): never redistribute converted data outside those terms.

Expected layout (``--input`` may be the root, one split folder, or one scenario folder)::

    <root>/{train,validate,test,test_culvercity}/
      2021_08_22_21_41_24/                  scenario = one output scene
        data_protocol.yaml                  not used
        1732/                               one folder per CAV (sorted; the first is the ego; negative = RSU)
          000069.yaml                       per-frame metadata (6-digit CARLA tick)
          000069.pcd                        LiDAR, Open3D ASCII/binary PCD, LiDAR frame
          000069_camera0.png ... _camera3.png   front, right, left, back (800x600)
          [000069_depth0.png ... _depth3.png]   OPV2V-H per-camera depth (optional, also via --depth-root)

Source conventions: CARLA world and sensor frames are left-handed (x forward, y right, z up), metres.
Poses are lists ``[x, y, z, roll, yaw, pitch]`` in degrees (``carla.Transform``, body-to-world).
``camera{i}.extrinsic`` is LiDAR -> camera in UE4 camera axes (x forward, y right, z up).
``.pcd`` points are in the LiDAR frame (left-handed); intensity is the red channel (256 levels).
The YAML intrinsic puts the principal point at ``(W/2, H/2)`` (pixel-corner convention); CARLA renders a
symmetric frustum, so with pixel centres at integer coordinates it is ``(W/2 - 0.5, H/2 - 0.5)``.

Transform chain (every matrix recorded in ``_applied_transforms``):

* world: ``p_out = S p_carla`` with ``S = diag(1, -1, 1)`` (``world_from_source``);
* a source camera: ``c2w = S x_to_world(cords) M^T`` with ``M = OPENCV_FROM_UE4`` (proper rotation);
* the panorama: centred on the LiDAR origin with the LiDAR's axes (vehicle frame: z forward, x right,
  y down), ``c2w = S x_to_world(lidar_pose) M^T``; PCD points map into it by ``M`` (``panorama_from_lidar``).
  The LiDAR origin is the centre because the depth is then exactly what the LiDAR measured (every return is
  visible from there, no parallax between depth and pixel) and the poses of all agents come from one pose.

Not converted / limitations:

* object boxes (``vehicles``), BEV maps, ``plan_trajectory``, ``ego_speed`` (extra only), GNSS-noisy poses;
* stitched colour is exact only where measured depth exists; elsewhere it relies on a proxy (densified
  LiDAR, then ground plane / cylinder wall), so parallax seams can appear on thin or near objects;
* regions that no camera sees (parts of the top/bottom between cameras) are black with ``valid_mask = 0``;
* the OPV2V-H 8-bit depth encoding (metres, 1 m steps) is inferred from HEAL's loader, not verified.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wai.converters import _opv2v_io as io
from wai.converters._rawio import (
    BrokenScene,
    bad_name_reason,
    broken_problems,
    broken_scene,
    dir_problem,
    is_file,
    list_dir,
    raise_if_broken,
)
from wai.converters._stitch import NO_CAMERA, SourceView, fill_nearest, proxy_distance, stitch
from wai.converters.base import Converter, ConverterOptions, SceneRef, option
from wai.errors import UsageError, WaiError, layout_error
from wai.format import codecs
from wai.format.cameras import Camera
from wai.format.conventions import (
    CYLINDRICAL,
    OPENCV_FROM_UE4,
    PINHOLE,
    WORLD_FROM_LEFT_HANDED,
    carla_x_to_world,
    invert_pose,
    ue4_camera_to_opencv_c2w_right_handed,
)
from wai.format.projection import project_to_depth
from wai.format.scene import Modality, SceneWriter

log = logging.getLogger("wai.convert.opv2v")

#: Principal-point shift from OpenCDA's ``cx = W/2`` (pixel corners) to pixel centres at integers.
CARLA_PRINCIPAL_SHIFT = -0.5
#: OPV2V LiDAR mounting height above the vehicle origin (OpenCDA ``z=1.9``), used when the YAML lacks it.
DEFAULT_SENSOR_HEIGHT = 1.9
#: A cooperative point is kept only if not farther than own (densified) depth * (1 + tol) + abs.
COOP_OCCLUSION_TOL = (0.05, 0.2)
CAMERA_LABELS = {i: f"camera{i}_{n}" for i, n in enumerate(io.CAMERA_NAMES)} | {NO_CAMERA: "none"}
#: Largest panorama side accepted by --width / --height (pixels).
MAX_PANORAMA_SIDE = 32768


def _m4(R: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    return T


#: PCD (LiDAR, UE4 axes) -> panorama frame (OpenCV axes).
PANO_FROM_LIDAR = _m4(OPENCV_FROM_UE4)


@dataclass
class OPV2VOptions(ConverterOptions):
    """Options of the OPV2V converter."""

    width: int = option(2048, "panorama width in pixels (fl_x = width / (2 pi))")
    height: int = option(576, "panorama height in pixels")
    v_fov_deg: float = option(0.0, "vertical field of view in degrees; 0 = square pixels (fl_y = fl_x)")
    v_center_deg: float = option(0.0, "elevation of the panorama's centre row in degrees (positive = up)")
    lidar: str = option("own", "depth from the vehicle's own LiDAR, or all vehicles' LiDARs of the timestamp",
                        choices=("own", "cooperative"))
    also_pinhole: bool = option(False, "also write the 4 source cameras as PINHOLE frames (scene <scenario>_pinhole)")
    depth_root: str = option("", "tree mirroring the raw layout with per-camera depth <ts>_depth<i>.npy|.png "
                                 "(e.g. OPV2V-H); the raw CAV folders are searched too")
    fill_radius_deg: float = option(1.5, "stitching proxy: densify measured depth up to this angular radius")
    wall_radius: float = option(30.0, "stitching proxy: radius in metres of the cylinder wall used where no depth")
    sensor_height: float = option(0.0, "LiDAR height above the ground for the ground-plane proxy; 0 = from the YAML")


@dataclass(frozen=True)
class _Scenario:
    path: str
    split_folder: str
    agents: tuple[str, ...]
    timestamps: tuple[str, ...]
    pinhole: bool
    #: agent -> why its folder cannot be read (its frames are dropped with that reason)
    unreadable: tuple[tuple[str, str], ...] = ()


class OPV2VConverter(Converter):
    """OPV2V scenarios -> one scene of 360-degree panoramas per scenario (one frame per vehicle and tick)."""

    name = "opv2v"
    provides = frozenset({"image", "depth", "valid_mask", "source_camera"})
    Options = OPV2VOptions
    camera_model = CYLINDRICAL
    layout_hint = ("OPV2V root: <split>/<scenario>/<cav id>/<ts>.yaml, <ts>.pcd, <ts>_camera0..3.png "
                   "(--input may also be one split or one scenario folder)")

    def validate_options(self) -> None:
        """Option values that can never work raise ``UsageError`` before any scene starts."""
        o: OPV2VOptions = self.options  # type: ignore[assignment]
        if not (8 <= int(o.width) <= MAX_PANORAMA_SIDE and 2 <= int(o.height) <= MAX_PANORAMA_SIDE):
            raise UsageError(f"--width {o.width} --height {o.height}: expected 8..{MAX_PANORAMA_SIDE} x "
                             f"2..{MAX_PANORAMA_SIDE} pixels")
        if not (math.isfinite(float(o.v_fov_deg)) and 0.0 <= float(o.v_fov_deg) < 180.0):
            raise UsageError(f"--v-fov-deg {o.v_fov_deg}: expected 0 (square pixels) or a field of view below "
                             "180 degrees")
        if not (math.isfinite(float(o.v_center_deg)) and -90.0 < float(o.v_center_deg) < 90.0):
            raise UsageError(f"--v-center-deg {o.v_center_deg}: expected an elevation in (-90, 90) degrees")
        if not (math.isfinite(float(o.fill_radius_deg)) and 0.0 <= float(o.fill_radius_deg) <= 180.0):
            raise UsageError(f"--fill-radius-deg {o.fill_radius_deg}: expected 0..180 degrees")
        if not (math.isfinite(float(o.wall_radius)) and float(o.wall_radius) > 0):
            raise UsageError(f"--wall-radius {o.wall_radius}: expected a positive distance in metres")
        if not (math.isfinite(float(o.sensor_height)) and float(o.sensor_height) >= 0):
            raise UsageError(f"--sensor-height {o.sensor_height}: expected metres >= 0 (0 = from the YAML)")
        if o.lidar not in ("own", "cooperative"):
            raise UsageError(f"--lidar {o.lidar!r}: expected own or cooperative")
        if o.depth_root and dir_problem(Path(o.depth_root)) is not None:
            raise UsageError(f"--depth-root {o.depth_root}: {dir_problem(Path(o.depth_root))} (expected a folder "
                             "mirroring the raw layout)")

    # --- listing ---------------------------------------------------------------------------------------
    def _scenario_dirs(self) -> list[tuple[str, Path]]:
        """``(split folder, scenario folder)`` pairs; folders that cannot be listed are returned too (as
        candidates), so the listing turns them into failed scenes instead of losing them."""
        root = self.root
        if io.is_scenario_dir(root):
            return [(root.parent.name, root)]
        out: list[tuple[str, Path]] = []
        for child in list_dir(root, "OPV2V root (--input)"):
            problem = dir_problem(child)
            if problem == "not a directory":
                continue
            if problem is not None or io.is_scenario_dir(child):
                out.append((root.name, child))
                continue
            for sc in sorted(child.iterdir()):
                sub = dir_problem(sc)
                unreadable = sub not in (None, "not a directory")
                if unreadable or (sub is None and io.is_scenario_dir(sc)):
                    out.append((child.name, sc))
        return out

    def iter_scenes(self) -> Iterator[SceneRef]:
        """One scene per scenario (plus ``<scenario>_pinhole`` with ``--also-pinhole``), sorted by split and name.

        A scenario folder that cannot be listed, or whose name cannot name a scene, becomes a scene that fails
        with the reason; agent folders that cannot be listed are kept and their frames dropped with the reason.
        """
        opts: OPV2VOptions = self.options  # type: ignore[assignment]
        for split_folder, sc in self._scenario_dirs():
            split = io.SPLITS.get(split_folder, "train")
            problem = dir_problem(sc)
            reason = (f"{sc}: scenario folder is {problem}" if problem is not None
                      else bad_name_reason(sc.name, sc))
            if reason is None:
                try:
                    agents = tuple(io.list_agents(sc))
                    unreadable = tuple((a, str(io.agent_problem(sc / a))) for a in agents
                                       if io.agent_problem(sc / a) is not None)
                    bad = {a for a, _ in unreadable}
                    stamps = tuple(sorted({t for a in agents if a not in bad for t in io.list_timestamps(sc / a)}))
                except OSError as e:
                    reason = f"{sc}: cannot list the scenario ({e.strerror or e})"
            if reason is not None:
                yield broken_scene(sc.name, reason, split)
                if opts.also_pinhole:
                    yield broken_scene(f"{sc.name}_pinhole", reason, split)
                continue
            data = _Scenario(str(sc), split_folder, agents, stamps, False, unreadable)
            n = len(agents) * len(stamps)
            yield SceneRef(sc.name, split, data=data, n_frames=n)
            if opts.also_pinhole:
                yield SceneRef(f"{sc.name}_pinhole", split,
                               data=_Scenario(str(sc), split_folder, agents, stamps, True, unreadable),
                               n_frames=n * io.N_CAMERAS)

    def writer_options(self, scene: SceneRef) -> dict[str, Any]:
        """Panorama scenes are CYLINDRICAL (JPEG), ``_pinhole`` scenes PINHOLE (source PNGs copied)."""
        if not isinstance(scene.data, BrokenScene) and scene.data.pinhole:
            return {"camera_model": PINHOLE, "scale_type": "metric", "image_ext": ".png"}
        return super().writer_options(scene)

    def source_info(self, scene: SceneRef) -> dict[str, Any]:
        """Provenance plus the choices this converter makes (panorama centre, intrinsics shift)."""
        info = super().source_info(scene)
        if isinstance(scene.data, BrokenScene):
            return info
        sc: _Scenario = scene.data
        info.update(
            scenario=_rel(Path(sc.path), self.root) or Path(sc.path).name,
            split_folder=sc.split_folder,
            agents=list(sc.agents),
            ego=sc.agents[0] if sc.agents else None,
            carla_principal_point_shift=CARLA_PRINCIPAL_SHIFT,
            camera_depth_encoding="<ts>_depth<i>.npy: float metres, planar z; .png: 8-bit metres (OPV2V-H), "
                                  "0 and 255 = no data",
        )
        if not sc.pinhole:
            info["panorama_centre"] = ("LiDAR origin (lidar_pose); axes = LiDAR axes: z vehicle forward, x right, "
                                       "y down; depth = range from the LiDAR origin")
        return info

    # --- checking --------------------------------------------------------------------------------------
    def check_scene(self, scene: SceneRef) -> list[str]:
        """Every problem conversion would meet, before it starts: unreadable agent folders, each YAML (keys,
        numbers finite and plausible), each PCD (header, row count, every value a finite number), each camera
        image (a complete PNG of the size the YAML intrinsic implies) and each per-camera depth file."""
        broken = broken_problems(scene)
        if broken is not None:
            return broken
        sc: _Scenario = scene.data
        problems: list[str] = [f"{Path(sc.path) / a}: agent folder is {why}" for a, why in sc.unreadable]
        bad = {a for a, _ in sc.unreadable}
        for a in sc.agents:
            if a in bad:
                continue
            d = Path(sc.path) / a
            for ts in sc.timestamps:
                meta = None
                y = d / f"{ts}.yaml"
                if is_file(y):
                    try:
                        meta = io.parse_frame_yaml(y)
                    except WaiError as e:
                        problems.append(str(e))
                pcd = d / f"{ts}.pcd"
                if not is_file(pcd):
                    problems.append(f"missing LiDAR point cloud: {pcd}")
                else:
                    try:
                        io.check_pcd(pcd)
                    except WaiError as e:
                        problems.append(str(e))
                imgs = [io.camera_image_path(d, ts, i) for i in range(io.N_CAMERAS)]
                if int(a) < 0 and not any(is_file(p) for p in imgs):
                    continue  # a road-side unit without cameras: dropped with the reason, not an error
                shapes: list[tuple[int, int] | None] = []
                for i, p in enumerate(imgs):
                    shapes.append(None)
                    if not is_file(p):
                        problems.append(f"missing camera image: {p}")
                    elif meta is not None:
                        try:
                            shapes[i] = io.verify_camera_image(p, meta.cameras[i], y, i)
                        except WaiError as e:
                            problems.append(str(e))
                for i, dp in enumerate(self._depth_files(sc, Path(sc.path), a, ts)):
                    if dp is not None and shapes[i] is not None:
                        try:
                            io.read_camera_depth(dp, shapes[i])  # type: ignore[arg-type]
                        except WaiError as e:
                            problems.append(str(e))
        return problems

    def _depth_files(self, sc: _Scenario, root: Path, agent: str, ts: str) -> list[Path | None]:
        """Per-camera depth files of one agent and timestamp (``--depth-root``, then the raw folder)."""
        opts: OPV2VOptions = self.options  # type: ignore[assignment]
        dirs = [root / agent]
        if opts.depth_root:
            rel = Path(sc.split_folder) / root.name / agent
            dirs = [Path(opts.depth_root) / rel, Path(opts.depth_root) / root.name / agent, *dirs]
        return [io.find_camera_depth(dirs, ts, i) for i in range(io.N_CAMERAS)]

    # --- conversion ------------------------------------------------------------------------------------
    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        """Write the panoramas (or the pinhole frames) of one scenario, timestamp by timestamp.

        A missing or damaged YAML, PCD or camera image of an agent that has the timestamp fails the scene
        (``check_scene`` lists them all first); an agent folder that cannot be read, or an agent without the
        timestamp's YAML, drops that agent's frame with the reason.
        """
        raise_if_broken(scene)
        opts: OPV2VOptions = self.options  # type: ignore[assignment]
        sc: _Scenario = scene.data
        root = Path(sc.path)
        writer.add_transform("world_from_source", WORLD_FROM_LEFT_HANDED)
        writer.add_transform("opencv_from_ue4_camera", PANO_FROM_LIDAR)
        if not sc.pinhole:
            writer.add_transform("panorama_from_lidar", PANO_FROM_LIDAR)
            writer.add_label_table("opv2v_camera", CAMERA_LABELS)
        filters: dict[str, Any] = {"lidar": opts.lidar}
        if opts.lidar == "cooperative":
            filters["coop_occlusion_tolerance"] = {"relative": COOP_OCCLUSION_TOL[0], "metres": COOP_OCCLUSION_TOL[1]}
        writer.set_filters(filters)
        pano = None if sc.pinhole else _panorama_camera(opts)
        rays = None if pano is None else _panorama_rays(pano)
        mismatch = 0.0
        unreadable = dict(sc.unreadable)
        if not sc.timestamps:
            if unreadable:
                raise layout_error(root, f"no agent folder of this scenario can be read ({unreadable})")
            raise layout_error(root, "no <ts>.yaml in any agent folder")
        for ts in sc.timestamps:
            metas: dict[str, io.FrameMeta] = {}
            for a in sc.agents:
                y = root / a / f"{ts}.yaml"
                if a in unreadable:
                    writer.drop_frame(f"{ts}_{a}", f"agent folder {root / a} is {unreadable[a]}")
                elif is_file(y):
                    metas[a] = io.parse_frame_yaml(y)
                else:
                    writer.drop_frame(f"{ts}_{a}", f"agent {a} has no {y.name} (its other timestamps exist)")
            coop = opts.lidar == "cooperative"
            clouds = {a: io.read_pcd(root / a / f"{ts}.pcd") for a in metas} if coop else {}
            for a in metas:
                own = clouds if coop else {a: io.read_pcd(root / a / f"{ts}.pcd")}
                agent = _Agent(self, sc, root, ts, a, metas, own, opts)
                mismatch = max(mismatch, agent.extrinsic_mismatch())
                if sc.pinhole:
                    agent.write_pinhole(writer)
                elif pano is not None and rays is not None:
                    agent.write_panorama(writer, pano, rays, n_agents=len(metas))
        return {"max_extrinsic_mismatch_m": round(mismatch, 6)}


@functools.lru_cache(maxsize=2)
def _panorama_rays(pano: Camera) -> np.ndarray:
    """float32 unit rays ``[h, w, 3]`` of a panorama, computed once per process and size (read-only)."""
    rays = pano.ray_directions(normalize=True).astype(np.float32)
    rays.flags.writeable = False
    return rays


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)


def _panorama_camera(opts: OPV2VOptions) -> Camera:
    if opts.width < 8 or opts.height < 2:
        raise UsageError(f"panorama size {opts.width}x{opts.height} is too small")
    v_fov = opts.v_fov_deg if opts.v_fov_deg > 0 else None
    if v_fov is not None and v_fov >= 180:
        raise UsageError(f"--v-fov-deg {v_fov} must be below 180")
    return Camera.panorama(opts.width, opts.height, v_fov, v_center=-math.tan(math.radians(opts.v_center_deg)))


class _Agent:
    """One vehicle at one timestamp: poses, source cameras, depth, and the frames written from them."""

    def __init__(self, conv: OPV2VConverter, sc: _Scenario, root: Path, ts: str, agent: str,
                 metas: dict[str, io.FrameMeta], clouds: dict[str, np.ndarray], opts: OPV2VOptions) -> None:
        self.conv, self.sc, self.root, self.ts, self.agent, self.opts = conv, sc, root, ts, agent, opts
        self.metas = metas
        meta = self.meta = metas[agent]
        self.dir = root / agent
        self.clouds = clouds
        self.lidar_L = carla_x_to_world(meta.lidar_pose)  # LiDAR -> CARLA world (left-handed)
        #: panorama (OpenCV axes at the LiDAR origin) -> output world
        self.pano_c2w = ue4_camera_to_opencv_c2w_right_handed(self.lidar_L)
        self.cam_c2w = [ue4_camera_to_opencv_c2w_right_handed(carla_x_to_world(c.cords)) for c in meta.cameras]
        self.is_ego = agent == sc.agents[0]
        self.is_rsu = int(agent) < 0

    def extrinsic_mismatch(self) -> float:
        """Largest translation difference (m) between the stored extrinsic and ``inv(x_to_world(cords)) @ lidar``."""
        worst = 0.0
        for c in self.meta.cameras:
            pred = np.linalg.inv(carla_x_to_world(c.cords)) @ self.lidar_L
            worst = max(worst, float(np.abs(pred - c.extrinsic).max()))
        if worst > 0.05:
            log.warning("%s: camera extrinsic differs from cords/lidar_pose by %.3f", self.meta.path, worst)
        return worst

    # -- inputs --
    def images(self) -> list[tuple[Path, np.ndarray]]:
        """The 4 camera images, each verified (complete PNG, size = the YAML intrinsic's) and decoded (RGB)."""
        out = []
        for i in range(io.N_CAMERAS):
            p = io.camera_image_path(self.dir, self.ts, i)
            shape = io.verify_camera_image(p, self.meta.cameras[i], self.meta.path, i)
            rgb = codecs.imread_rgb(p)
            if rgb is None or rgb.shape[:2] != shape:
                raise layout_error(p, "cannot decode camera image (expected an 8-bit RGB PNG)")
            out.append((p, rgb))
        return out

    def camera(self, i: int, shape: tuple[int, int]) -> Camera:
        K = self.meta.cameras[i].intrinsic
        return Camera.pinhole(shape[1], shape[0], K[0, 0], K[1, 1], K[0, 2] + CARLA_PRINCIPAL_SHIFT,
                              K[1, 2] + CARLA_PRINCIPAL_SHIFT)

    def world_points(self, agent: str) -> tuple[np.ndarray, np.ndarray]:
        """``(points [N, 3], T)`` such that ``T @ points`` is in the output world (LiDAR frame of ``agent``)."""
        T = WORLD_FROM_LEFT_HANDED @ carla_x_to_world(self.metas[agent].lidar_pose)
        return self.clouds[agent][:, :3], T

    def camera_depths(self, shapes: list[tuple[int, int]]) -> list[np.ndarray | None]:
        files = self.conv._depth_files(self.sc, self.root, self.agent, self.ts)
        return [None if p is None else io.read_camera_depth(p, shapes[i]) for i, p in enumerate(files)]

    def _lidar_depth(self, cam: Camera, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Own and merged (cooperative) depth for a camera with world->camera ``w2c``; points projected."""
        pts, T = self.world_points(self.agent)
        own, n_own = project_to_depth(cam, w2c @ T, pts)
        if self.opts.lidar != "cooperative":
            return own, own, n_own, 0
        others = [a for a in self.clouds if a != self.agent]
        if not others:
            return own, own, n_own, 0
        parts = []
        for a in others:
            p, Ta = self.world_points(a)
            parts.append(p @ (w2c @ Ta)[:3, :3].T + (w2c @ Ta)[:3, 3])
        coop, n_coop = project_to_depth(cam, np.eye(4), np.concatenate(parts))
        # A point of another vehicle that lies behind what this vehicle's LiDAR sees nearby is occluded here.
        radius = self.opts.fill_radius_deg * cam.w / 360.0 if cam.model == CYLINDRICAL else 3.0
        dense = fill_nearest(own, radius, wrap=cam.model == CYLINDRICAL)
        ok = (coop > 0) & ((dense == 0) | (coop <= dense * (1 + COOP_OCCLUSION_TOL[0]) + COOP_OCCLUSION_TOL[1]))
        merged = np.where(own > 0, np.where(ok, np.minimum(own, coop), own), np.where(ok, coop, 0.0))
        return own, merged.astype(np.float32), n_own, n_coop

    def _extras(self) -> dict[str, Any]:
        return {"timestamp": int(self.ts), "agent_id": int(self.agent), "is_ego": self.is_ego, "is_rsu": self.is_rsu,
                "source_frame": self.ts, "ego_speed_kmh": self.meta.ego_speed}

    def _drop_rsu_without_cameras(self, writer: SceneWriter, name: str) -> bool:
        missing = [i for i in range(io.N_CAMERAS) if not io.camera_image_path(self.dir, self.ts, i).is_file()]
        if self.is_rsu and len(missing) == io.N_CAMERAS:
            writer.drop_frame(name, f"road-side unit {self.agent} has no camera images at {self.ts}")
            return True
        return False

    # -- outputs --
    def write_panorama(self, writer: SceneWriter, pano: Camera, rays: np.ndarray, n_agents: int) -> None:
        name = f"{self.ts}_{self.agent}"
        if self._drop_rsu_without_cameras(writer, name):
            return
        imgs = self.images()
        cams = [self.camera(i, img.shape[:2]) for i, (_, img) in enumerate(imgs)]
        w2p = invert_pose(self.pano_c2w)
        own, merged, n_own, n_coop = self._lidar_depth(pano, w2p)
        # Per-camera depth (OPV2V-H / --depth-root) fills pixels the LiDAR does not reach.
        cam_depth = np.zeros(pano.shape, np.float32)
        n_cam_depth = 0
        for i, d in enumerate(self.camera_depths([c.shape for c in cams])):
            if d is None:
                continue
            pts = cams[i].depth_to_points(d)[d > 0]
            di, _ = project_to_depth(pano, w2p @ self.cam_c2w[i], pts)
            cam_depth = np.where((di > 0) & ((cam_depth == 0) | (di < cam_depth)), di, cam_depth)
            n_cam_depth += 1
        depth = np.where(merged > 0, merged, cam_depth).astype(np.float32) if n_cam_depth else merged

        h = self.opts.sensor_height if self.opts.sensor_height > 0 else self.sensor_height()
        dist, origin = proxy_distance(depth, rays, self.opts.fill_radius_deg * pano.w / 360.0, h,
                                      self.opts.wall_radius)
        views = [SourceView(cams[i], invert_pose(self.cam_c2w[i]) @ self.pano_c2w, img)
                 for i, (_, img) in enumerate(imgs)]
        rgb, source, valid = stitch(rays, dist, views)
        n = depth.size
        coverage = {
            "n_points_projected": n_own,
            "own_valid_depth_ratio": float(np.count_nonzero(own) / n),
            "coop_valid_depth_ratio": float(np.count_nonzero(merged) / n) if self.opts.lidar == "cooperative" else None,
            "n_coop_points_projected": n_coop,
            "camera_depth_valid_ratio": float(np.count_nonzero(cam_depth) / n) if n_cam_depth else 0.0,
            "proxy_densified_ratio": float(np.count_nonzero(origin == 1) / n),
            "proxy_extruded_ratio": float(np.count_nonzero(origin == 2) / n),
            "proxy_fallback_ratio": float(np.count_nonzero(origin == 3) / n),
            "agents_at_timestamp": n_agents,
            "sensor_height": round(h, 4),
        }
        extras = self._extras() | {
            "source_cameras": [_rel(p, self.conv.root) for p, _ in imgs],
            "source_lidar": _rel(self.dir / f"{self.ts}.pcd", self.conv.root),
            "panorama_centre": "lidar",
        }
        writer.add_frame(name, pano, self.pano_c2w, image=rgb, depth=depth,
                         modalities={"valid_mask": Modality("binary", valid),
                                     "source_camera": Modality("labels", source, "opv2v_camera")},
                         extras=extras, coverage=coverage)

    def sensor_height(self) -> float:
        """LiDAR height above the vehicle origin (on the road) from ``true_ego_pos``; OpenCDA's 1.9 m without it."""
        if self.meta.true_ego_pos is None:
            return DEFAULT_SENSOR_HEIGHT
        h = float((np.linalg.inv(carla_x_to_world(self.meta.true_ego_pos)) @ self.lidar_L)[2, 3])
        return h if 0.3 < h < 10.0 else DEFAULT_SENSOR_HEIGHT

    def write_pinhole(self, writer: SceneWriter) -> None:
        if self._drop_rsu_without_cameras(writer, f"{self.ts}_{self.agent}_camera0"):
            return
        for i in range(io.N_CAMERAS):
            p = io.camera_image_path(self.dir, self.ts, i)
            shape = io.verify_camera_image(p, self.meta.cameras[i], self.meta.path, i)  # copied verbatim below
            cam = self.camera(i, shape)
            w2c = invert_pose(self.cam_c2w[i])
            own, merged, n_own, n_coop = self._lidar_depth(cam, w2c)
            d = self.camera_depths([shape] * io.N_CAMERAS)[i]
            depth = merged if d is None else np.where(merged > 0, merged, d).astype(np.float32)
            coverage = {"n_points_projected": n_own, "own_valid_depth_ratio": float(np.count_nonzero(own) / own.size),
                        "coop_valid_depth_ratio": (float(np.count_nonzero(merged) / own.size)
                                                   if self.opts.lidar == "cooperative" else None),
                        "n_coop_points_projected": n_coop}
            extras = self._extras() | {"camera_index": i, "camera_name": io.CAMERA_NAMES[i],
                                       "source_image": _rel(p, self.conv.root)}
            writer.add_frame(f"{self.ts}_{self.agent}_camera{i}", cam, self.cam_c2w[i], image=p, depth=depth,
                             extras=extras, coverage=coverage)
