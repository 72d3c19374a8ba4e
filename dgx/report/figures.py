"""Report figures (PNG, PDF or SVG by the suffix): AUROC bars with CI per domain, ROC curves per domain."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from dgx.errors import DgxError
from dgx.plotting import SERIES, pyplot, save_figure
from dgx.report.labels import method_label, method_masks
from dgx.report.run_files import read_scores
from dgx.report.tables import cells
from dgx.report.trials import AVERAGE


def bars(runs: pd.DataFrame, path: Path, confidence: float = 0.95) -> Path:
    """One panel per dataset: a group of bars per domain (source test or OOD target, named under each group),
    one bar per method/mask with its n in the legend, CI whiskers, the full 0-100 axis and a chance line."""
    plt = pyplot()
    c = cells(runs, confidence)
    experiments = list(dict.fromkeys(c["dataset"]))
    colors = {label: SERIES[i % len(SERIES)] for i, label in enumerate(dict.fromkeys(c["label"]))}  # as the ROC's
    fig, axes = plt.subplots(len(experiments), 1, figsize=(10, 3.6 * len(experiments)), squeeze=False)
    for ax, experiment in zip(axes[:, 0], experiments):
        part = c[c["dataset"] == experiment]
        domains = list(dict.fromkeys(part["domain"]))
        labels = list(dict.fromkeys(part["label"]))
        width = 0.8 / len(labels)
        cut = False
        for k, label in enumerate(labels):
            rows = part[part["label"] == label].set_index("domain").reindex(domains)
            x = np.arange(len(domains)) + (k - (len(labels) - 1) / 2) * width
            mean = 100 * rows["mean"].to_numpy(float)
            err = np.nan_to_num(100 * rows["half_width"].to_numpy(float))
            above = np.clip(mean + err, None, 100) - mean  # AUROC stops at 100: the whisker too, marked below
            n = int(rows["n"].max()) if rows["n"].notna().any() else 0
            ax.bar(x, mean, width, yerr=[np.minimum(err, mean), np.nan_to_num(above)], capsize=3,
                   color=colors[label], label=f"{label} (n={n})")
            for clipped, edge, marker in ((mean + err > 100, 100.0, "^"), (mean - err < 0, 0.0, "v")):
                if clipped.any():
                    cut = True
                    ax.plot(x[clipped], np.full(clipped.sum(), edge), ls="", marker=marker, ms=5, color="black",
                            clip_on=False)
        roles = dict(zip(part["domain"], part["role"]))
        ax.set_xticks(np.arange(len(domains)),
                      [f"{d}\n({_role(d, roles[d])})" for d in domains], fontsize=8)
        ax.set_ylabel("test AUROC (%)")
        ax.set_ylim(0, 100)  # the whole scale: gaps look as large as they are
        ax.axhline(50, color="black", lw=0.8, ls="--", label="chance (50)")
        ax.set_title(f"{experiment}: mean ± {confidence * 100:g}% CI (Student t) across n replicates"
                     + ("; ▲ ▼ = interval cut at 100, 0" if cut else ""))
        ax.legend(fontsize=8, ncol=min(4, len(labels) + 1), loc="upper center", bbox_to_anchor=(0.5, -0.22),
                  frameon=False)  # below the axes: never over a bar
    fig.tight_layout()
    return save_figure(fig, path)


def _role(domain: str, role: str) -> str:
    return "mean of the targets" if domain == AVERAGE else ("OOD target" if role == "target" else "source test")


ROC_COLORS = SERIES  # one colour per method/mask, in table order, in both figures
_ROC_COLUMNS = 3  # panels per row at most


@dataclass
class RocSeries:
    """One method/mask's ROC inputs in one domain: (labels, scores) per seed, and their AUROCs."""

    label: str
    color: str
    seeds: list[int]
    scores: list[tuple[np.ndarray, np.ndarray]]
    aurocs: list[float]

    @property
    def legend(self) -> str:
        """E.g. "RRR (periphery) 62.9 (n=3)": the mean AUROC (%) across seeds."""
        return f"{self.label} {100 * np.mean(self.aurocs):.1f} (n={len(self.aurocs)})"


def roc_series(runs: pd.DataFrame, runs_dir: Path) -> dict[str, list[RocSeries]]:
    """Per domain (in ``runs`` order), one :class:`RocSeries` per method/mask with saved scores.

    A label keeps its colour in every domain (table order: ERM first); a domain
    where one class is missing has no ROC curve and contributes no series.
    """
    if "run_id" not in runs.columns:
        raise DgxError("ROC figures need the run folders' scores; use the Optuna storage source")
    trials = runs.drop_duplicates(["study", "trial"])
    if len(trials) > 60:
        raise DgxError(f"{len(trials)} runs selected; pick one study for ROC curves with --study NAME")
    labels = [method_label(m, k) for m, k in method_masks(trials)]
    colors = {label: ROC_COLORS[i % len(ROC_COLORS)] for i, label in enumerate(labels)}
    out: dict[str, dict[str, RocSeries]] = {d: {} for d in dict.fromkeys(runs["domain"])}
    for t in trials.sort_values("seed", kind="stable").itertuples(index=False):
        label = method_label(t.method, t.mask)
        scores = read_scores(runs_dir, t.run_id)
        for domain, series in out.items():
            if domain in scores and len(np.unique(scores[domain][0])) == 2:
                s = series.setdefault(label, RocSeries(label, colors[label], [], [], []))
                s.seeds.append(int(t.seed))
                s.scores.append(scores[domain])
                s.aurocs.append(float(roc_auc_score(*scores[domain])))
    if not any(out.values()):
        raise DgxError(f"no saved scores for these runs under {Path(runs_dir) / 'runs'}; set DGX_RUNS_DIR to the "
                       "folder the sweep trained in")
    return {d: sorted(s.values(), key=lambda r: labels.index(r.label)) for d, s in out.items()}


def _mean_roc(scores: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """Vertical average: the seeds' true positive rates at each false positive rate of ``grid``."""
    tprs = []
    for y, p in scores:
        fpr, tpr, _ = roc_curve(y, p)
        tprs.append(np.interp(grid, fpr, tpr))
    mean = np.mean(tprs, axis=0)
    mean[0] = 0.0
    return mean


def roc_figure(runs: pd.DataFrame, runs_dir: Path):
    """The ROC figure (a matplotlib Figure): one square panel per domain, at most three per row.

    Per method/mask one colour in every panel: each seed as a thin pale line, the
    seeds' vertical mean as a thick line, and a legend in every panel naming each
    label with its mean AUROC (%) across seeds and n.
    """
    series = roc_series(runs, runs_dir)  # reads (and checks) the saved scores before matplotlib starts
    plt = pyplot()

    roles = dict(zip(runs["domain"], runs["role"]))
    n = len(series)
    cols = min(_ROC_COLUMNS, n)
    rows = -(-n // cols)
    entries = max(len(lines) for lines in series.values()) + 2  # legend rows: title, labels, chance
    # Tall enough for a square panel, its two-line title and the legend below it (else the layout overlaps).
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, (4.2 + 0.16 * entries) * rows), squeeze=False,
                             layout="constrained")
    grid = np.linspace(0, 1, 201)
    for ax, (domain, lines) in zip(axes.flat, series.items()):
        for s in lines:
            for seed, (y, p) in zip(s.seeds, s.scores):
                fpr, tpr, _ = roc_curve(y, p)
                ax.plot(fpr, tpr, color=s.color, lw=0.8, alpha=0.35, gid=f"{s.label} seed {seed}")
            ax.plot(grid, _mean_roc(s.scores, grid), color=s.color, lw=2, label=s.legend, gid=s.label)
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="chance 50.0")
        ax.set_title(f"{domain}\n({_role(domain, roles[domain])})", fontsize=9)
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")  # a curve on the edge stays visible
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False,
                  title="mean AUROC % across seeds (n)" if lines else "no scores with both classes", title_fontsize=7)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle("ROC of the selected checkpoints: thick = mean over seeds, thin = each seed", fontsize=10)
    return fig


def roc(runs: pd.DataFrame, path: Path, runs_dir: Path) -> Path:
    """ROC curves of the selected checkpoints (:func:`roc_figure`), in the format ``path``'s suffix names."""
    return save_figure(roc_figure(runs, runs_dir), path)


def draw(kind: str, runs: pd.DataFrame, path: Path, runs_dir: Path) -> Path:
    """The ``kind`` figure (bars or roc) of ``runs``, written to ``path``."""
    return bars(runs, path) if kind == "bars" else roc(runs, path, runs_dir)
