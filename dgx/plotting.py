"""What every dgx figure shares: one palette, the headless backend, and one writer that honours the suffix.

Report figures (``dgx report --figure``), mask figures (``dgx analyze figure1|figure2``) and attribution maps
all draw with Okabe & Ito's colour-blind-safe palette, a method/mask keeping its colour across figures, and are
written atomically (a temporary file, then a rename) in the format their file name's suffix names.
"""

from __future__ import annotations

from pathlib import Path

from dgx.errors import DgxError
from dgx.runs import atomic_write

# Okabe & Ito's qualitative palette (Okabe and Ito 2008, "Color Universal Design").
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7"}
# Series colours in order of first appearance (the tables' order: ERM first); yellow last (faint on white).
SERIES = tuple(OKABE_ITO[c] for c in ("blue", "vermillion", "bluish green", "reddish purple", "orange",
                                      "sky blue", "black", "yellow"))
FORMATS = ("png", "pdf", "svg")  # what --out's suffix may name


def pyplot():
    """matplotlib's pyplot module, on the headless Agg backend."""
    import matplotlib  # matplotlib: only when a figure is drawn (dgx.checks reads this module's formats)

    matplotlib.use("Agg")  # headless; must precede the pyplot import's backend choice
    import matplotlib.pyplot as plt  # matplotlib: as above, and only after use("Agg")

    return plt


def figure_format(out: Path, flag: str = "--out") -> str:
    """The format ``out``'s suffix names, or a one-line DgxError (checked before any work)."""
    fmt = Path(out).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise DgxError(f"{flag} {out}: a figure is written as .png, .pdf or .svg (the suffix picks the format), "
                       f"not {Path(out).suffix or 'a name without a suffix'}; rename it, e.g. {Path(out).with_suffix('.png')}")
    return fmt


def save_figure(fig, out: Path, dpi: int = 150) -> Path:
    """Write ``fig`` to ``out`` in the format of its suffix, atomically, and close it."""
    out = Path(out)
    fmt = figure_format(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return out
