"""`gdrec-consumer status`: what the data directory holds."""

from __future__ import annotations

import typer

from model_consumer.cli.common import DataDirOption, load_settings


def status(data_dir: DataDirOption = None) -> None:
    """What the data directory holds: the export pulled (and how far) and the published model."""
    from model_consumer.store import ExportStore
    from model_consumer.students import PublishedModelError, current_version

    settings = load_settings(data_dir=data_dir)
    store = ExportStore(settings.layout.export)
    manifest, progress = store.manifest(), store.progress()
    if manifest is None or progress is None:
        typer.echo(f"no export in {store.root}")
    else:
        typer.echo(f"export {manifest.export_id}: {progress.users} of {manifest.n_users} users in "
                   f"{len(progress.pages)} page(s){'' if progress.complete else ' (incomplete)'}")
    try:
        typer.echo(f"served model: {current_version(settings.layout) or 'none'}")
    except PublishedModelError as exc:
        typer.echo(f"served model: unreadable: {exc}", err=True)
        raise typer.Exit(1) from None
