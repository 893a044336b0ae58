"""Loading `OwnerSettings` for a command: a refused setting becomes one message that names the field, its
environment variable and what to set, never a traceback or the secret."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from data_owner.settings import OwnerSettings


class SettingsRefusedError(ValueError):
    """The settings could not be loaded; the message says which setting and why."""


def describe_validation_error(exc: ValidationError) -> str:
    """'invalid settings: ' and one `field (GDREC_OWNER_FIELD): problem` per refused field, joined by '; '."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{field} (GDREC_OWNER_{field.upper()}): {message}" if field else message)
    return "invalid settings: " + "; ".join(problems)


def load_owner_settings(**overrides: Any) -> OwnerSettings:
    """OwnerSettings from the environment, secret files and .env, with the given overrides (those not None) on top.
    Raises SettingsRefusedError for a refused setting (e.g. no secret in production, the default) or an unreadable
    secret file."""
    try:
        return OwnerSettings(**{key: value for key, value in overrides.items() if value is not None})
    except SettingsError as exc:
        raise SettingsRefusedError(f"invalid settings: {exc}") from None
    except ValidationError as exc:
        raise SettingsRefusedError(describe_validation_error(exc)) from None
