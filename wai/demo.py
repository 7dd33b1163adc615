"""The end-to-end demo on built-in data: fake raw datasets for every registered source -> convert ->
covisibility -> validate -> coverage report. ``wai-demo [OUT]`` runs it, prints the time of each part per
source, and ends with commands that run as printed from the current directory (see ``next_steps``)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from wai.converters import REGISTRY, get_converter
from wai.errors import MissingDependencyError, UsageError, WaiError
from wai.run import RunOptions, WorkerPool, run_conversion
from wai.synthetic import FAKES, get_fake

#: The two converted demo datasets the README's loader example reads (cheap fakes, metric depth, a train split).
LOADER_EXAMPLE_SOURCES = ("vkitti2", "eth3d")


@dataclass
class SourceTimings:
    """Wall-clock seconds of each part of one source's demo run."""

    fakes: float = 0.0
    conversion: float = 0.0
    covisibility: float = 0.0
    validation: float = 0.0

    def line(self, conversion_note: str = "") -> str:
        """``fake raw data 0.4 s, conversion 1.1 s, covisibility 0.3 s, validation 0.6 s``."""
        return (f"fake raw data {self.fakes:.1f} s, conversion {self.conversion:.1f} s{conversion_note}, "
                f"covisibility {self.covisibility:.1f} s, validation {self.validation:.1f} s")


@dataclass
class DemoResult:
    """What ``run_demo`` did: converted roots, failed sources and per-source timings."""

    out: Path
    roots: dict[str, Path] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    timings: dict[str, SourceTimings] = field(default_factory=dict)


def installed_command(name: str) -> str:
    """How to run this installation's console script (or ``python``) ``name`` from the current directory in a
    fresh shell: the bare name when ``PATH`` finds this very installation's file, else its path (relative to
    the current directory when it lies below it, e.g. ``.venv/bin/wai-validate``; absolute otherwise).

    Entry points live next to the interpreter (``Path(sys.executable).parent``, not resolved: a virtual
    environment's ``python`` is a symlink to the base interpreter).
    """
    bindir = Path(sys.executable).absolute().parent
    script = bindir / name
    if not script.exists():
        return name if name != "python" else shlex.quote(sys.executable)
    found = shutil.which(name)
    if found is not None:
        # Same directory, not same file: a venv's ``python`` resolves to the base interpreter, which has no wai.
        try:
            if os.path.samefile(Path(found).absolute().parent, bindir):
                return name
        except OSError:
            pass
    try:
        rel = script.relative_to(Path.cwd().absolute())
    except ValueError:
        return shlex.quote(str(script))
    return shlex.quote(str(rel))


def _q(p: Path) -> str:
    return shlex.quote(str(p))


def next_steps(res: DemoResult) -> list[str]:
    """Shell commands that run as printed (exit 0) from the current directory, on the sources that passed.

    The loader one-liner is left out without torch, or when a ``wai/`` folder here would shadow the installed
    package for ``python -c`` (the entry point warned about it already).
    """
    from wai.cli import import_shadow

    good = {k: v for k, v in res.roots.items() if k not in res.failures}
    if not good:
        return []
    first = next(iter(good.values()))
    cmds = [
        f"{installed_command('wai-validate')} {_q(first)}",
        f"{installed_command('wai-report')} {' '.join(_q(r) for r in good.values())} "
        f"--markdown {_q(res.out / 'summary.md')}",
        f"{installed_command('wai-convert')} covisibility {_q(first)}",
    ]
    loader_roots = [good[s] for s in LOADER_EXAMPLE_SOURCES if s in good]
    if loader_roots and importlib.util.find_spec("torch") is not None and import_shadow() is None:
        roots = ", ".join(json.dumps(str(r)) for r in loader_roots)
        code = (f"from wai.loaders import WAIDataset; ds = WAIDataset([{roots}], num_views=4, "
                'resolution=(518, 392)); views = ds[0]; print(len(views), "views", views[0]["img"].shape)')
        cmds.append(f"{installed_command('python')} -c {shlex.quote(code)}")
    return cmds


def run_demo(out: str | Path, workers: int = 2, sources: list[str] | None = None) -> int:
    """Run the demo into ``out`` (raw fakes under ``out/raw``, datasets under ``out/converted``).

    Returns the exit code: 0 when every source converted (with at least one complete scene, the rule of
    ``wai-convert`` and ``wai-validate``) and validated clean.
    """
    res = demo(out, workers=workers, sources=sources)
    return 1 if res.failures else 0


def demo(out: str | Path, workers: int = 2, sources: list[str] | None = None) -> DemoResult:
    """The demo itself (see ``run_demo``); prints as it goes and returns what it did."""
    from wai.loaders.covisibility import run_covisibility
    from wai.validation import format_report, validate

    if workers < 1:
        raise UsageError(f"--workers {workers}: expected at least 1")
    out = Path(out)
    res = DemoResult(out)
    names = sources or [n for n in sorted(REGISTRY) if n in FAKES]
    if (out / "raw").exists():
        shutil.rmtree(out / "raw")  # fakes are regenerated each time; converted output is redone (--overwrite)
    with WorkerPool(workers) as pool:  # one pool for every source: the first conversion pays its start-up
        pool_started = False
        for name in names:
            tm = res.timings[name] = SourceTimings()
            dest = out / "converted" / name
            try:
                cls = get_converter(name)
                t = time.perf_counter()
                info = get_fake(name)(out / "raw" / name)
                tm.fakes = time.perf_counter() - t
                conv = cls(info.root, cls.Options(**(info.options or {})))
                t = time.perf_counter()
                run = run_conversion(conv, dest, RunOptions(workers=workers, overwrite=True), pool=pool)
                tm.conversion = time.perf_counter() - t
            except MissingDependencyError as e:
                click.echo(f"[{name}] SKIPPED: {e}")
                res.failures.append(name)
                continue
            except WaiError as e:
                click.echo(f"[{name}] FAILED: {type(e).__name__}: {e}")
                res.failures.append(name)
                continue
            n_complete = (run.manifest or {}).get("counts", {}).get("scenes_complete", 0)
            covis_failed: dict[str, str] = {}
            if n_complete:
                t = time.perf_counter()
                covis = run_covisibility(dest, workers=1, overwrite=True)
                tm.covisibility = time.perf_counter() - t
                covis_failed = {Path(k).name: v for k, v in covis.items() if v}
            t = time.perf_counter()
            report = validate(dest)
            tm.validation = time.perf_counter() - t
            n_frames = sum(r.n_frames for r in run.results)
            ok = run.ok and n_complete > 0 and not covis_failed and not report.errors
            if not ok:
                res.failures.append(name)
            note = "" if pool_started else f" (incl. starting {workers} worker process(es))"
            pool_started = True
            click.echo(f"[{name}] {'ok' if ok else 'FAILED'}: {n_complete} scene(s), {n_frames} frames; "
                       f"{tm.line(note)}; validation: {len(report.errors)} error(s), "
                       f"{len(report.warnings)} warning(s)")
            for r in run.failed:
                click.echo(f"  FAILED scene {r.name}: {(r.error or '').splitlines()[0]}")
            if not n_complete:
                click.echo(f"  no complete scene in {dest} (wai-convert exits 1 on this)")
            for scene, err in covis_failed.items():
                click.echo(f"  covisibility FAILED for {scene}: {err}")
            if report.errors:
                click.echo(format_report(report))
            if n_complete:
                res.roots[name] = dest
    if res.roots:
        try:
            from wai.coverage.report import run_report

            click.echo(run_report(list(res.roots.values()), html=out / "report.html", markdown=out / "report.md"))
        except MissingDependencyError as e:
            click.echo(f"report skipped: {e}")
    click.echo(f"\nraw fakes:  {out / 'raw'}\nconverted:  {out / 'converted'}\nreport:     {out / 'report.html'}")
    steps = next_steps(res)
    if steps:
        click.echo("\nnext, from this directory:")
        for c in steps:
            click.echo(f"  {c}")
        activate = Path(sys.executable).absolute().parent / "activate"
        if not steps[0].startswith("wai-") and activate.is_file():
            click.echo(f"(`source {installed_command('activate')}` puts wai-convert, wai-validate, wai-report and "
                       "python on PATH for this shell)")
    if res.failures:
        click.echo(f"FAILED sources: {', '.join(res.failures)}")
    else:
        click.echo(f"demo OK: {len(res.roots)} source(s)")
    return res
