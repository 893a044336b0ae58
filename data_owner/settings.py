"""The data owner's service settings (pydantic-settings): environment variables `GDREC_OWNER_*`, a `.env` file,
or keyword arguments (the CLI's options), in that order of precedence from last to first.

Outside development the owner refuses to start without a real HMAC secret: a missing, default or short
`GDREC_OWNER_SECRET` is an error that names the variable. The secret is a `SecretStr`: it never appears in a
repr, a log line or an error message. `ArtifactLayout` says where `train` writes and `serve` reads."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

ENV_PREFIX = "GDREC_OWNER_"
SECRET_ENV = f"{ENV_PREFIX}SECRET"
DEVELOPMENT_SECRET = "gdrec-development-secret-do-not-use-in-production"
MIN_SECRET_CHARS = 32  # outside development
MIN_SECRET_BYTES = 16  # always (the HMAC tokens refuse shorter keys)
_SECRET_HINT = (
    f"set {SECRET_ENV} to at least {MIN_SECRET_CHARS} random characters, e.g. the output of "
    "`python -c 'import secrets; print(secrets.token_hex(32))'`, in the environment or in .env"
)


class Environment(StrEnum):
    development = "development"
    production = "production"


class OwnerSettings(BaseSettings):
    """Settings of `gdrec-owner` (train, serve, evaluate, keys, audit)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_by_name=True,
        hide_input_in_errors=True,  # a refused setting's error must not echo the secret it was given
    )

    environment: Environment = Field(
        Environment.development, description="development allows the built-in secret; production refuses it"
    )
    data_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices(f"{ENV_PREFIX}DATA_DIR", "GDREC_DATA_DIR"),
        description="folder holding the raw datasets (default: $GDREC_DATA_DIR, else ./data)",
    )
    artifacts_dir: Path = Field(Path("artifacts/owner"), description="where `train` writes and `serve` reads")
    secret: SecretStr | None = Field(None, description="HMAC key of the user tokens and the audit-log head")
    keys_file: Path | None = Field(None, description="consumer API keys, hashed (default: <artifacts>/keys.json)")
    audit_log: Path | None = Field(None, description="audit log (default: <artifacts>/audit/audit.jsonl)")
    host: str = "127.0.0.1"
    port: int = Field(8100, ge=1, le=65535)
    log_level: str = Field("info", pattern=r"^(critical|error|warning|info|debug)$")

    @model_validator(mode="after")
    def _secret_policy(self) -> OwnerSettings:
        value = self.secret.get_secret_value() if self.secret is not None else None
        if value is not None and len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"{SECRET_ENV} is too short ({len(value)} characters); {_SECRET_HINT}")
        if self.environment is Environment.development:
            return self
        if value is None:
            raise ValueError(f"{SECRET_ENV} is not set and the environment is {self.environment.value}; {_SECRET_HINT}")
        if value == DEVELOPMENT_SECRET:
            raise ValueError(f"{SECRET_ENV} is the development default, refused in {self.environment.value}; "
                             f"{_SECRET_HINT}")
        if len(value) < MIN_SECRET_CHARS:
            raise ValueError(f"{SECRET_ENV} is too short for {self.environment.value} ({len(value)} characters); "
                             f"{_SECRET_HINT}")
        return self

    def secret_bytes(self) -> bytes:
        """The HMAC secret; in development without one, the built-in development secret (with a warning)."""
        if self.secret is not None:
            return self.secret.get_secret_value().encode()
        log.warning("%s is not set: using the development secret (tokens are then predictable; never do this with "
                    "real data)", SECRET_ENV)
        return DEVELOPMENT_SECRET.encode()

    @property
    def layout(self) -> ArtifactLayout:
        return ArtifactLayout(self.artifacts_dir)

    @property
    def keys_path(self) -> Path:
        return self.keys_file if self.keys_file is not None else self.layout.keys_file

    @property
    def audit_path(self) -> Path:
        return self.audit_log if self.audit_log is not None else self.layout.audit_log


def secret_fingerprint(secret: bytes) -> str:
    """A short keyed fingerprint of the secret (not the secret, not reversible): tells whether two runs used the
    same secret, e.g. whether `evaluate` can recompute the tokens of a served export."""
    return hmac.new(secret, b"gdrec-owner secret fingerprint v1", hashlib.sha256).hexdigest()[:16]


def audit_head_key(secret: bytes) -> bytes:
    """The key that signs the audit log's head record (derived from the secret, never the secret itself)."""
    return hmac.new(secret, b"gdrec-owner audit head v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class ArtifactLayout:
    """Files under the artifacts directory. Each training stage writes `stages/<name>/` and marks it finished
    with `stage.json`, written last; `serve` reads only the export stage."""

    root: Path

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    def stage(self, name: str) -> Path:
        return self.stages / name

    @property
    def export_file(self) -> Path:
        return self.stage("export") / "export.json"

    @property
    def export_stage_file(self) -> Path:
        return self.stage("export") / "stage.json"

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    @property
    def train_lock(self) -> Path:
        return self.root / ".train.lock"

    @property
    def keys_file(self) -> Path:
        return self.root / "keys.json"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.jsonl"

    @property
    def evaluations(self) -> Path:
        return self.root / "evaluations"
