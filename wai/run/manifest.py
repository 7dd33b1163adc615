"""The dataset-level outputs: ``_meta/manifest.json``, ``_meta/coverage.parquet`` and the WAI scene lists.

They are rebuilt after every run from the scene folders themselves (not only from this run's results):
per-scene summaries and failures live in each scene's ``_process_log.json``, so a manifest rebuilt by
``--resume`` after a crash loses nothing. One output root holds one dataset: ``check_one_dataset``
refuses to write a second source's manifest over the first's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from wai import __version__
from wai.converters.base import Converter, SceneRef
from wai.errors import UsageError
from wai.format import atomic
from wai.format.scene import COVERAGE_JSON, EMPTY, FAILED, FINISHED, get_process_log, is_complete
from wai.run.guards import META_DIR
from wai.run.scene import count as _count
from wai.run.types import SKIPPED, RunOptions, SceneResult

MANIFEST = "manifest.json"
COVERAGE_PARQUET = "coverage.parquet"


def read_manifest(output: str | Path) -> dict[str, Any]:
    """``<output>/_meta/manifest.json`` as a dict ({} when missing or not a valid JSON object)."""
    return atomic.read_json_object(Path(output) / META_DIR / MANIFEST)


def options_digest(converter: Converter) -> str:
    """Short fingerprint of the converter's options: a known-empty scene is only trusted under the same ones."""
    text = json.dumps(converter.options.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def known_empty(converter: Converter, output: Path) -> dict[str, dict[str, Any]]:
    """The manifest's ``empty_scenes`` entries recorded with the converter's current options."""
    entries = read_manifest(output).get("empty_scenes")
    if not isinstance(entries, dict):
        return {}
    digest = options_digest(converter)
    return {n: e for n, e in entries.items() if isinstance(e, dict) and e.get("options_digest") == digest}


def _load_coverage(scene_dir: Path) -> list[dict[str, Any]]:
    frames = atomic.read_json_object(scene_dir / COVERAGE_JSON).get("frames", [])
    return list(frames) if isinstance(frames, list) else []


def _scene_summary(scene_dir: Path) -> dict[str, Any]:
    """The summary a finished scene stored in its ``_process_log.json`` ({} when none)."""
    entry = get_process_log(scene_dir).get("conversion", {})
    summary = entry.get("summary") if isinstance(entry, dict) else None
    return summary if isinstance(summary, dict) else {}


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
    # Summaries: each complete scene's own (stored with it); an older manifest's only for scenes converted
    # before summaries were stored with the scene.
    prev_summaries = prev.get("scene_summaries")
    summaries = {n: v for n, v in prev_summaries.items() if isinstance(v, dict)} if isinstance(
        prev_summaries, dict) else {}
    for names in by_split.values():
        for n in names:
            own = _scene_summary(output / n)
            if own:
                summaries[n] = own
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
        # what the report and the loader need to label the data right without opening a scene
        "scale_type": converter.scale_type,
        "camera_model": converter.camera_model,
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


def check_one_dataset(converter: Converter, output: Path) -> None:
    """Refuse to convert ``converter``'s source into a root that already holds another source's dataset."""
    existing = read_manifest(output).get("converter")
    if existing and existing != converter.name:
        raise UsageError(
            f"{output} already holds a {existing!r} dataset ({output / META_DIR / MANIFEST}); one output root holds "
            f"one dataset, so converting {converter.name!r} here would replace its manifest and coverage table. "
            f"Convert into its own root instead, e.g. --output {output.parent / converter.name} "
            f"(datasets side by side load together: WAIDataset([...{existing}, ...{converter.name}]))")
