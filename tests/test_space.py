"""Search spaces as data: a shared λ list, or one per method."""

from __future__ import annotations

import pytest

from dgx.errors import DgxError
from dgx.space import load_budget


def write_budget(tmp_path, grid: str) -> str:
    (tmp_path / "g.yaml").write_text(grid)
    path = tmp_path / "b.yaml"
    path.write_text(f"grid: {tmp_path / 'g.yaml'}\nseeds: 2\n")
    return str(path)


def test_lam_per_method_replaces_the_shared_axis(tmp_path):
    budget = load_budget(write_budget(tmp_path, "lr: [1.0e-3]\nwd: [0.0, 0.1]\nlam: {rrr: [0.1, 0.3], actdiff: [1.0e-3]}\n"))
    assert budget.grid_for("rrr") == {"lr": [1e-3], "wd": [0.0, 0.1], "lam": [0.1, 0.3]}
    assert budget.grid_for("actdiff")["lam"] == [1e-3]
    assert "lam" not in budget.grid_for("erm")
    assert len(budget.points("rrr")) == 4 and len(budget.points("actdiff")) == 2 and len(budget.points("erm")) == 2
    assert budget.default_lam("rrr") == 0.1 and budget.default_lam("actdiff") == 1e-3
    with pytest.raises(DgxError, match="none for gradmask"):  # never a silent fallback to another method's λ
        budget.grid_for("gradmask")


def test_shared_lam_and_bad_grids(tmp_path):
    budget = load_budget(write_budget(tmp_path, "lr: [1.0e-3]\nwd: [0.0]\nlam: [0.5]\n"))
    assert budget.grid_for("gradmask")["lam"] == [0.5] and budget.default_lam("rrr") == 0.0
    with pytest.raises(DgxError, match="names no method"):
        load_budget(write_budget(tmp_path, "lr: [1.0e-3]\nlam: {erm: [0.1]}\n"))
    with pytest.raises(DgxError, match="non-negative"):
        load_budget(write_budget(tmp_path, "lr: [1.0e-3]\nlam: {rrr: [-1]}\n"))


def test_the_quick_budget_sizes_lam_for_every_method():
    quick = load_budget("quick")
    for method in ("rrr", "actdiff", "gradmask"):
        assert quick.grid_for(method)["lam"]
