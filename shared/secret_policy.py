"""How both services judge and load their secrets: a strength estimate that refuses guessable values, and the two
container ways of passing a secret as a file instead of an environment variable.

Strength: `estimated_bits(value)` is the value's length times the Shannon entropy of its characters (bits per
character, from their frequencies in the value itself), counted over the shortest pattern the value repeats, and
the smaller of that and the same count over the differences between neighbouring characters (which catches runs
such as `abcdef...` or `0123...`). A value needs `MIN_SECRET_BITS` (128) to pass: 32 times the same character
counts 0, `abab...` 2, a 16-character value at most 64, while `secrets.token_hex(32)` (64 hex digits) counts about
240 and `secrets.token_urlsafe(32)` about 210. It is an estimate of how the value looks, not a proof of how it was
made: generate secrets with `GENERATE_COMMAND`.

Files: a settings class reads each field from
  - `<PREFIX><NAME>_FILE`, an environment variable naming a file that holds the value (the convention of the
    official Docker images; setting both `<PREFIX><NAME>` and `<PREFIX><NAME>_FILE` is an error), and
  - a secrets directory, `/run/secrets` unless `<PREFIX>SECRETS_DIR` names another, holding files named after the
    variables (`gdrec_owner_secret` or `GDREC_OWNER_SECRET`): where Docker Compose and Swarm mount `secrets:`. A
    missing directory is skipped.
Surrounding whitespace, the trailing newline included, is stripped from a file's content. Neither way puts the
value in the container's configuration, where `docker inspect` shows environment variables."""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SecretsSettingsSource
from pydantic_settings.exceptions import SettingsError

log = logging.getLogger(__name__)

MIN_SECRET_BITS = 128
GENERATE_COMMAND = "python -c 'import secrets; print(secrets.token_hex(32))'"
DEFAULT_SECRETS_DIR = Path("/run/secrets")
FILE_SUFFIX = "_FILE"


def _shortest_period(symbols: Sequence[Hashable]) -> int:
    """The length of the shortest prefix that `symbols` repeats (its length when it repeats none), from the KMP
    prefix function: "abcabca" -> 3, "abcd" -> 4."""
    if not symbols:
        return 0
    border = [0] * len(symbols)
    for i in range(1, len(symbols)):
        k = border[i - 1]
        while k and symbols[i] != symbols[k]:
            k = border[k - 1]
        border[i] = k + 1 if symbols[i] == symbols[k] else 0
    return len(symbols) - border[-1]


def _pattern_bits(symbols: Sequence[Hashable]) -> float:
    """Length times per-symbol Shannon entropy (frequencies within the sequence), over the shortest pattern the
    sequence repeats."""
    core = symbols[:_shortest_period(symbols)]
    n = len(core)
    return -sum(count * math.log2(count / n) for count in Counter(core).values())


def estimated_bits(value: str) -> float:
    """A simple estimate of the entropy of `value`, in bits (see the module docstring); 0 for fewer than 2
    characters."""
    if len(value) < 2:
        return 0.0
    codes = [ord(c) for c in value]
    steps = [b - a for a, b in zip(codes, codes[1:], strict=False)]
    return max(0.0, min(_pattern_bits(value), _pattern_bits(steps)))


def weakness(value: str, min_bits: int = MIN_SECRET_BITS) -> str | None:
    """Why `value` is too weak to be a secret, in words that never quote it; None when it is strong enough."""
    bits = estimated_bits(value)
    if bits >= min_bits:
        return None
    return (f"has an estimated {bits:.0f} bits of entropy, fewer than the {min_bits} required ({len(value)} "
            f"characters, {len(set(value))} distinct; short values, few distinct characters, repeated patterns and "
            "runs such as abcd or 1234 count little)")


def how_to_set(variable: str) -> str:
    """What to set, and how to make a strong value, for the error that refuses `variable`."""
    return (f"set {variable} (or put it in a file named by {variable}{FILE_SUFFIX}, or in "
            f"{DEFAULT_SECRETS_DIR}/{variable.lower()}) to a random value of at least {MIN_SECRET_BITS} bits, e.g. "
            f"the output of `{GENERATE_COMMAND}`")


def without_input(error: ValidationError) -> ValidationError:
    """The same validation error with every input value dropped. `hide_input_in_errors` keeps the input out of the
    message, but pydantic still carries it in `errors()` and `json()`, where a refused secret would show."""
    details: list[InitErrorDetails] = []
    for line in error.errors(include_url=False):
        detail: InitErrorDetails = {"type": line["type"], "loc": line["loc"], "input": "[hidden]"}
        if "ctx" in line:
            detail["ctx"] = line["ctx"]
        try:
            ValidationError.from_exception_data(error.title, [detail])
        except (KeyError, TypeError, ValueError):  # a type pydantic cannot rebuild: keep its message
            detail = {"type": PydanticCustomError(line["type"], "{message}", {"message": line["msg"]}),
                      "loc": line["loc"], "input": "[hidden]"}
        details.append(detail)
    return ValidationError.from_exception_data(error.title, details, hide_input=True)


def _environ_lower() -> dict[str, str]:
    return {name.lower(): value for name, value in os.environ.items()}


class SecretFileVariables(PydanticBaseSettingsSource):
    """Settings source: `<PREFIX><NAME>_FILE` environment variables, for the given fields, each naming a file whose
    content (stripped) is the field's value. An unreadable or empty file, or a variable set both ways, is a
    `SettingsError` that names the variable and the path, never the content."""

    def __init__(self, settings_cls: type[BaseSettings], prefix: str, fields: tuple[str, ...]) -> None:
        super().__init__(settings_cls)
        self.prefix = prefix
        self.fields = fields

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        environ = _environ_lower()
        values: dict[str, Any] = {}
        for name in self.fields:
            variable = f"{self.prefix}{name}".upper()
            path = environ.get(f"{variable}{FILE_SUFFIX}".lower())
            if not path:
                continue
            if environ.get(variable.lower()):
                raise SettingsError(f"both {variable} and {variable}{FILE_SUFFIX} are set: set only one of them")
            try:
                content = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise SettingsError(f"{variable}{FILE_SUFFIX}: cannot read {path}: {reason}") from None
            if not content:
                raise SettingsError(f"{variable}{FILE_SUFFIX}: {path} is empty")
            values[name] = content
        return values

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.prefix!r}, fields={self.fields!r})"


def use_secrets_dir(source: PydanticBaseSettingsSource, prefix: str) -> PydanticBaseSettingsSource:
    """Point pydantic-settings' secrets-directory source at `<PREFIX>SECRETS_DIR`, else `/run/secrets`, unless the
    caller chose a directory (`_secrets_dir=`). A directory that does not exist is skipped: the default one with no
    word, one named by the variable with a warning."""
    if not isinstance(source, SecretsSettingsSource) or source.secrets_dir is not None:
        return source
    variable = f"{prefix}SECRETS_DIR"
    named = _environ_lower().get(variable.lower())
    directory = Path(named).expanduser() if named else DEFAULT_SECRETS_DIR
    if directory.is_dir():
        source.secrets_dir = directory
    elif named:
        log.warning("%s=%s is not a directory: no secrets are read from files there", variable, directory)
    return source


class SecretSettings(BaseSettings):
    """A service's settings whose `SECRET_FIELDS` are secrets: read, in order of precedence, from the keyword
    arguments, `<ENV_PREFIX><NAME>`, `<ENV_PREFIX><NAME>_FILE`, `.env` and the secrets directory; a blank value is
    unset; a refused value never travels in the `ValidationError` (see `without_input`)."""

    ENV_PREFIX: ClassVar[str] = ""
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:  # never carry a refused secret, in the message or anywhere else
            raise without_input(exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, SecretFileVariables(settings_cls, cls.ENV_PREFIX, cls.SECRET_FIELDS),
                dotenv_settings, use_secrets_dir(file_secret_settings, cls.ENV_PREFIX))

    @model_validator(mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for name in cls.SECRET_FIELDS:
                value = values.get(name)
                if isinstance(value, str) and not value.strip():
                    values[name] = None
        return values
