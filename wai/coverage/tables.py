"""Loading and aggregating the coverage tables of converted datasets (pyarrow + numpy, no pandas).

``load_dataset(root)`` reads ``<root>/_meta/coverage.parquet`` and ``<root>/_meta/manifest.json`` into a
``CoverageTable`` of numpy columns. Every aggregation below is vectorised (``np.unique`` / ``np.bincount`` /
masked reductions over frames); nothing here touches pixels. Conventions:

* a frame is *selected* when its ``selected`` value is true or null (dropped frames carry ``selected=False``
  and a ``drop_reason``);
* statistics of coverage columns (means, histograms, semantic ratios, worst scenes) are over **selected**
  frames, i.e. the frames that are in the converted dataset; dropped frames are only counted;
* a frame's split is the split of its scene in ``manifest["splits"]`` (``"unknown"`` when not listed);
* depth units follow the dataset's ``scale_type`` (``manifest["scale_type"]``; older manifests: the first
  complete scene's ``scene_meta.json``): metres for ``metric``, unitless for ``relative`` (``depth_unit``).

JSON files are read with ``wai.format.paths.read_json`` (size-capped) and scene paths taken from the manifest
are resolved with ``resolve_inside`` (never outside the dataset root).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wai.errors import SceneNotFoundError, SchemaError, WaiError
from wai.format.paths import read_json, resolve_inside

META_DIR = "_meta"
MANIFEST = "manifest.json"
COVERAGE_PARQUET = "coverage.parquet"

#: Identity / bookkeeping columns that are never treated as numeric statistics.
ID_COLUMNS = ("dataset", "scene", "frame", "selected", "drop_reason", "split")
#: Columns with the per-frame class -> pixel-fraction dict (stored as JSON strings in the parquet).
SEMANTIC_COLUMN = "semantic_ratios"
UNKNOWN_SPLIT = "unknown"
FIX = "run wai-convert first"
#: Suffix of the output folder suggested next to a raw dataset (never inside it).
OUTPUT_SUFFIX = "_wai"
#: Folders above a report root searched for a raw dataset layout when the root is not converted.
RAW_SEARCH_LEVELS = 2
#: ``scale_type`` -> unit label of depth values.
DEPTH_UNITS = {"metric": "m", "relative": "unitless"}


@dataclass
class CoverageTable:
    """One converted dataset: its manifest and its per-frame coverage columns as numpy arrays.

    ``numeric`` holds every integer/float column as float64 (null -> NaN); ``text`` holds every string
    column as an object array (null -> None). ``semantic_classes`` / ``semantic`` are the class names and
    the ``[n_rows, n_classes]`` ratio matrix (absent class -> 0; rows without semantics -> NaN).
    """

    root: Path
    name: str
    manifest: dict[str, Any]
    scene: np.ndarray
    frame: np.ndarray
    split: np.ndarray
    selected: np.ndarray
    drop_reason: np.ndarray
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    text: dict[str, np.ndarray] = field(default_factory=dict)
    semantic_classes: list[str] = field(default_factory=list)
    semantic: np.ndarray | None = None
    scale_type: str | None = None

    @property
    def n_rows(self) -> int:
        """Rows of the coverage table (selected and dropped frames)."""
        return int(self.scene.shape[0])

    @property
    def n_frames(self) -> int:
        """Selected (written) frames."""
        return int(self.selected.sum())

    @property
    def n_dropped(self) -> int:
        """Dropped frames."""
        return self.n_rows - self.n_frames

    def scenes_by_split(self) -> dict[str, list[str]]:
        """Complete scenes per split, from the manifest (falls back to the scenes seen in the table)."""
        splits = self.manifest.get("splits")
        if isinstance(splits, dict) and splits:
            return {str(k): sorted(str(s) for s in v) for k, v in sorted(splits.items())}
        return {UNKNOWN_SPLIT: sorted(set(self.scene.tolist()))} if self.n_rows else {}

    def column(self, name: str, selected_only: bool = True) -> np.ndarray | None:
        """A numeric column as float64 (NaN = null), over selected frames by default; None when absent."""
        col = self.numeric.get(name)
        if col is None:
            return None
        return col[self.selected] if selected_only else col


# --- loading --------------------------------------------------------------------------------------


def meta_paths(root: str | Path) -> tuple[Path, Path]:
    """``(coverage.parquet, manifest.json)`` of a converted dataset root."""
    meta = Path(root) / META_DIR
    return meta / COVERAGE_PARQUET, meta / MANIFEST


def sibling_output(raw: str | Path) -> Path:
    """``<raw>_wai`` next to ``raw`` (relative when ``raw`` is): an output folder outside the raw tree."""
    raw = Path(raw)
    absolute = Path(os.path.abspath(raw))
    out = absolute.parent / f"{absolute.name}{OUTPUT_SUFFIX}"
    return out if raw.is_absolute() else Path(os.path.relpath(out))


#: Scenes of a candidate folder whose raw files are checked (``check_scene``) before deciding it is not raw data.
MAX_SCENES_CHECKED = 3


def _has_raw_layout(source: str, folder: Path) -> bool:
    """True when ``source``'s converter lists a scene in ``folder`` whose raw files are complete (its
    ``check_scene`` finds no problem). Listing alone is not enough: converters list every candidate folder (an
    unreadable or incomplete one becomes a failed scene), so that a conversion reports it."""
    import itertools

    from wai.converters import get_converter
    from wai.converters._rawio import BrokenScene

    try:
        cls = get_converter(source)
        conv = cls(folder, cls.Options())
        refs = [r for r in itertools.islice(conv.iter_scenes(), 20)
                if not isinstance(r.data, BrokenScene) and r.n_frames != 0]  # n_frames: None when not counted
        return any(not conv.check_scene(r) for r in refs[:MAX_SCENES_CHECKED])
    except (WaiError, OSError, ValueError, TypeError, KeyError, IndexError):
        return False


def detect_raw(root: str | Path) -> tuple[str, Path] | None:
    """``(source, raw root)`` when ``root`` or its parent holds a source's raw layout (complete raw files of at
    least one scene with frames); None otherwise.

    The lowest such folder decides the source; from there the raw root climbs through the parents (at most
    ``RAW_SEARCH_LEVELS`` above ``root``) that have that same source's layout: a scene or split folder -> the
    dataset root. The filesystem root is never taken for a dataset.
    """
    from wai.converters import REGISTRY

    root = Path(root)
    absolute = Path(os.path.abspath(root))
    chain = [absolute, *list(absolute.parents)[:RAW_SEARCH_LEVELS]]
    chain = [c for c in chain if c.parent != c]
    shown = [root] + [c if root.is_absolute() else Path(os.path.relpath(c)) for c in chain[1:]]
    for i, cand in enumerate(shown[:2]):
        source = next((n for n in sorted(REGISTRY) if _has_raw_layout(n, cand)), None)
        if source is None:
            continue
        top = cand
        for parent in shown[i + 1:]:
            if not _has_raw_layout(source, parent):
                break
            top = parent
        return source, top
    return None


def not_converted_message(root: Path, missing: str) -> str:
    """Why ``root`` cannot be reported, and the fix; a suggested ``--output`` never lies inside raw data."""
    if not root.exists():
        return (f"{root} is not a converted dataset: no such directory, so no {missing}; pass the output folder "
                f"of a wai-convert run ({FIX})")
    msg = f"{root} is not a converted dataset: missing {missing}; {FIX}"
    raw = detect_raw(root)
    if raw is not None:
        src, raw_root = raw
        out = sibling_output(raw_root)
        return (f"{msg}. {raw_root} looks like a raw {src} dataset: convert it into a new folder next to it, never "
                f"into the raw tree: wai-convert {src} --input {raw_root} --output {out}, then wai-report {out}")
    absolute = Path(os.path.abspath(root))
    example = (f", e.g. wai-convert <source> --input {root} --output {sibling_output(root)}"
               if absolute.parent != absolute else "")  # the filesystem root has no sibling
    return (f"{msg} and report the output folder it wrote. If {root} holds raw data, convert it into a new folder "
            f"outside the raw tree{example}")


def dataset_scale_type(root: Path, manifest: dict[str, Any], scenes: list[str]) -> str | None:
    """The dataset's ``scale_type``: the manifest's, else the first readable complete scene's ``scene_meta.json``
    (manifests written before it was recorded); None when neither says."""
    st = manifest.get("scale_type")
    if isinstance(st, str) and st:
        return st
    for scene in scenes[:5]:
        try:
            meta = read_json(resolve_inside(root, f"{scene}/scene_meta.json", source=root / META_DIR / MANIFEST,
                                            entry="splits", what="scene path"), what="scene_meta.json")
        except (WaiError, OSError):
            continue
        st = meta.get("scale_type") if isinstance(meta, dict) else None
        if isinstance(st, str) and st:
            return st
    return None


def depth_unit(t: CoverageTable) -> str:
    """Unit label of the depth values of a dataset: ``m``, ``unitless`` (relative scale) or ``units unknown``."""
    return DEPTH_UNITS.get(t.scale_type or "", "units unknown")


def _to_float(arr: Any) -> np.ndarray:
    """A pyarrow numeric (or bool) array as float64 with NaN for nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pc.cast(arr, pa.float64())
    return np.asarray(arr.fill_null(float("nan")).to_numpy(zero_copy_only=False), dtype=np.float64)


def _to_object(arr: Any) -> np.ndarray:
    return np.array(arr.to_pylist(), dtype=object)


def _semantic_matrix(arr: Any) -> tuple[list[str], np.ndarray | None]:
    """Parse the JSON-string ``semantic_ratios`` column into class names and a dense ratio matrix."""
    import pyarrow as pa

    strings = arr.to_pylist()
    if not any(strings):
        return [], None
    # One json.loads of the whole column, then let pyarrow infer the union struct of all keys.
    parsed = json.loads("[" + ",".join(s if s else "null" for s in strings) + "]")
    parsed = [p if isinstance(p, dict) and p else None for p in parsed]
    if not any(p is not None for p in parsed):
        return [], None
    struct = pa.array(parsed)
    if not pa.types.is_struct(struct.type):
        raise SchemaError(f"{SEMANTIC_COLUMN}: expected JSON objects of class -> ratio, got {struct.type}")
    names = [struct.type.field(i).name for i in range(struct.type.num_fields)]
    mat = np.zeros((len(parsed), len(names)), dtype=np.float64)
    for j in range(len(names)):
        child = _to_float(struct.field(j))
        mat[:, j] = np.nan_to_num(child, nan=0.0)
    row_valid = np.asarray(struct.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    mat[~row_valid] = np.nan
    order = np.argsort(names, kind="stable")
    return [names[i] for i in order], mat[:, order]


def load_dataset(root: str | Path) -> CoverageTable:
    """Read one converted dataset; ``SceneNotFoundError`` names the missing file when it was not converted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    parquet, manifest_path = meta_paths(root)
    for p, what in ((manifest_path, "manifest"), (parquet, "coverage table")):
        if not p.is_file():
            raise SceneNotFoundError(not_converted_message(root, f"{what} {p}"))
    manifest = read_json(manifest_path, what="manifest")
    if not isinstance(manifest, dict):
        raise SchemaError(f"{manifest_path}: expected a JSON object")
    try:
        table = pq.read_table(parquet)
    except (OSError, pa.ArrowInvalid) as e:
        raise SchemaError(f"{parquet}: not a readable parquet file ({e}); {FIX} to rewrite it") from e
    n = table.num_rows
    cols = set(table.column_names)
    for required in ("scene", "frame"):
        if n and required not in cols:
            raise SchemaError(f"{parquet}: no `{required}` column; {FIX} to rewrite it")

    def text(name: str) -> np.ndarray:
        if name not in cols:
            return np.full(n, None, dtype=object)
        return _to_object(table.column(name).combine_chunks())

    scene = text("scene")
    frame = text("frame")
    if "selected" in cols and not pa.types.is_null(table.column("selected").type):
        sel = _to_float(table.column("selected").combine_chunks())
        selected = np.where(np.isnan(sel), True, sel != 0)
    else:
        selected = np.ones(n, dtype=bool)
    scene_split = {str(s): str(sp) for sp, names in (manifest.get("splits") or {}).items() for s in names}
    uniq, inv = np.unique(scene.astype(str), return_inverse=True)
    split = np.array([scene_split.get(u, UNKNOWN_SPLIT) for u in uniq], dtype=object)[inv] if n else \
        np.empty(0, dtype=object)

    numeric: dict[str, np.ndarray] = {}
    texts: dict[str, np.ndarray] = {}
    classes: list[str] = []
    semantic = None
    for name in table.column_names:
        arr = table.column(name).combine_chunks()
        t = arr.type
        if name == SEMANTIC_COLUMN:
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                classes, semantic = _semantic_matrix(arr)
            continue
        if name in ID_COLUMNS or pa.types.is_null(t):
            continue
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            numeric[name] = _to_float(arr)
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            texts[name] = _to_object(arr)

    dsname = manifest.get("converter")
    if not dsname:
        ds = text("dataset")
        dsname = next((str(d) for d in ds if d), root.name)
    splits = manifest.get("splits")
    listed = [str(s) for names in (splits.values() if isinstance(splits, dict) else []) if isinstance(names, list)
              for s in names]
    scale_type = dataset_scale_type(root, manifest, listed or sorted({str(s) for s in scene}))
    return CoverageTable(
        root=root, name=str(dsname), manifest=manifest, scene=scene, frame=frame, split=split,
        selected=selected, drop_reason=text("drop_reason"), numeric=numeric, text=texts,
        semantic_classes=classes, semantic=semantic, scale_type=scale_type,
    )


def load_datasets(roots: list[Path]) -> list[CoverageTable]:
    """Load several roots; datasets with the same converter name get the root's folder name appended."""
    tables = [load_dataset(r) for r in roots]
    names = [t.name for t in tables]
    for t in tables:
        if names.count(t.name) > 1:
            t.name = f"{t.name} ({t.root.name or t.root})"
    seen: dict[str, int] = {}
    for t in tables:  # still ambiguous (same folder name): number them
        seen[t.name] = seen.get(t.name, 0) + 1
        if seen[t.name] > 1:
            t.name = f"{t.name} #{seen[t.name]}"
    return tables


# --- aggregation ----------------------------------------------------------------------------------


def split_counts(t: CoverageTable) -> list[dict[str, Any]]:
    """Per split: ``split, scenes, frames`` (selected) and ``dropped``; splits sorted by name."""
    by_split = t.scenes_by_split()
    splits = sorted(set(by_split) | set(np.unique(t.split.astype(str)).tolist()))
    sp = t.split.astype(str)
    out = []
    for s in splits:
        in_split = sp == s
        out.append({
            "split": s,
            "scenes": len(by_split.get(s, [])) if s in by_split else int(np.unique(t.scene[in_split]).size),
            "frames": int(np.count_nonzero(in_split & t.selected)),
            "dropped": int(np.count_nonzero(in_split & ~t.selected)),
        })
    return out


def drop_reasons(t: CoverageTable) -> dict[str, int]:
    """Dropped frames per ``drop_reason`` (null -> ``"unspecified"``), sorted by count then name."""
    reasons = t.drop_reason[~t.selected]
    if reasons.size == 0:
        return {}
    labels = np.array(["unspecified" if r is None else str(r) for r in reasons])
    uniq, counts = np.unique(labels, return_counts=True)
    order = np.lexsort((uniq, -counts))
    return {str(uniq[i]): int(counts[i]) for i in order}


def numeric_summary(t: CoverageTable) -> dict[str, dict[str, float]]:
    """Per numeric column over selected frames: ``n`` (non-null), ``mean``, ``min``, ``max`` (NaN when n=0)."""
    out: dict[str, dict[str, float]] = {}
    for name, col in t.numeric.items():
        v = col[t.selected]
        v = v[~np.isnan(v)]
        if v.size == 0:
            out[name] = {"n": 0, "mean": float("nan"), "min": float("nan"), "max": float("nan")}
        else:
            out[name] = {"n": int(v.size), "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
    return out


def numeric_means(tables: list[CoverageTable]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Column names (union, in first-seen order) and ``{dataset: {column: mean}}`` over selected frames."""
    columns: list[str] = []
    means: dict[str, dict[str, float]] = {}
    for t in tables:
        summ = numeric_summary(t)
        for c in summ:
            if c not in columns:
                columns.append(c)
        means[t.name] = {c: s["mean"] for c, s in summ.items() if s["n"] > 0}
    return columns, means


def quantiles(values: np.ndarray, qs: tuple[float, ...] = (0.0, 0.1, 0.5, 0.9, 1.0)) -> list[float]:
    """Quantiles of the non-NaN values (NaN when there are none)."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return [float("nan")] * len(qs)
    return [float(x) for x in np.quantile(v, qs)]


def histogram(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Counts of the non-NaN values in ``bins`` (values outside are clipped into the end bins)."""
    v = values[~np.isnan(values)]
    v = np.clip(v, bins[0], bins[-1])
    return np.histogram(v, bins=bins)[0]


def semantic_means(t: CoverageTable) -> dict[str, dict[str, float]]:
    """Per class over selected frames with semantics: ``mean`` pixel ratio and ``present`` (fraction of frames
    where the class occurs); sorted by mean ratio, descending. Empty without semantics."""
    if t.semantic is None:
        return {}
    m = t.semantic[t.selected]
    m = m[~np.isnan(m).any(axis=1)]
    if m.shape[0] == 0:
        return {}
    mean = m.mean(axis=0)
    present = (m > 0).mean(axis=0)
    order = np.lexsort((np.array(t.semantic_classes), -mean))
    return {t.semantic_classes[i]: {"mean": float(mean[i]), "present": float(present[i]), "frames": int(m.shape[0])}
            for i in order}


def scene_coverage(t: CoverageTable, column: str = "valid_depth_ratio") -> list[dict[str, Any]]:
    """Per scene over selected frames with a value: ``scene, split, frames, mean, min``, sorted by mean ascending
    (ties by scene name). Empty when the column is absent."""
    col = t.numeric.get(column)
    if col is None:
        return []
    ok = t.selected & ~np.isnan(col)
    if not ok.any():
        return []
    scenes = t.scene[ok].astype(str)
    vals = col[ok]
    uniq, inv, counts = np.unique(scenes, return_inverse=True, return_counts=True)
    means = np.bincount(inv, weights=vals) / counts
    mins = np.full(uniq.size, np.inf)
    np.minimum.at(mins, inv, vals)
    first = np.zeros(uniq.size, dtype=np.int64)
    first[inv[::-1]] = np.arange(inv.size)[::-1]
    splits = t.split[ok][first]
    order = np.lexsort((uniq, means))
    return [{"scene": str(uniq[i]), "split": str(splits[i]), "frames": int(counts[i]), "mean": float(means[i]),
             "min": float(mins[i])} for i in order]


def comparison_columns(t: CoverageTable) -> list[str]:
    """Depth-coverage columns to compare with ``valid_depth_ratio`` (sparse vs dense, per agent, ...).

    Every other numeric column whose name contains both ``valid`` and ``ratio`` (``sparse_depth_valid_ratio``,
    ``own_valid_depth_ratio``, ``coop_valid_depth_ratio``, ``<depth modality>_valid_ratio``) with data.
    """
    if "valid_depth_ratio" not in t.numeric:
        return []
    out = []
    for name, col in t.numeric.items():
        if name != "valid_depth_ratio" and "valid" in name and "ratio" in name and not np.isnan(col[t.selected]).all():
            out.append(name)
    return out


def preview_rows(t: CoverageTable, k: int = 3) -> list[int]:
    """``k`` selected rows spread evenly over the (scene, frame)-sorted frames: deterministic previews."""
    idx = np.flatnonzero(t.selected)
    if idx.size == 0:
        return []
    order = np.lexsort((t.frame[idx].astype(str), t.scene[idx].astype(str)))
    idx = idx[order]
    picks = np.unique(np.round(np.linspace(0, idx.size - 1, min(k, idx.size))).astype(np.int64))
    return [int(i) for i in idx[picks]]


def categorical_counts(t: CoverageTable, top: int = 20) -> dict[str, list[tuple[str, int, int]]]:
    """Per string column (e.g. a string ``sampling_bucket``): ``(value, selected frames, dropped frames)`` for
    the ``top`` most frequent values (null -> ``"null"``), most frequent first; columns that are all null skipped."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for name, col in t.text.items():
        if all(v is None for v in col):
            continue
        labels = np.array(["null" if v is None else str(v) for v in col])
        uniq, inv = np.unique(labels, return_inverse=True)
        sel = np.bincount(inv, weights=t.selected.astype(np.float64), minlength=uniq.size).astype(np.int64)
        tot = np.bincount(inv, minlength=uniq.size)
        order = np.lexsort((uniq, -tot))[:top]
        out[name] = [(str(uniq[i]), int(sel[i]), int(tot[i] - sel[i])) for i in order]
    return out
