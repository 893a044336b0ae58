"""`gdrec-consumer serve`: the recommendation API (uvicorn) over the published model."""

from __future__ import annotations

from typing import Annotated

import typer

from model_consumer.cli.common import DataDirOption, load_settings


def serve(
    data_dir: DataDirOption = None,
    host: Annotated[str | None, typer.Option(help="default: $GDREC_CONSUMER_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="default: $GDREC_CONSUMER_PORT or 8200")] = None,
    log_level: Annotated[str | None, typer.Option(help="critical, error, warning, info or debug")] = None,
) -> None:
    """Serve the recommendation API over the published model (503 on /ready until there is one)."""
    import uvicorn

    from model_consumer.api import create_app
    from model_consumer.students import remove_stale_staging

    settings = load_settings(data_dir=data_dir, host=host, port=port, log_level=log_level)
    remove_stale_staging(settings.layout)
    typer.echo(f"serving {settings.data_dir} on http://{settings.host}:{settings.port} ({settings.environment.value}"
               "; API docs at /docs)", err=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                workers=1)
