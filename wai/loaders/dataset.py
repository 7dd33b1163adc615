"""``WAIDataset``: a multi-view ``torch.utils.data.Dataset`` over one or several converted dataset roots.

Sample index ``k`` (or MapAnything's tuple ``(k, resolution_idx, num_views)``) picks a root by the mixing
weights, a scene of that root's scene list (``<root>/_meta/<split>/<dataset>_scene_list_<split>.npy``), then
``num_views`` frames by the sampling strategy, loads them, crops/resizes them to the resolution with exact
intrinsics and returns the ``views`` or ``vggt`` layout (``wai.loaders.views``). Everything random comes from
``numpy.random.default_rng([seed, epoch, k, resolution_idx, num_views])``, so a sample is reproducible.

Per-worker caching: parsed ``scene_meta.json`` (``load_scene``, keyed by path and mtime), the covisibility
memmap and the timestamp index of each scene. Caches are dropped when the dataset is pickled to a worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wai.errors import SceneNotFoundError, SchemaError, import_optional
from wai.format.scene import SCENE_META, Scene, load_frame, load_scene
from wai.loaders.covisibility import covisibility_path
from wai.loaders.errors import LoaderConfigError
from wai.loaders.transforms import crop_resize
from wai.loaders.views import IMG_NORMS, to_vggt, to_views

torch = import_optional("torch", "torch")

log = logging.getLogger("wai.loaders")

#: Datasets rendered by a simulator (``is_synthetic`` in the views).
SYNTHETIC_DATASETS = frozenset({"synthetic", "synthetic_street", "vkitti2", "opv2v"})
SAMPLINGS = ("covisibility", "sequential", "cooperative", "random")
OUTPUTS = ("views", "vggt")

_VEHICLES = ("car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle", "vehicle")
#: Per-class loss weights by preset name (class names as in the scene's ``label_tables``; others weigh 1.0).
LABEL_WEIGHT_PRESETS: dict[str, dict[str, float]] = {
    "kitti360": {"building": 2.0, "window": 2.0, "road": 0.7, "sky": 0.2, **{v: 0.5 for v in _VEHICLES}},
}


def _as_pair(r: Any, what: str) -> tuple[int, int]:
    if not (isinstance(r, (tuple, list)) and len(r) == 2 and all(isinstance(x, (int, np.integer)) for x in r)):
        raise LoaderConfigError(f"{what} must be (W, H) in pixels, got {r!r}")
    if r[0] <= 0 or r[1] <= 0:
        raise LoaderConfigError(f"{what} must be positive, got {r!r}")
    return int(r[0]), int(r[1])


def _parse_roots(roots: Any) -> list[tuple[Path, float | None]]:
    items = [roots] if isinstance(roots, (str, Path)) else list(roots)
    if not items:
        raise LoaderConfigError("roots is empty; give a dataset root, a list of roots or (root, weight) pairs")
    out = []
    for it in items:
        if isinstance(it, (tuple, list)):
            if len(it) != 2:
                raise LoaderConfigError(f"root entry {it!r}: expected (path, weight)")
            w = float(it[1])
            if not w > 0:
                raise LoaderConfigError(f"root {it[0]}: mixing weight must be > 0, got {it[1]!r}")
            out.append((Path(it[0]), w))
        else:
            out.append((Path(it), None))
    return out


def _allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` samples proportionally to ``weights`` (largest remainder, deterministic)."""
    w = np.asarray(weights, dtype=np.float64)
    raw = total * w / w.sum()
    n = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - n), kind="stable")[: total - int(n.sum())]:
        n[i] += 1
    return [int(x) for x in n]


class WAIDataset(torch.utils.data.Dataset):
    """Multi-view samples from converted dataset roots.

    Args:
        roots: a root, a list of roots, or ``(root, weight)`` pairs. Weights are mixing proportions; without
            weights each root contributes in proportion to its number of scenes.
        split: scene-list split (``train``, ``val``, ...).
        num_views: an int, a ``(min, max)`` range (inclusive) or a list of allowed view counts.
        resolution: output ``(W, H)`` in pixels, or a list of them (the sampler's ``resolution_idx`` picks one).
        sampling: ``covisibility`` (random walk over the thresholded covisibility graph, WAI §4.3), ``sequential``
            (windows of frames ``stride`` apart in stored order), ``cooperative`` (all agents sharing the frame
            extra ``timestamp``, padded from the nearest timestamps) or ``random``.
        output: ``views`` (list of MapAnything view dicts; collate with ``collate_views``) or ``vggt`` (stacked).
        seed: base seed of every random choice.

    Options (keyword): ``covisibility_thres`` (0.25), ``stride`` (1, int or (min, max)), ``samples_per_epoch``
    (default: the total number of scenes), ``relative_to_first`` (False), ``img_norm`` (``imagenet``,
    ``dust3r``, ``none``), ``depth_modality`` (``depth``), ``non_ambiguous_modality`` (a binary modality, True =
    usable), ``label_modality`` (``semantic``), ``label_weights`` (``{class: weight}``, a preset name such as
    ``kitti360``, or ``{dataset_name: {...} | preset}`` per dataset), ``max_depth`` (beyond: invalid),
    ``metadata_dir`` (default ``<root>/_meta``), ``cache_metadata`` (True; False re-reads ``scene_meta.json`` and
    reopens the covisibility file for every sample, as MapAnything does), ``max_retries`` (0: errors propagate).
    """

    def __init__(
        self,
        roots: str | Path | Sequence[Any],
        split: str = "train",
        num_views: int | Sequence[int] = 4,
        resolution: tuple[int, int] | Sequence[tuple[int, int]] = (518, 392),
        sampling: str = "covisibility",
        output: str = "views",
        seed: int = 0,
        *,
        covisibility_thres: float = 0.25,
        stride: int | tuple[int, int] = 1,
        samples_per_epoch: int | None = None,
        relative_to_first: bool = False,
        img_norm: str = "imagenet",
        depth_modality: str = "depth",
        non_ambiguous_modality: str | None = None,
        label_modality: str = "semantic",
        label_weights: str | dict[str, Any] | None = None,
        max_depth: float | None = None,
        metadata_dir: str | Path | None = None,
        cache_metadata: bool = True,
        max_retries: int = 0,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise LoaderConfigError(f"sampling={sampling!r}; expected one of {SAMPLINGS}")
        if output not in OUTPUTS:
            raise LoaderConfigError(f"output={output!r}; expected one of {OUTPUTS}")
        if img_norm not in IMG_NORMS:
            raise LoaderConfigError(f"img_norm={img_norm!r}; expected one of {tuple(IMG_NORMS)}")
        self.split, self.sampling, self.output, self.seed = split, sampling, output, int(seed)
        self.num_views_options = self._parse_num_views(num_views)
        if isinstance(resolution, (tuple, list)) and len(resolution) == 2 and all(
                isinstance(x, (int, np.integer)) for x in resolution):
            self.resolutions = [_as_pair(resolution, "resolution")]
        else:
            self.resolutions = [_as_pair(r, "resolution entry") for r in resolution]
            if not self.resolutions:
                raise LoaderConfigError("resolution list is empty")
        if isinstance(stride, (tuple, list)):
            self.stride = (int(stride[0]), int(stride[1]))
        else:
            self.stride = (int(stride), int(stride))
        if self.stride[0] < 1 or self.stride[1] < self.stride[0]:
            raise LoaderConfigError(f"stride={stride!r}: expected an int >= 1 or a (min, max) range")
        self.covisibility_thres = float(covisibility_thres)
        self.relative_to_first = bool(relative_to_first)
        self.img_norm = img_norm
        self.depth_modality = depth_modality
        self.non_ambiguous_modality = non_ambiguous_modality
        self.label_modality = label_modality
        self.label_weights = label_weights
        self.max_depth = max_depth
        self.cache_metadata = bool(cache_metadata)
        self.max_retries = int(max_retries)
        self.epoch = 0

        parsed = _parse_roots(roots)
        self.roots: list[Path] = []
        self.scenes: list[list[str]] = []
        for root, _ in parsed:
            self.roots.append(root)
            self.scenes.append(self._scene_list(root, split, metadata_dir))
        weights = [w if w is not None else float(len(s)) for (_, w), s in zip(parsed, self.scenes)]
        total = int(samples_per_epoch) if samples_per_epoch is not None else sum(len(s) for s in self.scenes)
        if total <= 0:
            raise LoaderConfigError(f"samples_per_epoch must be >= 1, got {samples_per_epoch!r}")
        self.root_sizes = _allocate(total, weights)
        self._offsets = np.cumsum([0] + self.root_sizes)
        self._covis: dict[str, tuple[int, np.ndarray]] = {}
        self._groups: dict[str, tuple[int, dict[float, list[int]]]] = {}

    # --- configuration -----------------------------------------------------------------
    @staticmethod
    def _parse_num_views(num_views: Any) -> list[int]:
        if isinstance(num_views, (int, np.integer)):
            opts = [int(num_views)]
        elif isinstance(num_views, tuple) and len(num_views) == 2:
            opts = list(range(int(num_views[0]), int(num_views[1]) + 1))
        else:
            opts = sorted({int(v) for v in num_views})
        if not opts or min(opts) < 1:
            raise LoaderConfigError(f"num_views={num_views!r}: expected an int >= 1, a (min, max) range or a list")
        return opts

    @staticmethod
    def _scene_list(root: Path, split: str, metadata_dir: str | Path | None) -> list[str]:
        meta = Path(metadata_dir) if metadata_dir is not None else root / "_meta"
        pattern = meta / split / f"<dataset>_scene_list_{split}.npy"
        files = sorted((meta / split).glob(f"*_scene_list_{split}.npy")) if (meta / split).is_dir() else []
        if not files:
            raise SceneNotFoundError(f"no scene list for split {split!r} of root {root}: expected {pattern} "
                                     "(written by wai-convert at the end of a run)")
        names: list[str] = []
        for f in files:
            names.extend(str(s) for s in np.load(f, allow_pickle=False).tolist())
        if not names:
            raise SceneNotFoundError(f"scene list(s) {[str(f) for f in files]} are empty")
        return names

    def set_epoch(self, epoch: int) -> None:
        """Vary the views drawn for each sample index between epochs (deterministically)."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_covis"], state["_groups"] = {}, {}  # memmaps and indexes are rebuilt per worker
        return state

    def __len__(self) -> int:
        return int(self._offsets[-1])

    # --- scene access ------------------------------------------------------------------
    def locate(self, sample_idx: int) -> tuple[int, Path]:
        """(root index, scene directory) of a sample index."""
        if not 0 <= sample_idx < len(self):
            raise IndexError(f"sample index {sample_idx} out of range [0, {len(self)})")
        r = int(np.searchsorted(self._offsets, sample_idx, side="right") - 1)
        k = sample_idx - int(self._offsets[r])
        names = self.scenes[r]
        return r, self.roots[r] / names[k % len(names)]

    def _scene(self, scene_dir: Path) -> Scene:
        if self.cache_metadata:
            return load_scene(scene_dir)
        p = scene_dir / SCENE_META  # MapAnything's pattern: read and parse for every sample
        if not p.is_file():
            raise SceneNotFoundError(f"no scene at {scene_dir}: {p} is missing")
        meta = json.loads(p.read_text())
        return Scene(scene_dir, meta, {str(f.get("frame_name")): i for i, f in enumerate(meta["frames"])})

    def _covisibility(self, scene: Scene) -> np.ndarray:
        key = str(scene.path)
        mtime = (scene.path / SCENE_META).stat().st_mtime_ns
        hit = self._covis.get(key) if self.cache_metadata else None
        if hit is not None and hit[0] == mtime:
            return hit[1]
        path = covisibility_path(scene.path) if self.cache_metadata else self._covis_path_uncached(scene)
        if path is None:
            raise SceneNotFoundError(f"scene {scene.path} has no covisibility matrix "
                                     f"(covisibility/v0/pairwise_covisibility--NxN.npy); run "
                                     f"`wai-convert covisibility {scene.path.parent}` or use sampling='sequential'")
        m = np.load(path, mmap_mode="r")
        n = len(scene.frames)
        if m.shape != (n, n):
            raise SchemaError(f"{path}: covisibility shape {m.shape} != ({n}, {n}) frames; recompute it")
        if self.cache_metadata:
            self._covis[key] = (mtime, m)
        return m

    @staticmethod
    def _covis_path_uncached(scene: Scene) -> Path | None:
        entry = scene.meta.get("scene_modalities", {}).get("pairwise_covisibility", {})
        rel = entry.get("scene_key") if isinstance(entry, dict) else None
        return scene.path / rel if rel and (scene.path / rel).is_file() else None

    def _timestamp_groups(self, scene: Scene) -> dict[float, list[int]]:
        key = str(scene.path)
        mtime = (scene.path / SCENE_META).stat().st_mtime_ns
        hit = self._groups.get(key) if self.cache_metadata else None
        if hit is not None and hit[0] == mtime:
            return hit[1]
        groups: dict[float, list[int]] = {}
        for i, fr in enumerate(scene.frames):
            if "timestamp" not in fr:
                raise SchemaError(f"{scene.path / SCENE_META}: frame {fr.get('frame_name')!r} has no `timestamp`; "
                                  "sampling='cooperative' needs frames of all agents sharing a timestamp")
            groups.setdefault(float(fr["timestamp"]), []).append(i)
        if self.cache_metadata:
            self._groups[key] = (mtime, groups)
        return groups

    # --- view selection ----------------------------------------------------------------
    def _select(self, scene: Scene, k: int, rng: np.random.Generator) -> list[int]:
        n = len(scene.frames)
        if n == 0:
            raise SchemaError(f"{scene.path / SCENE_META}: scene has no frames")
        if self.sampling == "random":
            return [int(i) for i in rng.choice(n, size=k, replace=n < k)]
        if self.sampling == "sequential":
            return self._sequential(n, k, rng)
        if self.sampling == "cooperative":
            return self._cooperative(scene, k, rng)
        return random_walk(self._covisibility(scene), k, self.covisibility_thres, rng)

    def _sequential(self, n: int, k: int, rng: np.random.Generator) -> list[int]:
        if n < k:
            return list(range(n)) + [int(i) for i in rng.choice(n, size=k - n)]
        stride = int(rng.integers(self.stride[0], self.stride[1] + 1))
        if k > 1:
            stride = max(1, min(stride, (n - 1) // (k - 1)))
        start = int(rng.integers(0, n - (k - 1) * stride))
        return [start + i * stride for i in range(k)]

    def _cooperative(self, scene: Scene, k: int, rng: np.random.Generator) -> list[int]:
        groups = self._timestamp_groups(scene)
        stamps = np.array(sorted(groups))
        t = stamps[int(rng.integers(len(stamps)))]
        members = list(groups[float(t)])
        main = members.pop(int(rng.integers(len(members))))
        chosen = [main] + [members[i] for i in rng.permutation(len(members))]
        for t2 in stamps[np.argsort(np.abs(stamps - t), kind="stable")][1:]:  # pad from the nearest timestamps
            if len(chosen) >= k:
                break
            chosen.extend(groups[float(t2)])
        if len(chosen) < k:
            chosen.extend(int(i) for i in rng.choice(chosen, size=k - len(chosen)))
        return chosen[:k]

    # --- loading -----------------------------------------------------------------------
    def _weights_table(self, dataset: str) -> dict[str, float] | None:
        lw = self.label_weights
        if lw is None:
            return None
        if isinstance(lw, str):
            lw = LABEL_WEIGHT_PRESETS.get(lw)
            if lw is None:
                raise LoaderConfigError(f"label_weights preset {self.label_weights!r}; "
                                        f"expected one of {sorted(LABEL_WEIGHT_PRESETS)}")
            return lw
        if all(isinstance(v, (int, float)) for v in lw.values()):
            return {str(k): float(v) for k, v in lw.items()}
        per = lw.get(dataset)
        if per is None:
            return {}
        if isinstance(per, str):
            if per not in LABEL_WEIGHT_PRESETS:
                raise LoaderConfigError(f"label_weights[{dataset!r}] preset {per!r}; "
                                        f"expected one of {sorted(LABEL_WEIGHT_PRESETS)}")
            return LABEL_WEIGHT_PRESETS[per]
        return {str(k): float(v) for k, v in per.items()}

    def _weight_lut(self, scene: Scene) -> np.ndarray | None:
        """Lookup table id -> weight for the scene's label modality (None: no label map, uniform weights)."""
        table = self._weights_table(str(scene.meta.get("dataset_name", "")))
        if table is None:
            return None
        spec = scene.meta.get("frame_modalities", {}).get(self.label_modality)
        if not table or spec is None:
            return np.ones(1, dtype=np.float32)
        names = scene.meta.get("label_tables", {}).get(spec.get("labels", ""), {})
        low = {k.lower(): v for k, v in table.items()}
        lut = np.ones(65536, dtype=np.float32)  # label maps are uint8 or uint16
        for i, name in names.items():
            lut[int(i)] = low.get(str(name).lower(), 1.0)
        return lut

    def _load_view(self, scene: Scene, i: int, res: tuple[int, int], lut: np.ndarray | None) -> dict[str, Any]:
        mods = ["image", self.depth_modality]
        if self.non_ambiguous_modality:
            mods.append(self.non_ambiguous_modality)
        with_labels = lut is not None and len(lut) > 1
        if with_labels:
            mods.append(self.label_modality)
        fr = load_frame(scene, i, modalities=mods)
        cam = scene.camera(i)
        depth = np.nan_to_num(fr[self.depth_modality], nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        if self.max_depth is not None:
            depth[depth > self.max_depth] = 0.0
        nearest: dict[str, np.ndarray] = {"depth": depth}
        if self.non_ambiguous_modality:
            nearest["non_ambiguous"] = np.asarray(fr[self.non_ambiguous_modality], dtype=bool)
        if with_labels:
            nearest["labels"] = fr[self.label_modality]
        cam, img, maps = crop_resize(cam, res, fr["image"], nearest)
        weights = None
        if lut is not None:
            weights = lut[maps["labels"]] if with_labels else np.ones(maps["depth"].shape, dtype=np.float32)
        meta = scene.meta
        return {
            "image": img, "depth": maps["depth"], "camera": cam, "pose": scene.pose(i),
            "non_ambiguous": maps.get("non_ambiguous"), "loss_weights": weights,
            "is_metric_scale": meta.get("scale_type", "metric") == "metric",
            "is_synthetic": str(meta.get("dataset_name", "")) in SYNTHETIC_DATASETS,
            "dataset": str(meta.get("dataset_name", "")), "label": str(meta.get("scene_name", scene.path.name)),
            "instance": f"images/{scene.frames[i]['frame_name']}", "frame_idx": i,
        }

    def _parse_index(self, idx: Any) -> tuple[int, int, int | None]:
        if isinstance(idx, (tuple, list)):
            if len(idx) != 3:
                raise LoaderConfigError(f"index {idx!r}: expected sample_idx or (sample_idx, resolution_idx, "
                                        "num_views)")
            s, r, v = (int(x) for x in idx)
            if not 0 <= r < len(self.resolutions):
                raise LoaderConfigError(f"resolution_idx {r} out of range: {len(self.resolutions)} resolution(s)")
            if v < 1:
                raise LoaderConfigError(f"num_views {v} in index {idx!r} must be >= 1")
            return s, r, v
        return int(idx), 0, None

    def get_sample(self, idx: Any) -> Any:
        """One sample without retries (what ``__getitem__`` returns when it succeeds)."""
        s, r, v = self._parse_index(idx)
        rng = np.random.default_rng([self.seed, self.epoch, s, r, v or 0])
        if v is None:
            v = self.num_views_options[int(rng.integers(len(self.num_views_options)))]
        _, scene_dir = self.locate(s)
        scene = self._scene(scene_dir)
        chosen = self._select(scene, v, rng)
        lut = self._weight_lut(scene)
        res = self.resolutions[r]
        raw = [self._load_view(scene, i, res, lut) for i in chosen]
        for rec in raw:
            rec["idx"] = (s, r, v)
        if self.output == "vggt":
            return to_vggt(raw, self.relative_to_first)
        return to_views(raw, self.relative_to_first, self.img_norm)

    def __getitem__(self, idx: Any) -> Any:
        try:
            return self.get_sample(idx)
        except (OSError, ValueError) as e:
            if self.max_retries <= 0 or isinstance(e, LoaderConfigError):
                raise
            err = e
        s, r, v = self._parse_index(idx)
        rng = np.random.default_rng([self.seed, self.epoch, s, r, v or 0, 1])
        for _ in range(self.max_retries):
            other = int(rng.integers(len(self)))
            log.warning("sample %s failed (%s); retrying with sample %d", idx, err, other)
            try:
                return self.get_sample((other, r, v) if v is not None else other)
            except (OSError, ValueError) as e:
                err = e
        raise err


def random_walk(covis: np.ndarray, k: int, thres: float, rng: np.random.Generator, max_restarts: int = 4) -> list[int]:
    """``k`` frame indices forming a connected subgraph of the thresholded covisibility graph (WAI §4.3).

    At node c the scores ``(M[c, :] + M[:, c]) / 2`` are divided by their own ``[c]`` entry; neighbours above
    ``thres`` are adjacent. A random unvisited neighbour is taken, backtracking when none is left; up to
    ``max_restarts`` restarts exclude visited nodes; a walk shorter than ``k`` is padded with repeats.
    ``k == N`` gives a permutation, ``k > N`` sampling with replacement.
    """
    n = covis.shape[0]
    if k == n:
        return [int(i) for i in rng.permutation(n)]
    if k > n:
        return [int(i) for i in rng.choice(n, size=k, replace=True)]
    excluded = np.zeros(n, dtype=bool)
    best: list[int] = []
    for _ in range(max_restarts + 1):
        free = np.flatnonzero(~excluded)
        if len(free) == 0:
            break
        start = int(free[int(rng.integers(len(free)))])
        visited, stack = [start], [start]
        seen = np.zeros(n, dtype=bool)
        seen[start] = True
        while len(visited) < k and stack:
            c = stack[-1]
            row = (np.asarray(covis[c, :], dtype=np.float64) + np.asarray(covis[:, c], dtype=np.float64)) / 2.0
            if row[c] > 0:
                row = row / row[c]
            row[c] = 0.0
            nbrs = np.flatnonzero((row > thres) & ~seen)
            if len(nbrs) == 0:
                stack.pop()
                continue
            nxt = int(nbrs[int(rng.integers(len(nbrs)))])
            seen[nxt] = True
            visited.append(nxt)
            stack.append(nxt)
        if len(visited) > len(best):
            best = visited
        if len(best) >= k:
            break
        excluded |= seen
    if len(best) < k:
        best = best + [int(i) for i in rng.choice(best, size=k - len(best))]
    return best
