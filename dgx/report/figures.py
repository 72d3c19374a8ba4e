"""Report figures (matplotlib PNG): AUROC bars with CI per domain, ROC curves per domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dgx.errors import DgxError


def _save(fig, path: Path) -> Path:
    from dgx.runs import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format="png")
    return path


def bars(runs: pd.DataFrame, path: Path, confidence: float = 0.95) -> Path:
    """One panel per dataset: a group of bars per domain (source test or OOD target, named under each group),
    one bar per method/mask with its n in the legend, CI whiskers, the full 0-100 axis and a chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dgx.report.tables import cells

    c = cells(runs, confidence)
    experiments = list(dict.fromkeys(c["dataset"]))
    fig, axes = plt.subplots(len(experiments), 1, figsize=(10, 3.6 * len(experiments)), squeeze=False)
    for ax, experiment in zip(axes[:, 0], experiments):
        part = c[c["dataset"] == experiment]
        domains = list(dict.fromkeys(part["domain"]))
        labels = list(dict.fromkeys(part["label"]))
        width = 0.8 / len(labels)
        for k, label in enumerate(labels):
            rows = part[part["label"] == label].set_index("domain").reindex(domains)
            x = np.arange(len(domains)) + (k - (len(labels) - 1) / 2) * width
            err = np.nan_to_num(100 * rows["half_width"].to_numpy(float))
            n = int(rows["n"].max()) if rows["n"].notna().any() else 0
            ax.bar(x, 100 * rows["mean"].to_numpy(float), width, yerr=err, capsize=3, label=f"{label} (n={n})")
        roles = dict(zip(part["domain"], part["role"]))
        ax.set_xticks(np.arange(len(domains)),
                      [f"{d}\n({_role(d, roles[d])})" for d in domains], fontsize=8)
        ax.set_ylabel("test AUROC (%)")
        ax.set_ylim(0, 100)  # the whole scale: gaps look as large as they are
        ax.axhline(50, color="black", lw=0.8, ls="--", label="chance (50)")
        ax.set_title(f"{experiment}: mean ± {confidence * 100:g}% CI (Student t) across n seeds")
        ax.legend(fontsize=8, ncol=min(4, len(labels) + 1), loc="upper center", bbox_to_anchor=(0.5, -0.22),
                  frameon=False)  # below the axes: never over a bar
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def _role(domain: str, role: str) -> str:
    from dgx.report.tables import AVERAGE

    return "mean of the targets" if domain == AVERAGE else ("OOD target" if role == "target" else "source test")


def roc(runs: pd.DataFrame, path: Path, runs_dir: Path) -> Path:
    """ROC curves of the selected checkpoints, one panel per domain, one line per run (method/mask, seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from dgx.report.tables import method_label
    from dgx.runs import load_scores, scores_path

    if "run_id" not in runs.columns:
        raise DgxError("ROC figures need the run folders' scores; use the Optuna storage source")
    trials = runs.drop_duplicates(["study", "trial"])
    if len(trials) > 60:
        raise DgxError(f"{len(trials)} runs selected; pick one study for ROC curves with --study NAME")
    domains = list(dict.fromkeys(runs["domain"]))
    roles = dict(zip(runs["domain"], runs["role"]))
    fig, axes = plt.subplots(1, len(domains), figsize=(3.4 * len(domains), 3.6), squeeze=False)
    drawn = 0
    for t in trials.itertuples(index=False):
        scores = load_scores(scores_path(runs_dir, t.run_id)) if t.run_id else {}
        for ax, domain in zip(axes[0], domains):
            if domain in scores and len(np.unique(scores[domain][0])) == 2:
                fpr, tpr, _ = roc_curve(*scores[domain])
                ax.plot(fpr, tpr, lw=1, alpha=0.8, label=f"{method_label(t.method, t.mask)} s{t.seed}")
                drawn += 1
    if not drawn:
        raise DgxError(f"no saved scores for these runs under {Path(runs_dir) / 'runs'}; set DGX_RUNS_DIR to the "
                       "folder the sweep trained in")
    for ax, domain in zip(axes[0], domains):
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set_title(f"{domain}{' (OOD)' if roles[domain] == 'target' else ''}", fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_aspect("equal")
    axes[0, 0].set_ylabel("true positive rate")
    axes[0, -1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def draw(kind: str, runs: pd.DataFrame, path: Path, runs_dir: Path) -> Path:
    return bars(runs, path) if kind == "bars" else roc(runs, path, runs_dir)
