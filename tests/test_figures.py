"""Figure commands end to end through CliRunner, on the real reference data and decoy-cxr."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from dgx.analyze import upper_half_fraction
from dgx.cli import DgxGroup
from dgx.cli.analyze import analyze_app
from dgx.cli.masks import masks_app
from tests.helpers import reference_dir as shared_reference

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--data-opt", "n_train=24", "--data-opt", "n_val=4", "--data-opt", "n_test=4", "--data-opt", "n_target=2"]

app = typer.Typer(cls=DgxGroup, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(analyze_app, name="analyze")
app.add_typer(masks_app, name="masks")
runner = CliRunner()


def reference_dir() -> Path:
    return shared_reference("cxr_p_gaze.csv.gz")


def measured(output: str, name: str) -> float:
    match = re.search(rf"{name}: ([0-9.]+)", output)
    assert match, output
    return float(match.group(1))


def test_upper_half_fraction():
    heat = np.zeros((4, 4))
    heat[0, 0], heat[3, 3] = 3.0, 1.0
    assert upper_half_fraction(heat) == 0.75
    assert upper_half_fraction(np.ones((3, 2))) == pytest.approx(0.5)  # odd middle row split evenly


def test_analyze_gaze_reproduces_figure1(tmp_path, monkeypatch):
    monkeypatch.delenv("DGX_REFERENCE_DIR", raising=False)
    out = tmp_path / "fig" / "figure1.png"
    args = ["analyze", "gaze", "--reference", str(reference_dir()), "--out", str(out), "--size", "64"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert not list(out.parent.glob(".*"))  # no temp file left behind
    assert measured(result.output, "gaze images \\(CXR-P train/val with gaze\\)") == 974
    assert measured(result.output, "positive masks \\(CXR-P train/val positives with RLE\\)") == 257  # 208 + 49
    assert 0.65 <= measured(result.output, "abnormality mass in upper half") <= 0.77
    # Gaze binned row = x (the reference README): radiologists dwell on the apices, over the abnormality.
    assert 0.65 <= measured(result.output, "gaze dwell in upper half") <= 0.85  # measured 0.74 (0.47 transposed)
    assert measured(result.output, "pixel correlation of mean gaze with mean abnormality") > 0.6  # measured 0.75


def test_analyze_gaze_reads_reference_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DGX_REFERENCE_DIR", str(reference_dir()))
    out = tmp_path / "f.png"
    result = runner.invoke(app, ["analyze", "gaze", "--out", str(out), "--size", "32"])
    assert result.exit_code == 0, result.output
    assert out.is_file()


@pytest.mark.parametrize("where", ["unset", "missing"])
def test_analyze_gaze_without_reference_is_one_line_error(tmp_path, monkeypatch, where):
    monkeypatch.delenv("DGX_REFERENCE_DIR", raising=False)
    args = ["analyze", "gaze", "--out", str(tmp_path / "f.png")]
    if where == "missing":
        args += ["--reference", str(tmp_path / "nowhere")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--reference" in lines[0], result.output
    assert not (tmp_path / "f.png").exists()


def test_masks_show_draws_figure2(tmp_path):
    from dgx.config import get_settings
    from dgx.data import load_dataset

    out = tmp_path / "figure2.png"
    result = runner.invoke(app, ["masks", "show", *TINY, "--index", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC
    opts = {a.split("=")[0]: a.split("=")[1] for a in TINY[1::2]}
    train = load_dataset("decoy-cxr", opts, None, get_settings().data_dir).train
    i = np.flatnonzero(train.labels == 1)[1]
    for kind in ("abnormality", "scaled", "periphery"):
        assert measured(result.output, kind) == train.masks[kind][i].sum()
    # The paper's ordering: the tight mask lies inside both wider ones.
    assert measured(result.output, "abnormality") < measured(result.output, "periphery")


def test_masks_show_index_out_of_range(tmp_path):
    result = runner.invoke(app, ["masks", "show", *TINY, "--index", "99", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --index 99 is out of range"), result.output


# ---------------------------------------------------------------- Figure 1's backdrop


def _rle_csv(path: Path, rows: dict[str, list[str]]) -> Path:
    lines = ["ImageId,EncodedPixels"] + [f"{i},{r}" for i, rles in rows.items() for r in rles]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_figure1_template_is_measured_not_fitted_to_the_abnormality(tmp_path):
    """Two very different abnormality maps get the same backdrop: the atlas at its own measured boxes."""
    from dgx.analyze import figure1_data
    from dgx.masks.rle import load_rle_table

    table = {i: r for i, r in load_rle_table().items() if r}
    real = _rle_csv(tmp_path / "real.csv", table)
    corner = _rle_csv(tmp_path / "corner.csv", {i: ["1 40"] for i in table})  # a sliver in the top-left corner
    a = figure1_data(reference_dir(), size=32, rle_path=real, atlas_cache=tmp_path / "atlas")
    b = figure1_data(reference_dir(), size=32, rle_path=corner, atlas_cache=tmp_path / "atlas")
    assert not np.allclose(a.abnormality, b.abnormality)
    assert np.array_equal(a.template, b.template) and a.template_box == b.template_box
    assert a.n_atlas == 435
    # Independent measurement: each archive mask's two largest blobs (>= 10% of the largest), box in fractions.
    boxes = _atlas_boxes_from_zip()
    assert len(boxes) == a.n_atlas
    assert np.allclose(a.template_box, boxes.mean(0), atol=0.005), (a.template_box, boxes.mean(0))
    # The template covers the union of the boxes and nothing beyond (one pixel of bilinear slack).
    ys, xs = np.nonzero(a.template > 0)
    lo, hi = boxes.min(0), boxes.max(0)
    assert xs.min() >= np.floor(lo[0] * 32) - 1 and xs.max() <= np.ceil(hi[1] * 32)
    assert ys.min() >= np.floor(lo[2] * 32) - 1 and ys.max() <= np.ceil(hi[3] * 32)


def _atlas_boxes_from_zip() -> np.ndarray:
    import io
    import zipfile

    from PIL import Image
    from scipy import ndimage

    from dgx.data.lungs import atlas_zip_path

    out = []
    with zipfile.ZipFile(atlas_zip_path()) as z:
        for name in sorted(n for n in z.namelist() if not n.endswith("/")):
            im = Image.open(io.BytesIO(z.read(name))).convert("L")
            im.thumbnail((512, 512))
            labels, n = ndimage.label(np.asarray(im) >= 128)
            if n == 0:
                continue
            sizes = ndimage.sum(np.ones(labels.shape), labels, np.arange(1, n + 1))
            big = [k + 1 for k in np.argsort(sizes)[::-1][:2] if sizes[k] >= 0.1 * sizes.max()]
            ys, xs = np.nonzero(np.isin(labels, big))
            h, w = labels.shape
            out.append([xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h])
    return np.array(out)


# ---------------------------------------------------------------- Figure 2's colours and size


def test_figure2_overlays_okabe_ito_fill_and_outline(tmp_path, monkeypatch):
    from matplotlib.colors import to_rgb

    import dgx.analyze.figures as figures

    captured = []
    monkeypatch.setattr(figures, "save_png", lambda fig, out, dpi=150: captured.append(fig) or out)
    image = np.full((24, 24), 120, dtype=np.uint8)
    masks = {k: np.zeros((24, 24), dtype=bool) for k in ("abnormality", "scaled", "periphery", "gaze")}
    for j, m in enumerate(masks.values()):
        m[4 + j : 12 + j, 6:14] = True
    figures.figure2(image, masks, tmp_path / "f.png", zoom=3)
    okabe_ito = {"#D55E00", "#E69F00", "#009E73", "#56B4E9"}  # vermillion, orange, bluish green, sky blue
    assert {v.upper() for v in figures.MASK_COLORS.values()} == okabe_ito
    for ax, (kind, mask) in zip(captured[0].axes[1:], masks.items()):
        want = to_rgb(figures.MASK_COLORS[kind])
        overlay = ax.get_images()[1].get_array()
        assert overlay.shape[:2] == (72, 72)  # zoom 3, nearest neighbour: mask pixels become 3 x 3 blocks
        assert np.array_equal(overlay[..., 3] > 0, np.kron(mask, np.ones((3, 3), dtype=bool)))
        assert np.allclose(overlay[overlay[..., 3] > 0, :3], want)
        (outline,) = [c for c in ax.collections]  # the contour: an opaque outline, more than a tint
        assert np.allclose(outline.get_edgecolor()[0][:3], want) and outline.get_edgecolor()[0][3] == 1


def test_masks_show_zoom_and_dpi_resize_png_without_building_data(tmp_path):
    from PIL import Image

    from dgx.config import get_settings

    def show(*extra: str) -> tuple[int, int]:
        out = tmp_path / f"f{len(list(tmp_path.glob('f*.png')))}.png"
        result = runner.invoke(app, ["masks", "show", *TINY, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        return Image.open(out).size

    default = show()  # builds (or finds) the 48 px dataset
    data = get_settings().data_dir

    def files() -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in data.rglob("*")}

    before = files()
    zoom8, zoom16, dpi300 = show("--zoom", "8"), show("--zoom", "16"), show("--dpi", "300")
    assert files() == before  # no new dataset, nothing rewritten
    assert 1.8 < zoom16[0] / zoom8[0] < 2.2 and zoom16[1] > zoom8[1]
    assert 1.8 < dpi300[0] / default[0] < 2.2 and 1.8 < dpi300[1] / default[1] < 2.2
    assert "--image-size" in runner.invoke(app, ["masks", "show", "--help"]).output


# ---------------------------------------------------------------- the ROC figure


def _roc_storage(tmp_path: Path):
    """Two methods x two seeds with saved scores on three domains; returns (runs frame, runs_dir, scores)."""
    import optuna

    from dgx.report import load_runs
    from dgx.runs import save_scores, scores_path
    from tests.test_report import SOURCE, TARGETS, add_run

    rng = np.random.default_rng(0)
    runs_dir = tmp_path / "runs"
    st = optuna.storages.InMemoryStorage()
    saved = {}
    for method, mask, shift in (("erm", "none", 0.3), ("rrr", "periphery", 1.5)):
        study = optuna.create_study(study_name=f"r-{method}.seeds", storage=st, direction="maximize")
        for seed in range(2):
            per_domain = {}
            for k, domain in enumerate([SOURCE, *TARGETS]):
                y = np.r_[np.zeros(30), np.ones(30)].astype(int)
                per_domain[domain] = (y, y * shift / (k + 1) + rng.normal(size=60))
            run_id = f"{method}-{seed}"
            save_scores(scores_path(runs_dir, run_id).parent.mkdir(parents=True) or scores_path(runs_dir, run_id),
                        per_domain)
            saved[(method, mask, seed)] = per_domain
            add_run(study, method, mask, seed, {d: 0.5 for d in per_domain}, run_id=run_id)
    return load_runs(st), runs_dir, saved


def test_roc_one_colour_per_method_and_auroc_in_every_legend(tmp_path):
    from sklearn.metrics import roc_auc_score

    from dgx.report.figures import ROC_COLORS, roc, roc_figure
    from tests.test_report import SOURCE, TARGETS

    runs, runs_dir, saved = _roc_storage(tmp_path)
    fig = roc_figure(runs, runs_dir)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 3
    assert len({round(ax.get_position().y0, 3) for ax in panels}) == 1  # three fit in one row
    for ax, domain in zip(panels, [SOURCE, *TARGETS]):
        assert domain in ax.get_title()
        assert ("source test" if domain == SOURCE else "OOD target") in ax.get_title()
        colour = {line.get_gid(): line.get_color() for line in ax.get_lines() if line.get_gid()}
        assert colour["ERM seed 0"] == colour["ERM seed 1"] == colour["ERM"]  # seeds share their method's colour
        assert colour["RRR (periphery) seed 0"] == colour["RRR (periphery) seed 1"] == colour["RRR (periphery)"]
        assert colour["ERM"] != colour["RRR (periphery)"] and {colour["ERM"], colour["RRR (periphery)"]} <= set(
            ROC_COLORS)
        texts = [t.get_text() for t in ax.get_legend().get_texts()]  # a legend in every panel
        for method, mask, label in (("erm", "none", "ERM"), ("rrr", "periphery", "RRR (periphery)")):
            auc = np.mean([roc_auc_score(*saved[(method, mask, s)][domain]) for s in range(2)])
            assert f"{label} {100 * auc:.1f} (n=2)" in texts, texts
    fig.canvas.draw()
    for ax in panels:  # square panels
        box = ax.get_window_extent()
        assert box.width == pytest.approx(box.height, rel=0.02)
    import matplotlib.pyplot as plt

    plt.close(fig)
    out = roc(runs, tmp_path / "roc.png", runs_dir)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert not list(out.parent.glob(".*"))  # written atomically


def test_roc_errors_kept(tmp_path):
    from dgx.errors import DgxError
    from dgx.report.figures import roc

    runs, runs_dir, _ = _roc_storage(tmp_path)
    with pytest.raises(DgxError, match="no saved scores"):
        roc(runs, tmp_path / "x.png", tmp_path / "elsewhere")
    with pytest.raises(DgxError, match="Optuna storage"):
        roc(runs.drop(columns="run_id"), tmp_path / "x.png", runs_dir)
    assert not (tmp_path / "x.png").exists()
