"""Batched fetching (``WAIDataset.__getitems__`` -> ``ViewBatch`` -> ``collate_views`` pass-through) and the
in-place geometry kernels: same values as ``ds[i]`` + collation, bit for bit, in and out of DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from wai.format.cameras import Camera  # noqa: E402
from wai.format.codecs import cv2  # noqa: E402
from wai.format.conventions import CYLINDRICAL, PINHOLE  # noqa: E402
from wai.loaders import ViewBatchSampler, WAIDataset, collate_views  # noqa: E402
from wai.loaders.covisibility import run_covisibility  # noqa: E402
from wai.loaders.dataset import _worker_collates_with  # noqa: E402
from wai.loaders.views import (  # noqa: E402
    ViewBatch,
    _batch_empty,
    _cv_into,
    geometry_into,
    ray_grid,
    to_views_batch,
    view_geometry,
)
from wai.synthetic.scenes import write_street_dataset  # noqa: E402


@pytest.fixture(scope="module")
def pin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pin")
    write_street_dataset(root, n_scenes=2, n_frames=3, camera_model=PINHOLE, size=(64, 48), seed=3, n_agents=2)
    run_covisibility(root, target_size=32)
    return root


@pytest.fixture(scope="module")
def cyl_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cyl")
    write_street_dataset(root, n_scenes=1, n_frames=2, camera_model=CYLINDRICAL, size=(128, 32), seed=5,
                         n_agents=2)
    return root


def _same(a, b, where="batch"):
    """Exact equality of collated / per-sample structures: types, key order, dtypes, shapes, values."""
    assert type(a) is type(b) or (isinstance(a, list) and isinstance(b, list)), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), (where, list(a), list(b))
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


CASES = {
    "pinhole": dict(num_views=3, resolution=(42, 28), sampling="covisibility", covisibility_thres=0.05),
    "labels_masks_maxdepth_relative": dict(num_views=2, resolution=(48, 32), sampling="random",
                                           label_weights={"road": 0.5, "car": 2.0}, max_depth=10.0,
                                           non_ambiguous_modality="semantic", relative_to_first=True,
                                           transform="colorjitter", data_norm_type="dust3r"),
    "principal_point_aug": dict(num_views=2, resolution=(42, 28), sampling="random", aug_crop=8),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_getitems_equals_getitem_then_collate(pin_root, case):
    ds = WAIDataset(pin_root, samples_per_epoch=6, **CASES[case])
    idx = [(0, 0, 0), (3, 0, 0), (5, 0, 0)]
    batch = ds.__getitems__(idx)
    assert isinstance(batch, ViewBatch) and len(batch) == 3
    ref = [ds[i] for i in idx]
    _same(list(batch), ref, "samples")
    collated = collate_views(batch)
    _same(collated, collate_views(ref), "collate_views")
    _same(torch.utils.data.default_collate(batch), collated, "default_collate")
    raws = [ds._raw_sample(i) for i in idx]
    _same(collate_views(to_views_batch(raws, ds.relative_to_first, ds.data_norm_type)), collated, "to_views_batch")
    assert collated[0]["pts3d"].shape == (3, 28 if case != "labels_masks_maxdepth_relative" else 32,
                                          42 if case != "labels_masks_maxdepth_relative" else 48, 3)


@pytest.mark.parametrize("cylindrical", ["native", "pinhole"])
def test_getitems_cylindrical(cyl_root, cylindrical):
    ds = WAIDataset(cyl_root, num_views=2, resolution=(48, 24) if cylindrical == "pinhole" else (96, 24),
                    sampling="random", cylindrical=cylindrical, samples_per_epoch=3)
    batch = ds.__getitems__([0, 1, 2])
    assert isinstance(batch, ViewBatch)
    _same(collate_views(batch), collate_views([ds[i] for i in range(3)]))


def test_mixed_batch_falls_back_to_samples(pin_root):
    ds = WAIDataset(pin_root, num_views=(2, 3), resolution=[(32, 24), (24, 32)], covisibility_thres=0.05,
                    samples_per_epoch=6)
    idx = [(0, 0, 0), (1, 1, 0), (2, 0, 1)]  # a different resolution and a different view count
    got = ds.__getitems__(idx)
    assert not isinstance(got, ViewBatch) and len(got) == 3
    _same(got, [ds[i] for i in idx], "samples")
    vg = WAIDataset(pin_root, num_views=2, resolution=(42, 28), output="vggt", sampling="random", samples_per_epoch=2)
    _same(vg.__getitems__([0, 1]), [vg[0], vg[1]], "vggt")


def test_dataloader_workers_pass_batches_through_shared_memory(pin_root):
    ds = WAIDataset(pin_root, num_views=2, resolution=(32, 24), covisibility_thres=0.05, samples_per_epoch=8)
    sampler = ViewBatchSampler(ds, images_per_gpu=4, seed=0)
    ref = [collate_views([ds[i] for i in b]) for b in sampler]
    assert not _worker_collates_with(collate_views)  # main process: heap tensors, like default_collate
    for collate in (collate_views, None):  # None: torch's default_collate on the ViewBatch
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=1)
        got = list(loader)
        _same(got, ref, "dataloader")
        assert got[0][0]["pts3d"].is_shared()


def test_geometry_into_cleans_depth_like_before():
    cam = Camera(PINHOLE, 16, 12, 10.0, 11.0, 7.3, 5.1)
    rng = np.random.default_rng(0)
    for dirty in (False, True):
        depth = rng.uniform(-1.0, 5.0, (12, 16)).astype(np.float32)
        if dirty:
            depth[0, 0], depth[1, 1], depth[2, 2], depth[3, 3] = np.nan, np.inf, -np.inf, -0.0
        else:
            depth = np.abs(depth)
        T = np.eye(4)
        T[:3, 3] = [1.0, 2.0, 3.0]
        # the previous formulation: non-finite -> 0, then negative -> 0 and ambiguous
        d = np.where(np.isfinite(depth), depth, np.float32(0.0))
        ambiguous = d < 0
        d = np.where(ambiguous, np.float32(0.0), d)
        geo = view_geometry(cam, depth[:, ::-1][:, ::-1], T)  # a non-contiguous input
        np.testing.assert_array_equal(geo["depth"], d)
        np.testing.assert_array_equal(geo["ambiguous"], ambiguous)
        np.testing.assert_array_equal(geo["valid_mask"], d > 0)
        g = ray_grid(cam)
        np.testing.assert_array_equal(geo["pts3d_cam"], np.dstack([d * g.f0, np.broadcast_to(d * g.f1, d.shape), d]))
        np.testing.assert_array_equal(geo["depth_along_ray"][..., 0], d * g.norm)
        np.testing.assert_array_equal(geo["pts3d"], cv2.transform(geo["pts3d_cam"], T[:3, :4]))
        # into preallocated outputs without the mask: same values
        outs = [np.empty((12, 16), np.float32), np.empty((12, 16, 3), np.float32), np.empty((12, 16, 3), np.float32),
                np.empty((12, 16), np.float32), np.empty((12, 16), bool)]
        geometry_into(cam, depth, T, *outs)
        for a, key in zip(outs, ("depth", "pts3d_cam", "pts3d")):
            np.testing.assert_array_equal(a, geo[key])


def test_cv_into_copies_when_opencv_allocates():
    d = np.ones((4, 5), np.float32)
    out = np.zeros((4, 5, 3), np.float32)
    assert _cv_into(cv2.merge([d, d, 2 * d], dst=out), out) is out and out[0, 0, 2] == 2
    odd = np.zeros((4, 5, 3), np.float64)  # another type: OpenCV returns a new array and leaves dst alone
    res = _cv_into(cv2.merge([d, d, 3 * d], dst=odd), odd)
    assert res is odd and (odd[..., 2] == 3).all()


def test_shared_batch_tensors():
    t = _batch_empty((2, 64, 96, 3), torch.float32, shared=True)
    assert t.is_shared() and t.shape == (2, 64, 96, 3) and t.is_contiguous()
    t.fill_(1.5)
    assert float(t.sum()) == 1.5 * t.numel()
    assert not _batch_empty((2, 3), torch.bool, shared=False).is_shared()
