"""Settings of `gdrec-consumer` (pull, distill, serve) from `GDREC_CONSUMER_*` environment variables or `.env`.

The consumer's data directory holds only what it pulled from the owner and what it trained from that; there is no
setting that points at raw data. Outside development the service refuses to start without real API keys."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GDREC_CONSUMER_"
MIN_KEY_CHARS = 16


class Environment(StrEnum):
    development = "development"
    production = "production"


class ConsumerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True,
    )

    environment: Environment = Field(Environment.development, description="production requires the API keys")
    data_dir: Path = Field(Path("consumer-data"), description="the consumer's own folder: pulled export, students")
    owner_url: str | None = Field(None, description="the owner's export API, e.g. http://127.0.0.1:8100")
    owner_key: SecretStr | None = Field(None, description="the API key the owner issued to this consumer")
    api_key: SecretStr | None = Field(None, description="bearer key callers of /v1 need (None: open, development)")
    admin_key: SecretStr | None = Field(None, description="bearer key of /v1/admin (None: admin routes refused)")
    page_limit: int = Field(100, ge=1, le=1000, description="users per export page")
    timeout_s: float = Field(30.0, gt=0, description="seconds per HTTP request to the owner")
    attempts: int = Field(5, ge=1, description="tries per page on connection errors, 5xx and 429")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay (doubles each retry)")
    max_k: int = Field(5000, ge=1, description="the largest k a recommendation request may ask for")
    max_batch: int = Field(1000, ge=1, description="the most tokens in one batch request")
    reload_poll_s: float = Field(0.0, ge=0, description="seconds between checks for a new model (0: only on "
                                 "POST /v1/admin/reload)")
    device: str = Field("auto", description="auto, cpu or cuda[:n]")
    host: str = "127.0.0.1"
    port: int = Field(8200, ge=1, le=65535)
    log_level: str = Field("info", pattern=r"^(critical|error|warning|info|debug)$")

    @model_validator(mode="after")
    def _key_policy(self) -> ConsumerSettings:
        if self.environment is Environment.development:
            return self
        for name in ("api_key", "admin_key"):
            value: SecretStr | None = getattr(self, name)
            if value is None or len(value.get_secret_value()) < MIN_KEY_CHARS:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be set to at least {MIN_KEY_CHARS} random "
                                 f"characters in {self.environment.value}")
        return self

    @property
    def layout(self) -> ConsumerLayout:
        return ConsumerLayout(self.data_dir)


@dataclass(frozen=True)
class ConsumerLayout:
    """Files under the consumer's data directory."""

    root: Path

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def current_model(self) -> Path:
        """A small JSON pointer {"version": ...} to the served model, replaced atomically by `distill`."""
        return self.models / "current.json"
