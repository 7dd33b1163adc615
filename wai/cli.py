"""Command-line entry points. This module only parses arguments and calls the library.

* ``wai-convert SOURCE --input RAW --output OUT [options]`` (one subcommand per registered source,
  imported lazily so ``--help`` stays fast), plus ``wai-convert covisibility OUT``;
* ``wai-validate PATH [--json] [--strict]``;
* ``wai-report OUT [OUT ...] [--html FILE] [--markdown FILE]``;
* ``wai-demo [OUT]``: the end-to-end demo on built-in data.

A ``WaiError`` becomes a one-paragraph message and exit code 1; usage errors exit 2. Source names are
case-insensitive (``KITTI360`` is ``kitti360``); an unknown one is answered with the closest names.
Every entry point warns when the current directory holds a ``wai/`` folder that would shadow the installed
package for Python scripts run there (``import_shadow``).
"""

from __future__ import annotations

import difflib
import importlib.machinery
import logging
import os
import sys
import typing
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from wai.converters import REGISTRY
from wai.errors import MissingDependencyError, WaiError

#: Empty scenes listed one per line in the ``wai-convert`` summary (the manifest has all of them).
MAX_LISTED = 20

#: Extra ``wai-convert`` subcommands that are not sources: name -> "module:function" returning a click command.
EXTRA_COMMANDS: dict[str, str] = {
    "covisibility": "wai.loaders.covisibility:click_command",
    "frame-tables": "wai.format.frametable:click_command",
}


def import_shadow(directory: str | Path | None = None, path: Sequence[str] | None = None) -> Path | None:
    """The folder that ``import wai`` would take instead of the installed package, for a script in
    ``directory`` (default: the current directory) or ``python -c`` / ``python -m`` run there; None if none.

    Python puts the script's folder (or the current directory) first on ``sys.path``. A folder named ``wai``
    there without ``__init__.py`` (e.g. a clone of this repository) is a namespace-package *portion*; a
    regular package later on the path still wins, but an editable install (``pip install -e``, what
    ``scripts/setup.sh`` does) is found by setuptools' finder only *after* the path search, so the empty
    namespace package wins and ``from wai import FORMAT_VERSION`` fails with "cannot import name ... from
    'wai' (unknown location)". This asks Python's own path finder what it would find, so it is exact for
    the current installation: None when the installed package would still be imported.
    """
    d = Path.cwd() if directory is None else Path(directory)
    rest = list(sys.path[1:] if path is None else path)  # sys.path[0] is this entry point's own folder
    spec = importlib.machinery.PathFinder.find_spec("wai", [os.fspath(d), *rest])
    if spec is None or spec.loader is not None:
        return None
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else None


def shadow_message(folder: Path) -> str:
    """What is wrong when ``folder`` shadows the installed package, and how to fix it."""
    return (f"warning: {folder} is a folder without __init__.py (a clone of the wai repository?). A Python script "
            f"in {folder.parent}, or `python -c` / `python -m` run there, imports it as an empty namespace package "
            "instead of the installed wai and fails with \"ImportError: cannot import name ... from 'wai' (unknown "
            "location)\" (or \"No module named 'wai.format'\"). Run such scripts from another folder, or rename "
            "this one (e.g. `git clone <url> wai-src`). The wai-* commands themselves are not affected.")


def warn_if_shadowed() -> None:
    """Print ``shadow_message`` to stderr when the current directory shadows the installed package."""
    try:
        folder = import_shadow()
    except (OSError, ImportError, ValueError):  # a vanished cwd or an odd sys.path entry: nothing to say
        return
    if folder is not None:
        click.echo(shadow_message(folder), err=True)


def command_suggestions(name: str, commands: Sequence[str]) -> list[str]:
    """The closest command names to a mistyped ``name`` (case-insensitive), best first."""
    lower = {c.lower(): c for c in commands}
    return [lower[m] for m in difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)]


class _WaiClickError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _fail(e: WaiError) -> typing.NoReturn:
    # Usage errors (an output overlapping the input, option values that can never work) exit 2, like
    # click's own usage errors; every other WaiError exits 1.
    raise _WaiClickError(f"{type(e).__name__}: {e}", getattr(e, "exit_code", 1))


def _py_type(tp: Any) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    return base if base in (int, float, str, bool) else str


def _source_options(opts_cls: type) -> list[click.Option]:
    from wai.converters.base import option_fields

    hints = typing.get_type_hints(opts_cls)
    out = []
    for name, default, help_text, choices in option_fields(opts_cls):
        flag = "--" + name.replace("_", "-")
        tp = _py_type(hints.get(name, str))
        if tp is bool:
            out.append(click.Option([f"{flag}/--no-{flag[2:]}", name], default=bool(default), show_default=True,
                                    help=help_text))
        else:
            ctype = click.Choice(list(choices)) if choices else tp
            dflt = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            out.append(click.Option([flag, name], type=ctype, default=dflt, show_default=dflt is not None,
                                    help=help_text))
    return out


def _shared_options() -> list[click.Option]:
    from wai.run import default_workers

    return [
        click.Option(["--input", "-i", "input_root"], required=True, type=click.Path(path_type=Path),
                     help="root of the raw dataset (never written to)"),
        click.Option(["--output", "-o", "output"], required=True, type=click.Path(path_type=Path),
                     help="output dataset root"),
        click.Option(["--scenes"], default=None, help="comma-separated scene names, or a regex matched in full"),
        click.Option(["--limit"], type=int, default=None, help="convert at most this many scenes"),
        click.Option(["--workers", "-j"], type=int, default=default_workers(), show_default=True,
                     help="worker processes (one scene per task)"),
        click.Option(["--overwrite"], is_flag=True, help="redo scenes that are already converted"),
        click.Option(["--resume/--no-resume"], default=True, show_default=True,
                     help="skip scenes whose state is finished, redo the rest"),
        click.Option(["--dry-run"], is_flag=True, help="list the scenes that would be converted and stop"),
        click.Option(["--check-raw"], is_flag=True,
                     help="verify the raw layout first; report every missing or malformed file and stop on any"),
        click.Option(["--depth-precision"], type=click.Choice(["float16", "float32"]), default="float16",
                     show_default=True, help="EXR depth precision"),
        click.Option(["--shard"], default=None, help="i/n: convert every n-th scene starting at i (SLURM arrays)"),
        click.Option(["--executor"], type=click.Choice(["process", "ray"]), default="process", show_default=True,
                     help="process pool on this node, or Ray tasks"),
        click.Option(["--ray-address"], default=None, help="Ray cluster address (default: start a local Ray)"),
        click.Option(["--malloc-tuning/--no-malloc-tuning"], default=True, show_default=True,
                     help="keep freed frame buffers for reuse in converting processes (glibc; faster, same peak RSS)"),
        click.Option(["-v", "--verbose"], count=True, help="more logging"),
        click.Option(["-q", "--quiet"], is_flag=True, help="no progress bars"),
    ]


def _make_source_command(name: str) -> click.Command:
    from wai.converters import get_converter

    entry = REGISTRY[name]
    try:
        conv_cls = get_converter(name)
    except MissingDependencyError as e:
        err = e

        @click.command(name=name, help=f"{entry.summary} [NOT INSTALLED: {err}]",
                       context_settings={"ignore_unknown_options": True})
        @click.argument("args", nargs=-1, type=click.UNPROCESSED)
        def missing(args: tuple[str, ...]) -> None:
            _fail(err)

        return missing

    def callback(**kw: Any) -> None:
        from wai.format.framestats import format_counts
        from wai.run import RunOptions, run_conversion

        logging.basicConfig(level=logging.WARNING - 10 * kw.pop("verbose"), format="%(levelname)s %(message)s")
        quiet = kw.pop("quiet")
        input_root, output = kw.pop("input_root"), kw.pop("output")
        run_keys = {f.name for f in fields(RunOptions)}
        run = RunOptions(**{k: kw.pop(k) for k in list(kw) if k in run_keys}, progress=not quiet)
        try:
            conv = conv_cls(input_root, conv_cls.Options(**kw))
            result = run_conversion(conv, output, run)
        except WaiError as e:
            _fail(e)
        if run.dry_run:
            skipped = result.skipped
            done_already = f" ({len(skipped)} already complete or known empty, skipped by --resume)" if skipped else ""
            click.echo(f"{len(result.planned)} scene(s) would be converted{done_already}:")
            for n in result.planned:
                click.echo(f"  {n}")
            return
        done = [r for r in result.results if r.status == "finished"]
        empty = result.empty
        complete = [r for r in result.results if r.status == "skipped" and not r.empty]
        click.echo(f"{name}: {len(done)} scene(s) converted ({sum(r.n_frames for r in done)} frames, "
                   f"{sum(r.n_dropped for r in done)} dropped), {len(empty)} empty (every frame dropped), "
                   f"{len(complete)} already complete, {len(result.failed)} failed -> {output}")
        dropped: Counter[str] = Counter()
        for r in done:
            dropped.update(r.drop_reasons)
        if dropped:
            click.echo(f"  dropped frames in converted scenes: {format_counts(dropped)} (frame by frame: "
                       f"{output}/_meta/coverage.parquet, or `wai-report {output}`)")
        skipped_src = sorted(conv.skipped_scenes.items())
        for scene_name, why in skipped_src[:MAX_LISTED]:
            click.echo(f"  SKIPPED {scene_name}: {why}")
        if skipped_src:
            more = f"{len(skipped_src) - MAX_LISTED} more; " if len(skipped_src) > MAX_LISTED else ""
            click.echo(f"  ({more}source scenes left out by the options; all are in {output}/_meta/manifest.json, "
                       "scenes_skipped_by_converter)")
        for r in empty[:MAX_LISTED]:
            again = "" if r.status == "empty" else "; known from an earlier run, --overwrite retries it"
            click.echo(f"  EMPTY {r.name}: {r.n_dropped} frame(s) dropped ({format_counts(r.drop_reasons)}), "
                       f"no scene written{again}")
        if empty:
            more = f"{len(empty) - MAX_LISTED} more; " if len(empty) > MAX_LISTED else ""
            click.echo(f"  ({more}empty scenes are not errors; all are in {output}/_meta/manifest.json, "
                       "empty_scenes)")
        for r in result.failed:
            click.echo(f"  FAILED {r.name}: {(r.error or '').splitlines()[0]}", err=True)
        if result.failed:
            click.echo(f"  tracebacks: {output}/<scene>/_process_log.json; rerun to retry failed scenes", err=True)
            sys.exit(1)
        n_complete = (result.manifest or {}).get("counts", {}).get("scenes_complete", 0)
        if not n_complete:
            # The same rule as wai-validate's `no_scenes`: a dataset without one scene is an error, so that
            # `wai-convert ... && wai-validate ...` agree (docs/validation.md).
            click.echo(f"  error: {output} holds no scene with frames (every frame was dropped); see the drop "
                       "reasons above and adjust the options (e.g. depth range, filters)", err=True)
            sys.exit(1)

    params = _shared_options() + _source_options(conv_cls.Options)
    return click.Command(name, callback=callback, params=params, help=f"Convert {entry.summary}.")


class _ConvertGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(REGISTRY) + sorted(EXTRA_COMMANDS)

    def _canonical(self, cmd_name: str) -> str | None:
        """The command name ``cmd_name`` means: exact, else case-insensitive (``KITTI360`` -> ``kitti360``)."""
        names = [*REGISTRY, *EXTRA_COMMANDS]
        if cmd_name in names:
            return cmd_name
        return next((n for n in names if n.lower() == cmd_name.lower()), None)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        name = click.utils.make_str(args[0])
        canonical = self._canonical(name)
        if canonical is None and not ctx.resilient_parsing and not name.startswith("-"):
            close = command_suggestions(name, self.list_commands(ctx))
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise click.UsageError(f"No such command {name!r}.{hint} Sources and commands: "
                                   f"{', '.join(self.list_commands(ctx))}.", ctx)
        return super().resolve_command(ctx, [canonical or name, *args[1:]])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd_name = self._canonical(cmd_name) or cmd_name
        if cmd_name in REGISTRY:
            return _make_source_command(cmd_name)
        if cmd_name in EXTRA_COMMANDS:
            import importlib

            mod, _, fn = EXTRA_COMMANDS[cmd_name].partition(":")
            try:
                return getattr(importlib.import_module(mod), fn)()
            except ImportError as e:  # say what is missing instead of "No such command"
                raise click.ClickException(f"`wai-convert {cmd_name}` is unavailable: {e}") from e
        return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import converter modules (fast --help, missing extras stay listed).
        rows = [(n, e.summary + (f"  [extra: wai[{e.extra}]]" if e.extra else "")) for n, e in sorted(REGISTRY.items())]
        rows += [("covisibility", "compute pairwise covisibility of converted scenes"),
                 ("frame-tables", "build or refresh the memory-mapped frame tables the loader shares across workers")]
        with formatter.section("Sources and commands"):
            formatter.write_dl(rows)


@click.group(cls=_ConvertGroup, help="Convert a raw dataset into the canonical wai scene format.")
@click.version_option(package_name="wai")
def convert_main() -> None:
    """``wai-convert``."""
    warn_if_shadowed()


@click.command(help="Validate converted scenes or datasets (exit 0 clean, 1 errors found, 2 usage error).")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="machine-readable JSON report (stable keys)")
@click.option("--strict", is_flag=True, help="warnings count as errors")
@click.option("--no-geometry", is_flag=True, help="skip the depth-reprojection check")
def validate_main(path: Path, as_json: bool, strict: bool, no_geometry: bool) -> None:
    """``wai-validate``."""
    from wai.validation import run_cli

    warn_if_shadowed()
    try:
        code = run_cli(str(path), as_json=as_json, strict=strict, geometry=not no_geometry)
    except WaiError as e:
        _fail(e)
    sys.exit(code)


@click.command(help="Coverage report of one or several converted datasets.")
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--html", "html", type=click.Path(path_type=Path), default=None,
              help="write a self-contained HTML report")
@click.option("--markdown", "markdown", type=click.Path(path_type=Path), default=None, help="write a Markdown summary")
def report_main(roots: tuple[Path, ...], html: Path | None, markdown: Path | None) -> None:
    """``wai-report``."""
    from wai.coverage.report import run_report

    warn_if_shadowed()
    try:
        click.echo(run_report(list(roots), html=html, markdown=markdown))
    except WaiError as e:
        _fail(e)


@click.command(help="Run the end-to-end demo: fake raw data for every source -> convert -> covisibility -> "
                    "validate -> report. OUT is relative to the current folder, like the commands it prints.")
@click.argument("out", type=click.Path(path_type=Path), default=Path("demo_out"))
@click.option("--workers", "-j", type=int, default=2, show_default=True)
def demo_main(out: Path, workers: int) -> None:
    """``wai-demo``."""
    from wai.demo import run_demo

    warn_if_shadowed()
    try:
        sys.exit(run_demo(out, workers=workers))
    except WaiError as e:
        _fail(e)
