"""What ``dgx report`` was asked for: every option as one typed, frozen :class:`ReportRequest`, checked once.

The command line builds the request field by field (a renamed option is a TypeError, never a dropped
setting); :meth:`ReportRequest.check` turns a bad name or a bad combination into one DgxError line before any
storage is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dgx.checks import check_choice, check_name, check_out_file
from dgx.data import DATASETS
from dgx.data.base import MASK_KINDS
from dgx.data.groups import KEYS
from dgx.errors import DgxError, unknown_choice
from dgx.methods import METHODS
from dgx.report.formats import FORMATS
from dgx.report.load import ORACLE
from dgx.report.tables import SHAPES

PHASES = ("seeds", "search", "all")
SOURCES = ("optuna", "wandb")
TESTS = ("t", "wilcoxon")
FIGURES = ("bars", "roc")
RUN_CIS = ("delong", "bootstrap")


@dataclass(frozen=True)
class ReportRequest:
    """The options of ``dgx report`` (see ``dgx report --help``); one of figure, run_ci and by picks a mode other
    than the table."""

    storage: str | None = None  # Optuna storage URL (default: the settings')
    study: str | None = None  # a study-name prefix, or an override tag oHASH
    phase: str = "seeds"  # one of PHASES
    table: str = "1"  # paper shape, one of tables.SHAPES
    fmt: str = "markdown"  # one of formats.FORMATS
    out: Path | None = None  # write here instead of stdout (the figure's file with --figure)
    dataset: tuple[str, ...] = ()  # keep only these datasets (empty: all)
    method: tuple[str, ...] = ()  # keep only these methods; for tables 2 and 5 the one method shown
    mask: tuple[str, ...] = ()  # keep only these masks
    baseline: str | None = None  # erm, mask:NAME or none
    test: str | None = None  # paired test with a baseline, one of TESTS (default t)
    source: str = "optuna"  # one of SOURCES
    entity: str | None = None  # W&B entity (default: the settings')
    project: str | None = None  # W&B project (default: the settings')
    figure: str | None = None  # draw this figure (one of FIGURES) instead of a table
    run_ci: str | None = None  # per-run intervals by this method (one of RUN_CIS)
    by: str | None = None  # a subgroup table by this key (dgx.data.groups.KEYS)

    @property
    def paired_test(self) -> str:
        return self.test or "t"

    @property
    def chosen_phase(self) -> str | None:
        """The phase trials must have, None for every phase."""
        return None if self.phase == "all" else self.phase

    @property
    def wide(self) -> bool:
        """Tables 2 and 5: one method's masks, the method named by --method rather than filtered on."""
        return self.table in ("2", "5")

    @property
    def figure_path(self) -> Path:
        return self.out or Path(f"figures/report_{self.figure}.png")

    def check(self) -> None:
        """A one-line DgxError for the first bad option or combination of options, before any storage is read."""
        if self.test is not None and not self.baseline:
            raise DgxError(f"--test {self.test} compares cells with a baseline and there is none; add --baseline erm "
                           "(or mask:NAME), or drop --test")
        if self.baseline and (self.figure is not None or self.run_ci is not None):
            raise DgxError(f"--baseline has no effect on {'--figure' if self.figure is not None else '--run-ci'}; "
                           "drop it, or print the table with --baseline instead")
        if self.by is not None:
            self._check_by()
        for value, choices, what in ((self.phase, PHASES, "phase"), (self.source, SOURCES, "source"),
                                     (self.paired_test, TESTS, "test"), (self.figure, FIGURES, "figure"),
                                     (self.run_ci, RUN_CIS, "--run-ci")):
            if value is not None and value not in choices:
                raise unknown_choice(what, value, choices)
        self._check_names()
        if self.out is not None:
            check_out_file(self.out, figure=self.figure is not None)
        elif self.figure is not None:
            check_out_file(self.figure_path)

    def _check_by(self) -> None:
        """--by makes its own table: a key dgx records, and no other mode."""
        if self.by not in KEYS:
            raise unknown_choice("--by", self.by, KEYS)
        clash = next((f"--{name}" for name, value in (("figure", self.figure), ("run-ci", self.run_ci),
                                                     ("baseline", self.baseline)) if value is not None),
                     "--table" if self.table != "1" else "--source wandb" if self.source == "wandb" else "")
        if clash:
            raise DgxError(f"--by {self.by} makes its own table from the run folders and cannot be combined with "
                           f"{clash}; drop one of them")

    def _check_names(self) -> None:
        """Every name a user typed is one dgx knows."""
        check_name("--study", self.study)
        check_choice("table", self.table, SHAPES)
        check_choice("format", self.fmt, FORMATS)
        for values, kind, choices in ((self.dataset, "--dataset", DATASETS),
                                      (self.method, "--method", [*METHODS, ORACLE]), (self.mask, "--mask", MASK_KINDS)):
            for value in values:
                check_choice(kind, value, choices)
        if self.baseline and self.baseline.startswith("mask:"):
            check_choice("--baseline mask", self.baseline[len("mask:"):], [k for k in MASK_KINDS if k != "none"])
