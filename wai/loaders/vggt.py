"""VGGT training on converted data without glue code.

Two entry points, both in the shapes VGGT's training code (``facebookresearch/vggt``, ``training/``) drives:

* ``WAIVGGTDataset``: a dataset in the shape of VGGT's ``BaseDataset`` (``common_conf`` first,
  ``__getitem__((seq_index, img_per_seq, aspect_ratio))`` -> ``get_data(...)``, ``get_target_shape``), returning
  the per-sequence dict of numpy lists that VGGT's ``ComposedDataset`` turns into tensors. Put it in VGGT's
  config as one more entry of ``data.train.dataset.dataset_configs``.
* ``WAIVGGTLoader``: an object with ``get_loader(epoch)`` (the shape of VGGT's ``DynamicTorchDataset``) whose
  rank-aware batch sampler draws one image count and one aspect ratio per batch and yields
  ``(idx, image_num, aspect_ratio)``; batches are VGGT's collated tensors. Use it as ``data.train._target_``
  when VGGT's own data package is not wanted.

Contract (VGGT's): images float32 in [0, 1], H and W multiples of the patch size 14 (``get_target_shape``:
W = ``img_size``, H = ``int(img_size * aspect_ratio)`` rounded down to a multiple of 14); depths are z-depth
(0 = invalid); extrinsics world-to-camera [3, 4] (OpenCV); the principal point at the image centre
(``crop='principal_point'``, the default); CYLINDRICAL views are refused unless ``cylindrical='pinhole'``
(``pinhole_views`` pinhole views cut from each panorama with exact intrinsics, z-depth and pose).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wai.errors import import_optional
from wai.loaders.dataset import WAIDataset
from wai.loaders.errors import LoaderConfigError
from wai.loaders.sampler import dist_info
from wai.loaders.views import stack_vggt, vggt_arrays

torch = import_optional("torch", "torch")

#: VGGT's defaults (``training/config/default.yaml``) used when ``common_conf`` does not say otherwise.
DEFAULT_IMG_SIZE = 518
DEFAULT_PATCH_SIZE = 14


def _conf(conf: Any, key: str, default: Any) -> Any:
    """``conf.key`` for an OmegaConf/attribute object or a mapping; ``default`` when absent or None."""
    if conf is None:
        return default
    val = conf.get(key, None) if isinstance(conf, Mapping) else getattr(conf, key, None)
    if val is None and hasattr(conf, "get") and not isinstance(conf, Mapping):
        try:
            val = conf.get(key, None)
        except TypeError:
            val = None
    return default if val is None else val


def target_shape(img_size: int, aspect_ratio: float, patch_size: int = DEFAULT_PATCH_SIZE) -> tuple[int, int]:
    """``(H, W)`` of VGGT's ``get_target_shape``: W = img_size, H = int(img_size * aspect) floored to the patch."""
    if not aspect_ratio > 0:
        raise LoaderConfigError(f"aspect_ratio={aspect_ratio!r}: expected H/W > 0 (VGGT draws it in augs.aspects)")
    if img_size % patch_size:
        raise LoaderConfigError(f"img_size={img_size} is not a multiple of patch_size={patch_size}; use "
                                f"{round(img_size / patch_size) * patch_size}")
    short = int(img_size * aspect_ratio)
    short = short // patch_size * patch_size
    if short < patch_size:
        raise LoaderConfigError(f"aspect_ratio={aspect_ratio} gives H={int(img_size * aspect_ratio)} < one "
                                f"{patch_size}-pixel patch at img_size={img_size}")
    return short, int(img_size)


class WAIVGGTDataset(torch.utils.data.Dataset):
    """Converted WAI roots as one VGGT base dataset (see the module docstring).

    Args:
        common_conf: VGGT's ``common_config`` (``img_size``, ``patch_size``, ``training``; others are ignored).
        roots: dataset root(s), ``(root, weight)`` pairs as for ``WAIDataset``.
        split: scene-list split.
        len_train, len_test: samples per epoch (VGGT's names) for ``training`` True/False; default: the scenes.
        sampling, seed, crop, cylindrical, pinhole_views: as ``WAIDataset`` (crop defaults to
            ``principal_point``, cylindrical to ``refuse``).
        tensors: return ``ComposedDataset``-style tensors instead of numpy lists (``WAIVGGTLoader`` sets it).
        options: any other ``WAIDataset`` keyword (``covisibility_thres``, ``label_weights``, ...).
    """

    def __init__(self, common_conf: Any = None, roots: Any = None, split: str = "train", len_train: int | None = None,
                 len_test: int | None = None, sampling: str = "covisibility", seed: int = 0,
                 crop: str = "principal_point", cylindrical: str = "refuse", pinhole_views: int = 4,
                 img_size: int | None = None, patch_size: int | None = None, relative_to_first: bool = False,
                 tensors: bool = False, **options: Any) -> None:
        super().__init__()
        self.img_size = int(img_size or _conf(common_conf, "img_size", DEFAULT_IMG_SIZE))
        self.patch_size = int(patch_size or _conf(common_conf, "patch_size", DEFAULT_PATCH_SIZE))
        self.training = bool(_conf(common_conf, "training", True))
        self.relative_to_first = bool(relative_to_first)
        self.tensors = bool(tensors)
        if roots is None:
            raise LoaderConfigError("WAIVGGTDataset needs roots=<converted dataset root(s)>")
        target_shape(self.img_size, 1.0, self.patch_size)  # validates img_size
        samples = len_train if self.training else len_test
        self.wai = WAIDataset(roots, split=split, num_views=2, resolution=(self.img_size, self.img_size),
                              sampling=sampling, output="vggt", seed=seed, crop=crop, cylindrical=cylindrical,
                              pinhole_views=pinhole_views, patch_size=self.patch_size, samples_per_epoch=samples,
                              **options)
        self.len_train = len(self.wai)
        self.epoch = 0

    def __len__(self) -> int:
        return self.len_train

    def set_epoch(self, epoch: int) -> None:
        """Draw other views for the same index next epoch."""
        self.epoch = int(epoch)
        self.wai.set_epoch(epoch)

    def get_target_shape(self, aspect_ratio: float) -> np.ndarray:
        """``[H, W]`` for an aspect ratio H/W (VGGT's rule; both multiples of the patch size)."""
        return np.array(target_shape(self.img_size, aspect_ratio, self.patch_size))

    def __getitem__(self, idx_N: Any) -> dict[str, Any]:
        if not (isinstance(idx_N, (tuple, list)) and len(idx_N) == 3):
            raise LoaderConfigError(f"index {idx_N!r}: VGGT indexes (seq_index, img_per_seq, aspect_ratio)")
        seq_index, img_per_seq, aspect_ratio = idx_N
        return self.get_data(seq_index=seq_index, img_per_seq=img_per_seq, aspect_ratio=aspect_ratio)

    def get_data(self, seq_index: int | None = None, img_per_seq: int | None = None, seq_name: str | None = None,
                 ids: Any = None, aspect_ratio: float = 1.0) -> dict[str, Any]:
        """One sequence of ``img_per_seq`` views at VGGT's target shape for ``aspect_ratio`` (H/W).

        Returns numpy lists ``images`` (uint8 [H, W, 3]), ``depths``, ``extrinsics`` [3, 4] (world-to-camera),
        ``intrinsics``, ``cam_points``, ``world_points``, ``point_masks``, plus ``seq_name``, ``ids`` and
        ``frame_num`` (or, with ``tensors``, the stacked tensors of VGGT's ``ComposedDataset``).
        """
        if seq_name is not None or ids is not None:
            raise LoaderConfigError("WAIVGGTDataset.get_data selects frames itself; seq_name/ids are not supported")
        if seq_index is None or img_per_seq is None:
            raise LoaderConfigError("get_data needs seq_index and img_per_seq")
        n = int(img_per_seq)
        if n < 1:
            raise LoaderConfigError(f"img_per_seq={img_per_seq!r}: expected >= 1")
        h, w = target_shape(self.img_size, float(aspect_ratio), self.patch_size)
        s = int(seq_index) % len(self.wai)
        rng = np.random.default_rng([self.wai.seed, self.epoch, s, n, int(round(float(aspect_ratio) * 1000))])
        raw = self.wai.load_raw(s, n, (w, h), rng)
        out = vggt_arrays(raw, self.relative_to_first, self.wai.profile_stages)
        return stack_vggt(out) if self.tensors else out


class VGGTBatchSampler(torch.utils.data.Sampler):
    """Rank-aware batches of ``(idx, image_num, aspect_ratio)`` with one image count and aspect ratio per batch.

    ``image_num`` is drawn uniformly from ``img_nums`` (inclusive), ``aspect_ratio`` uniformly from ``aspects``
    (rounded to 0.01, as VGGT does); ``batch = max(1, max_img_per_gpu // image_num)``. The schedule comes from
    ``default_rng([seed, epoch])`` on every rank; batch ``b`` goes to rank ``b % world_size`` and the count is
    truncated to a multiple of ``world_size`` (disjoint samples, equal batch counts).
    """

    def __init__(self, n_samples: int, img_nums: Any = (2, 24), aspects: Any = (0.33, 1.0),
                 max_img_per_gpu: int = 48, rank: int | None = None, world_size: int | None = None, seed: int = 42,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        lo, hi = (int(x) for x in img_nums)
        a0, a1 = (float(x) for x in aspects)
        if not 1 <= lo <= hi:
            raise LoaderConfigError(f"img_nums={list(img_nums)}: expected [min, max] with 1 <= min <= max")
        if not 0 < a0 <= a1:
            raise LoaderConfigError(f"aspects={list(aspects)}: expected [min, max] with 0 < min <= max")
        if int(max_img_per_gpu) < 1:
            raise LoaderConfigError(f"max_img_per_gpu={max_img_per_gpu!r}: expected >= 1")
        self.n, self.img_nums, self.aspects = int(n_samples), (lo, hi), (a0, a1)
        self.max_img_per_gpu = int(max_img_per_gpu)
        self.rank, self.world_size = dist_info(rank, world_size)
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.epoch = 0
        self._cache: tuple[int, list[list[tuple[int, int, float]]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (same schedule on every rank)."""
        self.epoch = int(epoch)

    def schedule(self) -> list[list[tuple[int, int, float]]]:
        """Every rank's batches of the epoch, before assignment."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        out, pos = [], 0
        keep_partial = not self.drop_last and self.world_size == 1
        while pos < self.n:
            k = int(rng.integers(self.img_nums[0], self.img_nums[1] + 1))
            a = round(float(rng.uniform(self.aspects[0], self.aspects[1])), 2)
            b = max(1, self.max_img_per_gpu // k)
            if pos + b > self.n and not keep_partial:
                break
            out.append([(int(i), k, a) for i in order[pos : pos + b]])
            pos += b
        return out

    def _mine(self) -> list[list[tuple[int, int, float]]]:
        if self._cache is None or self._cache[0] != self.epoch:
            all_b = self.schedule()
            usable = len(all_b) // self.world_size * self.world_size
            self._cache = (self.epoch, all_b[self.rank : usable : self.world_size])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[tuple[int, int, float]]]:
        yield from self._mine()

    def __len__(self) -> int:
        return len(self._mine())


class WAIVGGTLoader:
    """``get_loader(epoch)`` over converted data, in the shape of VGGT's ``DynamicTorchDataset``.

    Args:
        dataset: a ``WAIVGGTDataset``, the keyword dict of one (``roots``, ``split``, ...), or a config with
            ``_target_`` (instantiated with hydra and ``common_conf=common_config``, e.g. VGGT's ComposedDataset).
        common_config: VGGT's ``common_config``: ``img_size``, ``patch_size``, ``img_nums`` ([min, max] images
            per sequence), ``augs.aspects`` ([min, max] H/W), ``training``.
        num_workers, shuffle, pin_memory, drop_last, collate_fn, worker_init_fn, persistent_workers, seed,
            max_img_per_gpu: as VGGT's (``batch = max_img_per_gpu // image_num``).
        rank, world_size: default to the initialised process group.
    """

    def __init__(self, dataset: Any, common_config: Any = None, num_workers: int = 8, shuffle: bool = True,
                 pin_memory: bool = False, drop_last: bool = True, collate_fn: Any = None, worker_init_fn: Any = None,
                 persistent_workers: bool = False, seed: int = 42, max_img_per_gpu: int = 48,
                 rank: int | None = None, world_size: int | None = None) -> None:
        if isinstance(dataset, WAIVGGTDataset):
            self.dataset = dataset
            dataset.tensors = True
        elif isinstance(dataset, Mapping) and "_target_" in dataset:
            from hydra.utils import instantiate  # VGGT's own stack (hydra is its dependency)

            self.dataset = instantiate(dataset, common_conf=common_config, _recursive_=False)
        elif isinstance(dataset, Mapping):
            kw = dict(dataset)
            if "roots" in kw and isinstance(kw["roots"], (list, tuple)):
                kw["roots"] = [tuple(r) if isinstance(r, (list, tuple)) else r for r in kw["roots"]]
            self.dataset = WAIVGGTDataset(common_conf=common_config, tensors=True, **kw)
        elif isinstance(dataset, (str, Path)):
            self.dataset = WAIVGGTDataset(common_conf=common_config, roots=dataset, tensors=True)
        else:
            raise LoaderConfigError(f"dataset={dataset!r}: expected a WAIVGGTDataset, its keyword dict or a "
                                    "hydra config with _target_")
        augs = _conf(common_config, "augs", None)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.collate_fn, self.worker_init_fn = collate_fn, worker_init_fn
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.seed = int(seed)
        self.batch_sampler = VGGTBatchSampler(len(self.dataset), _conf(common_config, "img_nums", (2, 24)),
                                              _conf(augs, "aspects", (0.33, 1.0)), max_img_per_gpu, rank=rank,
                                              world_size=world_size, seed=seed, shuffle=shuffle, drop_last=drop_last)

    def get_loader(self, epoch: int) -> Any:
        """The epoch's ``DataLoader`` (its batch sampler and the dataset are set to ``epoch``)."""
        self.batch_sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=self.batch_sampler,
                                           num_workers=self.num_workers, pin_memory=self.pin_memory,
                                           collate_fn=self.collate_fn, worker_init_fn=self.worker_init_fn,
                                           persistent_workers=self.persistent_workers)


__all__ = ["VGGTBatchSampler", "WAIVGGTDataset", "WAIVGGTLoader", "target_shape"]
