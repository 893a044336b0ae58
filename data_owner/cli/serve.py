"""`gdrec-owner serve`: the export API (uvicorn, one process) over the artifacts."""

from __future__ import annotations

from typing import Annotated

import typer

from data_owner.cli.common import ArtifactsOption, fail, load_settings


def serve(
    artifacts: ArtifactsOption = None,
    host: Annotated[str | None, typer.Option(help="bind address (default: $GDREC_OWNER_HOST or 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default: $GDREC_OWNER_PORT or 8100)")] = (
        None),
    log_level: Annotated[str | None, typer.Option(help="critical, error, warning, info or debug")] = None,
) -> None:
    """Serve the export API (one process: the audit log has one writer)."""
    import uvicorn

    from data_owner.api import OwnerStartupError, check_artifacts, create_app

    settings = load_settings(artifacts_dir=artifacts, host=host, port=port, log_level=log_level)
    try:
        check_artifacts(settings)
    except OwnerStartupError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"serving {settings.artifacts_dir} on http://{settings.host}:{settings.port} "
               f"({settings.environment.value}; API docs at /docs)", err=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                workers=1)
