"""The converter contract and the control flow every source shares.

A source module subclasses ``Converter`` and says only how to read its source:

* ``iter_scenes()`` lists the work (deterministic order, no pixel decoding);
* ``convert_scene(scene, writer)`` emits frames through a ``SceneWriter``;
* optionally ``check_scene(scene)`` lists missing or malformed raw files for ``--check-raw``.

``run_conversion`` owns everything else: scene selection (``--scenes``, ``--shard``, ``--limit``),
resume/overwrite state, failure isolation (one failing scene never stops the run), worker pools,
progress, statistics, and the dataset-level outputs ``_meta/manifest.json``, ``_meta/coverage.parquet``
and the WAI scene lists ``_meta/<split>/<dataset>_scene_list_<split>.npy``.

A scene ends ``finished``, ``failed`` (traceback in its ``_process_log.json``) or ``empty``: it converted
without error but every frame was dropped, so no scene directory is kept and its drop reasons are recorded
in the manifest's ``empty_scenes`` (which is also how a resumed run knows not to redo it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from wai import __version__
from wai.coverage.stats import format_counts
from wai.errors import ConversionError, SourceLayoutError, SourceNotFoundError, WaiError
from wai.format import atomic
from wai.format.conventions import PINHOLE
from wai.format.scene import COVERAGE_JSON, EMPTY, FAILED, FINISHED, SceneWriter, get_process_log, is_complete

log = logging.getLogger("wai.convert")

META_DIR = "_meta"
MANIFEST = "manifest.json"
COVERAGE_PARQUET = "coverage.parquet"
#: Result status of a scene not converted in this run (complete, or known empty from the manifest).
SKIPPED = "skipped"


def option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:  # noqa: A002
    """A converter option: becomes ``--<name-with-dashes>`` on the CLI with this help text."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ConverterOptions:
    """Base of the per-source options dataclass. Each field (declared with ``option``) is a CLI option."""

    def to_dict(self) -> dict[str, Any]:
        """Options as JSON-able values (recorded in ``scene_meta.source`` and the manifest)."""
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass(frozen=True)
class SceneRef:
    """One unit of work: an output scene. ``data`` is converter-private and must be picklable."""

    name: str
    split: str = "train"
    data: Any = None
    n_frames: int | None = None


@dataclass
class RunOptions:
    """Options shared by every source (``wai-convert SOURCE --help`` lists them)."""

    scenes: str | None = None
    limit: int | None = None
    workers: int = 1
    overwrite: bool = False
    resume: bool = True
    dry_run: bool = False
    check_raw: bool = False
    depth_precision: str = "float16"
    shard: str | None = None
    executor: str = "process"
    ray_address: str | None = None
    progress: bool = True
    #: Keep freed frame-sized buffers in each converting process for reuse (glibc; ``allocator.py``).
    malloc_tuning: bool = True


@dataclass
class SceneResult:
    """What happened to one scene.

    ``status``: ``finished``; ``empty`` (converted, every frame dropped, no directory kept);
    ``failed`` (``error`` has the traceback); ``skipped`` (not converted in this run: complete already, or
    known empty from the manifest, in which case ``n_dropped`` / ``drop_reasons`` are the recorded ones).
    ``drop_reasons`` counts the dropped frames by ``drop_reason``.
    """

    name: str
    split: str
    status: str
    n_frames: int = 0
    n_dropped: int = 0
    seconds: float = 0.0
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    drop_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Every frame of the scene is dropped: found in this run, or known from an earlier one."""
        return self.status == EMPTY or (self.status == SKIPPED and self.n_dropped > 0 and self.n_frames == 0)


@dataclass
class RunResult:
    """The outcome of ``run_conversion``."""

    output: Path
    results: list[SceneResult]
    planned: list[str]
    manifest: dict[str, Any] | None = None

    @property
    def failed(self) -> list[SceneResult]:
        """Scenes that failed in this run."""
        return [r for r in self.results if r.status == FAILED]

    @property
    def empty(self) -> list[SceneResult]:
        """Scenes whose every frame is dropped (this run's and those known from the manifest)."""
        return [r for r in self.results if r.empty]

    @property
    def ok(self) -> bool:
        """True when no scene failed (empty scenes are not failures)."""
        return not self.failed


class Converter(ABC):
    """Base class of a source converter. Subclasses set the class attributes and two methods."""

    #: CLI name (``wai-convert <name>``) and the ``dataset_name`` written into scenes.
    name: ClassVar[str]
    #: Modalities every converted scene provides (checked by the conformance test).
    provides: ClassVar[frozenset[str]] = frozenset({"image", "depth"})
    #: The per-source options dataclass.
    Options: ClassVar[type[ConverterOptions]] = ConverterOptions
    camera_model: ClassVar[str] = PINHOLE
    scale_type: ClassVar[str] = "metric"
    image_ext: ClassVar[str] = ".jpg"

    def __init__(self, input_root: str | Path, options: ConverterOptions | None = None) -> None:
        self.root = Path(input_root)
        self.options = options if options is not None else self.Options()
        #: Source scenes that ``iter_scenes`` filtered out, with the reason (reported in the manifest).
        self.skipped_scenes: dict[str, str] = {}
        if not self.root.is_dir():
            raise SourceNotFoundError(
                f"raw {self.name} dataset not found: {self.root} is not a directory; pass --input <raw root>"
            )

    @abstractmethod
    def iter_scenes(self) -> Iterator[SceneRef]:
        """Yield the scenes in deterministic order; list files only, never decode pixels."""

    @abstractmethod
    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any] | None:
        """Write one scene's frames; raise a ``WaiError`` naming the file on bad input.

        May return a small JSON-able summary that is stored in the manifest (e.g. sampling counts).
        """

    def skip_scene(self, name: str, reason: str) -> None:
        """Record that ``iter_scenes`` left source scene ``name`` out on purpose (never skip silently)."""
        self.skipped_scenes[name] = reason
        log.info("%s: skipping %s: %s", self.name, name, reason)

    def check_scene(self, scene: SceneRef) -> list[str]:
        """Problems with the raw files of one scene (``--check-raw``); each names the file. Default: none."""
        return []

    def writer_options(self, scene: SceneRef) -> dict[str, Any]:
        """Keyword arguments for this scene's ``SceneWriter`` (camera model, scale type, image extension)."""
        return {"camera_model": self.camera_model, "scale_type": self.scale_type, "image_ext": self.image_ext}

    def source_info(self, scene: SceneRef) -> dict[str, Any]:
        """Provenance recorded in ``scene_meta.source``."""
        return {
            "dataset": self.name,
            "root": str(self.root.resolve()),
            "converter": f"wai.converters.{self.name}",
            "converter_version": __version__,
            "options": self.options.to_dict(),
        }


# --- scene selection ------------------------------------------------------------------------------


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


# --- one scene (runs in a worker) -----------------------------------------------------------------


def convert_one(
    converter: Converter, scene: SceneRef, output: Path, depth_precision: str, overwrite: bool,
    frame_progress: bool = False, malloc_tuning: bool = False,
) -> SceneResult:
    """Convert one scene, isolating failures: the result says ``failed`` with the traceback.

    A scene whose every frame is dropped is ``empty``: its directory is removed and the result carries the
    drop reasons. A scene that neither writes nor drops a frame is a failure (frames vanished silently).
    With ``frame_progress`` a tqdm bar counts the scene's frames (written and dropped); with ``malloc_tuning``
    this process keeps freed buffers for reuse from then on (``allocator.keep_freed_memory``).
    """
    if malloc_tuning:
        from wai.converters.allocator import keep_freed_memory

        keep_freed_memory()
    t0 = time.perf_counter()
    bar = None
    try:
        with SceneWriter(
            output, scene.name, converter.name, depth_precision=depth_precision, overwrite=overwrite,
            source=converter.source_info(scene), **converter.writer_options(scene),
        ) as writer:
            if frame_progress:
                from tqdm import tqdm

                bar = tqdm(total=scene.n_frames, desc=f"  {scene.name}", unit="frame", leave=False)
                writer.on_frame = lambda: bar.update(1)  # type: ignore[union-attr]
            summary = converter.convert_scene(scene, writer) or {}
            n_frames = writer.n_frames
            reasons = [r.get("drop_reason") for r in writer.coverage_rows if not r.get("selected", True)]
            if n_frames == 0:
                if not reasons:
                    raise ConversionError(f"scene {scene.name}: the converter wrote no frame and dropped none; "
                                          "every frame must be written or dropped with a reason")
                writer.discard()
        status = EMPTY if n_frames == 0 else FINISHED
        return SceneResult(scene.name, scene.split, status, n_frames, len(reasons), time.perf_counter() - t0,
                           summary=summary, drop_reasons=_count(reasons))
    except Exception as e:  # noqa: BLE001 - isolate any failure of one scene, record it with its traceback
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return SceneResult(scene.name, scene.split, FAILED, seconds=time.perf_counter() - t0,
                           error=f"{type(e).__name__}: {e}\n{tb}")
    finally:
        if bar is not None:
            bar.close()


def _worker(args: tuple[Any, ...]) -> SceneResult:
    cls_path, root, opts, scene, output, precision, overwrite, malloc_tuning = args
    from wai.converters import load_class
    from wai.format.codecs import cv2

    # One scene per worker per core: OpenCV's own thread pool (remap, cvtColor, ...) in every worker would
    # oversubscribe the cores the pool already fills.
    cv2.setNumThreads(1)

    conv = load_class(cls_path)(root, opts)
    return convert_one(conv, scene, output, precision, overwrite, malloc_tuning=malloc_tuning)


# --- the run --------------------------------------------------------------------------------------


def check_raw(converter: Converter, scenes: list[SceneRef]) -> list[str]:
    """Every raw-layout problem of the selected scenes (empty when the layout is complete)."""
    problems: list[str] = []
    for s in scenes:
        try:
            problems.extend(converter.check_scene(s))
        except WaiError as e:
            problems.append(str(e))
    return problems


def run_conversion(
    converter: Converter, output: str | Path, opts: RunOptions | None = None, pool: Executor | None = None
) -> RunResult:
    """Convert the selected scenes of ``converter`` into ``output`` and write the dataset-level outputs.

    ``pool``: an already running process pool to convert the scenes in (``opts.workers`` is then ignored),
    e.g. to convert several sources in one job without paying the workers' start-up each time.
    """
    from tqdm import tqdm

    opts = opts or RunOptions()
    output = Path(output)
    t_start = time.perf_counter()
    all_scenes = list(converter.iter_scenes())
    if not all_scenes:
        raise SourceLayoutError(f"{converter.root}: no {converter.name} scenes found; see docs/sources/"
                                f"{converter.name}.md for the expected layout")
    names = [s.name for s in all_scenes]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SourceLayoutError(f"{converter.root}: duplicate scene names {dup[:5]}")
    selected = select_scenes(all_scenes, opts)
    planned = [s.name for s in selected]
    if opts.check_raw:
        problems = check_raw(converter, selected)
        if problems:
            listing = "\n  ".join(problems[:50])
            more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
            raise SourceLayoutError(f"--check-raw found {len(problems)} problem(s) in {converter.root}:\n  "
                                    f"{listing}{more}")
    if opts.dry_run:
        return RunResult(output, [], planned)

    todo: list[SceneRef] = []
    results: list[SceneResult] = []
    known_empty = _known_empty(converter, output)
    for s in selected:
        if not opts.overwrite and opts.resume and is_complete(output / s.name):
            results.append(SceneResult(s.name, s.split, SKIPPED))
        elif not opts.overwrite and opts.resume and s.name in known_empty and not (output / s.name).exists():
            e = known_empty[s.name]
            results.append(SceneResult(s.name, s.split, SKIPPED, n_dropped=int(e.get("n_dropped", 0)),
                                       drop_reasons=dict(e.get("drop_reasons", {}))))
        else:
            todo.append(s)
    output.mkdir(parents=True, exist_ok=True)
    atomic.clean_temporaries(output)
    # Every scene in `todo` is to be (re)written: incomplete ones, and complete ones under --overwrite/--no-resume.
    overwrite = True

    bar = tqdm(total=len(todo), desc=f"{converter.name} scenes", unit="scene", disable=not opts.progress)
    n_frames = 0
    for res in _execute(converter, todo, output, opts, overwrite, pool):
        results.append(res)
        n_frames += res.n_frames
        bar.update(1)
        bar.set_postfix(frames=n_frames, empty=sum(r.status == EMPTY for r in results),
                        failed=sum(r.status == FAILED for r in results))
        if res.status == FAILED:
            log.error("scene %s failed: %s", res.name, (res.error or "").splitlines()[0])
        elif res.status == EMPTY:
            log.warning("scene %s: every frame dropped (%s); no scene written", res.name,
                        format_counts(res.drop_reasons))
    bar.close()
    order = {n: i for i, n in enumerate(planned)}
    results.sort(key=lambda r: order.get(r.name, 0))
    manifest = write_dataset_outputs(converter, output, all_scenes, results, opts, time.perf_counter() - t_start)
    return RunResult(output, results, planned, manifest)


def _execute(
    converter: Converter, todo: list[SceneRef], output: Path, opts: RunOptions, overwrite: bool,
    pool: Executor | None = None,
) -> Iterator[SceneResult]:
    if opts.executor == "ray":
        from wai.converters.executors import run_ray

        yield from run_ray(converter, todo, output, opts, overwrite)
        return
    if opts.executor != "process":
        raise WaiError(f"--executor {opts.executor!r}: expected 'process' or 'ray'")
    workers = max(1, min(opts.workers, len(todo)))
    if workers == 1 and pool is None:
        for s in todo:
            yield convert_one(converter, s, output, opts.depth_precision, overwrite, frame_progress=opts.progress,
                              malloc_tuning=opts.malloc_tuning)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from wai.converters import class_path

    cls_path = class_path(type(converter))
    jobs = [(cls_path, converter.root, converter.options, s, output, opts.depth_precision, overwrite,
             opts.malloc_tuning) for s in todo]
    # spawn: workers never inherit threads or open handles of the parent (tqdm, torch, open3d). A pool
    # passed in is the caller's to shut down.
    spawn = mp.get_context("spawn")
    with nullcontext(pool) if pool is not None else ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as ex:
        yield from (fut.result() for fut in as_completed([ex.submit(_worker, j) for j in jobs]))


# --- dataset-level outputs ------------------------------------------------------------------------


def read_manifest(output: str | Path) -> dict[str, Any]:
    """``<output>/_meta/manifest.json`` as a dict ({} when missing or not a valid JSON object)."""
    return atomic.read_json_object(Path(output) / META_DIR / MANIFEST)


def options_digest(converter: Converter) -> str:
    """Short fingerprint of the converter's options: a known-empty scene is only trusted under the same ones."""
    text = json.dumps(converter.options.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _known_empty(converter: Converter, output: Path) -> dict[str, dict[str, Any]]:
    """The manifest's ``empty_scenes`` entries recorded with the converter's current options."""
    entries = read_manifest(output).get("empty_scenes")
    if not isinstance(entries, dict):
        return {}
    digest = options_digest(converter)
    return {n: e for n, e in entries.items() if isinstance(e, dict) and e.get("options_digest") == digest}


def _load_coverage(scene_dir: Path) -> list[dict[str, Any]]:
    p = scene_dir / COVERAGE_JSON
    try:
        return list(json.loads(p.read_text()).get("frames", []))
    except (OSError, ValueError):
        return []


def write_coverage_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """Write coverage rows as Parquet (dict-valued columns such as ``semantic_ratios`` as JSON strings)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    norm = []
    for r in rows:
        norm.append({k: (json.dumps(r.get(k), sort_keys=True) if isinstance(r.get(k), dict) else r.get(k))
                     for k in cols})
    table = pa.Table.from_pylist(norm) if norm else pa.table({c: [] for c in cols})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic.write_bytes(path, buf.getvalue())


def write_dataset_outputs(
    converter: Converter, output: Path, all_scenes: list[SceneRef], results: list[SceneResult],
    opts: RunOptions, seconds: float,
) -> dict[str, Any]:
    """Manifest, coverage table and scene lists over every complete scene of the dataset (not only this run)."""
    meta = output / META_DIR
    by_split: dict[str, list[str]] = {}
    rows: list[dict[str, Any]] = []
    for s in all_scenes:
        d = output / s.name
        if is_complete(d):
            by_split.setdefault(s.split, []).append(s.name)
            rows.extend(_load_coverage(d))
    for split, names in by_split.items():
        atomic.write_npy(meta / split / f"{converter.name}_scene_list_{split}.npy", np.array(sorted(names)))
    write_coverage_parquet(rows, meta / COVERAGE_PARQUET)

    prev = read_manifest(output)
    failures = {r.name: (r.error or "").splitlines()[0] for r in results if r.status == FAILED}
    for s in all_scenes:  # failures of earlier runs that are still not complete
        if s.name not in failures and not is_complete(output / s.name):
            entry = get_process_log(output / s.name).get("conversion", {})
            if entry.get("state") == FAILED:
                lines = str(entry.get("message", "")).strip().splitlines()
                failures[s.name] = lines[-1] if lines else "failed"
    summaries = dict(prev.get("scene_summaries", {}))
    summaries.update({r.name: r.summary for r in results if r.status == FINISHED and r.summary})
    # Empty scenes: earlier runs' entries stay until the scene is converted again (finished, failed or
    # complete by other means) or leaves the source; this run's replace them.
    prev_empty = prev.get("empty_scenes")
    empty = {n: e for n, e in prev_empty.items() if isinstance(e, dict)} if isinstance(prev_empty, dict) else {}
    digest = options_digest(converter)
    for r in results:
        if r.status == EMPTY:
            empty[r.name] = {"split": r.split, "n_dropped": r.n_dropped, "drop_reasons": r.drop_reasons,
                             "options_digest": digest}
            summaries.pop(r.name, None)
        elif r.status in (FINISHED, FAILED):
            empty.pop(r.name, None)
    source_names = {s.name for s in all_scenes}
    empty = {n: empty[n] for n in sorted(empty) if n in source_names and not is_complete(output / n)
             and n not in failures}
    n_sel = sum(1 for r in rows if r.get("selected", True))
    manifest = {
        "converter": converter.name,
        "wai_version": __version__,
        "options": converter.options.to_dict(),
        "run_options": {k: v for k, v in asdict(opts).items() if k != "progress"},
        "source_root": str(converter.root.resolve()),
        "counts": {
            "scenes_in_source": len(all_scenes),
            "scenes_complete": sum(len(v) for v in by_split.values()),
            "scenes_converted_this_run": sum(r.status == FINISHED for r in results),
            "scenes_skipped_this_run": sum(r.status == SKIPPED for r in results),
            "scenes_failed": len(failures),
            "scenes_empty": len(empty),
            "scenes_empty_this_run": sum(r.status == EMPTY for r in results),
            "frames": n_sel,
            "frames_dropped": len(rows) - n_sel,
            "frames_dropped_in_empty_scenes": sum(int(e.get("n_dropped", 0)) for e in empty.values()),
            "frames_by_split": {sp: sum(1 for r in rows if r.get("selected", True) and r["scene"] in set(v))
                                for sp, v in by_split.items()},
        },
        "scenes_skipped_by_converter": dict(sorted(converter.skipped_scenes.items())),
        "drop_reasons": _count([r.get("drop_reason") for r in rows if not r.get("selected", True)]),
        "failures": failures,
        "empty_scenes": empty,
        "timings": {
            "seconds_total": round(seconds, 3),
            "seconds_per_scene": {r.name: round(r.seconds, 3) for r in results if r.status == FINISHED},
        },
        "scene_summaries": summaries,
        "splits": {k: sorted(v) for k, v in by_split.items()},
    }
    atomic.write_json(meta / MANIFEST, manifest)
    return manifest


def _count(values: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


def options_from_dict(cls: type[ConverterOptions], values: dict[str, Any]) -> ConverterOptions:
    """Build an options dataclass from a dict, rejecting unknown keys."""
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise WaiError(f"unknown option(s) for {cls.__name__}: {sorted(unknown)}; known: {sorted(names)}")
    return cls(**values)


def option_fields(cls: type[ConverterOptions]) -> list[tuple[str, Any, str, tuple[str, ...] | None]]:
    """``(name, default, help, choices)`` of every option field (for the CLI)."""
    out = []
    for f in fields(cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)  # type: ignore[misc]
        out.append((f.name, default, f.metadata.get("help", ""), f.metadata.get("choices")))
    return out


def default_workers() -> int:
    """Default ``--workers``: the number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
