"""The end-to-end demo on built-in data: fake raw datasets for every registered source -> convert ->
validate -> coverage report. ``wai-demo [OUT]`` runs it and prints where everything is."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from wai.converters import REGISTRY, get_converter
from wai.errors import MissingDependencyError, WaiError
from wai.run import RunOptions, run_conversion
from wai.synthetic import FAKES, get_fake


def run_demo(out: str | Path, workers: int = 2, sources: list[str] | None = None) -> int:
    """Run the demo into ``out`` (raw fakes under ``out/raw``, datasets under ``out/converted``).

    Returns the exit code: 0 when every source converted and validated clean.
    """
    from wai.validation import format_report, validate

    out = Path(out)
    names = sources or [n for n in sorted(REGISTRY) if n in FAKES]
    if (out / "raw").exists():
        shutil.rmtree(out / "raw")  # fakes are regenerated each time; converted output is resumed
    roots: list[Path] = []
    failures: list[str] = []
    for name in names:
        t0 = time.perf_counter()
        try:
            cls = get_converter(name)
            info = get_fake(name)(out / "raw" / name)
            conv = cls(info.root, cls.Options(**(info.options or {})))
            res = run_conversion(conv, out / "converted" / name, RunOptions(workers=workers, overwrite=True))
        except MissingDependencyError as e:
            click.echo(f"[{name}] SKIPPED: {e}")
            failures.append(name)
            continue
        except WaiError as e:
            click.echo(f"[{name}] FAILED: {e}")
            failures.append(name)
            continue
        report = validate(out / "converted" / name)
        n_frames = sum(r.n_frames for r in res.results)
        status = "ok" if res.ok and not report.errors else "FAILED"
        if status != "ok":
            failures.append(name)
        click.echo(f"[{name}] {status}: {len(res.results)} scene(s), {n_frames} frames converted in "
                   f"{time.perf_counter() - t0:.1f} s; validation: {len(report.errors)} error(s), "
                   f"{len(report.warnings)} warning(s)")
        if report.errors:
            click.echo(format_report(report))
        roots.append(out / "converted" / name)
    if roots:
        try:
            from wai.coverage.report import run_report

            click.echo(run_report(roots, html=out / "report.html", markdown=out / "report.md"))
        except MissingDependencyError as e:
            click.echo(f"report skipped: {e}")
    click.echo(f"\nraw fakes:  {out / 'raw'}\nconverted:  {out / 'converted'}\nreport:     {out / 'report.html'}")
    click.echo("validate:   wai-validate " + str(out / "converted" / (names[0] if names else "")))
    if failures:
        click.echo(f"FAILED sources: {', '.join(failures)}")
        return 1
    click.echo(f"demo OK: {len(roots)} source(s)")
    return 0
