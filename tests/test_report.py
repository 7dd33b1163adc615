"""``wai-report``: HTML/Markdown coverage report over converted datasets.

Two datasets are converted once per module: the built-in synthetic fake, and a toy source built on the
same raw data that adds the columns other sources have (a sparse depth modality -> ``sparse_depth_valid_ratio``,
``building_ratio``, ``sampling_bucket``), no semantics, and dropped frames with reasons.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from wai.converters.base import SceneRef
from wai.converters.synthetic import SyntheticConverter
from wai.coverage import tables as tb
from wai.coverage.report import fmt, run_report
from wai.errors import MissingDependencyError, SceneNotFoundError
from wai.format.scene import Modality, SceneWriter
from wai.run import RunOptions, run_conversion
from wai.synthetic.raw_synthetic import make_fake

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ToyConverter(SyntheticConverter):
    """Synthetic raw data written like a sparse-depth source with filtering (ETH3D / KITTI-360 flavour)."""

    name = "toy"
    provides = frozenset({"image", "depth"})

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        """Dense depth + a sparse copy; every 4th frame (and frame 1 of scene_001) is dropped."""
        sd = self.root / scene.name
        for i, (name, cam, c2w) in enumerate(self._cameras(scene)):
            depth = np.load(sd / "depth" / f"{name}.npy")
            if i % 4 == 3 or (scene.name == "scene_001" and i == 1):
                reason = "too_few_points" if i % 4 == 3 else "low_building_ratio"
                writer.drop_frame(name, reason, cam.w, cam.h, building_ratio=0.01 * i)
                continue
            sparse = np.zeros_like(depth)
            step = 7 + i
            sparse[::step, ::step] = depth[::step, ::step]
            if scene.name == "scene_002":  # a scene with poor dense coverage: the worst scene
                depth = np.where(np.arange(depth.shape[1])[None, :] < depth.shape[1] // 3, depth, 0)
            cov = {"building_ratio": 0.1 + 0.05 * i, "sampling_bucket": ("high", "mid", "low")[i % 3],
                   "n_points_projected": int(np.count_nonzero(sparse))}
            writer.add_frame(name, cam, c2w, image=sd / "rgb" / f"{name}.png", depth=depth,
                             modalities={"sparse_depth": Modality("depth", sparse)}, coverage=cov)
        return {}


@pytest.fixture(scope="module")
def outs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Converted outputs: ``synthetic`` (2 scenes x 3 frames) and ``toy`` (3 scenes x 5 raw frames)."""
    base = tmp_path_factory.mktemp("report")
    make_fake(base / "raw_synth")
    run_conversion(SyntheticConverter(base / "raw_synth"), base / "synth", RunOptions(workers=1, progress=False))
    make_fake(base / "raw_toy", n_scenes=3, n_frames=5, seed=3)
    res = run_conversion(ToyConverter(base / "raw_toy"), base / "toy", RunOptions(workers=1, progress=False))
    assert res.ok, [r.error for r in res.failed]
    return {"synthetic": base / "synth", "toy": base / "toy", "base": base}


@pytest.fixture(scope="module")
def report(outs: dict[str, Path]) -> dict[str, Any]:
    """Run the report once with both outputs and both formats."""
    html, md = outs["base"] / "rep" / "report.html", outs["base"] / "rep" / "report.md"
    summary = run_report([outs["synthetic"], outs["toy"]], html=html, markdown=md)
    return {"summary": summary, "html": html.read_text(), "md": md.read_text()}


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "_meta" / "manifest.json").read_text())


def _md_tables(md: str) -> Iterator[tuple[list[str], list[list[str]]]]:
    """Every Markdown table as (header, rows of cells)."""
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            yield header, rows
        else:
            i += 1


def _table(md: str, first_cols: tuple[str, ...]) -> list[dict[str, str]]:
    for header, rows in _md_tables(md):
        if tuple(header[: len(first_cols)]) == first_cols:
            return [dict(zip(header, r)) for r in rows]
    raise AssertionError(f"no table with columns {first_cols}")


def test_html_is_self_contained_with_plots_and_thumbnails(report: dict[str, Any], outs: dict[str, Path]) -> None:
    html = report["html"]
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    # valid-ratio + depth + comparison (toy) + semantic bars (synthetic) + 3 thumbnails x 2 datasets
    assert len(images) >= 4 + 6
    assert all(base64.b64decode(b)[:8] == PNG_MAGIC for b in images)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    n_frames = sum(_manifest(outs[k])["counts"]["frames"] for k in ("synthetic", "toy"))
    n_scenes = sum(_manifest(outs[k])["counts"]["scenes_complete"] for k in ("synthetic", "toy"))
    assert f"<b>{n_frames}</b>frames" in html and f"<b>{n_scenes}</b>scenes" in html
    for sid in ("overview", "drops", "valid", "depth", "comparison", "columns", "semantics", "worst", "previews"):
        assert f"<section id='{sid}'>" in html
    assert "class='error'" not in html  # every preview rendered
    assert "HTML:" in report["summary"] and "Markdown:" in report["summary"]


def test_markdown_counts_match_manifest(report: dict[str, Any], outs: dict[str, Path]) -> None:
    rows = _table(report["md"], ("dataset", "split", "scenes", "frames"))
    for ds in ("synthetic", "toy"):
        m = _manifest(outs[ds])
        mine = {r["split"]: r for r in rows if r["dataset"] == ds}
        for split, names in m["splits"].items():
            assert int(mine[split]["scenes"]) == len(names)
            assert int(mine[split]["frames"]) == m["counts"]["frames_by_split"][split]
        assert int(mine["**all**"]["frames"]) == m["counts"]["frames"]
        assert int(mine["**all**"]["scenes"]) == m["counts"]["scenes_complete"]
        assert int(mine["**all**"]["dropped frames"]) == m["counts"]["frames_dropped"]
    drops = _table(report["md"], ("dataset", "drop reason"))
    m = _manifest(outs["toy"])
    assert m["drop_reasons"] == {"low_building_ratio": 1, "too_few_points": 3}
    assert {r["drop reason"]: int(r["frames"]) for r in drops if r["dataset"] == "toy"} == m["drop_reasons"]
    assert not [r for r in drops if r["dataset"] == "synthetic"]


def _parquet(root: Path) -> dict[str, Any]:
    t = pq.read_table(root / "_meta" / "coverage.parquet").to_pydict()
    sel = np.array([s is not False for s in t["selected"]])
    return {"cols": t, "sel": sel}


def _numpy_mean(values: list[Any], sel: np.ndarray) -> float | None:
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)[sel]
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else None


def test_tables_equal_numpy_on_parquet(report: dict[str, Any], outs: dict[str, Path]) -> None:
    tables = tb.load_datasets([outs["synthetic"], outs["toy"]])
    columns, means = tb.numeric_means(tables)
    md_means = {r["column"]: r for r in _table(report["md"], ("column", "synthetic", "toy"))}
    assert {"sparse_depth_valid_ratio", "building_ratio", "n_points_projected"} <= set(columns)
    for t in tables:
        p = _parquet(t.root)
        for c, values in p["cols"].items():
            if c in ("dataset", "scene", "frame", "selected", "drop_reason", "semantic_ratios", "sampling_bucket"):
                continue
            if all(v is None for v in values):
                continue
            expect = _numpy_mean(values, p["sel"])
            got = means[t.name].get(c)
            assert (expect is None and got is None) or got == pytest.approx(expect, rel=1e-12), (t.name, c)
            assert md_means[c][t.name] == fmt(expect), (t.name, c)

    # string columns (a named sampling bucket): value counts of selected / dropped rows
    p = _parquet(outs["toy"])
    buckets = np.array(["null" if b is None else b for b in p["cols"]["sampling_bucket"]])
    cat = _table(report["md"], ("dataset", "column", "value"))
    for r in cat:
        assert (r["dataset"], r["column"]) == ("toy", "sampling_bucket")
        assert int(r["frames"]) == int(((buckets == r["value"]) & p["sel"]).sum())
        assert int(r["dropped frames"]) == int(((buckets == r["value"]) & ~p["sel"]).sum())
    assert {r["value"] for r in cat} == {"high", "mid", "low", "null"}

    # per-split counts from the parquet itself
    for t in tables:
        p = _parquet(t.root)
        scene_split = {s: sp for sp, names in t.manifest["splits"].items() for s in names}
        for row in tb.split_counts(t):
            in_split = np.array([scene_split[s] == row["split"] for s in p["cols"]["scene"]])
            assert row["frames"] == int((in_split & p["sel"]).sum())
            assert row["dropped"] == int((in_split & ~p["sel"]).sum())

    # worst scenes: per-scene mean of valid_depth_ratio over selected frames, ascending
    md_worst = _table(report["md"], ("dataset", "split", "scene", "frames", "mean valid_depth_ratio"))
    for t in tables:
        p = _parquet(t.root)
        scenes = np.array(p["cols"]["scene"])
        vdr = np.array([np.nan if v is None else v for v in p["cols"]["valid_depth_ratio"]], dtype=np.float64)
        expect = sorted((float(vdr[(scenes == s) & p["sel"]].mean()), s) for s in np.unique(scenes[p["sel"]]))
        got = [(r["mean valid_depth_ratio"], r["scene"]) for r in md_worst if r["dataset"] == t.name]
        assert got == [(fmt(m), s) for m, s in expect][: len(got)]
    assert md_worst[[r["dataset"] for r in md_worst].index("toy")]["scene"] == "scene_002"

    # semantic ratios: mean of the JSON dicts (absent class = 0)
    syn = tables[0]
    p = _parquet(syn.root)
    dicts = [json.loads(s) for s, k in zip(p["cols"]["semantic_ratios"], p["sel"]) if k and s]
    classes = sorted({c for d in dicts for c in d})
    mat = np.array([[d.get(c, 0.0) for c in classes] for d in dicts])
    sm = tb.semantic_means(syn)
    md_sem = {r["class"]: r["mean pixel ratio"] for r in _table(report["md"], ("class", "mean pixel ratio"))}
    for j, c in enumerate(classes):
        assert sm[c]["mean"] == pytest.approx(float(mat[:, j].mean()), rel=1e-12)
        assert md_sem[c] == fmt(float(mat[:, j].mean()))
    assert tb.semantic_means(tables[1]) == {}


def test_sparse_vs_dense_comparison(report: dict[str, Any], outs: dict[str, Path]) -> None:
    toy = tb.load_dataset(outs["toy"])
    assert tb.comparison_columns(toy) == ["sparse_depth_valid_ratio"]
    assert tb.comparison_columns(tb.load_dataset(outs["synthetic"])) == []
    rows = _table(report["md"], ("dataset", "column", "frames", "mean", "median"))
    got = {r["column"]: float(r["mean"]) for r in rows if r["dataset"] == "toy"}
    assert got["sparse_depth_valid_ratio"] < 0.05 < got["valid_depth_ratio"]
    assert "sparse_depth_valid_ratio: mean" not in report["md"]  # legend text only in the plot
    assert "Depth coverage: dense vs sparse" in report["html"]


def test_previews_are_deterministic(outs: dict[str, Path]) -> None:
    t = tb.load_dataset(outs["toy"])
    a, b = tb.preview_rows(t), tb.preview_rows(t)
    assert a == b and len(a) == 3 and all(t.selected[i] for i in a)


def test_missing_meta_raises(tmp_path: Path, outs: dict[str, Path]) -> None:
    with pytest.raises(SceneNotFoundError, match=r"manifest\.json.*run wai-convert first"):
        run_report([tmp_path / "nothing"], markdown=tmp_path / "r.md")
    half = tmp_path / "half"
    (half / "_meta").mkdir(parents=True)
    (half / "_meta" / "manifest.json").write_text(json.dumps(_manifest(outs["synthetic"])))
    with pytest.raises(SceneNotFoundError, match=r"coverage\.parquet.*run wai-convert first"):
        run_report([outs["synthetic"], half], markdown=tmp_path / "r.md")
    assert not (tmp_path / "r.md").exists()


def test_markdown_without_matplotlib(tmp_path: Path, outs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingDependencyError, match=r"wai\[report\]"):
        run_report([outs["synthetic"]], html=tmp_path / "r.html")
    out = run_report([outs["synthetic"]], markdown=tmp_path / "r.md")
    assert "Markdown:" in out and (tmp_path / "r.md").read_text().startswith("# WAI coverage report")


def test_cli(tmp_path: Path, outs: dict[str, Path]) -> None:
    from click.testing import CliRunner

    from wai.cli import report_main

    res = CliRunner().invoke(report_main, [str(outs["toy"]), "--markdown", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert "toy:" in res.output and (tmp_path / "r.md").is_file()
    res = CliRunner().invoke(report_main, [str(tmp_path / "missing")])
    assert res.exit_code == 1 and "run wai-convert first" in res.output


class HalfEmptyToy(ToyConverter):
    """``toy`` whose scene_000 drops every frame: an ``empty`` scene in the manifest."""

    def convert_scene(self, scene: SceneRef, writer: SceneWriter) -> dict[str, Any]:
        if scene.name != "scene_000":
            return super().convert_scene(scene, writer)
        for i, (name, cam, _) in enumerate(self._cameras(scene)):
            writer.drop_frame(name, "no_lidar" if i else "no_image", cam.w, cam.h)
        return {}


def test_empty_scenes_are_reported(tmp_path: Path) -> None:
    make_fake(tmp_path / "raw", n_scenes=2, n_frames=3, seed=5)
    res = run_conversion(HalfEmptyToy(tmp_path / "raw"), tmp_path / "out", RunOptions(workers=1, progress=False))
    assert [r.name for r in res.results if r.empty] == ["scene_000"]
    md, html = tmp_path / "r.md", tmp_path / "r.html"
    run_report([tmp_path / "out"], markdown=md, html=html)
    text = md.read_text()
    section = text.split("## Empty scenes", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"\| toy \| scene_000 \| train \| 3 \| no_lidar: 2, no_image: 1 \|", section), section
    assert "scene_001" not in section
    overview = text.split("| dataset | split | scenes | frames | dropped frames | failed scenes | empty scenes |")[1]
    assert re.search(r"\| toy \| \*\*all\*\* \| 1 \| \d+ \| \d+ \| 0 \| 1 \|", overview.split("\n\n")[0])
    assert "id='empty'" in html.read_text() or 'id="empty"' in html.read_text()


# --- issue 18: units, bounded reads, data safety ---------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def _depth_units(md: str) -> dict[str, str]:
    """dataset -> the `unit` column of the Depth section's first quantile table."""
    rows = _table(md.split("## Depth", 1)[1], ("dataset", "frames", "min"))
    return {r["dataset"]: r["unit"] for r in rows}


def test_depth_unit_from_manifest_then_scene_meta(tmp_path: Path, outs: dict[str, Path]) -> None:
    root = _copy(outs["synthetic"], tmp_path / "synth")
    assert _manifest(root)["scale_type"] == "metric"
    assert tb.depth_unit(tb.load_dataset(root)) == "m"
    md = tmp_path / "r.md"
    run_report([root], markdown=md)
    assert _depth_units(md.read_text()) == {"synthetic": "m"}

    # An older manifest without scale_type: the scenes' scene_meta.json says relative -> unitless, never metres.
    m = _manifest(root)
    del m["scale_type"]
    (root / "_meta" / "manifest.json").write_text(json.dumps(m))
    for meta_path in root.glob("*/scene_meta.json"):
        meta = json.loads(meta_path.read_text())
        meta["scale_type"] = "relative"
        meta_path.write_text(json.dumps(meta))
    t = tb.load_dataset(root)
    assert t.scale_type == "relative" and tb.depth_unit(t) == "unitless"
    run_report([root], markdown=md)
    assert _depth_units(md.read_text()) == {"synthetic": "unitless"}
    assert "unitless for relative-scale" in md.read_text()

    # Neither says: unknown, not metres.
    for meta_path in root.glob("*/scene_meta.json"):
        meta = json.loads(meta_path.read_text())
        del meta["scale_type"]
        meta_path.write_text(json.dumps(meta))
    assert tb.depth_unit(tb.load_dataset(root)) == "units unknown"


def test_manifest_read_is_size_capped(outs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from wai.errors import SchemaError
    from wai.format.paths import MAX_JSON_ENV

    monkeypatch.setenv(MAX_JSON_ENV, "0.0001")  # ~100 bytes: every manifest is above it
    with pytest.raises(SchemaError, match="manifest.*cap"):
        tb.load_dataset(outs["synthetic"])


def _suggested_outputs(message: str) -> list[Path]:
    return [Path(p).resolve() for p in re.findall(r"--output (\S+?)[,.]?(?:\s|$)", message)]


def test_report_on_raw_data_never_suggests_converting_into_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from wai.cli import report_main

    raw = make_fake(tmp_path / "raw_synth", n_scenes=2, n_frames=2).root.resolve()
    monkeypatch.chdir(tmp_path)
    for target in (raw, raw / "scene_000", Path("raw_synth")):
        with pytest.raises(SceneNotFoundError) as e:
            run_report([target], markdown=tmp_path / "r.md")
        msg = str(e.value)
        outs_ = _suggested_outputs(msg)
        assert outs_ and all(o != raw and raw not in o.parents for o in outs_), msg
        assert "looks like a raw synthetic dataset" in msg and outs_[0] == tmp_path / "raw_synth_wai", msg
    res = CliRunner().invoke(report_main, ["raw_synth"])
    assert res.exit_code == 1 and "--output raw_synth_wai" in res.output, res.output
    # An unknown folder: still a sibling, never the folder itself. Folders that a lax listing would take for
    # scenes (numeric sub-folders look like OPV2V agents) are not raw data: their scenes have no complete files.
    (tmp_path / "notes" / "2021_01_01_00_00_00" / "641").mkdir(parents=True)
    with pytest.raises(SceneNotFoundError) as e:
        run_report([tmp_path / "notes"])
    assert _suggested_outputs(str(e.value)) == [tmp_path / "notes_wai"] and "looks like" not in str(e.value)
    # A category folder one level inside a Co3D root: the suggestion is next to the Co3D root.
    from wai.synthetic import get_fake

    get_fake("co3d")(tmp_path / "raw" / "co3d")
    assert tb.detect_raw(Path("raw/co3d/car")) == ("co3d", Path("raw/co3d"))
    with pytest.raises(SceneNotFoundError) as e:
        run_report([Path("raw/co3d/car")])
    assert _suggested_outputs(str(e.value)) == [tmp_path / "raw" / "co3d_wai"], str(e.value)


def test_html_never_embeds_a_file_outside_the_dataset(tmp_path: Path, outs: dict[str, Path]) -> None:
    """Crafted frame paths (``..``, absolute, a symlink leaving the root) become error captions, not thumbnails."""
    import cv2

    root = _copy(outs["synthetic"], tmp_path / "crafted")
    meta_paths = sorted(root.glob("*/scene_meta.json"))
    first = json.loads(meta_paths[0].read_text())["frames"][0]
    outside = tmp_path / "outside.png"  # a valid image of the right size: readable if it were followed
    cv2.imwrite(str(outside), np.full((first["h"], first["w"], 3), 255, np.uint8))
    crafted = ["../../outside.png", str(outside), "images/link_outside.png"]
    for meta_path in meta_paths:
        (meta_path.parent / "images" / "link_outside.png").symlink_to(outside)
        meta = json.loads(meta_path.read_text())
        for i, f in enumerate(meta["frames"]):
            f["image"] = f["file_path"] = crafted[i % 3]
        meta_path.write_text(json.dumps(meta))
    html = tmp_path / "r.html"
    run_report([root], html=html)
    previews = html.read_text().split("<section id='previews'>", 1)[1].split("</section>", 1)[0]
    assert "<img" not in previews  # nothing was embedded
    errors = re.findall(r"class='error'>(.*?)</p>", previews)
    assert len(errors) == 3 and all("PathEscapeError" in e for e in errors), errors
    assert any("link_outside.png" in e and "symlink" in e for e in errors)
