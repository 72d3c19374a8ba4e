"""Settings from the environment or a git-ignored ``.env`` file.

Every setting is listed in ``.env.example``. Command-line flags override them.
Secrets (``WANDB_API_KEY``) are read only from here, never from flags or files
in the repository.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dgx.errors import DgxError

WANDB_MODES = ("online", "offline", "disabled")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Optuna storage URL, the database of record; empty means SQLite under runs_dir.
    storage: str = Field("", validation_alias=AliasChoices("DGX_STORAGE"))
    # Where datasets (the decoy-cxr cache, later prepared manifests) live.
    data_dir: Path = Field(Path("data"), validation_alias=AliasChoices("DGX_DATA_DIR"))
    # Where run folders (checkpoints, results) and the default SQLite file live.
    runs_dir: Path = Field(Path("runs"), validation_alias=AliasChoices("DGX_RUNS_DIR"))
    # W&B project and entity (team or user); entity empty means the key's default.
    wandb_project: str = Field("dgx", validation_alias=AliasChoices("WANDB_PROJECT"))
    wandb_entity: str = Field("", validation_alias=AliasChoices("WANDB_ENTITY"))
    # online | offline | disabled; empty means online when an API key is set, else offline.
    wandb_mode: str = Field("", validation_alias=AliasChoices("WANDB_MODE"))
    # Worker liveness: a running trial stamps a heartbeat this often (seconds); one
    # silent for the grace period is presumed dead, failed and retried elsewhere.
    heartbeat_s: float = Field(30.0, gt=0, allow_inf_nan=False, validation_alias=AliasChoices("DGX_HEARTBEAT_S"))
    grace_s: float = Field(120.0, gt=0, allow_inf_nan=False, validation_alias=AliasChoices("DGX_GRACE_S"))
    # Secret; only ever read from the environment or .env.
    wandb_api_key: str = Field("", validation_alias=AliasChoices("WANDB_API_KEY"), repr=False)
    # Local files dgx never downloads: the PSPNet lung-segmentation weights, the paper's reference
    # data (split lists, gaze), and the sweeps/ folder (budgets, grids, paper experiments).
    lung_model: str = Field("", validation_alias=AliasChoices("DGX_LUNG_MODEL"))
    reference_dir: str = Field("", validation_alias=AliasChoices("DGX_REFERENCE_DIR"))
    sweeps_dir: str = Field("", validation_alias=AliasChoices("DGX_SWEEPS_DIR"))
    # torch threads per training; 0 = its fair share of this machine's cores (dgx/threads.py).
    threads: int = Field(0, ge=0, validation_alias=AliasChoices("DGX_THREADS"))

    @field_validator("wandb_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value and value not in WANDB_MODES:
            raise ValueError(f"must be one of {', '.join(WANDB_MODES)}")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value and "://" not in value:
            raise ValueError("must be an Optuna storage URL, e.g. sqlite:///runs/dgx.db, journal:///path/file.journal "
                             "or postgresql://user@host/db")
        return value

    @field_validator("sweeps_dir")
    @classmethod
    def _sweeps(cls, value: str) -> str:
        if value and not Path(value).is_dir():
            raise ValueError("must be a folder holding budgets/, grids/ and paper/ (the repository's sweeps/), "
                             "and it is not one")
        return value

    @field_validator("runs_dir", "data_dir")
    @classmethod
    def _folder(cls, value: Path) -> Path:
        probe = value
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise ValueError(f"must be a folder, and {probe} is a file")
        return value

    def default_storage(self) -> str:
        return self.storage or f"sqlite:///{self.runs_dir / 'dgx.db'}"

    def resolved_wandb_mode(self) -> str:
        if self.wandb_mode:
            return self.wandb_mode
        return "online" if self.wandb_api_key else "offline"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings, or a one-line DgxError naming the bad variable and how to fix it."""
    # python-dotenv's "could not parse statement" warnings: held back, so that a bad setting stays one line,
    # and said after the settings load when they do.
    parser, held = logging.getLogger("dotenv.main"), _Held()
    parser.addHandler(held)
    propagate, parser.propagate = parser.propagate, False
    try:
        settings = Settings()
        for message in held.messages:
            logging.getLogger("dgx").warning(".env: %s (the line is ignored; fix it or remove it)", message)
        return settings
    except ValidationError as exc:
        err = exc.errors()[0]
        name = _variable(str(err["loc"][0]) if err.get("loc") else "?")
        value = err.get("input")
        raise DgxError(f"setting {name}={value!r} (from the environment or .env) is invalid: {err['msg']}; "
                       f"fix or unset it (every setting is listed in .env.example)") from None
    except UnicodeDecodeError as exc:
        raise DgxError(f".env is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    finally:
        parser.removeHandler(held)
        parser.propagate = propagate


def sweeps_dir() -> Path:
    """``$DGX_SWEEPS_DIR``, else the repository's ``sweeps/`` next to the package."""
    env = get_settings().sweeps_dir
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "sweeps"
    if not path.is_dir():
        raise DgxError(f"sweeps directory {path} not found; set DGX_SWEEPS_DIR to the repository's sweeps/ folder")
    return path


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


def _variable(field: str) -> str:
    """The environment variable behind a settings field (its alias)."""
    info = Settings.model_fields.get(field)
    alias = getattr(info, "validation_alias", None) if info is not None else None
    choices = getattr(alias, "choices", None)
    return str(choices[0]) if choices else field.upper()
