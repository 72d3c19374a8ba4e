"""Search spaces and budgets, read from ``sweeps/*.yaml`` (data, not code).

The only place ``trial.suggest_*`` is called (optuna-examples' habit).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml

from dgx.config import sweeps_dir
from dgx.errors import DgxError
from dgx.methods import METHODS, uses_mask

GRID_PARAMS = ("lr", "wd", "lam")


@dataclass(frozen=True)
class Budget:
    name: str
    description: str
    grid: dict[str, list[float]]  # param -> values, for methods with a λ
    seeds: int  # seeds-phase runs of the best configuration
    train: dict = field(default_factory=dict)  # TrainConfig overrides (model, weights, image_size, epochs)
    defaults: dict = field(default_factory=dict)  # lr/wd/lam for a single `dgx train`
    lam_by_method: dict = field(default_factory=dict)  # method -> λ values, where the grid gives them per method

    def grid_for(self, method: str) -> dict[str, list[float]]:
        """A method without a mask (ERM) has no λ: its grid drops that axis. A per-method λ list replaces the shared one."""
        masked = uses_mask(method)
        grid = {k: v for k, v in self.grid.items() if masked or k != "lam"}
        if masked and self.lam_by_method:
            if method not in self.lam_by_method:
                raise DgxError(f"budget {self.name!r}: its grid gives λ per method and none for {method}; "
                               f"add lam.{method} to the grid file")
            grid["lam"] = list(self.lam_by_method[method])
        return grid

    def default_lam(self, method: str) -> float:
        """λ for a single `dgx train`: the method's first grid value where the grid sizes λ per
        method, else the budget's default."""
        if method in self.lam_by_method:
            return float(self.lam_by_method[method][0])
        return float(self.defaults.get("lam", 0.0))

    def points(self, method: str) -> list[dict[str, float]]:
        grid = self.grid_for(method)
        return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _read_yaml(path: Path, what: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DgxError(f"{what} file {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise DgxError(f"{what} file {path} is a folder; pass a YAML file") from None
    except UnicodeDecodeError:
        raise DgxError(f"{what} file {path} is not UTF-8 text; save it as UTF-8 YAML") from None
    except OSError as exc:
        raise DgxError(f"{what} file {path} cannot be read ({exc.strerror}); check its permissions") from None
    except yaml.YAMLError as exc:
        raise DgxError(f"{what} file {path} is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") from None
    if not isinstance(data, dict):
        raise DgxError(f"{what} file {path} must hold a mapping (key: value lines), got {type(data).__name__}; "
                       "fix the file")
    return data


def _numbers(path: Path, key: str, values: object) -> list[float]:
    if not isinstance(values, list) or not values or not all(_is_number(v) for v in values):
        raise DgxError(f"grid {path}: {key} must be a non-empty list of finite numbers, got {values!r}; fix it in "
                       "the file")
    if any(v < 0 for v in values) or (key == "lr" and any(v == 0 for v in values)):
        raise DgxError(f"grid {path}: {key} values must be " + ("> 0" if key == "lr" else "non-negative") +
                       f", got {values!r}; fix it in the file")
    return [float(v) for v in values]


def load_grid(name_or_path: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(grid, λ per method). ``lam`` is a list shared by every method, or a mapping
    method -> list (penalties differ in scale: the quick grid sizes each method's λ
    so that its penalty at initialization is about the cross-entropy)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = sweeps_dir() / "grids" / f"{name_or_path}.yaml"
        if not path.exists():
            names = sorted(p.stem for p in (sweeps_dir() / "grids").glob("*.yaml"))
            raise DgxError(f"unknown grid {name_or_path!r}; choose from: {', '.join(names)} or pass a YAML file")
    raw = _read_yaml(path, "grid")
    unknown = set(raw) - set(GRID_PARAMS)
    if unknown:
        raise DgxError(f"grid {path} has unknown parameter(s) {sorted(unknown)}; use {', '.join(GRID_PARAMS)}")
    grid, by_method = {}, {}
    for key, values in raw.items():
        if key == "lam" and isinstance(values, dict):
            with_lam = [m for m, cls in METHODS.items() if cls.uses_mask]
            for method, lams in values.items():
                if method not in with_lam:
                    raise DgxError(f"grid {path}: lam.{method} names no method with a λ; use {', '.join(with_lam)}")
                by_method[method] = _numbers(path, f"lam.{method}", lams)
            grid["lam"] = next(iter(by_method.values()))  # placeholder axis; grid_for picks the method's
        else:
            grid[key] = _numbers(path, key, values)
    return grid, by_method


def load_budget(name_or_path: str) -> Budget:
    path = Path(name_or_path)
    if not path.suffix:
        path = sweeps_dir() / "budgets" / f"{name_or_path}.yaml"
        if not path.exists():
            names = sorted(p.stem for p in (sweeps_dir() / "budgets").glob("*.yaml"))
            raise DgxError(f"unknown budget {name_or_path!r}; choose from: {', '.join(names)} or pass a YAML file")
    raw = _read_yaml(path, "budget")
    _check_budget(path, raw)
    try:
        grid, by_method = load_grid(str(raw.get("grid", "appendix-a")))
    except DgxError as exc:
        raise DgxError(f"budget {path}: {exc}") from None
    return Budget(
        name=path.stem,
        description=str(raw.get("description", "")),
        grid=grid,
        seeds=int(raw.get("seeds", 10)),
        train=dict(raw.get("train") or {}),
        defaults={k: float(v) for k, v in (raw.get("defaults") or {}).items()},
        lam_by_method=by_method,
    )


BUDGET_KEYS = ("description", "grid", "seeds", "train", "defaults")
# train: key -> (kind, lowest value); strings are checked where they are used (model, weights, profile names)
TRAIN_KEYS = {"model": (str, None), "weights": (str, None), "image_size": (int, 16), "epochs": (int, 0),
              "profile": (str, None), "negative_masks": (str, None)}
DEFAULT_KEYS = ("lr", "wd", "lam")


def _check_budget(path: Path, raw: dict) -> None:
    """Every key known and every value of the right type, with one-line errors naming the file and key."""
    def bad(key: str, want: str) -> DgxError:
        return DgxError(f"budget {path}: {key} must be {want}, got {_get(raw, key)!r}; fix it in the file")

    unknown = sorted(set(raw) - set(BUDGET_KEYS))
    if unknown:
        raise DgxError(f"budget {path} has unknown key(s) {unknown}; use {', '.join(BUDGET_KEYS)}")
    if not isinstance(raw.get("grid", ""), str):
        raise bad("grid", "the name of a grid in sweeps/grids or a YAML file")
    if not _is_int(raw.get("seeds", 1)) or raw.get("seeds", 1) < 1:
        raise bad("seeds", "a whole number >= 1")
    for section, keys in (("train", TRAIN_KEYS), ("defaults", DEFAULT_KEYS)):
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise bad(section, "a mapping")
        unknown = sorted(set(values) - set(keys))
        if unknown:
            raise DgxError(f"budget {path}: unknown {section} key(s) {unknown}; use {', '.join(keys)}")
    for key, (kind, low) in TRAIN_KEYS.items():
        value = (raw.get("train") or {}).get(key)
        if value is None:
            continue
        if kind is int and (not _is_int(value) or value < low):
            raise bad(f"train.{key}", f"a whole number >= {low}")
        if kind is str and not (isinstance(value, str) and value.strip()):
            raise bad(f"train.{key}", "a name")
    for key in DEFAULT_KEYS:
        value = (raw.get("defaults") or {}).get(key)
        if value is not None and (not _is_number(value) or value < 0 or (key == "lr" and value == 0)):
            raise bad(f"defaults.{key}", "a finite number " + ("> 0" if key == "lr" else ">= 0"))


def _get(raw: dict, dotted: str) -> object:
    for part in dotted.split("."):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def suggest(trial: optuna.Trial, grid: dict[str, list]) -> dict:
    """Ask the trial for one value per grid axis (GridSampler or fixed params answer)."""
    return {name: trial.suggest_categorical(name, values) for name, values in grid.items()}
