"""The built-in ``synthetic`` source: procedural scenes from ``wai.synthetic`` (demo and framework tests).

Layout: see ``wai.synthetic.raw_synthetic``. Conventions: poses are already OpenCV camera-to-world in a
right-handed z-up world, depth is metric z. Nothing is transformed, so ``_applied_transforms`` is empty.
It is also the smallest complete example of a converter (see ``docs/contributing.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from wai.converters._media import verify_image
from wai.converters._rawio import integer, numbers, read_text
from wai.converters.base import Converter, ConverterOptions, SceneRef, option
from wai.errors import SourceLayoutError, WaiError, layout_error, require_file
from wai.format.cameras import Camera
from wai.format.scene import Modality, SceneWriter
from wai.synthetic.world import CLASS_NAMES


@dataclass
class SyntheticOptions(ConverterOptions):
    """Options of the synthetic source."""

    semantic: bool = option(True, "also write the semantic label map")


class SyntheticConverter(Converter):
    """Procedural street scenes rendered by ``wai.synthetic``."""

    name = "synthetic"
    provides = frozenset({"image", "depth", "semantic"})
    Options = SyntheticOptions
    layout_hint = "synthetic root: splits.txt and <scene>/cameras.txt, rgb/*.png, depth/*.npy (wai.synthetic)"

    def iter_scenes(self) -> Iterator[SceneRef]:
        """Scenes listed in ``splits.txt`` (sorted)."""
        splits = require_file(self.root / "splits.txt", "split list", "regenerate with wai.synthetic")
        rows = []
        for i, line in enumerate(read_text(splits, "split list").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise layout_error(splits, f"expected '<scene> <split>', got {line!r}", line=i)
            rows.append(parts)
        for name, split in sorted(rows):
            yield SceneRef(name, split, data=str(self.root / name))

    def _cameras(self, scene: SceneRef) -> list[tuple[str, Camera, np.ndarray]]:
        path = require_file(f"{scene.data}/cameras.txt", "camera list")
        out = []
        for i, line in enumerate(read_text(path, "camera list").splitlines(), 1):
            if line.startswith("#") or not line.strip():
                continue
            p = line.split()
            if len(p) != 19:
                raise layout_error(path, f"expected 19 values (name w h fx fy cx cy + 12 pose), got {len(p)}", line=i)
            w, h = (integer(path, v, line=i, what="image size", lo=1, hi=32768) for v in p[1:3])
            vals = numbers(path, p[3:], line=i, what="intrinsics and pose", lo=-1e7, hi=1e7)
            cam = Camera.pinhole(w, h, *vals[:4])
            c2w = np.eye(4)
            c2w[:3] = np.array(vals[4:]).reshape(3, 4)
            out.append((p[0], cam, c2w))
        return out

    def check_scene(self, scene: SceneRef) -> list[str]:
        """Missing per-frame files."""
        problems = []
        try:
            cams = self._cameras(scene)
        except (SourceLayoutError, FileNotFoundError) as e:
            return [str(e)]
        for name, cam, _ in cams:
            for rel in (f"rgb/{name}.png", f"depth/{name}.npy"):
                if not (self.root / scene.name / rel).is_file():
                    problems.append(f"missing {self.root / scene.name / rel}")
            rgb = self.root / scene.name / "rgb" / f"{name}.png"
            if rgb.is_file():
                try:
                    verify_image(rgb, "RGB image", fmt="png", size=(cam.w, cam.h), size_source="cameras.txt")
                except WaiError as e:
                    problems.append(str(e))
        return problems

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        """Copy RGB, re-encode depth, keep semantics."""
        from wai.format.codecs import read_labels

        writer.add_label_table("synthetic", CLASS_NAMES)
        for name, cam, c2w in self._cameras(scene):
            sd = self.root / scene.name
            depth_path = require_file(sd / "depth" / f"{name}.npy", "depth map")
            try:
                depth = np.load(depth_path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise layout_error(depth_path, f"cannot read the depth array ({e})") from e
            if depth.dtype.kind != "f" or not np.isfinite(depth).all() or (depth < 0).any():
                raise layout_error(depth_path, "expected finite float depth >= 0 (metres, 0 = no data)")
            if depth.shape != cam.shape:
                raise layout_error(depth_path, f"shape {depth.shape} != (h, w) {cam.shape} of cameras.txt")
            mods = {}
            if self.options.semantic:  # type: ignore[attr-defined]
                sem = read_labels(require_file(sd / "semantic" / f"{name}.png", "semantic map"))
                mods["semantic"] = Modality("labels", sem.astype(np.uint8), "synthetic")
            # copied unchanged below: a complete PNG of the cameras.txt size
            verify_image(sd / "rgb" / f"{name}.png", "RGB image", fmt="png", size=(cam.w, cam.h),
                         size_source="cameras.txt")
            writer.add_frame(name, cam, c2w, image=sd / "rgb" / f"{name}.png", depth=depth, modalities=mods,
                             extras={"source_frame": name})
        return {}
