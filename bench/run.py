"""Measure conversion, LiDAR projection and the loader side by side in one run; write one JSON.

    python bench/run.py [--quick] [--out bench/results.json] [--sources kitti360,eth3d]

Per source (fake raw data at native resolution from ``wai.synthetic``, two or more equal scenes): steady-state
frames/s per core (1 process, after a warm-up conversion), the share of conversion time that is unavoidable
codec work (decode the raw files + encode the outputs, re-measured on the same data in this run), peak RSS
of the converting process, and the speed-up of a warm pool of 2 workers (pool start-up reported apart).
Plus LiDAR projection rates (exact z-buffer vs last-write-wins vs a lexsort reference), memory growth with
scene length, and the loader figures of ``bench/loader.py``. Figures are ratios or per-core rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from wai.format import codecs, load_frame, load_scene  # noqa: E402
from wai.format.cameras import Camera  # noqa: E402
from wai.format.codecs import cv2  # noqa: E402
from wai.format.projection import project_points, project_to_depth, zbuffer  # noqa: E402

#: make_fake keyword arguments giving each source's native resolution (quick / full frame counts).
NATIVE: dict[str, dict] = {
    "synthetic": {"w": 1408, "h": 376},
    "vkitti2": {"w": 1242, "h": 375},
    # ETH3D's DSLR is 6048x4032; a quarter of each side keeps the fake's ray casting affordable on 2 cores.
    "eth3d": {"w": 1512, "h": 1008},
    "co3d": {"scale": 4},  # 480x640, about the 479x640 of a real Co3D v2 frame
    # KITTI-360 (1408x376) and OPV2V (800x600 cameras) fakes are native by default.
}
#: (quick, full) extra kwargs: how many scenes/frames. Every source gets two or more equal scenes, so that
#: two workers can be busy all the time (the unit of parallel work is the scene).
SCALE: dict[str, tuple[dict, dict]] = {
    "synthetic": ({"n_scenes": 2, "n_frames": 8}, {"n_scenes": 4, "n_frames": 25}),
    # n_frames - 1 posed frames (one has no pose) split train/val, cut into scenes of 4 frames (see BENCH_OPTIONS)
    "kitti360": ({"n_frames": 17, "n_val": 8}, {"n_frames": 33, "n_val": 16}),
    # Both scenes with GT depth and masks. Real ETH3D DSLR scenes have 14-76 images; fewer here (the fake's ray
    # casting is slow) over-weights the per-scene work (COLMAP parsing, the distortion lookup table).
    "eth3d": ({"n_images": 6, "n_train": 2}, {"n_images": 12, "n_train": 2}),
    "vkitti2": ({"n_frames": 6}, {"n_frames": 16}),
    "co3d": ({"n_frames": 16}, {"n_frames": 24}),  # quick: 16 per scene, so the 2-worker figure is not start-up noise
    "opv2v": ({"n_timestamps": 4}, {"n_timestamps": 6}),  # real scenarios: 100-700 timestamps each
}
#: Timed repetitions per measurement (quick, full): this VM's speed drifts, so each figure is the best of these.
REPS = {True: 3, False: 3}
#: Converter options that differ from the fake's test options in the benchmark (native output sizes).
BENCH_OPTIONS: dict[str, dict] = {
    "opv2v": {"width": 2048, "height": 576},  # the converter's default panorama (the fake's options shrink it)
    "kitti360": {"frames_per_scene": 4},
}

CHILD = """
import json, sys, time
from pathlib import Path
from wai.converters import get_converter
from wai.run import RunOptions, WorkerPool, run_conversion

def vm_hwm_mb(pid="self"):
    # VmHWM is per address space (reset at exec); ru_maxrss is inherited from the forking parent on Linux.
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

name, raw, out, workers, opts, reps = (sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
                                       json.loads(sys.argv[5]), int(sys.argv[6]))
if workers == 1:  # per core: one thread (pool workers set this themselves, see wai.run.scene.run_job)
    from wai.format.codecs import cv2
    cv2.setNumThreads(1)
cls = get_converter(name)
conv = cls(raw, cls.Options(**opts))
run = RunOptions(workers=workers, overwrite=True, progress=False)
pool, startup = None, 0.0
if workers > 1:  # pool start-up (spawn + imports), paid once per run, measured on its own
    t = time.perf_counter()
    pool = WorkerPool(workers).start()  # spawned; each worker imports the converter with its first scene
    startup = time.perf_counter() - t
# Steady state: a first conversion of the same data pays lazy imports and first-call costs (in every
# worker), then the timed ones run in the same process or pool.
t = time.perf_counter()
run_conversion(conv, out + "_warmup", run, pool=pool)
first = time.perf_counter() - t
if workers == 1:  # the codec-floor helpers of bench/run.py
    sys.path.insert(0, {bench!r})
    import run as bench
codec, seconds, rss, copied = [], [], None, None
for _ in range(reps):
    t = time.perf_counter()
    res = run_conversion(conv, out, run, pool=pool)
    seconds.append(time.perf_counter() - t)
    rss = vm_hwm_mb() if rss is None else rss  # before any codec re-measurement below
    if workers == 1:
        # The codec floor on the same data in the same process, interleaved with the conversions so both
        # see the same machine state (this VM's speed drifts by 20-30% over tens of seconds).
        if copied is None:
            copied = bench._copied_images(Path(raw), Path(out))
        codec.append(bench._decode_raw_seconds(Path(raw), copied[0])
                     + bench._encode_out_seconds(Path(out), copied[1]))
if pool is not None:
    pool.close()
print(json.dumps({"seconds": min(seconds), "seconds_all": seconds, "first_run_seconds": first,
                  "startup_seconds": startup, "frames": sum(r.n_frames for r in res.results),
                  "failed": len(res.failed), "peak_rss_mb": rss, "codec_seconds": min(codec) if codec else None,
                  "codec_seconds_all": codec, "copied": len(copied[1]) if copied else None}))
"""


def _child(name: str, raw: Path, out: Path, workers: int, opts: dict, reps: int = 1) -> dict:
    code = CHILD.replace("{bench!r}", repr(str(HERE)))
    proc = subprocess.run([sys.executable, "-c", code, name, str(raw), str(out), str(workers), json.dumps(opts),
                           str(reps)], capture_output=True, text=True, check=True, cwd=HERE.parent)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sha1(p: Path) -> str:
    import hashlib

    return hashlib.sha1(p.read_bytes()).hexdigest()


def _copied_images(raw: Path, out: Path) -> tuple[set[Path], set[Path]]:
    """Raw image files copied verbatim into the output, and their output copies (no codec work needed)."""
    exts = {".png", ".jpg", ".jpeg"}
    out_imgs = {_sha1(p): p for p in out.glob("*/images/*") if p.suffix.lower() in exts}
    raw_copied, out_copied = set(), set()
    for p in raw.rglob("*"):
        if p.is_file() and p.suffix.lower() in exts:
            h = _sha1(p)
            if h in out_imgs:
                raw_copied.add(p)
                out_copied.add(out_imgs[h])
    return raw_copied, out_copied


def _parse_ascii_pcd(path: Path) -> np.ndarray:
    """The values of an ASCII PCD, parsed as the OPV2V converter parses them (Arrow's CSV parser: 2.9x faster
    than ``np.loadtxt`` and 5x faster than Open3D on a 28.6k-point fake OPV2V scan), without its checks."""
    from wai.converters._opv2v_io import parse_ascii_rows

    head, _, body = path.read_bytes().partition(b"DATA ascii\n")
    n_fields = len(next(ln for ln in head.splitlines() if ln.startswith(b"FIELDS")).split()) - 1
    return parse_ascii_rows(body, n_fields)


def _decode_raw_seconds(raw: Path, skip: set[Path]) -> float:
    """Time to read and decode every raw file once (the unavoidable source decode work), except verbatim copies."""
    t = time.perf_counter()
    for p in sorted(raw.rglob("*")):
        if not p.is_file() or p in skip:
            continue
        ext = p.suffix.lower()
        if ext in (".png", ".jpg", ".jpeg"):
            if codecs.imread_bytes_safe(p, cv2.IMREAD_UNCHANGED) is None:  # e.g. ETH3D raw float32 depth named .JPG
                np.fromfile(p, dtype=np.uint8)
        elif ext == ".npy":
            np.load(p)
        elif ext == ".pcd":
            _parse_ascii_pcd(p)
        elif ext in (".bin", ""):
            np.fromfile(p, dtype=np.float32)
        else:
            p.read_bytes()
    return time.perf_counter() - t


def _encode_out_seconds(out: Path, skip: set[Path], precision: str = "float16") -> float:
    """Time to encode every output modality of every frame once (the unavoidable output encode work)."""
    total = 0.0
    for meta in sorted(out.glob("*/scene_meta.json")):
        scene = load_scene(meta.parent)
        mods = scene.meta["frame_modalities"]
        for i in range(len(scene.frames)):
            f = load_frame(scene, i)
            t = time.perf_counter()
            for name, spec in mods.items():
                arr, fmt = f[name], spec["format"]
                if fmt == "image" and Path(f[f"{name}_fname"]) not in skip:
                    codecs.encode_image(arr, Path(f[f"{name}_fname"]).suffix)
                elif fmt == "depth":
                    codecs.encode_depth(arr, precision)
                elif fmt == "binary":
                    codecs.encode_mask(arr)
                elif fmt == "labels":
                    codecs.encode_labels(arr)
            total += time.perf_counter() - t
    return total


def fake_kwargs(name: str, quick: bool) -> dict:
    """``make_fake`` keyword arguments of a source's benchmark data (native size, quick or full counts)."""
    return {**NATIVE.get(name, {}), **SCALE.get(name, ({}, {}))[0 if quick else 1]}


def converter_options(name: str, fake_options: dict | None) -> dict:
    """Converter options of the benchmark: the fake's test options with native output sizes on top."""
    return {**(fake_options or {}), **BENCH_OPTIONS.get(name, {})}


def bench_conversion(name: str, quick: bool, tmp: Path) -> dict:
    """One source: frames/s per core, codec share, peak RSS, 2-worker speedup."""
    from wai.synthetic import get_fake

    kw = fake_kwargs(name, quick)
    info = get_fake(name)(tmp / name / "raw", **kw)
    opts = converter_options(name, info.options)
    reps = REPS[quick]
    one = _child(name, info.root, tmp / name / "out1", 1, opts, reps)
    two = _child(name, info.root, tmp / name / "out2", 2, opts, reps)
    if one["failed"] or two["failed"]:
        raise RuntimeError(f"{name}: {one['failed']} / {two['failed']} scenes failed in the 1- / 2-worker run")
    return {
        "frames": one["frames"],
        "scenes": len(list((tmp / name / "out1").glob("*/scene_meta.json"))),
        "frames_per_s_per_core": one["frames"] / one["seconds"],
        "codec_share": one["codec_seconds"] / one["seconds"],
        # best of `repetitions` for each (interleaved in one process); the lists show the spread
        "codec_seconds": one["codec_seconds"],
        "conversion_seconds": one["seconds"],
        "repetitions": reps,
        "codec_seconds_all": one["codec_seconds_all"],
        "conversion_seconds_all": one["seconds_all"],
        "conversion_seconds_2_workers_all": two["seconds_all"],
        # the same data converted the first time in a fresh process: lazy imports and first calls included
        "first_run_seconds": one["first_run_seconds"],
        "images_copied_verbatim": one["copied"],
        "peak_rss_mb": one["peak_rss_mb"],
        # steady state in both: one process vs a warm pool of two (pool start-up reported separately)
        "speedup_2_workers": (two["frames"] / two["seconds"]) / (one["frames"] / one["seconds"]),
        "pool_startup_seconds": two["startup_seconds"],
        "fake_kwargs": kw,
    }


def _rate(f, n_points: int, reps: int) -> float:
    f()
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        best = min(best, (time.perf_counter() - t) / reps)
    return n_points / best / 1e6


def bench_projection(quick: bool) -> dict:
    """KITTI-360-like scan into a 1408x376 image: exact z-buffer vs last-write-wins vs lexsort reference."""
    cam = Camera.pinhole(1408, 376, 552.554261, 552.554261, 682.049453, 238.769549)
    rng = np.random.default_rng(0)
    n = 120_000
    az = rng.uniform(-np.pi, np.pi, n)
    el = rng.uniform(np.deg2rad(-24.9), np.deg2rad(2.0), n)
    r = rng.uniform(2, 80, n)
    # Velodyne-like scan in camera axes (x right, y down, z forward)
    pts = np.stack([r * np.cos(el) * np.sin(az), -r * np.sin(el), r * np.cos(el) * np.cos(az),
                    rng.random(n)], 1).astype(np.float32)
    T = np.eye(4)
    reps = 5 if quick else 20
    zb = _rate(lambda: project_to_depth(cam, T, pts, 0.5, 80.0), n, reps)

    def last_write(p: np.ndarray) -> np.ndarray:
        # the same projection, then one plain scatter: what exactness costs on top of it
        col, row, z = project_points(cam, T, p, 0.5, 80.0)
        out = np.zeros((cam.h, cam.w), np.float32)
        out[row, col] = z
        return out

    def reference(p: np.ndarray) -> np.ndarray:
        # straightforward float64 projection and a lexsort per pixel: slow, obviously right
        x, y, z = (p[:, i].astype(np.float64) for i in range(3))
        k = (z >= 0.5) & (z <= 80)
        col = np.floor(x[k] / z[k] * cam.fl_x + cam.cx + 0.5).astype(np.int64)
        row = np.floor(y[k] / z[k] * cam.fl_y + cam.cy + 0.5).astype(np.int64)
        ins = (col >= 0) & (col < cam.w) & (row >= 0) & (row < cam.h)
        col, row, d = col[ins], row[ins], z[k][ins]
        lin = row * cam.w + col
        order = np.lexsort((d, lin))
        lin, d = lin[order], d[order]
        first = np.r_[True, lin[1:] != lin[:-1]]
        out = np.zeros(cam.h * cam.w, np.float32)
        out[lin[first]] = d[first]
        return out.reshape(cam.h, cam.w)

    lw = _rate(lambda: last_write(pts), n, reps)
    ref = _rate(lambda: reference(pts), n, max(1, reps // 4))
    got, _ = project_to_depth(cam, T, pts, 0.5, 80.0)
    exp = reference(pts)
    # accumulated scans (K=5 each side): where last-write-wins goes wrong
    acc = np.concatenate([pts] * 11)
    acc[:, :3] += rng.normal(scale=0.5, size=(len(acc), 3)).astype(np.float32)
    wrong = float(np.mean(last_write(acc) != reference(acc)))
    z1 = zbuffer(np.array([3, 3]), np.array([2, 2]), np.array([9.0, 4.0]), 5, 5)
    return {
        "points": n,
        "zbuffer_mpts_per_s": zb,
        "last_write_mpts_per_s": lw,
        "reference_lexsort_mpts_per_s": ref,
        "zbuffer_vs_last_write": zb / lw,
        "zbuffer_pixels_differing_from_reference": float(np.mean(got != exp)),
        "last_write_pixels_wrong_accumulated_11_scans": wrong,
        "zbuffer_keeps_nearer": bool(z1[2, 3] == 4.0),
    }


def bench_memory(quick: bool, tmp: Path) -> dict:
    """Peak RSS of converting one KITTI-360-sized (1408x376) scene of N frames, for two N: must not grow with N."""
    from wai.synthetic.raw_synthetic import make_fake

    out: dict[str, float] = {}
    sizes = (50, 200) if quick else (100, 1000)
    base = make_fake(tmp / "mem_base", n_scenes=1, n_frames=4, w=1408, h=376)
    src = base.root / "scene_000"
    lines = (src / "cameras.txt").read_text().splitlines()
    for n in sizes:
        raw = tmp / f"mem_{n}"
        sd = raw / "scene_000"
        for sub in ("rgb", "depth", "semantic"):
            (sd / sub).mkdir(parents=True, exist_ok=True)
        body = [lines[0]]
        for i in range(n):  # replicate rendered frames under new names (geometry is irrelevant for memory)
            j = i % 4
            name = f"{i:06d}"
            for sub, ext in (("rgb", "png"), ("depth", "npy"), ("semantic", "png")):
                os.link(src / sub / f"{j:06d}.{ext}", sd / sub / f"{name}.{ext}")
            body.append(name + lines[1 + j][6:])
        (sd / "cameras.txt").write_text("\n".join(body) + "\n")
        (raw / "splits.txt").write_text("scene_000 train\n")
        r = _child("synthetic", raw, tmp / f"mem_out_{n}", 1, {})
        out[f"peak_rss_mb_{n}_frames"] = r["peak_rss_mb"]
    a, b = sizes
    out["rss_growth_mb_per_1000_frames"] = (out[f"peak_rss_mb_{b}_frames"] - out[f"peak_rss_mb_{a}_frames"]) / (
        (b - a) / 1000)
    return out


def _file_create_ms(workdir: str | None, n: int = 200) -> float:
    """Milliseconds to create (``O_CREAT | O_EXCL``) and close one empty file in ``workdir``: every output file
    of a conversion pays it once (atomic writes), so it tells how the filesystem weighs on the figures."""
    with tempfile.TemporaryDirectory(prefix="wai-bench-fs-", dir=workdir) as d:
        t = time.perf_counter()
        for i in range(n):
            os.close(os.open(os.path.join(d, f"f{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return round(1000 * (time.perf_counter() - t) / n, 4)


def main() -> None:
    """Run every benchmark and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer frames and repetitions (< 5 minutes on 2 cores)")
    ap.add_argument("--out", default=None, help="default: bench/results_quick.json (--quick) or bench/results.json")
    ap.add_argument("--sources", default=None, help="comma-separated sources (default: all registered with a fake)")
    ap.add_argument("--workdir", default=None,
                    help="folder for the fake data and outputs (default: the system's temporary folder); pick one "
                         "on the kind of filesystem you convert onto: file creation costs differ by 20x between "
                         "folders of the development VM (see file_create_ms in the output)")
    args = ap.parse_args()
    args.out = args.out or str(HERE / ("results_quick.json" if args.quick else "results.json"))
    from wai.converters import REGISTRY
    from wai.synthetic import FAKES

    sources = args.sources.split(",") if args.sources else [s for s in sorted(REGISTRY) if s in FAKES]
    t0 = time.perf_counter()
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "opencv": cv2.__version__, "quick": args.quick,
                    "file_create_ms": _file_create_ms(args.workdir)},
        "conversion": {},
    }
    result["lidar_projection"] = bench_projection(args.quick)
    print(json.dumps(result["lidar_projection"], indent=1), flush=True)
    with tempfile.TemporaryDirectory(prefix="wai-bench-", dir=args.workdir) as d:
        tmp = Path(d)
        for s in sources:
            try:
                result["conversion"][s] = bench_conversion(s, args.quick, tmp)
            except (subprocess.CalledProcessError, ImportError, RuntimeError) as e:
                err = e.stderr.strip().splitlines()[-1] if isinstance(e, subprocess.CalledProcessError) else str(e)
                result["conversion"][s] = {"error": err}
            print(s, json.dumps(result["conversion"][s]), flush=True)
        result["memory"] = bench_memory(args.quick, tmp)
    try:
        sys.path.insert(0, str(HERE))
        import loader as loader_bench  # bench/loader.py

        lb = loader_bench.run(quick=args.quick)
        result["loader"] = {"views_per_s_per_worker": lb["views_per_s_per_worker"],
                            "speedup_vs_reparse": lb["speedup_vs_reparse"], **lb}
    except ImportError as e:
        result["loader"] = {"error": f"bench/loader.py unavailable: {e}"}
    result["seconds_total"] = time.perf_counter() - t0
    result["peak_rss_mb_bench_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} in {result['seconds_total']:.0f} s")


if __name__ == "__main__":
    main()
