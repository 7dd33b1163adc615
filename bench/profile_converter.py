"""Profile one converter on the benchmark's fake data (native size, full frame counts) with cProfile.

    python bench/profile_converter.py opv2v [--top 30] [--sort cumulative] [--workdir /tmp/wai-profile]

The fake raw data is generated once under ``--workdir`` and reused; the conversion runs twice (the first
warms caches) and the second is profiled. Prints ms/frame and the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  bench/run.py: the benchmark's fake data and options

from wai.converters import get_converter  # noqa: E402
from wai.run import RunOptions, run_conversion  # noqa: E402
from wai.synthetic import get_fake  # noqa: E402


def main() -> None:
    """Generate (once), convert, profile, print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative, ...)")
    ap.add_argument("--workdir", default="/tmp/wai-profile")
    args = ap.parse_args()
    tmp = Path(args.workdir) / args.source
    raw = tmp / "raw"
    if not (tmp / "options.json").is_file():
        info = get_fake(args.source)(raw, **bench.fake_kwargs(args.source, quick=False))
        (tmp / "options.json").write_text(json.dumps(info.options or {}))
    opts = bench.converter_options(args.source, json.loads((tmp / "options.json").read_text()))
    cls = get_converter(args.source)

    def convert():  # noqa: ANN202
        return run_conversion(cls(raw, cls.Options(**opts)), tmp / "out", RunOptions(overwrite=True, progress=False))

    convert()
    shutil.rmtree(tmp / "out")
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    res = convert()
    prof.disable()
    dt = time.perf_counter() - t
    n = sum(r.n_frames for r in res.results)
    print(f"{args.source}: {n} frames in {dt:.2f} s = {1000 * dt / max(n, 1):.1f} ms/frame (profiled)")
    pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
