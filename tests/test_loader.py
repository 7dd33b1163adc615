"""WAIDataset, crop/resize, output layouts, view sampling, label weights and ViewBatchSampler."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from wai.errors import SceneNotFoundError, SchemaError  # noqa: E402
from wai.format.cameras import Camera  # noqa: E402
from wai.format.codecs import cv2  # noqa: E402
from wai.format.conventions import CYLINDRICAL, PINHOLE  # noqa: E402
from wai.format.scene import load_frame, load_scene  # noqa: E402
from wai.loaders import LoaderConfigError, ViewBatchSampler, WAIDataset, collate_views  # noqa: E402
from wai.loaders.covisibility import run_covisibility  # noqa: E402
from wai.loaders.transforms import crop_resize_plan  # noqa: E402
from wai.loaders.views import CAMERA_MODEL_IDS  # noqa: E402
from wai.synthetic.scenes import make_camera, write_scene, write_street_dataset  # noqa: E402
from wai.synthetic.world import World, look_at  # noqa: E402

N_FRAMES, N_AGENTS = 4, 2  # 8 frames per scene


@pytest.fixture(scope="module")
def pin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pin")
    write_street_dataset(root, n_scenes=2, n_frames=N_FRAMES, camera_model=PINHOLE, size=(64, 48), seed=3,
                         n_agents=N_AGENTS)
    run_covisibility(root, target_size=32)
    return root


@pytest.fixture(scope="module")
def cyl_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cyl")
    write_street_dataset(root, n_scenes=1, n_frames=2, camera_model=CYLINDRICAL, size=(128, 32), seed=5,
                         n_agents=N_AGENTS)
    return root


def _all_frames(root, size, **kw):
    """A dataset whose samples are all frames of a scene, in stored order (sequential, num_views = #frames)."""
    n = len(load_scene(next(p.parent for p in root.glob("*/scene_meta.json"))).frames)
    return WAIDataset(root, num_views=n, resolution=size, sampling="sequential", **kw), n


def _world_for(scene_name: str) -> World:
    _, seed, k = scene_name.split("_")
    return World.street(int(seed) + int(k))


@pytest.mark.parametrize("model", [PINHOLE, CYLINDRICAL])
def test_pts3d_match_world_surfaces(model, pin_root, cyl_root):
    root, size = (pin_root, (64, 48)) if model == PINHOLE else (cyl_root, (128, 32))
    ds, n = _all_frames(root, [size])
    views = ds[(0, 0, n)]
    assert [v["frame_idx"] for v in views] == list(range(n))
    world = _world_for(views[0]["label"])
    for v in views[:3]:
        assert v["camera_model_id"] == CAMERA_MODEL_IDS[model]
        cam = Camera.from_frame(load_scene(root / v["label"]).frames[v["frame_idx"]], model)
        r = world.render(cam, v["camera_pose"].double().numpy())
        valid = v["valid_mask"].numpy()
        np.testing.assert_array_equal(valid, r["valid"])
        pts = v["pts3d"].numpy()[valid]
        gt = r["points"][valid]
        err = np.linalg.norm(pts - gt, axis=-1)
        assert err.max() < 1e-3 * np.linalg.norm(gt - v["camera_pose"].numpy()[:3, 3], axis=-1).max() + 1e-3
        # Camera-frame points and rays agree: pts3d_cam = range * unit ray.
        rng = v["depth_along_ray"].numpy()[..., 0]
        np.testing.assert_allclose(v["pts3d_cam"].numpy(), rng[..., None] * v["ray_directions_cam"].numpy(),
                                   atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(v["ray_directions_cam"].numpy(), axis=-1), 1.0, atol=1e-5)
        if model == CYLINDRICAL:  # depthmap is the range for cylindrical views
            np.testing.assert_allclose(v["depthmap"].numpy()[..., 0], rng, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", [PINHOLE, CYLINDRICAL])
def test_crop_resize_keeps_pts3d(model, pin_root, cyl_root):
    root, native = (pin_root, (64, 48)) if model == PINHOLE else (cyl_root, (128, 32))
    targets = [(40, 40), (96, 60), (32, 24)] if model == PINHOLE else [(64, 32), (200, 40), (48, 24)]
    ds, n = _all_frames(root, [native, *targets])
    ref = ds[(0, 0, n)]
    for r, (tw, th) in enumerate(targets, start=1):
        out = ds[(0, r, n)]
        for a, b in zip(ref[:2], out[:2]):
            assert b["img"].shape == (3, th, tw) and b["pts3d"].shape == (th, tw, 3)
            cam = Camera.from_frame(load_scene(root / a["label"]).frames[a["frame_idx"]], model)
            nw, nh, x0, y0 = crop_resize_plan(cam, (tw, th))
            # Source pixel of each output pixel: the same nearest-neighbour resize applied to index ramps
            # (about floor((u + x0 + 0.5) * w / nw); OpenCV's fixed-point arithmetic decides the ties).
            ramp = np.arange(cam.w, dtype=np.float32)[None].repeat(2, 0)
            su = cv2.resize(ramp, (nw, 2), interpolation=cv2.INTER_NEAREST_EXACT)[0, x0 : x0 + tw].astype(int)
            ramp = np.arange(cam.h, dtype=np.float32)[None].repeat(2, 0)
            sv = cv2.resize(ramp, (nh, 2), interpolation=cv2.INTER_NEAREST_EXACT)[0, y0 : y0 + th].astype(int)
            assert np.all(np.abs(su - (np.arange(tw) + x0 + 0.5) * cam.w / nw) <= 1.0)
            p_ref = a["pts3d"].numpy()[sv][:, su]
            v_ref = a["valid_mask"].numpy()[sv][:, su]
            np.testing.assert_array_equal(b["valid_mask"].numpy(), v_ref)
            rng = a["depth_along_ray"].numpy()[sv][:, su, 0]
            err = np.linalg.norm(b["pts3d"].numpy() - p_ref, axis=-1)
            # Same depth sample, ray through a point at most ~1 source pixel away.
            tol = rng * 1.0 / min(cam.fl_x, cam.fl_y) + 1e-4
            assert np.all(err[v_ref] <= tol[v_ref]), float((err - tol)[v_ref].max())
            assert b["camera_model_id"] == CAMERA_MODEL_IDS[model]


def test_views_layout(pin_root):
    ds = WAIDataset(pin_root, num_views=3, resolution=(48, 32), sampling="covisibility", covisibility_thres=0.1)
    views = ds[1]
    assert len(views) == 3
    v = views[0]
    required = {"img", "depthmap", "camera_pose", "camera_intrinsics", "ray_directions_cam", "pts3d", "pts3d_cam",
                "valid_mask", "non_ambiguous_mask", "is_metric_scale", "dataset", "label", "instance",
                "camera_model_id"}
    assert required <= set(v)
    assert v["img"].shape == (3, 32, 48) and v["img"].dtype == torch.float32
    assert v["img"].min() < 0 < v["img"].max()  # ImageNet-normalised
    assert v["depthmap"].shape == (32, 48, 1) and v["valid_mask"].dtype == torch.bool
    assert v["camera_pose"].shape == (4, 4) and v["camera_intrinsics"].shape == (3, 3)
    assert v["is_metric_scale"] is True and v["dataset"] == "synthetic_street"
    assert v["instance"].startswith("images/")
    T = v["camera_pose"].double().numpy()
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-5)
    # pts3d = R pts3d_cam + t on valid pixels.
    m = v["valid_mask"].numpy()
    np.testing.assert_allclose(v["pts3d"].numpy()[m], v["pts3d_cam"].numpy()[m] @ T[:3, :3].T + T[:3, 3],
                               atol=1e-3)


def test_vggt_layout_and_relative_poses(pin_root):
    kw = dict(num_views=3, resolution=(42, 28), sampling="random", seed=7, samples_per_epoch=4, crop="center")
    views = WAIDataset(pin_root, **kw)[2]
    vg = WAIDataset(pin_root, output="vggt", **kw)[2]
    assert vg["images"].shape == (3, 3, 28, 42) and 0.0 <= vg["images"].min() and vg["images"].max() <= 1.0
    assert vg["depths"].shape == (3, 28, 42) and vg["point_masks"].shape == (3, 28, 42)
    assert vg["extrinsics"].shape == (3, 3, 4) and vg["intrinsics"].shape == (3, 3, 3)
    assert vg["cam_points"].shape == (3, 28, 42, 3) and vg["world_points"].shape == (3, 28, 42, 3)
    for s, v in enumerate(views):
        np.testing.assert_allclose(vg["world_points"][s].numpy(), v["pts3d"].numpy(), atol=1e-5)
        E = vg["extrinsics"][s].double().numpy()  # world-to-camera
        m = vg["point_masks"][s].numpy()
        cam_from_world = vg["world_points"][s].numpy()[m] @ E[:, :3].T + E[:, 3]
        np.testing.assert_allclose(cam_from_world, vg["cam_points"][s].numpy()[m], atol=2e-3)
    rel = WAIDataset(pin_root, relative_to_first=True, **kw)[2]
    np.testing.assert_allclose(rel[0]["camera_pose"].numpy(), np.eye(4), atol=1e-6)
    T0 = views[0]["camera_pose"].double().numpy()
    for a, b in zip(views, rel):
        np.testing.assert_allclose(b["camera_pose"].double().numpy(), np.linalg.inv(T0) @ a["camera_pose"].double()
                                   .numpy(), atol=1e-4)
        m = a["valid_mask"].numpy()
        np.testing.assert_allclose(b["pts3d"].numpy()[m], (a["pts3d"].numpy()[m] - T0[:3, 3]) @ T0[:3, :3],
                                   atol=2e-3)
    vgr = WAIDataset(pin_root, output="vggt", relative_to_first=True, **kw)[2]
    np.testing.assert_allclose(vgr["extrinsics"][0].numpy(), np.eye(4)[:3], atol=1e-6)


def test_deterministic_and_epoch_dependent(pin_root):
    kw = dict(num_views=2, resolution=(32, 24), sampling="random", seed=1, samples_per_epoch=6)
    a, b = WAIDataset(pin_root, **kw), WAIDataset(pin_root, **kw)
    picks = [[v["frame_idx"] for v in a[i]] for i in range(6)]
    assert picks == [[v["frame_idx"] for v in b[i]] for i in range(6)]
    torch.testing.assert_close(a[3][1]["pts3d"], b[3][1]["pts3d"])
    a.set_epoch(1)
    assert picks != [[v["frame_idx"] for v in a[i]] for i in range(6)]


def test_sampling_strategies(pin_root):
    scene = load_scene(pin_root / "street_003_000")
    covis = np.load(pin_root / "street_003_000" / "covisibility/v0/pairwise_covisibility--8x8.npy")
    ds = WAIDataset(pin_root, num_views=3, resolution=(32, 24), sampling="covisibility", covisibility_thres=0.05,
                    samples_per_epoch=2)
    for epoch in range(4):
        ds.set_epoch(epoch)
        idx = [v["frame_idx"] for v in ds[0]]
        for k in range(1, 3):  # each new view is adjacent to an earlier one in the thresholded graph
            score = [(covis[idx[k], i] + covis[i, idx[k]]) / 2 / covis[i, i] for i in idx[:k]]
            assert max(score) > 0.05, (idx, score)
    seq = WAIDataset(pin_root, num_views=3, resolution=(32, 24), sampling="sequential", stride=2)
    idx = [v["frame_idx"] for v in seq[0]]
    assert np.all(np.diff(idx) == 2)
    coop = WAIDataset(pin_root, num_views=N_AGENTS, resolution=(32, 24), sampling="cooperative")
    for i in range(len(coop)):
        fr = [scene.frames[v["frame_idx"]] if v["label"] == scene.meta["scene_name"] else
              load_scene(pin_root / v["label"]).frames[v["frame_idx"]] for v in coop[i]]
        assert len({f["timestamp"] for f in fr}) == 1 and {f["agent_id"] for f in fr} == set(range(N_AGENTS))
    coop3 = WAIDataset(pin_root, num_views=N_AGENTS + 1, resolution=(32, 24), sampling="cooperative")
    fr = [scene.frames[v["frame_idx"]] for v in coop3[0]]
    ts = [f["timestamp"] for f in fr]
    assert ts[0] == ts[1] and abs(ts[2] - ts[0]) == pytest.approx(0.1)  # padded from the nearest timestamp


def test_label_weights(pin_root):
    ds = WAIDataset(pin_root, num_views=2, resolution=(64, 48), sampling="random", output="vggt", patch_size=1,
                    crop="center",
                    label_weights={"synthetic_street": {"building": 2.0, "road": 0.7, "car": 0.5, "sky": 0.2}})
    out = ds[0]
    scene = load_scene(pin_root / out["seq_name"])
    for s, i in enumerate(out["ids"].tolist()):
        sem = load_frame(scene, i, ["semantic"])["semantic"]
        w = out["loss_weights"][s].numpy()
        expect = np.select([sem == 4, sem == 1, sem == 6, sem == 0], [2.0, 0.7, 0.5, 0.2], 1.0)
        np.testing.assert_allclose(w, expect)
        assert (sem == 0).any() and (sem == 1).any()
    preset = WAIDataset(pin_root, num_views=2, resolution=(64, 48), sampling="random", label_weights="kitti360")[0]
    w = preset[0]["loss_weights"].numpy()
    assert w.dtype == np.float32
    assert set(np.unique(w).tolist()) <= set(np.float32([0.2, 0.7, 0.5, 2.0, 1.0]).tolist())
    other = WAIDataset(pin_root, num_views=2, resolution=(64, 48), label_weights={"kitti360": "kitti360"},
                       sampling="random")[0]  # not configured for this dataset: uniform
    assert np.all(other[0]["loss_weights"].numpy() == 1.0)


def test_mixing_weights_and_multiple_roots(pin_root, cyl_root):
    ds = WAIDataset([(pin_root, 1.0), (cyl_root, 3.0)], num_views=2, resolution=(32, 16), sampling="random",
                    samples_per_epoch=8)
    assert len(ds) == 8 and ds.root_sizes == [2, 6]
    models = [ds[i][0]["camera_model_id"] for i in range(8)]
    assert models == [CAMERA_MODEL_IDS[PINHOLE]] * 2 + [CAMERA_MODEL_IDS[CYLINDRICAL]] * 6
    default = WAIDataset([pin_root, cyl_root], num_views=2, resolution=(32, 16), sampling="random")
    assert default.root_sizes == [2, 1]  # proportional to the scene counts


class _FakeDataset:
    resolutions = [(64, 48), (48, 64), (32, 32)]
    num_views_options = [2, 3, 4]

    def __len__(self) -> int:
        return 100


def test_sampler_ranks_disjoint_equal_and_reshuffled():
    ds = _FakeDataset()
    s0 = ViewBatchSampler(ds, images_per_gpu=12, rank=0, world_size=2, seed=3)
    s1 = ViewBatchSampler(ds, images_per_gpu=12, rank=1, world_size=2, seed=3)
    b0, b1 = list(s0), list(s1)
    assert len(b0) == len(b1) == len(s0) == len(s1) > 0
    ids0 = [i for b in b0 for i, _, _ in b]
    ids1 = [i for b in b1 for i, _, _ in b]
    assert len(set(ids0)) == len(ids0) and not set(ids0) & set(ids1)
    for b in b0 + b1:
        assert len({r for _, r, _ in b}) == 1 and len({v for _, _, v in b}) == 1
        assert len(b) == 12 // ds.num_views_options[b[0][2]]  # (sample, resolution_idx, num_views_idx)
    s0.set_epoch(1)
    s1.set_epoch(1)
    e0, e1 = list(s0), list(s1)
    assert e0 != b0 and not {i for b in e0 for i, _, _ in b} & {i for b in e1 for i, _, _ in b}
    s0.set_epoch(0)
    assert list(s0) == b0  # deterministic per epoch
    single = ViewBatchSampler(ds, images_per_gpu=12, shuffle=False)
    assert (single.rank, single.world_size) == (0, 1)


def test_sampler_with_dataloader_workers(pin_root):
    ds = WAIDataset(pin_root, num_views=(2, 3), resolution=[(32, 24), (24, 32)], sampling="covisibility",
                    covisibility_thres=0.05, samples_per_epoch=12)
    sampler = ViewBatchSampler(ds, images_per_gpu=6, rank=0, world_size=1, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_views, num_workers=2)
    seen = 0
    for views in loader:
        nv, bsz = len(views), views[0]["img"].shape[0]
        assert bsz == 6 // nv and views[0]["pts3d"].shape[0] == bsz
        assert views[0]["is_metric_scale"].dtype == torch.bool and len(views[0]["label"]) == bsz
        seen += bsz
    assert seen == sum(len(b) for b in sampler)
    vg = WAIDataset(pin_root, num_views=2, resolution=(42, 28), output="vggt", sampling="random")
    batch = next(iter(torch.utils.data.DataLoader(vg, batch_size=2)))
    assert batch["images"].shape == (2, 2, 3, 28, 42)


def test_uncached_metadata_gives_the_same_samples(pin_root):
    kw = dict(num_views=3, resolution=(32, 24), sampling="covisibility", covisibility_thres=0.05)
    a = WAIDataset(pin_root, **kw)[1]
    b = WAIDataset(pin_root, cache_metadata=False, **kw)[1]
    assert [v["frame_idx"] for v in a] == [v["frame_idx"] for v in b]
    torch.testing.assert_close(a[2]["pts3d"], b[2]["pts3d"])


def test_errors(tmp_path, pin_root):
    with pytest.raises(SceneNotFoundError, match=r"_meta/train/<dataset>_scene_list_train\.npy"):
        WAIDataset(tmp_path)
    with pytest.raises(SceneNotFoundError, match="scene_list_val"):
        WAIDataset(pin_root, split="val")
    with pytest.raises(LoaderConfigError, match="sampling="):
        WAIDataset(pin_root, sampling="nearest")
    with pytest.raises(LoaderConfigError, match="output="):
        WAIDataset(pin_root, output="dust3r")
    with pytest.raises(LoaderConfigError, match="resolution"):
        WAIDataset(pin_root, resolution=(0, 10))
    with pytest.raises(LoaderConfigError, match="num_views"):
        WAIDataset(pin_root, num_views=0)
    with pytest.raises(LoaderConfigError, match="images_per_gpu"):
        ViewBatchSampler(_FakeDataset(), images_per_gpu=0)
    with pytest.raises(LoaderConfigError, match="rank=2"):
        ViewBatchSampler(_FakeDataset(), images_per_gpu=4, rank=2, world_size=2)
    ds = WAIDataset(pin_root, num_views=2, resolution=(32, 24))
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(LoaderConfigError, match="resolution_idx 3"):
        ds[(0, 3, 2)]
    # No covisibility matrix, and no timestamps for cooperative sampling.
    root = tmp_path / "bare"
    cam = make_camera(PINHOLE, (16, 12))
    write_scene(root, "s", cam, [look_at([0, 0, 1.7], [0, 12, 3]), look_at([1, 0, 1.7], [1, 12, 3])])
    (root / "_meta" / "train").mkdir(parents=True)
    np.save(root / "_meta" / "train" / "x_scene_list_train.npy", np.array(["s"]))
    with pytest.raises(SceneNotFoundError, match="wai-convert covisibility"):
        WAIDataset(root, num_views=2, resolution=(16, 12))[0]
    with pytest.raises(SchemaError, match="timestamp"):
        WAIDataset(root, num_views=2, resolution=(16, 12), sampling="cooperative")[0]
    meta = json.loads((root / "s" / "scene_meta.json").read_text())
    assert meta["frames"][0]["frame_name"] == "00000"


def test_import_does_not_pull_torch():
    code = ("import sys, wai, wai.loaders, wai.loaders.covisibility; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
