"""The data owner's service settings (pydantic-settings), from the strongest source to the weakest: keyword
arguments (the CLI's options), `GDREC_OWNER_*` environment variables, `GDREC_OWNER_*_FILE` variables naming a file
that holds the value, a `.env` file, files in the secrets directory (`/run/secrets/gdrec_owner_secret`; another
directory with `GDREC_OWNER_SECRETS_DIR`), the defaults. See `shared.secret_policy` for the files.

The environment is production unless `GDREC_OWNER_ENVIRONMENT=development` says otherwise. Production refuses to
start without a strong HMAC secret: a missing, published or weak `GDREC_OWNER_SECRET` (an estimated entropy under
128 bits, `shared.secret_policy.estimated_bits`) is an error that names the variable and says how to make one.
Development without a secret uses a random one generated into the artifacts directory
(`<artifacts>/.development-secret`, kept so that reruns give the same tokens), with a warning. The secret is a
`SecretStr`: it never appears in a repr, a log line or an error message. `ArtifactLayout` says where `train`
writes and `serve` reads."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.secret_policy import SecretSettings, how_to_set, weakness

log = logging.getLogger(__name__)

ENV_PREFIX = "GDREC_OWNER_"
SECRET_ENV = f"{ENV_PREFIX}SECRET"
MIN_SECRET_BYTES = 16  # always (the HMAC tokens refuse shorter keys)
# values printed in public code or documentation: refused outside development whatever their estimated strength
PUBLIC_SECRETS = frozenset({"gdrec-development-secret-do-not-use-in-production"})
SECRET_FIELDS = ("secret",)  # the fields that GDREC_OWNER_<NAME>_FILE may name a file for
_SECRET_HINT = how_to_set(SECRET_ENV)


class Environment(StrEnum):
    development = "development"
    production = "production"


class OwnerSettings(SecretSettings):
    """Settings of `gdrec-owner` (train, serve, evaluate, keys, audit)."""

    ENV_PREFIX = ENV_PREFIX
    SECRET_FIELDS = SECRET_FIELDS

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_by_name=True,
        hide_input_in_errors=True,  # a refused setting's error must not echo the secret it was given
    )

    environment: Environment = Field(
        Environment.production, description="production (the default) requires a strong secret; development "
        "generates one into the artifacts directory when none is set"
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
    max_body_bytes: int = Field(16 * 1024, ge=0, description="the largest request body accepted (413 above it, "
                                "before authentication); the owner's routes are GETs")
    key_rate_per_s: float = Field(200.0, ge=0, description="requests per second per API key (0: no limit); over it, "
                                  "429 with Retry-After")
    key_burst: int = Field(400, ge=1, description="requests an API key may make at once before its rate applies")
    address_rate_per_s: float = Field(20.0, ge=0, description="requests per second per client address without a "
                                      "valid API key (0: no limit)")
    address_burst: int = Field(100, ge=1, description="requests a client address without a valid key may make at "
                               "once")
    audit_segment_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024, description="size at which the audit log's "
                                     "active file is sealed as a numbered segment and a new one started")

    _development_secret: bytes | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _secret_policy(self) -> OwnerSettings:
        value = self.secret.get_secret_value() if self.secret is not None else None
        if value is not None and len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"{SECRET_ENV} is too short ({len(value)} characters); {_SECRET_HINT}")
        problem = None if value is None else (
            "is published in code or documentation" if value in PUBLIC_SECRETS else weakness(value))
        if self.environment is Environment.development:
            if problem:
                log.warning("%s %s: accepted in development only; %s", SECRET_ENV, problem, _SECRET_HINT)
            return self
        if value is None:
            raise ValueError(f"{SECRET_ENV} is not set and the environment is {self.environment.value}; {_SECRET_HINT}"
                             f" (or set {ENV_PREFIX}ENVIRONMENT=development on a development machine)")
        if problem:
            raise ValueError(f"{SECRET_ENV} {problem}: refused in {self.environment.value}; {_SECRET_HINT}")
        return self

    def secret_bytes(self) -> bytes:
        """The HMAC secret. In development without one: the random secret kept in the artifacts directory (generated
        on first use), with a warning; a `ValueError` when that file cannot be read or written."""
        if self.secret is not None:
            return self.secret.get_secret_value().encode()
        if self.environment is not Environment.development:  # the validator refuses this; never fall back
            raise ValueError(f"{SECRET_ENV} is not set and the environment is {self.environment.value}")
        if self._development_secret is None:
            path = self.layout.development_secret
            self._development_secret, created = _load_development_secret(path)
            log.warning("%s is not set: development uses the random secret %s %s (tokens stay the same only with "
                        "this artifacts directory; production refuses to run without %s)", SECRET_ENV,
                        "generated into" if created else "kept in", path, SECRET_ENV)
        return self._development_secret

    @property
    def layout(self) -> ArtifactLayout:
        return ArtifactLayout(self.artifacts_dir)

    @property
    def keys_path(self) -> Path:
        return self.keys_file if self.keys_file is not None else self.layout.keys_file

    @property
    def audit_path(self) -> Path:
        return self.audit_log if self.audit_log is not None else self.layout.audit_log


def _load_development_secret(path: Path) -> tuple[bytes, bool]:
    """The development secret kept in `path` (64 hex digits, mode 0600), generated there when absent; whether it was
    generated now. Two processes starting at once agree: the file is created exclusively, then read."""
    created = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            created = True
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"the development secret {path} cannot be read or written ({exc.strerror}); set "
                         f"{SECRET_ENV}, or fix the permissions of the artifacts directory") from None
    if len(value.encode()) < MIN_SECRET_BYTES or weakness(value):
        raise ValueError(f"the development secret {path} is damaged (empty or too weak): remove it to generate a new "
                         f"one (the tokens of exports built with it then change), or set {SECRET_ENV}")
    return value.encode(), created


def secret_fingerprint(secret: bytes) -> str:
    """A short keyed fingerprint of the secret (not the secret, not reversible): tells whether two runs used the
    same secret, e.g. whether `evaluate` can recompute the tokens of a served export."""
    return hmac.new(secret, b"gdrec-owner secret fingerprint v1", hashlib.sha256).hexdigest()[:16]


def audit_head_key(secret: bytes) -> bytes:
    """The key that signs the audit log's head record (derived from the secret, never the secret itself)."""
    return hmac.new(secret, b"gdrec-owner audit head v1", hashlib.sha256).digest()


def audit_entry_key(secret: bytes) -> bytes:
    """The key of every audit log entry's MAC (derived from the secret, never the secret itself)."""
    return hmac.new(secret, b"gdrec-owner audit entry v1", hashlib.sha256).digest()


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
    def development_secret(self) -> Path:
        """The random HMAC secret of development runs without `GDREC_OWNER_SECRET` (never used in production)."""
        return self.root / ".development-secret"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.jsonl"

    @property
    def evaluations(self) -> Path:
        return self.root / "evaluations"
