"""What the consumer's commands share: the data-directory option, the error exit and the settings loader."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="default: $GDREC_CONSUMER_DATA_DIR")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: <message>` to stderr; the Exit to raise (exit code `code`)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_settings(**overrides: Any):
    """ConsumerSettings from the environment, key files and .env, with the given options (those not None) on top. A
    refused setting (e.g. no API key in production, the default) or an unreadable key file ends the command with the
    message that says what to set, never a traceback or the key."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from model_consumer.settings import ENV_PREFIX, ConsumerSettings

    try:
        return ConsumerSettings(**{key: value for key, value in overrides.items() if value is not None})
    except SettingsError as exc:
        raise fail(f"invalid settings: {exc}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{field} ({ENV_PREFIX}{field.upper()}): {message}" if field else message)
        raise fail("invalid settings: " + "; ".join(problems)) from None
