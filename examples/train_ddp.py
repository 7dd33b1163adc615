#!/usr/bin/env python
"""Train a small depth / point-map network on converted WAI data with DistributedDataParallel.

The same script runs on CPU (``gloo``) and on GPUs (``nccl``); the backend follows ``torch.cuda.is_available()``
unless ``--backend`` says otherwise::

    python examples/train_ddp.py --out runs/demo                        # one process (still DDP, world size 1)
    torchrun --nproc_per_node=2 examples/train_ddp.py --out runs/demo   # 2 processes on one node
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        examples/train_ddp.py --data /data/kitti360_wai --out runs/k360  # multi-node (see docs/training.md)

Without ``--data`` rank 0 writes a small synthetic dataset (and its covisibility) under ``OUT/synthetic_data``.
The network predicts the log range along each pixel's ray; the point map is ``exp(pred) * ray_directions_cam``
(camera frame, metres). Loss: weighted L1 of log range plus the relative L1 of camera-frame points, over valid
pixels. Rank 0 logs one JSON line per ``--log-every`` steps (loss averaged over ranks, images/s over all ranks),
saves ``OUT/checkpoint.pt`` and prints a final ``SUMMARY {...}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# torch and the loader are imported after the arguments are parsed (``--help`` answers at once).


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="*", default=None,
                   help="converted dataset root(s); ROOT:WEIGHT sets a mixing weight (default: synthetic data)")
    p.add_argument("--out", type=Path, required=True, help="output directory (checkpoint, synthetic data)")
    p.add_argument("--split", default="train")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps")
    p.add_argument("--images-per-gpu", type=int, default=8, help="images per rank per step (batch = this // views)")
    p.add_argument("--num-views", default="2", help="view count N or range MIN-MAX")
    p.add_argument("--resolution", nargs="+", default=["64x48"], help="WxH, one or several (one per batch)")
    p.add_argument("--sampling", default="covisibility", choices=["covisibility", "sequential", "cooperative",
                                                                  "random"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank")
    p.add_argument("--backend", default=None, choices=["gloo", "nccl"], help="default: nccl if CUDA, else gloo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--synthetic-scenes", type=int, default=2)
    p.add_argument("--synthetic-frames", type=int, default=8)
    p.add_argument("--group-by", nargs="+", default=None, choices=["camera_model", "dataset"],
                   help="keep every batch to one camera model and/or one dataset (see docs/training.md)")
    return p.parse_args(argv)


def setup_distributed(backend: str | None) -> tuple[int, int, Any, str]:
    """Initialise the process group: ``env://`` under torchrun, a private file store for a plain process."""
    import torch
    import torch.distributed as dist

    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend)
    else:
        store = Path(tempfile.mkdtemp(prefix="wai-ddp-")) / "store"
        dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return rank, world, device, backend


def make_model(width: int = 32) -> Any:
    """Tiny encoder-decoder (``DepthNet``): RGB [B,3,H,W] (normalised) -> log range [B,1,H,W]."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class DepthNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(3, width // 2, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            )
            self.dec = nn.Sequential(nn.Conv2d(width + 3, width // 2, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(width // 2, 1, 3, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = F.interpolate(self.enc(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
            return self.dec(torch.cat([f, x], dim=1))

    return DepthNet()


def batch_to_tensors(views: list[dict[str, Any]], device: Any) -> dict[str, Any]:
    """Flatten a ``collate_views`` batch (V views of [B, ...]) to [B*V, ...] tensors on ``device``."""
    import torch

    def cat(key: str) -> torch.Tensor:
        return torch.cat([v[key] for v in views], dim=0).to(device, non_blocking=True)

    out = {"img": cat("img"), "rays": cat("ray_directions_cam"), "pts": cat("pts3d_cam"),
           "range": cat("depth_along_ray")[..., 0], "valid": cat("valid_mask")}
    out["weights"] = cat("loss_weights") if "loss_weights" in views[0] else torch.ones_like(out["range"])
    return out


def loss_fn(pred_log_range: Any, b: dict[str, Any]) -> Any:
    """Weighted L1 of log range + relative L1 of camera-frame points, over valid pixels."""
    import torch

    lr = pred_log_range[:, 0]
    valid = b["valid"]
    w = b["weights"] * valid
    gt_log = torch.log(b["range"].clamp_min(1e-3))
    l_depth = (w * (lr - gt_log).abs()).sum() / w.sum().clamp_min(1.0)
    pts = torch.exp(lr)[..., None] * b["rays"]
    rel = ((pts - b["pts"]).norm(dim=-1) / b["range"].clamp_min(1e-3)).clamp_max(2.0)
    l_pts = (w * rel).sum() / w.sum().clamp_min(1.0)
    return l_depth + l_pts


def prepare_data(args: argparse.Namespace, rank: int) -> list[Any]:
    """Dataset roots from ``--data`` or, on rank 0, a freshly written synthetic dataset (others wait)."""
    if args.data:
        roots: list[Any] = []
        for r in args.data:
            path, _, weight = r.rpartition(":") if ":" in r and r.rsplit(":", 1)[1].replace(".", "").isdigit() \
                else (r, "", "")
            roots.append((path, float(weight)) if weight else path)
        return roots
    import torch.distributed as dist

    data = args.out / "synthetic_data"
    if rank == 0 and not (data / "_meta").is_dir():
        from wai.loaders.covisibility import run_covisibility
        from wai.synthetic.scenes import write_street_dataset

        write_street_dataset(data, args.synthetic_scenes, args.synthetic_frames, n_agents=2, seed=args.seed)
        run_covisibility(data)
    dist.barrier()
    return [str(data)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)  # before importing torch: --help and argument errors answer at once
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from wai.loaders import ViewBatchSampler, WAIDataset, collate_views

    rank, world, device, backend = setup_distributed(args.backend)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    roots = prepare_data(args, rank)

    lo, _, hi = args.num_views.partition("-")
    num_views: Any = (int(lo), int(hi)) if hi else int(lo)
    resolutions = [tuple(int(x) for x in r.lower().split("x")) for r in args.resolution]
    probe = WAIDataset(roots, split=args.split, num_views=num_views, resolution=resolutions, sampling=args.sampling)
    max_views = max(probe.num_views_options)
    per_step = max(1, args.images_per_gpu // max_views) * world
    dataset = WAIDataset(roots, split=args.split, num_views=num_views, resolution=resolutions,
                         sampling=args.sampling, seed=args.seed, samples_per_epoch=max(len(probe), per_step * 8))
    sampler = ViewBatchSampler(dataset, args.images_per_gpu, shuffle=True, seed=args.seed, group_by=args.group_by)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_views,
                                         num_workers=args.workers, pin_memory=device.type == "cuda",
                                         persistent_workers=False)

    if len(sampler) == 0:
        raise SystemExit(f"no batches: {len(dataset)} samples cannot fill {world} rank(s) x "
                         f"{args.images_per_gpu} images; lower --images-per-gpu or add data")
    model = make_model().to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(ddp.parameters(), lr=args.lr)

    history: list[float] = []
    step, epoch, images = 0, 0, 0
    t_start = None
    while step < args.steps:
        sampler.set_epoch(epoch)
        for views in loader:
            b = batch_to_tensors(views, device)
            loss = loss_fn(ddp(b["img"]), b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
            opt.step()
            stats = torch.tensor([loss.detach().item(), float(b["img"].shape[0])], device=device)
            dist.all_reduce(stats)
            mean_loss = stats[0].item() / world
            history.append(mean_loss)
            if t_start is None:  # throughput excludes the first step (worker start-up)
                t_start = time.perf_counter()
            else:
                images += int(stats[1].item())
            step += 1
            if rank == 0 and (step % args.log_every == 0 or step == args.steps):
                el = time.perf_counter() - t_start
                print(json.dumps({"step": step, "epoch": epoch, "loss": round(mean_loss, 5),
                                  "images_per_s": round(images / el, 2) if el > 0 and images else None}), flush=True)
            if step >= args.steps:
                break
        epoch += 1

    elapsed = time.perf_counter() - (t_start or time.perf_counter())
    summary = {"backend": backend, "world_size": world, "device": str(device), "steps": step,
               "first_loss": history[0] if history else None, "last_loss": history[-1] if history else None,
               "images_per_s": round(images / elapsed, 2) if elapsed > 0 else None, "checkpoint": None}
    if rank == 0:
        ckpt = args.out / "checkpoint.pt"
        tmp = ckpt.with_name(".tmp-checkpoint.pt")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "args": {k: str(v) for k, v in vars(args).items()}}, tmp)
        os.replace(tmp, ckpt)
        summary["checkpoint"] = str(ckpt)
        print("SUMMARY " + json.dumps(summary), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
