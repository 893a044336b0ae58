"""What the owner's commands share: the option types, settings loading that ends a command with a message, and
`fail`, the one way a command reports an error (on stderr, exit code 2 unless told)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shared.options import json_object

if TYPE_CHECKING:  # the settings are imported when a command runs, not to render --help
    from data_owner.settings import OwnerSettings


class Family(StrEnum):
    bpr = "bpr"
    neumf = "neumf"


class Metric(StrEnum):
    ndcg = "NDCG@50"
    hr = "HR@50"


ArtifactsOption = Annotated[
    Path | None, typer.Option("--artifacts", help="artifacts directory (default: $GDREC_OWNER_ARTIFACTS_DIR)")
]
DatasetOption = Annotated[str, typer.Option(help="dataset name (ml-100k, citeulike-t, foursquare) or a file path")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda[:n]")]
SeedOption = Annotated[int, typer.Option()]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: <message>` on stderr; return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_settings(**overrides: Any) -> OwnerSettings:
    """OwnerSettings with the given options (those not None) on top; a refused setting ends the command with the
    message that says what to set, never a traceback or the secret."""
    from data_owner.settings_loading import SettingsRefusedError, load_owner_settings

    try:
        return load_owner_settings(**overrides)
    except SettingsRefusedError as exc:
        raise fail(str(exc)) from None


def json_option(value: str | None, what: str) -> dict[str, Any]:
    """The JSON object of option `--<what>` ({} when not given); anything else ends the command naming the option."""
    if not value:
        return {}
    try:
        return json_object(value, f"--{what}")
    except ValueError as exc:
        raise fail(str(exc)) from None
