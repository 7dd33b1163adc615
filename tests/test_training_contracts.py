"""Contracts read from MapAnything's and VGGT's training code (facebookresearch/map-anything f7ebafb,
facebookresearch/vggt ``training/``), pinned without their code: key sets, dtypes, shapes, normalisation names,
pose direction, sampler signatures and index meaning, principal-point centring, multiples of 14, CYLINDRICAL
refusal and the pinhole cuts of panoramas. No network, no MapAnything/VGGT install.
"""

from __future__ import annotations

import builtins
import inspect
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from wai.format.cameras import Camera  # noqa: E402
from wai.format.conventions import CYLINDRICAL, PINHOLE  # noqa: E402
from wai.loaders import LoaderConfigError, WAIDataset, WAIVGGTDataset, WAIVGGTLoader  # noqa: E402
from wai.loaders.covisibility import run_covisibility  # noqa: E402
from wai.loaders.mapanything import dataset_string  # noqa: E402
from wai.loaders.vggt import target_shape  # noqa: E402
from wai.loaders.views import CAMERA_MODEL_IDS, DATA_NORM_TYPES  # noqa: E402
from wai.synthetic.scenes import write_scene, write_scene_lists, write_street_dataset  # noqa: E402
from wai.synthetic.world import World, look_at  # noqa: E402

#: Keys that MapAnything's loss_of_one_batch_multi_view (mapanything/utils/inference.py) never moves .to(device).
MAPANYTHING_SKIP = {"depthmap", "dataset", "label", "instance", "idx", "true_shape", "rng", "data_norm_type"}
#: Keys its WAI datasets put in every view (base_dataset.py) that its losses and model read.
MAPANYTHING_KEYS = {"img", "depthmap", "camera_pose", "camera_intrinsics", "camera_pose_quats", "camera_pose_trans",
                    "ray_directions_cam", "depth_along_ray", "pts3d", "pts3d_cam", "valid_mask", "non_ambiguous_mask",
                    "true_shape", "is_metric_scale", "is_synthetic", "dataset", "label", "instance", "idx",
                    "data_norm_type", "rng"}
#: The keyword names of its ``EasyDataset.make_sampler`` (get_train_data_loader passes them by name).
MAKE_SAMPLER_PARAMS = ["batch_size", "shuffle", "world_size", "rank", "drop_last", "max_num_of_images_per_gpu",
                       "use_dynamic_sampler"]
#: The tensor keys VGGT's ComposedDataset builds from a base dataset's get_data dict.
VGGT_LIST_KEYS = ["images", "depths", "extrinsics", "intrinsics", "cam_points", "world_points", "point_masks"]


@pytest.fixture(scope="module")
def pin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pin")
    write_street_dataset(root, n_scenes=2, n_frames=3, camera_model=PINHOLE, size=(64, 48), seed=3, n_agents=2)
    run_covisibility(root, target_size=32)
    return root


@pytest.fixture(scope="module")
def cyl_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cyl")
    write_street_dataset(root, n_scenes=1, n_frames=2, camera_model=CYLINDRICAL, size=(256, 64), seed=5,
                         n_agents=1)
    return root


@pytest.fixture(scope="module")
def offcentre_root(tmp_path_factory):
    """A pinhole scene whose principal point is far from the image centre (as after a KITTI-360 rectification)."""
    root = tmp_path_factory.mktemp("offc")
    cam = Camera.pinhole(80, 60, 52.0, 52.0, 47.3, 24.6)
    poses = [look_at(np.array([x, 0.0, 1.7]), np.array([x + 1.0, 12.0, 3.0])) for x in (-2.0, 0.0, 2.0)]
    write_scene(root, "street_007_000", cam, poses, world=World.street(7))
    write_scene_lists(root, {"train": ["street_007_000"]})
    return root


class _DynamicBatchWrapper:
    """What MapAnything's ``DynamicBatchDatasetWrapper`` does: forward each tuple index, delegate attributes."""

    def __init__(self, ds):
        self.dataset = ds

    def __getitem__(self, idx):
        return self.dataset[idx]

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):
        return getattr(self.dataset, name)


def _mapanything_loader(ds, max_imgs, **kw):
    """MapAnything's get_train_data_loader, reproduced from its documented behaviour (default collate)."""
    sampler = ds.make_sampler(shuffle=True, world_size=kw.get("world_size", 1), rank=kw.get("rank", 0),
                              drop_last=True, max_num_of_images_per_gpu=max_imgs, use_dynamic_sampler=True)
    return torch.utils.data.DataLoader(_DynamicBatchWrapper(ds), batch_sampler=sampler, num_workers=0), sampler


def test_views_survive_mapanything_training_step(pin_root):
    ds = WAIDataset(pin_root, num_views=3, variable_num_views=True, resolution=[(42, 28), (28, 42)],
                    covisibility_thres=0.05, samples_per_epoch=8)
    assert ds.num_views_options == [2, 3] and ds.data_norm_type == "dinov2"
    loader, sampler = _mapanything_loader(ds, max_imgs=6)
    seen = 0
    for batch in loader:
        assert isinstance(batch, list) and len(batch) in (2, 3)
        for v, view in enumerate(batch):
            assert MAPANYTHING_KEYS <= set(view)
            for name, val in view.items():  # what loss_of_one_batch_multi_view does
                if name not in MAPANYTHING_SKIP:
                    view[name] = val.to("cpu", non_blocking=True)
            b = view["img"].shape[0]
            h, w = view["img"].shape[-2:]
            assert view["img"].dtype == torch.float32 and view["img"].shape == (b, 3, h, w)
            assert view["depthmap"].shape == (b, h, w, 1) and view["depth_along_ray"].shape == (b, h, w, 1)
            for k in ("pts3d", "pts3d_cam", "ray_directions_cam"):
                assert view[k].shape == (b, h, w, 3) and view[k].dtype == torch.float32, k
            assert view["valid_mask"].dtype == torch.bool and view["non_ambiguous_mask"].dtype == torch.bool
            assert view["camera_pose"].shape == (b, 4, 4) and view["camera_intrinsics"].shape == (b, 3, 3)
            assert view["camera_pose_quats"].shape == (b, 4) and view["camera_pose_trans"].shape == (b, 3)
            assert view["true_shape"].dtype == torch.int32 and view["true_shape"].tolist() == [[h, w]] * b
            assert view["data_norm_type"] == ["dinov2"] * b  # the encoder reads data_norm_type[0]
            assert view["camera_model_id"].tolist() == [CAMERA_MODEL_IDS[PINHOLE]] * b
            # idx = (sample_idx, aspect_ratio_idx, view_index), collated into three tensors
            s_idx, ar_idx, v_idx = view["idx"]
            assert v_idx.tolist() == [v] * b
            assert (h, w) == ds.resolutions[int(ar_idx[0])][::-1]
            seen += b if v == 0 else 0
    assert seen == sum(len(x) for x in sampler)


def test_pose_direction_and_quaternions(pin_root):
    ds = WAIDataset(pin_root, num_views=2, resolution=(42, 28), sampling="random", samples_per_epoch=2)
    for v in ds[0]:
        T = v["camera_pose"].double().numpy()  # camera-to-world: the camera centre is T[:3, 3]
        m = v["valid_mask"].numpy()
        np.testing.assert_allclose(v["pts3d"].numpy()[m], v["pts3d_cam"].numpy()[m] @ T[:3, :3].T + T[:3, 3],
                                   atol=1e-3)
        assert (v["pts3d_cam"].numpy()[m][:, 2] > 0).all()  # in front of the camera (OpenCV z forward)
        x, y, z, w = v["camera_pose_quats"].double().numpy()  # (x, y, z, w), scipy's as_quat order
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        np.testing.assert_allclose(R, T[:3, :3], atol=1e-5)
        np.testing.assert_allclose(v["camera_pose_trans"].numpy(), T[:3, 3], atol=1e-5)


@pytest.mark.parametrize("name", sorted(DATA_NORM_TYPES))
def test_data_norm_type_uniception_names(pin_root, name):
    kw = dict(num_views=1, resolution=(42, 28), sampling="random", samples_per_epoch=1)
    ident = WAIDataset(pin_root, data_norm_type="identity", **kw)[0][0]["img"]
    v = WAIDataset(pin_root, data_norm_type=name, **kw)[0][0]
    mean, std = (torch.tensor(x).view(3, 1, 1) for x in DATA_NORM_TYPES[name])
    assert v["data_norm_type"] == name
    torch.testing.assert_close(v["img"], (ident - mean) / std, atol=1e-5, rtol=1e-5)
    assert 0.0 <= ident.min() and ident.max() <= 1.0


def test_data_norm_type_default_alias_and_errors(pin_root):
    kw = dict(num_views=1, resolution=(42, 28), sampling="random", samples_per_epoch=1)
    assert WAIDataset(pin_root, **kw).data_norm_type == "dinov2"  # MapAnything's default encoder (dinov2_giant)
    assert WAIDataset(pin_root, img_norm="imagenet", **kw).data_norm_type == "dinov2"
    assert WAIDataset(pin_root, data_norm_type="none", **kw).data_norm_type == "identity"
    with pytest.raises(LoaderConfigError, match="UniCeption"):
        WAIDataset(pin_root, data_norm_type="imagenet_v2", **kw)


def test_make_sampler_signature_and_index_meaning(pin_root):
    ds = WAIDataset(pin_root, num_views=[2, 4], resolution=[(42, 28), (28, 28)], covisibility_thres=0.05,
                    samples_per_epoch=40)
    params = list(inspect.signature(ds.make_sampler).parameters)
    assert params[: len(MAKE_SAMPLER_PARAMS)] == MAKE_SAMPLER_PARAMS
    s0 = ds.make_sampler(shuffle=True, world_size=2, rank=0, drop_last=True, max_num_of_images_per_gpu=8,
                         use_dynamic_sampler=True)
    s1 = ds.make_sampler(shuffle=True, world_size=2, rank=1, drop_last=True, max_num_of_images_per_gpu=8,
                         use_dynamic_sampler=True)
    b0, b1 = list(s0), list(s1)
    assert len(b0) == len(b1) == len(s0) > 0
    for b in b0 + b1:  # (sample_idx, aspect_ratio_idx, num_views_idx), one feature pair per batch
        assert len({(r, k) for _, r, k in b}) == 1
        _, r, k = b[0]
        assert 0 <= r < 2 and 0 <= k < 2
        assert len(b) == max(1, 8 // ds.num_views_options[k])
    assert not {i for b in b0 for i, _, _ in b} & {i for b in b1 for i, _, _ in b}
    views = ds[b0[0][0]]
    assert len(views) == ds.num_views_options[b0[0][0][2]]
    s0.set_epoch(3)
    assert ds.epoch == 3 and list(s0) != b0
    flat = ds.make_sampler(4, shuffle=True, world_size=1, rank=0, drop_last=True, use_dynamic_sampler=False)
    idx = list(flat)
    assert all(isinstance(t, tuple) and len(t) == 3 for t in idx) and len(idx) == len(flat)
    for g in range(0, len(idx), 4):  # runs of batch_size share a resolution and a view count
        assert len({t[1:] for t in idx[g : g + 4]}) == 1
    with pytest.raises(LoaderConfigError, match="max_num_of_images_per_gpu"):
        ds.make_sampler(shuffle=True, use_dynamic_sampler=True)


def test_mapanything_config_string_evaluates(pin_root):
    # the keywords of MapAnything's own WAI dataset lines (configs/dataset/*_wai/train/default.yaml)
    kw = dict(split="train", resolution=[(42, 28)], principal_point_centered=False, aug_crop=4,
              transform="colorjitter+grayscale+gaublur", data_norm_type="dinov2", ROOT=str(pin_root),
              dataset_metadata_dir=str(pin_root / "_meta"), overfit_num_sets=None, variable_num_views=True,
              num_views=3, covisibility_thres=0.05)
    ds = eval(dataset_string(12, **kw), {"__builtins__": builtins})  # what get_train_data_loader does
    assert isinstance(ds, WAIDataset) and len(ds) == 12 and ds.num_views_options == [2, 3]
    assert ds.crop == "center" and ds.aug_crop == 4
    views = ds[(0, 0, 1)]
    assert len(views) == 3 and views[0]["img"].shape == (3, 28, 42)
    plain = WAIDataset(**{**kw, "transform": "imgnorm"}, samples_per_epoch=12)[(0, 0, 1)]
    for a, b in zip(views, plain):  # photometric only: same frames, same geometry
        assert a["instance"] == b["instance"]
        torch.testing.assert_close(a["pts3d"], b["pts3d"])
    assert any(not torch.equal(a["img"], b["img"]) for i in range(4)
               for a, b in zip(ds[(i, 0, 1)], WAIDataset(**{**kw, "transform": "imgnorm"},
                                                         samples_per_epoch=12)[(i, 0, 1)]))
    assert len(5 * ds) == 60


def test_vggt_base_dataset_shape_and_composed_conversion(pin_root):
    conf = SimpleNamespace(img_size=56, patch_size=14, training=True)
    ds = WAIVGGTDataset(conf, roots=str(pin_root), sampling="random", len_train=10)
    assert len(ds) == 10 and list(ds.get_target_shape(0.5)) == [28, 56]
    batch = ds[(3, 4, 0.5)]  # (seq_index, img_per_seq, aspect_ratio) as VGGT's samplers give it
    assert all(len(batch[k]) == 4 for k in VGGT_LIST_KEYS) and batch["frame_num"] == 4
    assert batch["ids"].dtype == np.int64 and isinstance(batch["seq_name"], str)
    # VGGT's ComposedDataset conversion
    images = torch.from_numpy(np.stack(batch["images"]).astype(np.float32)).permute(0, 3, 1, 2).div(255)
    assert images.shape == (4, 3, 28, 56)
    depths = np.stack(batch["depths"])
    E = np.stack(batch["extrinsics"]).astype(np.float64)
    K = np.stack(batch["intrinsics"])
    cam = np.stack(batch["cam_points"])
    world = np.stack(batch["world_points"])
    masks = np.stack(batch["point_masks"])
    assert E.shape == (4, 3, 4) and K.shape == (4, 3, 3) and masks.dtype == bool
    for s in range(4):
        m = masks[s]
        np.testing.assert_allclose(cam[s][..., 2][m], depths[s][m], rtol=1e-6)  # z-depth
        np.testing.assert_allclose(world[s][m] @ E[s][:, :3].T + E[s][:, 3], cam[s][m], atol=2e-3)  # world-to-camera
        assert abs(K[s][0, 2] - 27.5) < 1e-4 and abs(K[s][1, 2] - 13.5) < 1e-4  # principal point at the centre
    assert (depths[~masks] == 0).all()


def test_vggt_principal_point_crop_is_centred_and_exact(offcentre_root):
    ds = WAIDataset(offcentre_root, num_views=3, resolution=(42, 28), output="vggt", sampling="sequential")
    out = ds[0]
    K = out["intrinsics"].double().numpy()
    np.testing.assert_allclose(K[:, 0, 2], (42 - 1) / 2, atol=1e-9)
    np.testing.assert_allclose(K[:, 1, 2], (28 - 1) / 2, atol=1e-9)
    centre = WAIDataset(offcentre_root, num_views=3, resolution=(42, 28), output="vggt", sampling="sequential",
                        crop="center")[0]
    assert abs(float(centre["intrinsics"][0, 0, 2]) - 20.5) > 2.0  # the plain centre crop leaves it off-centre
    world = World.street(7)
    for s in range(3):  # the crop's pixels are what the output camera sees
        E = np.eye(4)
        E[:3] = out["extrinsics"][s].double().numpy()
        cam = Camera.from_K(K[s], 42, 28)
        r = world.render(cam, np.linalg.inv(E))
        m = out["point_masks"][s].numpy() & r["valid"]
        rel = np.abs(out["depths"][s].numpy()[m] - r["depth"][m]) / r["depth"][m]
        assert m.mean() > 0.5 and np.median(rel) < 0.02, float(np.median(rel))


def test_vggt_sizes_multiple_of_14():
    for ar in (0.33, 0.5, 0.75, 1.0):
        h, w = target_shape(518, ar)
        assert w == 518 and h % 14 == 0 and h <= 518 * ar
    with pytest.raises(LoaderConfigError, match="multiple of patch_size"):
        target_shape(500, 1.0)


def test_vggt_layout_refuses_non_multiples_and_cylindrical(pin_root, cyl_root):
    with pytest.raises(LoaderConfigError, match="multiples of the patch size 14"):
        WAIDataset(pin_root, resolution=(50, 40), output="vggt")
    with pytest.raises(LoaderConfigError, match="cylindrical='native'"):
        WAIDataset(cyl_root, resolution=(112, 28), output="vggt", cylindrical="native")
    ds = WAIDataset(cyl_root, num_views=2, resolution=(112, 28), output="vggt", sampling="random")
    with pytest.raises(LoaderConfigError, match="CYLINDRICAL.*cylindrical='pinhole'"):
        ds[0]
    vg = WAIVGGTDataset(SimpleNamespace(img_size=56, patch_size=14), roots=str(cyl_root), sampling="random")
    with pytest.raises(LoaderConfigError, match="CYLINDRICAL"):
        vg[(0, 2, 1.0)]
    views = WAIDataset(cyl_root, num_views=2, resolution=(112, 28), sampling="random")[0]  # views layout: native
    assert views[0]["camera_model_id"] == CAMERA_MODEL_IDS[CYLINDRICAL]


def test_pinhole_views_cut_from_panoramas(cyl_root):
    ds = WAIDataset(cyl_root, num_views=4, resolution=(56, 42), output="vggt", sampling="random",
                    cylindrical="pinhole", pinhole_views=4)
    out = ds[0]
    assert out["images"].shape == (4, 3, 42, 56) and out["camera_model_id"] == CAMERA_MODEL_IDS[PINHOLE]
    K = out["intrinsics"].double().numpy()
    np.testing.assert_allclose(K[:, 0, 2], 27.5)
    np.testing.assert_allclose(K[:, 1, 2], 20.5)
    np.testing.assert_allclose(K[:, 0, 0], 28.0 / np.tan(np.radians(45.0)), rtol=1e-9)  # 90 degrees each
    assert len(set(out["ids"].tolist())) == 1  # four cuts of one panorama
    seed = int(out["seq_name"].split("_")[1]) + int(out["seq_name"].split("_")[2])
    world = World.street(seed)
    yaws = []
    for s in range(4):
        E = np.eye(4)
        E[:3] = out["extrinsics"][s].double().numpy()
        c2w = np.linalg.inv(E)
        np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-6)
        r = world.render(Camera.from_K(K[s], 56, 42), c2w)
        m = out["point_masks"][s].numpy() & r["valid"]
        d = out["depths"][s].numpy()
        assert m.mean() > 0.2
        rel = np.abs(d[m] - r["depth"][m]) / r["depth"][m]  # z-depth of the pinhole camera
        assert np.median(rel) < 0.02, float(np.median(rel))
        yaws.append(np.arctan2(c2w[0, 2], c2w[1, 2]))
    steps = np.sort(np.mod(np.diff(np.unwrap(yaws)), 2 * np.pi))
    np.testing.assert_allclose(steps, np.pi / 2, atol=1e-6)  # 4 cuts 90 degrees apart


def test_vggt_get_loader_batches(pin_root):
    common = {"img_size": 56, "patch_size": 14, "img_nums": [2, 4], "augs": {"aspects": [0.5, 1.0]},
              "training": True}
    loaders = [WAIVGGTLoader({"roots": str(pin_root), "sampling": "random", "len_train": 24}, common,
                             num_workers=0, max_img_per_gpu=8, seed=1, rank=r, world_size=2) for r in (0, 1)]
    ids = []
    for ld in loaders:
        dl = ld.get_loader(epoch=0)
        batches = list(ld.batch_sampler)
        assert len(batches) > 0
        for b in batches:
            assert len({(n, a) for _, n, a in b}) == 1
            _, n, a = b[0]
            assert 2 <= n <= 4 and 0.5 <= a <= 1.0 and isinstance(a, float) and len(b) == max(1, 8 // n)
        ids.append({i for b in batches for i, _, _ in b})
        for batch, b in zip(dl, batches):
            bsz, n, a = len(b), b[0][1], b[0][2]
            h, w = target_shape(56, a)
            assert batch["images"].shape == (bsz, n, 3, h, w) and batch["images"].dtype == torch.float32
            assert 0.0 <= float(batch["images"].min()) and float(batch["images"].max()) <= 1.0
            assert batch["depths"].shape == (bsz, n, h, w) and batch["point_masks"].dtype == torch.bool
            assert batch["extrinsics"].shape == (bsz, n, 3, 4) and batch["intrinsics"].shape == (bsz, n, 3, 3)
            assert batch["world_points"].shape == (bsz, n, h, w, 3) and batch["ids"].dtype == torch.int64
            assert len(batch["seq_name"]) == bsz
    assert not ids[0] & ids[1]
