"""MapAnything training on converted data without glue code: the config line for its dataset string.

MapAnything's ``get_train_data_loader`` ``eval``'s the ``dataset.train_dataset`` string inside
``mapanything.datasets``; a class from another package is reachable there through ``__import__``. The
string below builds a ``WAIDataset`` (MapAnything's keywords ``ROOT``, ``split``, ``resolution``,
``num_views``, ``variable_num_views``, ``covisibility_thres``, ``principal_point_centered``,
``data_norm_type``, ``transform``, ``aug_crop``, ``seed``, ``max_num_retries`` are accepted), and ``N @`` sets
the samples per epoch as for its own datasets. Then ``dataset.make_sampler(...)`` returns our rank-aware
sampler and each view dict holds only keys its training step accepts (no strings outside its skip list).
"""

from __future__ import annotations

from typing import Any

#: The expression that names ``WAIDataset`` inside MapAnything's ``eval`` (no import line needed there).
DATASET_EXPR = "__import__('wai.loaders', fromlist=['WAIDataset']).WAIDataset"


def dataset_string(samples_per_epoch: int | None = None, **kwargs: Any) -> str:
    """A ``train_dataset`` string for MapAnything's config: ``"N @ <WAIDataset expr>(k=v, ...)"``.

    ``kwargs`` are ``WAIDataset`` keywords (MapAnything's names work); values are written with ``repr``.
    """
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    call = f"{DATASET_EXPR}({args})"
    return f"{int(samples_per_epoch)} @ {call}" if samples_per_epoch is not None else call


__all__ = ["DATASET_EXPR", "dataset_string"]
