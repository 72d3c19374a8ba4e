"""Settings from the environment or a git-ignored ``.env`` file.

Every setting is listed in ``.env.example``. Command-line flags override them.
Secrets (``WANDB_API_KEY``) are read only from here, never from flags or files
in the repository.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    heartbeat_s: float = Field(30.0, gt=0, validation_alias=AliasChoices("DGX_HEARTBEAT_S"))
    grace_s: float = Field(120.0, gt=0, validation_alias=AliasChoices("DGX_GRACE_S"))
    # Secret; only ever read from the environment or .env.
    wandb_api_key: str = Field("", validation_alias=AliasChoices("WANDB_API_KEY"), repr=False)

    def default_storage(self) -> str:
        return self.storage or f"sqlite:///{self.runs_dir / 'dgx.db'}"

    def resolved_wandb_mode(self) -> str:
        if self.wandb_mode:
            return self.wandb_mode
        return "online" if self.wandb_api_key else "offline"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
