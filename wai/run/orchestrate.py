"""``run_conversion``: the control flow every source shares.

Scene selection (``--scenes``, ``--shard``, ``--limit``), resume/overwrite state, the data-safety guards
(input/output overlap, one writer per output root, one dataset per root), failure isolation (one failing
scene, or one dead worker, never stops the run), worker pools, progress over frames across workers, and the
dataset-level outputs (``wai.run.manifest``).

A scene ends ``finished``, ``failed`` (traceback in its ``_process_log.json``) or ``empty``: it converted
without error but every frame was dropped, so no scene directory is kept and its drop reasons are recorded
in the manifest's ``empty_scenes`` (which is also how a resumed run knows not to redo it).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wai.converters.base import Converter, SceneRef
from wai.errors import SourceLayoutError, SourceNotFoundError, UsageError, WaiError
from wai.format import atomic
from wai.format.framestats import format_counts
from wai.format.scene import EMPTY, FAILED, is_complete
from wai.run.guards import OutputLock, check_no_overlap
from wai.run.manifest import META_DIR, check_one_dataset, known_empty, write_dataset_outputs
from wai.run.pool import WorkerPool
from wai.run.scene import convert_one
from wai.run.types import SKIPPED, Job, RunOptions, RunResult, SceneResult

log = logging.getLogger("wai.convert")


def select_scenes(scenes: list[SceneRef], opts: RunOptions) -> list[SceneRef]:
    """Apply ``--scenes`` (comma-separated names, or a regex matched in full), ``--shard i/n`` and ``--limit``."""
    out = scenes
    if opts.scenes:
        names = [s.strip() for s in opts.scenes.split(",") if s.strip()]
        known = {s.name for s in scenes}
        if all(n in known for n in names):
            out = [s for s in out if s.name in names]
        else:
            try:
                pattern = re.compile(opts.scenes)
            except re.error as e:
                raise WaiError(f"--scenes {opts.scenes!r} is neither known scene names nor a valid regex: {e}") from e
            out = [s for s in out if pattern.fullmatch(s.name)]
            if not out:
                raise WaiError(f"--scenes {opts.scenes!r} matches no scene; available: "
                               f"{', '.join(s.name for s in scenes[:20])}{' ...' if len(scenes) > 20 else ''}")
    if opts.shard:
        m = re.fullmatch(r"(\d+)/(\d+)", opts.shard)
        if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
            raise WaiError(f"--shard {opts.shard!r}: expected i/n with 0 <= i < n, e.g. 0/4")
        i, n = int(m.group(1)), int(m.group(2))
        out = out[i::n]
    if opts.limit is not None:
        out = out[: opts.limit]
    return out



#: How many sub-folders of --input are tried when looking for the real root next to a wrong one.
MAX_NEARBY = 40


def _has_scenes(cls: type[Converter], root: Path, options: Any) -> bool:
    """True when ``root`` lists a scene with frames (listings are loose: an empty one proves nothing)."""
    try:
        first = next(iter(cls(root, options).iter_scenes()), None)
    except (WaiError, OSError, ValueError):
        return False
    return first is not None and first.n_frames != 0


def no_scenes_message(converter: Converter, reason: str = "") -> str:
    """What was searched for under ``--input`` and, when the parent or a sub-folder holds the expected
    layout, which ``--input`` to use instead (independent of docs/ being installed)."""
    root = converter.root
    msg = f"{root}: no {converter.name} scenes found" + (f" ({reason})" if reason else "")
    if converter.layout_hint:
        msg += f"; expected {converter.layout_hint}"
    cls = type(converter)
    candidates = [root.parent, root.parent.parent]
    try:
        candidates += sorted(p for p in root.iterdir() if p.is_dir())[:MAX_NEARBY]
    except OSError:
        pass
    for cand in candidates:
        if cand != root and cand.is_dir() and _has_scenes(cls, cand, converter.options):
            return msg + f". {cand} has that layout: did you mean --input {cand}?"
    return msg + f" (`wai-convert {converter.name} --help` describes the options)"


def check_raw(converter: Converter, scenes: list[SceneRef]) -> list[str]:
    """Every raw-layout problem of the selected scenes (empty when the layout is complete), each once."""
    problems: list[str] = []
    for s in scenes:
        try:
            problems.extend(converter.check_scene(s))
        except WaiError as e:
            problems.append(str(e))
    return list(dict.fromkeys(problems))


def check_run_options(opts: RunOptions) -> None:
    """Raise ``UsageError`` for run options that can never work (before any scene starts)."""
    if opts.workers < 1:
        raise UsageError(f"--workers {opts.workers}: expected at least 1 (the default is the number of cores)")
    if opts.limit is not None and opts.limit < 0:
        raise UsageError(f"--limit {opts.limit}: expected 0 or more scenes")
    if opts.executor not in ("process", "ray"):
        raise UsageError(f"--executor {opts.executor!r}: expected 'process' or 'ray'")


def run_conversion(
    converter: Converter, output: str | Path, opts: RunOptions | None = None, pool: WorkerPool | None = None
) -> RunResult:
    """Convert the selected scenes of ``converter`` into ``output`` and write the dataset-level outputs.

    ``pool``: a started ``WorkerPool`` to convert the scenes in (``opts.workers`` is then ignored), e.g. to
    convert several sources in one job without paying the workers' start-up each time; the caller closes it.
    Raises ``OutputOverlapError`` when ``output`` overlaps the raw input, ``OutputLockedError`` when another run
    writes ``output``, ``UsageError`` for options that can never work.
    """
    opts = opts or RunOptions()
    output = Path(output)
    t_start = time.perf_counter()
    check_run_options(opts)
    converter.validate_options()
    check_no_overlap(converter.root, output)
    try:
        all_scenes = list(converter.iter_scenes())
    except SourceNotFoundError as e:  # a whole folder of the layout is missing: --input is probably one level off
        raise SourceNotFoundError(no_scenes_message(converter, str(e))) from e
    if not all_scenes:
        raise SourceLayoutError(no_scenes_message(converter))
    names = [s.name for s in all_scenes]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SourceLayoutError(f"{converter.root}: duplicate scene names {dup[:5]}")
    selected = select_scenes(all_scenes, opts)
    if opts.check_raw:
        problems = check_raw(converter, selected)
        if problems:
            listing = "\n  ".join(problems[:50])
            more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
            raise SourceLayoutError(f"--check-raw found {len(problems)} problem(s) in {converter.root}:\n  "
                                    f"{listing}{more}")
    check_one_dataset(converter, output)
    if opts.dry_run:
        todo, skipped = _plan(converter, selected, output, opts)
        return RunResult(output, skipped, [s.name for s in todo])

    with OutputLock(output, purpose=f"wai-convert {converter.name}"):
        check_one_dataset(converter, output)  # again, under the lock: another run may just have finished
        todo, results = _plan(converter, selected, output, opts)
        _remove_own_temporaries(output / META_DIR)
        # Every scene in `todo` is to be (re)written: incomplete ones, and complete ones under --overwrite.
        for res in _with_progress(converter, todo, output, opts, pool, results):
            results.append(res)
        order = {s.name: i for i, s in enumerate(selected)}
        results.sort(key=lambda r: order.get(r.name, 0))
        manifest = write_dataset_outputs(converter, output, all_scenes, results, opts, time.perf_counter() - t_start)
    return RunResult(output, results, [s.name for s in todo], manifest)


def _plan(converter: Converter, selected: list[SceneRef], output: Path,
          opts: RunOptions) -> tuple[list[SceneRef], list[SceneResult]]:
    """Split the selected scenes into those to convert and those resume skips (complete or known empty)."""
    todo: list[SceneRef] = []
    skipped: list[SceneResult] = []
    empty = known_empty(converter, output)
    for s in selected:
        if not opts.overwrite and opts.resume and is_complete(output / s.name):
            skipped.append(SceneResult(s.name, s.split, SKIPPED))
        elif not opts.overwrite and opts.resume and s.name in empty and not (output / s.name).exists():
            e = empty[s.name]
            skipped.append(SceneResult(s.name, s.split, SKIPPED, n_dropped=int(e.get("n_dropped", 0)),
                                       drop_reasons=dict(e.get("drop_reasons", {}))))
        else:
            todo.append(s)
    return todo, skipped


def _remove_own_temporaries(meta: Path) -> None:
    """Remove temporaries a killed run of this library left in ``_meta`` (its own prefix, under the lock).

    Only ``_meta`` (a folder only wai writes) and only names with the library's ``.tmp-wai-`` prefix: a
    user's own files, anywhere, are never touched. Leftovers inside a scene folder go when the scene is redone.
    """
    if not meta.is_dir() or meta.is_symlink():
        return
    for p in meta.rglob(atomic.TMP_PREFIX + "*"):
        if p.is_file() and not p.is_symlink():
            p.unlink()


def _with_progress(converter: Converter, todo: list[SceneRef], output: Path, opts: RunOptions,
                   pool: WorkerPool | None, results: list[SceneResult]) -> Iterator[SceneResult]:
    """Run the scenes with a progress bar over frames (written and dropped) across all workers."""
    from tqdm import tqdm

    known = [s.n_frames for s in todo]
    total = sum(n for n in known if n) if todo and all(n is not None for n in known) else None
    bar = tqdm(total=total, desc=f"{converter.name}", unit="frame", disable=not opts.progress or not todo,
               dynamic_ncols=True)
    done_scenes = 0

    def on_frames(n: int) -> None:
        bar.update(n)

    try:
        for res in _execute(converter, todo, output, opts, pool, on_frames):
            done_scenes += 1
            bar.set_postfix_str(f"scenes {done_scenes}/{len(todo)}, empty "
                                f"{sum(r.status == EMPTY for r in results) + (res.status == EMPTY)}, failed "
                                f"{sum(r.status == FAILED for r in results) + (res.status == FAILED)}")
            if res.status == FAILED:
                log.error("scene %s failed: %s", res.name, (res.error or "").splitlines()[0])
            elif res.status == EMPTY:
                log.warning("scene %s: every frame dropped (%s); no scene written", res.name,
                            format_counts(res.drop_reasons))
            yield res
    finally:
        bar.close()


def _execute(
    converter: Converter, todo: list[SceneRef], output: Path, opts: RunOptions, pool: WorkerPool | None,
    on_frames: Callable[[int], Any],
) -> Iterator[SceneResult]:
    if not todo:
        return
    if opts.executor == "ray":
        from wai.run.ray_executor import run_ray

        yield from run_ray(converter, todo, output, opts)
        return
    workers = max(1, min(opts.workers, len(todo)))
    if workers == 1 and pool is None:
        for s in todo:
            yield convert_one(converter, s, output, opts.depth_precision, True, on_frame=lambda: on_frames(1),
                              malloc_tuning=opts.malloc_tuning)
        return
    jobs = [make_job(converter, s, output, opts) for s in todo]
    if pool is not None:
        yield from pool.run(jobs, on_frames)
        return
    with WorkerPool(workers) as own:
        yield from own.run(jobs, on_frames)


def make_job(converter: Converter, scene: SceneRef, output: Path, opts: RunOptions) -> Job:
    """The picklable description of converting ``scene`` in another process."""
    from wai.converters import class_path

    return Job(class_path(type(converter)), converter.root, converter.options, scene, output, opts.depth_precision,
               True, opts.malloc_tuning)
