"""`gdrec-owner keys add|revoke|list`: consumer API keys (stored as sha256 hashes; a key is shown once)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from data_owner.cli.common import ArtifactsOption, fail, load_settings

if TYPE_CHECKING:
    from data_owner.keys import KeyStore
    from data_owner.settings import OwnerSettings

app = typer.Typer(help="Consumer API keys (stored as sha256 hashes; a key is shown once).", no_args_is_help=True)


class ScopeName(StrEnum):
    export = "export"
    admin = "admin"


KeysFileOption = Annotated[Path | None, typer.Option(help="key file (default: <artifacts>/keys.json)")]


def key_store(artifacts: Path | None, keys_file: Path | None) -> tuple[KeyStore, OwnerSettings]:
    """The key store the settings name, and the settings; an unreadable key file ends the command."""
    from data_owner.keys import KeyFileError, KeyStore

    settings = load_settings(artifacts_dir=artifacts, keys_file=keys_file)
    try:
        return KeyStore(settings.keys_path), settings
    except KeyFileError as exc:
        raise fail(str(exc)) from None


@app.command("add")
def keys_add(
    consumer: Annotated[str | None, typer.Option(help="the consumer the key is for (default: the export's)")] = None,
    scope: Annotated[list[ScopeName] | None, typer.Option(help="repeat for several (default: export)")] = None,
    artifacts: ArtifactsOption = None,
    keys_file: KeysFileOption = None,
) -> None:
    """Create a key and print it once on stdout (only its hash is stored)."""
    from data_owner.export_record import export_consumer
    from data_owner.keys import KeyFileError

    store, settings = key_store(artifacts, keys_file)
    if consumer is None:
        consumer = export_consumer(settings.layout)
        if consumer is None:
            raise fail("pass --consumer (there is no export to take the consumer id from)")
    try:
        key, plain = store.add(consumer, [s.value for s in (scope or [ScopeName.export])])
    except (ValueError, KeyFileError, OSError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"key {key.key_id} for consumer '{key.consumer}', scopes {', '.join(key.scopes)}; stored (hashed) in "
               f"{store.path}. The key is shown only now:", err=True)
    typer.echo(plain)


@app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key id (the 12 hex digits after 'gdr_')")],
    artifacts: ArtifactsOption = None,
    keys_file: KeysFileOption = None,
) -> None:
    """Revoke a key; a running service refuses it from its next request on."""
    from data_owner.keys import KeyFileError

    store, _ = key_store(artifacts, keys_file)
    try:
        key = store.revoke(key_id)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    except (KeyFileError, OSError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"key {key.key_id} (consumer '{key.consumer}') revoked at {key.revoked_at}")


@app.command("list")
def keys_list(
    artifacts: ArtifactsOption = None,
    keys_file: KeysFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the keys (ids, consumers, scopes, dates; never the keys or their hashes)."""
    store, _ = key_store(artifacts, keys_file)
    keys = store.list()
    if as_json:
        typer.echo(json.dumps([k.public() for k in keys], indent=2))
        return
    if not keys:
        typer.echo(f"no keys in {store.path}")
        return
    typer.echo(f"{'key id':14}{'consumer':20}{'scopes':16}{'created':27}revoked")
    for k in keys:
        typer.echo(f"{k.key_id:14}{k.consumer:20}{','.join(k.scopes):16}{k.created_at:27}{k.revoked_at or '-'}")
