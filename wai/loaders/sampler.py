"""``ViewBatchSampler``: rank-aware batches with one resolution and one view count each (MapAnything/VGGT style).

Every rank builds the same schedule for an epoch from ``default_rng([seed, epoch])``: a permutation of the
sample indices, cut into consecutive batches; each batch draws a resolution index and a view count and holds
``max(1, images_per_gpu // num_views)`` samples (or a fixed ``batch_size``). Batch ``b`` goes to rank
``b % world_size``; the batch count is truncated to a multiple of ``world_size``, so ranks get disjoint samples
and the same number of batches. Batches yield MapAnything's tuple indices
``(sample_idx, aspect_ratio_idx, num_views_idx)`` (``num_views_idx`` indexes the dataset's ``num_views_options``).

``group_by`` (``camera_model``, ``dataset`` or both) keeps every batch to one group: the permuted samples are
split by group (order kept), each group is cut into batches, and the batches of all groups are shuffled
together. Every sample still appears once per epoch, so the mixing weights hold per epoch; what changes is that
each step sees one group, and each group's last partial batch is dropped (up to one batch per group and epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from wai.errors import import_optional
from wai.loaders.errors import LoaderConfigError

torch = import_optional("torch", "torch")

Batch = list[tuple[int, int, int]]


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else the initialised process group's, else ``(0, 1)``."""
    group = torch.distributed.is_available() and torch.distributed.is_initialized()
    if world_size is None:
        world_size = torch.distributed.get_world_size() if group else 1
    if rank is None:
        rank = torch.distributed.get_rank() if group else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise LoaderConfigError(f"rank={rank}, world_size={world_size}: need world_size >= 1 and 0 <= rank < it")
    return int(rank), int(world_size)


class ViewBatchSampler(torch.utils.data.Sampler):
    """Batch sampler for ``WAIDataset`` (use as ``DataLoader(ds, batch_sampler=..., collate_fn=collate_views)``).

    Args:
        dataset: needs ``len()``; ``resolutions`` and ``num_views_options`` are read when present, and
            ``sample_groups(group_by)`` when ``group_by`` is set.
        images_per_gpu: image budget per batch; ``batch = max(1, images_per_gpu // num_views)``.
        rank, world_size: default to the initialised process group (``(0, 1)`` without one).
        shuffle: permute the samples every epoch (resolution/view-count draws are random either way).
        seed: schedule seed, identical on every rank.
        drop_last: with one rank, False keeps the epoch's last, partial batch (several ranks always drop it).
        batch_size: a fixed number of samples per batch instead of the image budget.
        group_by: ``camera_model``, ``dataset`` or both: every batch holds one group (see the module docstring).
    """

    def __init__(self, dataset: Any, images_per_gpu: int, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True, batch_size: int | None = None,
                 group_by: str | Sequence[str] | None = None) -> None:
        if int(images_per_gpu) < 1:
            raise LoaderConfigError(f"images_per_gpu={images_per_gpu!r}: must be >= 1")
        if batch_size is not None and int(batch_size) < 1:
            raise LoaderConfigError(f"batch_size={batch_size!r}: must be >= 1")
        self.dataset = dataset
        self.images_per_gpu = int(images_per_gpu)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.rank, self.world_size = dist_info(rank, world_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.n_resolutions = len(getattr(dataset, "resolutions", [None]))
        self.num_views_options = list(getattr(dataset, "num_views_options", [1]))
        self.group_by = group_by
        self._groups: np.ndarray | None = None
        if group_by is not None:
            if not hasattr(dataset, "sample_groups"):
                raise LoaderConfigError(f"group_by={group_by!r} needs a dataset with sample_groups() (WAIDataset)")
            self._groups = np.asarray(dataset.sample_groups(group_by))
        self._cache: tuple[int, list[Batch]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (same on every rank); also forwarded to the dataset when it has ``set_epoch``."""
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def _cut(self, order: np.ndarray, rng: np.random.Generator, keep_partial: bool) -> list[Batch]:
        batches: list[Batch] = []
        pos, n = 0, len(order)
        while pos < n:
            r = int(rng.integers(self.n_resolutions))
            vi = int(rng.integers(len(self.num_views_options)))
            b = self.batch_size or max(1, self.images_per_gpu // int(self.num_views_options[vi]))
            if pos + b > n and not keep_partial:
                break
            batches.append([(int(i), r, vi) for i in order[pos : pos + b]])
            pos += b
        return batches

    def schedule(self) -> list[Batch]:
        """All batches of the epoch (every rank's), before round-robin assignment and truncation."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.dataset)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        keep_partial = not self.drop_last and self.world_size == 1
        if self._groups is None:
            return self._cut(order, rng, keep_partial)
        batches: list[Batch] = []
        for g in np.unique(self._groups):
            batches.extend(self._cut(order[self._groups[order] == g], rng, keep_partial))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _mine(self) -> list[Batch]:
        if self._cache is None or self._cache[0] != self.epoch:
            all_b = self.schedule()
            usable = len(all_b) // self.world_size * self.world_size
            self._cache = (self.epoch, all_b[self.rank : usable : self.world_size])
        return self._cache[1]

    def __iter__(self) -> Iterator[Batch]:
        yield from self._mine()

    def __len__(self) -> int:
        return len(self._mine())


class FlatBatchSampler(torch.utils.data.Sampler):
    """The indices of a ``ViewBatchSampler`` one by one (``DataLoader(sampler=..., batch_size=...)``)."""

    def __init__(self, batches: ViewBatchSampler) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the batch sampler."""
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for b in self.batches:
            yield from b

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches)
