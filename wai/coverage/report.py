"""``wai-report``: a coverage report of one or several converted datasets (HTML and/or Markdown).

The HTML report is a single self-contained file: plots are rendered with matplotlib's Agg canvas (the
``report`` extra) and embedded as base64 PNG, together with preview thumbnails (RGB with the depth
colour-mapped on top). The Markdown summary has the same tables (and quantile tables instead of plots)
and needs no matplotlib. All numbers come from ``wai.coverage.tables``; see ``docs/report.md``.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from wai.coverage.tables import (
    DEPTH_UNITS,
    CoverageTable,
    categorical_counts,
    comparison_columns,
    depth_unit,
    drop_reasons,
    histogram,
    load_datasets,
    numeric_means,
    preview_rows,
    quantiles,
    scene_coverage,
    semantic_means,
    split_counts,
)
from wai.errors import SchemaError, WaiError, import_optional
from wai.format.framestats import format_counts

#: Scenes listed per dataset in "worst scenes".
N_WORST = 10
#: Preview thumbnails per dataset.
N_PREVIEWS = 3
#: Thumbnails fit in this box (width, height), in pixels.
THUMB_BOX = (360, 240)
#: Small images are enlarged at most this much to fill the thumbnail box.
MAX_UPSCALE = 3.0
#: Opacity of the depth overlay on the RGB thumbnail.
DEPTH_ALPHA = 0.55
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)
QUANTILE_HEADERS = ("min", "p10", "p50", "p90", "max")


def fmt(v: Any) -> str:
    """How every number is printed in the tables: ints as ints, floats with 4 significant digits, NaN as '–'."""
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    if math.isnan(f):
        return "–"
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.4g}"


def pct(v: float) -> str:
    """A fraction as a percentage with one decimal."""
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f}%"


# --- the report model (what both renderers print) ---------------------------------------------------


@dataclass
class Table:
    """A titled table: header cells and rows of already formatted cells."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""


def overview_table(tables: list[CoverageTable]) -> Table:
    """Frames and scenes per dataset and split, with a total row per dataset."""
    rows = []
    for t in tables:
        per = split_counts(t)
        for s in per:
            rows.append([t.name, s["split"], fmt(s["scenes"]), fmt(s["frames"]), fmt(s["dropped"]), "", ""])
        failed = t.manifest.get("failures") or {}
        rows.append([t.name, "**all**", fmt(sum(s["scenes"] for s in per)), fmt(t.n_frames), fmt(t.n_dropped),
                     fmt(len(failed)), fmt(len(_empty_scenes(t)))])
    return Table(["dataset", "split", "scenes", "frames", "dropped frames", "failed scenes", "empty scenes"], rows,
                 "Scenes are the complete scenes of the manifest; frames are the written (selected) frames. "
                 "Empty scenes converted without error but every frame was dropped (see 'Empty scenes').")


def drops_table(tables: list[CoverageTable]) -> Table:
    """Dropped frames by reason."""
    rows = []
    for t in tables:
        for reason, n in drop_reasons(t).items():
            rows.append([t.name, reason, fmt(n), pct(n / t.n_rows if t.n_rows else float("nan"))])
    return Table(["dataset", "drop reason", "frames", "share of all rows"], rows,
                 "Frames the converter filtered out (coverage rows with selected = false).")


def quantile_table(tables: list[CoverageTable], column: str, unit: str = "", depth: bool = False) -> Table:
    """Quantiles of one numeric column over selected frames, per dataset; with ``depth`` a last column gives
    each dataset's depth unit (``m``, or ``unitless`` for relative-scale datasets such as Co3D)."""
    rows = []
    for t in tables:
        col = t.column(column)
        if col is None or np.isnan(col).all():
            continue
        n = int(np.count_nonzero(~np.isnan(col)))
        rows.append([t.name, fmt(n), *[fmt(q) for q in quantiles(col, QUANTILES)], fmt(float(np.nanmean(col))),
                     *([depth_unit(t)] if depth else [])])
    note = " Depth is in metres for metric datasets and unitless for relative-scale ones." if depth else ""
    return Table(["dataset", "frames", *QUANTILE_HEADERS, "mean", *(["unit"] if depth else [])], rows,
                 f"`{column}`{unit} over selected frames.{note}")


def means_table(tables: list[CoverageTable]) -> Table:
    """Per-dataset means of every numeric coverage column (union of the datasets' columns)."""
    columns, means = numeric_means(tables)
    rows = [[c, *[fmt(means[t.name].get(c)) for t in tables]] for c in columns]
    return Table(["column", *[t.name for t in tables]], rows,
                 "Mean over selected frames with a value; – where the dataset has no such column or no value.")


def comparison_table(tables: list[CoverageTable]) -> Table:
    """``valid_depth_ratio`` next to every other valid-ratio column (sparse vs dense, per agent)."""
    rows = []
    for t in tables:
        cols = comparison_columns(t)
        for c in ["valid_depth_ratio", *cols] if cols else []:
            v = t.column(c)
            assert v is not None
            q = quantiles(v, (0.5,))[0]
            rows.append([t.name, c, fmt(int(np.count_nonzero(~np.isnan(v)))), fmt(float(np.nanmean(v))), fmt(q),
                         fmt(int(np.count_nonzero(v == 0)))])
    return Table(["dataset", "column", "frames", "mean", "median", "frames with 0"], rows,
                 "Depth coverage of the main depth map against the other valid-ratio columns.")


def categorical_table(tables: list[CoverageTable]) -> Table:
    """Value counts of every string coverage column (e.g. a named ``sampling_bucket``)."""
    rows = []
    for t in tables:
        for col, counts in categorical_counts(t).items():
            rows += [[t.name, col, v, fmt(n_sel), fmt(n_drop)] for v, n_sel, n_drop in counts]
    return Table(["dataset", "column", "value", "frames", "dropped frames"], rows,
                 "Most frequent values (at most 20 per column) of the non-numeric coverage columns.")


def semantic_table(t: CoverageTable) -> Table:
    """Mean per-class pixel ratio of one dataset."""
    sm = semantic_means(t)
    rows = [[c, fmt(v["mean"]), pct(v["present"])] for c, v in sm.items()]
    frames = next(iter(sm.values()))["frames"] if sm else 0
    return Table(["class", "mean pixel ratio", "frames containing it"], rows,
                 f"{t.name}: {frames} frames with `semantic_ratios`.")


def worst_table(tables: list[CoverageTable], n: int = N_WORST) -> Table:
    """The ``n`` scenes of each dataset with the lowest mean ``valid_depth_ratio``."""
    rows = []
    for t in tables:
        for s in scene_coverage(t)[:n]:
            rows.append([t.name, s["split"], s["scene"], fmt(s["frames"]), fmt(s["mean"]), fmt(s["min"])])
    return Table(["dataset", "split", "scene", "frames", "mean valid_depth_ratio", "min valid_depth_ratio"], rows,
                 f"Lowest mean valid_depth_ratio first, at most {n} scenes per dataset.")


def _empty_scenes(t: CoverageTable) -> dict[str, dict]:
    e = t.manifest.get("empty_scenes")
    return {str(k): v for k, v in e.items() if isinstance(v, dict)} if isinstance(e, dict) else {}


def empty_table(tables: list[CoverageTable]) -> Table:
    """Scenes whose every frame was dropped (``manifest.empty_scenes``): no directory, reasons counted."""
    rows = []
    for t in tables:
        for name, e in sorted(_empty_scenes(t).items()):
            rows.append([t.name, name, str(e.get("split", "")), fmt(int(e.get("n_dropped", 0))),
                         format_counts(e.get("drop_reasons") or {})])
    return Table(["dataset", "scene", "split", "dropped frames", "drop reasons"], rows,
                 "Converted without error, but every frame was dropped, so no scene was written.")


def skipped_table(tables: list[CoverageTable]) -> Table:
    """Source scenes the converter left out on purpose (``manifest.scenes_skipped_by_converter``)."""
    rows = [[t.name, str(s), str(r)] for t in tables
            for s, r in sorted((t.manifest.get("scenes_skipped_by_converter") or {}).items())]
    return Table(["dataset", "scene", "reason"], rows)


# --- Markdown -----------------------------------------------------------------------------------


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def md_table(tb: Table) -> str:
    """A GitHub-flavoured Markdown table (or a note when empty)."""
    if not tb.rows:
        return "_none_\n"
    out = ["| " + " | ".join(_md_cell(h) for h in tb.header) + " |",
           "|" + "|".join("---" for _ in tb.header) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in tb.rows]
    if tb.caption:
        out += ["", tb.caption]
    return "\n".join(out) + "\n"


def render_markdown(tables: list[CoverageTable], generated: str) -> str:
    """The Markdown summary."""
    parts = [
        "# WAI coverage report", "",
        f"Generated {generated} from {len(tables)} dataset(s): "
        + ", ".join(f"`{t.name}` ({t.root})" for t in tables) + ".", "",
        "## Frames and scenes per dataset and split", "", md_table(overview_table(tables)),
        "## Dropped frames by reason", "", md_table(drops_table(tables)),
        "## Valid-depth ratio", "", md_table(quantile_table(tables, "valid_depth_ratio")),
        "## Depth", "", md_table(quantile_table(tables, "depth_p50", " (median depth per frame)", depth=True)),
        md_table(quantile_table(tables, "depth_max", " (max depth per frame)", depth=True)),
    ]
    comp = comparison_table(tables)
    if comp.rows:
        parts += ["## Depth coverage: dense vs sparse / per source", "", md_table(comp)]
    parts += ["## Means of every numeric coverage column", "", md_table(means_table(tables))]
    cat = categorical_table(tables)
    if cat.rows:
        parts += ["## Categorical coverage columns", "", md_table(cat)]
    sem = [t for t in tables if semantic_means(t)]
    if sem:
        parts += ["## Semantic classes (pixel ratios)", ""]
        for t in sem:
            parts += [f"### {t.name}", "", md_table(semantic_table(t))]
    parts += ["## Worst scenes by depth coverage", "", md_table(worst_table(tables))]
    failures = [(t.name, s, m) for t in tables for s, m in sorted((t.manifest.get("failures") or {}).items())]
    if failures:
        parts += ["## Failed scenes", "", md_table(Table(["dataset", "scene", "error"], [list(f) for f in failures]))]
    empty = empty_table(tables)
    if empty.rows:
        parts += ["## Empty scenes", "", md_table(empty)]
    skipped = skipped_table(tables)
    if skipped.rows:
        parts += ["## Source scenes skipped by the converter", "", md_table(skipped)]
    return "\n".join(parts).rstrip() + "\n"


# --- plots (matplotlib, Agg canvas, no pyplot state) ------------------------------------------------


def _color(i: int) -> str:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    return palette[i % len(palette)]


class Plotter:
    """Renders figures to base64 PNG with matplotlib's Agg canvas (never touches pyplot's global state)."""

    def __init__(self) -> None:
        import_optional("matplotlib", "report")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self._figure = Figure
        self._canvas = FigureCanvasAgg

    def figure(self, w: float, h: float, ncols: int = 1) -> tuple[Any, Any]:
        """A new figure and its axes (a list when ``ncols > 1``)."""
        fig = self._figure(figsize=(w, h), dpi=100, layout="constrained")
        self._canvas(fig)
        axes = fig.subplots(1, ncols)
        return fig, axes

    @staticmethod
    def png(fig: Any) -> str:
        """The figure as a base64 PNG string."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return base64.b64encode(buf.getvalue()).decode("ascii")

    def valid_ratio_hist(self, tables: list[CoverageTable]) -> str | None:
        """Step histograms of ``valid_depth_ratio`` (fraction of frames per bin), one line per dataset."""
        bins = np.linspace(0.0, 1.0, 21)
        fig, ax = self.figure(8, 3.2)
        drawn = False
        for i, t in enumerate(tables):
            v = t.column("valid_depth_ratio")
            if v is None or np.isnan(v).all():
                continue
            h = histogram(v, bins)
            ax.stairs(h / max(h.sum(), 1), bins, color=_color(i), linewidth=2, label=f"{t.name} (n={h.sum()})")
            drawn = True
        if not drawn:
            return None
        ax.set_xlabel("valid_depth_ratio (pixels with depth > 0 / all pixels)")
        ax.set_ylabel("fraction of frames")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return self.png(fig)

    def depth_hist(self, tables: list[CoverageTable]) -> str | None:
        """Log-binned histograms of per-frame median and maximum depth."""
        cols = ("depth_p50", "depth_max")
        vals = [t.column(c) for t in tables for c in cols]
        allv = np.concatenate([v[~np.isnan(v) & (v > 0)] for v in vals if v is not None] or [np.empty(0)])
        if allv.size == 0:
            return None
        lo, hi = float(allv.min()), float(allv.max())
        if hi <= lo:
            lo, hi = lo / 1.5, hi * 1.5
        bins = np.geomspace(lo, hi, 31)
        fig, axes = self.figure(10, 3.2, ncols=2)
        for ax, c in zip(axes, cols):
            for i, t in enumerate(tables):
                v = t.column(c)
                if v is None or np.isnan(v).all():
                    continue
                h = histogram(v, bins)
                unit = depth_unit(t)
                ax.stairs(h / max(h.sum(), 1), bins, color=_color(i), linewidth=2,
                          label=f"{t.name} (median {fmt(float(np.nanmedian(v)))}{'' if unit == 'm' else ' '}{unit})")
            ax.set_xscale("log")
            ax.set_xlabel(f"{c} per frame (log scale)")
            ax.set_ylabel("fraction of frames")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        return self.png(fig)

    def comparison_hist(self, t: CoverageTable, columns: Sequence[str]) -> str:
        """``valid_depth_ratio`` against the other valid-ratio columns of one dataset (log-x bins, zeros noted)."""
        series = {c: t.column(c) for c in ["valid_depth_ratio", *columns]}
        pos = np.concatenate([v[~np.isnan(v) & (v > 0)] for v in series.values() if v is not None])
        lo = max(float(pos.min()) if pos.size else 1e-4, 1e-6)
        bins = np.geomspace(min(lo, 0.5), 1.0, 31)
        fig, ax = self.figure(8, 3.2)
        for i, (c, v) in enumerate(series.items()):
            assert v is not None
            ok = v[~np.isnan(v)]
            h = histogram(ok[ok > 0], bins)
            ax.stairs(h / max(ok.size, 1), bins, color=_color(i), linewidth=2,
                      label=f"{c}: mean {fmt(float(ok.mean()))}, {int(np.count_nonzero(ok == 0))} frames at 0")
        ax.set_xscale("log")
        ax.set_xlabel("valid-pixel ratio (log scale)")
        ax.set_ylabel("fraction of frames")
        ax.set_title(t.name, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        return self.png(fig)

    def semantic_bars(self, t: CoverageTable) -> str | None:
        """Horizontal bars of the mean pixel ratio per class."""
        sm = semantic_means(t)
        if not sm:
            return None
        names = list(sm)[::-1]
        means = [sm[c]["mean"] for c in names]
        fig, ax = self.figure(6, 0.8 + 0.28 * len(names))
        ax.barh(names, means, color="#4c78a8")
        for y, m in enumerate(means):
            ax.text(m, y, f" {100 * m:.1f}%", va="center", fontsize=8)
        ax.set_xlabel("mean pixel ratio over frames")
        ax.set_xlim(0, max(means) * 1.2 if max(means) > 0 else 1)
        ax.set_title(t.name, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        return self.png(fig)


# --- previews (OpenCV only) -----------------------------------------------------------------------


def depth_overlay(rgb: np.ndarray, depth: np.ndarray | None, alpha: float = DEPTH_ALPHA,
                  box: tuple[int, int] = THUMB_BOX) -> np.ndarray:
    """RGB with the inverse depth colour-mapped (turbo: near red, far blue) and blended where depth > 0.

    The colour scale spans the 2nd-98th percentile of the frame's valid depth. Sparse depth (under 10 %
    valid pixels) is dilated so that points stay visible after downscaling. Returns RGB uint8 fitted in ``box``
    (small images are enlarged at most ``MAX_UPSCALE`` times).
    """
    from wai.format.codecs import cv2

    h, w = rgb.shape[:2]
    scale = min(box[0] / w, box[1] / h, MAX_UPSCALE)
    out = rgb.astype(np.float32)
    if depth is not None and depth.shape[:2] == (h, w):
        d = np.where(np.isfinite(depth), depth, 0).astype(np.float32)
        valid = d > 0
        if valid.any():
            if valid.mean() < 0.1 and scale < 1.0:
                k = max(3, int(math.ceil(1.5 / scale)) | 1)
                d = cv2.dilate(d, np.ones((k, k), np.uint8))
                valid = d > 0
            lo, hi = np.percentile(d[valid], (2, 98))
            inv = np.zeros_like(d)
            inv[valid] = 1.0 / np.clip(d[valid], max(lo, 1e-6), max(hi, lo + 1e-6))
            a, b = 1.0 / max(hi, lo + 1e-6), 1.0 / max(lo, 1e-6)
            norm = np.clip((inv - a) / max(b - a, 1e-12), 0, 1)
            cmap = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
            m = valid[..., None].astype(np.float32) * alpha
            out = out * (1 - m) + cmap.astype(np.float32) * m
    out8 = np.clip(out, 0, 255).astype(np.uint8)
    if scale != 1.0:
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        out8 = cv2.resize(out8, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    return out8


@dataclass
class Preview:
    """One preview thumbnail (base64 PNG) with its caption, or an error message."""

    caption: str
    png_b64: str | None = None
    error: str | None = None


def previews(t: CoverageTable, k: int = N_PREVIEWS) -> list[Preview]:
    """``k`` deterministic preview thumbnails of one dataset (a failing frame becomes an error caption)."""
    from wai.format.codecs import cv2
    from wai.format.scene import load_frame, load_scene

    out = []
    vdr = t.numeric.get("valid_depth_ratio")
    for i in preview_rows(t, k):
        scene, frame = str(t.scene[i]), str(t.frame[i])
        cap = f"{scene} / {frame}"
        try:
            sc = load_scene(t.root / scene)
            mods = sc.meta.get("frame_modalities", {})
            wanted = ["image"] + (["depth"] if "depth" in mods else [])
            fr = load_frame(sc, frame, wanted)
            depth = fr.get("depth")
            img = depth_overlay(fr["image"], depth)
            ok, buf = cv2.imencode(".png", img[..., ::-1])
            if not ok:
                raise SchemaError(f"could not encode the preview of {cap}")
            if depth is not None and (depth > 0).any():
                dv = depth[depth > 0]
                unit = " " + DEPTH_UNITS.get(str(sc.meta.get("scale_type")), depth_unit(t))
                ratio = float(vdr[i]) if vdr is not None and not np.isnan(vdr[i]) else float((depth > 0).mean())
                cap += f" · valid depth {pct(ratio)} · depth {fmt(float(dv.min()))}–{fmt(float(dv.max()))}{unit}"
            else:
                cap += " · no depth"
            out.append(Preview(cap, base64.b64encode(buf.tobytes()).decode("ascii")))
        except (WaiError, OSError, ValueError, KeyError) as e:
            out.append(Preview(cap, error=f"{type(e).__name__}: {e}"))
    return out


# --- HTML ---------------------------------------------------------------------------------------


CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 28px 48px; background: #fff; }
h1 { margin: 8px 0 4px; font-size: 26px; }
h2 { margin-top: 36px; padding-bottom: 4px; border-bottom: 2px solid #e3e3e3; font-size: 20px; }
h3 { font-size: 16px; margin: 20px 0 8px; }
nav { font-size: 13px; margin: 8px 0 16px; }
nav a { margin-right: 12px; color: #2060a0; text-decoration: none; white-space: nowrap; }
.meta { color: #666; font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; }
th { background: #f0f3f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.text { text-align: left; }
tr.total td { font-weight: 600; background: #f7f7f7; }
.caption { color: #666; font-size: 12px; margin: 2px 0 12px; }
img.plot { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.thumbs { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; max-width: 360px; }
figure img { max-width: 100%; height: auto; border: 1px solid #ccc; display: block; }
figcaption { font-size: 12px; color: #444; margin-top: 4px; }
.error { color: #b00020; font-size: 12px; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.summary { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: #f0f3f7; border-radius: 6px; padding: 8px 14px; font-size: 13px; }
.card b { display: block; font-size: 20px; }
"""


def _esc(s: Any) -> str:
    return html_lib.escape(str(s))


def html_table(tb: Table) -> str:
    """An HTML table; rows whose second cell is ``**all**`` are shown as totals; numeric columns right-aligned."""
    if not tb.rows:
        return "<p class='caption'>none</p>"
    numeric = [all(_numeric(r[j]) for r in tb.rows if j < len(r)) for j in range(len(tb.header))]
    head = "".join(f"<th class='{'num' if numeric[j] else 'text'}'>{_esc(h)}</th>" for j, h in enumerate(tb.header))
    body = []
    for r in tb.rows:
        total = len(r) > 1 and r[1] == "**all**"
        cells = [("all" if (total and j == 1) else c) for j, c in enumerate(r)]
        tr = "<tr class='total'>" if total else "<tr>"
        tds = "".join(f"<td class='{'num' if numeric[j] else 'text'}'>{_esc(c)}</td>" for j, c in enumerate(cells))
        body.append(f"{tr}{tds}</tr>")
    cap = f"<p class='caption'>{_esc(tb.caption.replace('`', ''))}</p>" if tb.caption else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{cap}"


def _numeric(c: str) -> bool:
    if c == "":
        return True
    try:
        float(c.rstrip("%"))
    except ValueError:
        return c == "–"
    return True


def _img(b64: str | None, alt: str) -> str:
    return f"<img class='plot' alt='{_esc(alt)}' src='data:image/png;base64,{b64}'>" if b64 else ""


def render_html(tables: list[CoverageTable], generated: str, plotter: Plotter) -> str:
    """The self-contained HTML report."""
    sections: list[tuple[str, str, str]] = []  # (id, title, body)
    n_frames = sum(t.n_frames for t in tables)
    n_scenes = sum(sum(s["scenes"] for s in split_counts(t)) for t in tables)
    n_drop = sum(t.n_dropped for t in tables)
    cards = "".join(f"<div class='card'><b>{_esc(v)}</b>{_esc(k)}</div>" for k, v in (
        ("datasets", len(tables)), ("scenes", n_scenes), ("frames", n_frames), ("dropped frames", n_drop)))

    sections.append(("overview", "Frames and scenes", html_table(overview_table(tables))))
    sections.append(("drops", "Dropped frames by reason", html_table(drops_table(tables))))
    sections.append(("valid", "Valid-depth ratio",
                     _img(plotter.valid_ratio_hist(tables), "valid depth ratio histogram")
                     + html_table(quantile_table(tables, "valid_depth_ratio"))))
    sections.append(("depth", "Depth",
                     _img(plotter.depth_hist(tables), "depth histogram")
                     + html_table(quantile_table(tables, "depth_p50", " (median depth per frame)", depth=True))
                     + html_table(quantile_table(tables, "depth_max", " (max depth per frame)", depth=True))))
    comp = [(t, comparison_columns(t)) for t in tables]
    comp = [(t, c) for t, c in comp if c]
    if comp:
        body = "".join(_img(plotter.comparison_hist(t, c), f"{t.name} depth coverage comparison") for t, c in comp)
        sections.append(("comparison", "Depth coverage: dense vs sparse / per source",
                         body + html_table(comparison_table(tables))))
    sections.append(("columns", "Means of every numeric coverage column", html_table(means_table(tables))))
    cat = categorical_table(tables)
    if cat.rows:
        sections.append(("categorical", "Categorical coverage columns", html_table(cat)))
    sem = [t for t in tables if semantic_means(t)]
    if sem:
        body = "".join(f"<h3>{_esc(t.name)}</h3><div class='row'><div>{_img(plotter.semantic_bars(t), t.name)}</div>"
                       f"<div>{html_table(semantic_table(t))}</div></div>" for t in sem)
        sections.append(("semantics", "Semantic classes (pixel ratios)", body))
    sections.append(("worst", "Worst scenes by depth coverage", html_table(worst_table(tables))))
    thumbs = []
    for t in tables:
        figs = []
        for p in previews(t):
            if p.png_b64:
                figs.append(f"<figure><img alt='{_esc(p.caption)}' src='data:image/png;base64,{p.png_b64}'>"
                            f"<figcaption>{_esc(p.caption)}</figcaption></figure>")
            else:
                figs.append(f"<figure><p class='error'>{_esc(p.caption)}: {_esc(p.error)}</p></figure>")
        thumbs.append(f"<h3>{_esc(t.name)}</h3><div class='thumbs'>{''.join(figs) or 'no frames'}</div>")
    sections.append(("previews", "Previews", "<p class='caption'>RGB with depth overlaid where depth &gt; 0 "
                     f"(inverse depth, turbo colormap: near = red, far = blue; opacity {DEPTH_ALPHA}); "
                     f"{N_PREVIEWS} frames per dataset spread evenly over the sorted frames.</p>" + "".join(thumbs)))
    failures = [[t.name, s, m] for t in tables for s, m in sorted((t.manifest.get("failures") or {}).items())]
    if failures:
        sections.append(("failures", "Failed scenes", html_table(Table(["dataset", "scene", "error"], failures))))
    empty = empty_table(tables)
    if empty.rows:
        sections.append(("empty", "Empty scenes", html_table(empty)))
    skipped = skipped_table(tables)
    if skipped.rows:
        sections.append(("skipped", "Source scenes skipped by the converter", html_table(skipped)))

    nav = " ".join(f"<a href='#{sid}'>{_esc(title)}</a>" for sid, title, _ in sections)
    roots = "".join(f"<li><code>{_esc(t.name)}</code>: {_esc(t.root)}</li>" for t in tables)
    body = "".join(f"<section id='{sid}'><h2>{_esc(title)}</h2>{content}</section>" for sid, title, content in sections)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>WAI coverage report</title><style>{CSS}</style></head><body><main>"
            f"<h1>WAI coverage report</h1><p class='meta'>Generated {_esc(generated)}</p><ul class='meta'>{roots}</ul>"
            f"<div class='summary'>{cards}</div><nav>{nav}</nav>{body}</main></body></html>\n")


# --- entry point ----------------------------------------------------------------------------------


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def _write_text(path: Path, text: str) -> int:
    from wai.format import atomic

    data = text.encode("utf-8")
    atomic.write_bytes(path, data)
    os.chmod(path, 0o644)  # a report is meant to be shared (the atomic temporary file is created 0600)
    return len(data)


def run_report(roots: Iterable[str | Path], html: Path | None = None, markdown: Path | None = None) -> str:
    """Read the converted datasets at ``roots``, write the HTML and/or Markdown report, return a text summary.

    Raises ``SceneNotFoundError`` for a root without ``_meta/coverage.parquet`` / ``_meta/manifest.json`` and
    ``MissingDependencyError`` when HTML is requested without matplotlib (Markdown needs no extra).
    """
    t0 = time.perf_counter()
    root_list = [Path(r) for r in roots]
    if not root_list:
        raise WaiError("wai-report: give at least one converted dataset root")
    plotter = Plotter() if html is not None else None  # fail before doing any work
    tables = load_datasets(root_list)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")

    per = [(t, split_counts(t)) for t in tables]
    lines = [f"wai-report: {len(tables)} dataset(s), {sum(s['scenes'] for _, sc in per for s in sc)} scenes, "
             f"{sum(t.n_frames for t in tables)} frames, {sum(t.n_dropped for t in tables)} dropped frames"]
    for t, sc in per:
        vdr = t.column("valid_depth_ratio")
        mean = fmt(float(np.nanmean(vdr))) if vdr is not None and not np.isnan(vdr).all() else "–"
        by_split = ", ".join(f"{s['split']} {s['frames']}" for s in sc)
        splits = f" ({by_split})" if sc else ""
        lines.append(f"  {t.name}: {sum(s['scenes'] for s in sc)} scenes, {t.n_frames} frames{splits}, "
                     f"{t.n_dropped} dropped, mean valid_depth_ratio {mean}  [{t.root}]")
    if markdown is not None:
        n = _write_text(Path(markdown), render_markdown(tables, generated))
        lines.append(f"Markdown: {markdown} ({_size(n)})")
    if html is not None:
        assert plotter is not None
        n = _write_text(Path(html), render_html(tables, generated, plotter))
        lines.append(f"HTML: {html} ({_size(n)})")
    if html is None and markdown is None:
        lines.append("(no --html / --markdown given: nothing written)")
    lines.append(f"done in {time.perf_counter() - t0:.2f} s")
    return "\n".join(lines)
