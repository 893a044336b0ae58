"""Settings of `gdrec-consumer` (pull, distill, serve), from the strongest source to the weakest: keyword arguments
(the CLI's options), `GDREC_CONSUMER_*` environment variables, `GDREC_CONSUMER_*_FILE` variables naming a file that
holds a key, a `.env` file, files in the secrets directory (`/run/secrets/gdrec_consumer_api_key`; another directory
with `GDREC_CONSUMER_SECRETS_DIR`), the defaults. See `shared.secret_policy` for the files.

The consumer's data directory holds only what it pulled from the owner and what it trained from that; there is no
setting that points at raw data. The environment is production unless `GDREC_CONSUMER_ENVIRONMENT=development`
says otherwise: production refuses to start without a strong `GDREC_CONSUMER_API_KEY` and
`GDREC_CONSUMER_ADMIN_KEY`, and refuses a weak `GDREC_CONSUMER_OWNER_KEY` (an estimated entropy under 128 bits,
`shared.secret_policy.estimated_bits`). Development takes any key, or none (then /v1 is open), with a warning for a
weak one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.secret_policy import SecretSettings, how_to_set, weakness

log = logging.getLogger(__name__)

ENV_PREFIX = "GDREC_CONSUMER_"
KEY_FIELDS = ("owner_key", "api_key", "admin_key")  # read from GDREC_CONSUMER_<NAME>_FILE too
REQUIRED_KEYS = ("api_key", "admin_key")  # outside development


class Environment(StrEnum):
    development = "development"
    production = "production"


class ConsumerSettings(SecretSettings):
    ENV_PREFIX = ENV_PREFIX
    SECRET_FIELDS = KEY_FIELDS

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True,
    )

    environment: Environment = Field(Environment.production, description="production (the default) requires strong "
                                     "API keys; development allows none (an open API)")
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
    workers: int = Field(1, ge=1, description="server processes of `serve`, each with its own copy of the model, "
                         "sharing the port")
    log_level: str = Field("info", pattern=r"^(critical|error|warning|info|debug)$")
    max_body_bytes: int = Field(256 * 1024, ge=0, description="the largest request body accepted (413 above it, "
                                "before authentication); a batch of max_batch 64-character tokens needs ~70 KB")
    key_rate_per_s: float = Field(500.0, ge=0, description="requests per second per API key, or per client address "
                                  "when api_key is unset (0: no limit); over it, 429 with Retry-After")
    key_burst: int = Field(1000, ge=1, description="requests a key may make at once before its rate applies")
    address_rate_per_s: float = Field(20.0, ge=0, description="requests per second per client address without a "
                                      "valid key (0: no limit)")
    address_burst: int = Field(100, ge=1, description="requests a client address without a valid key may make at "
                               "once")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="serve Prometheus /metrics on this port, "
                                     "apart from the API (None: no metrics endpoint; 0: any free port)")
    metrics_host: str = Field("127.0.0.1", description="the address the metrics port binds to")
    checkpoint_every_s: float = Field(60.0, ge=0, description="`distill` saves its resumable training state at most "
                                      "this often, in seconds (0: every epoch)")

    @model_validator(mode="after")
    def _key_policy(self) -> ConsumerSettings:
        production = self.environment is not Environment.development
        for name in KEY_FIELDS:
            variable = f"{ENV_PREFIX}{name.upper()}"
            value: SecretStr | None = getattr(self, name)
            if value is None:
                if production and name in REQUIRED_KEYS:
                    raise ValueError(f"{variable} is not set and the environment is {self.environment.value}; "
                                     f"{how_to_set(variable)} (or set {ENV_PREFIX}ENVIRONMENT=development on a "
                                     "development machine)")
                continue
            problem = weakness(value.get_secret_value())
            if problem and production:
                raise ValueError(f"{variable} {problem}: refused in {self.environment.value}; "
                                 + (how_to_set(variable) if name != "owner_key" else
                                    f"set {variable} to the key printed by `gdrec-owner keys add`"))
            if problem:
                log.warning("%s %s: accepted in development only", variable, problem)
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
    def training(self) -> Path:
        """Resumable training state of `distill` runs, one folder per export and settings; removed once published."""
        return self.root / "training"

    @property
    def current_model(self) -> Path:
        """A small JSON pointer {"version": ...} to the served model, replaced atomically by `distill`."""
        return self.models / "current.json"
