"""`gdrec-consumer serve`: the recommendation API (uvicorn) over the published model, in one process or in
`--workers N` processes sharing the port. Each worker loads the published model itself and only reads the model
folder; the clean-up of interrupted publishes runs once, here, before any worker starts. With several workers each
follows new publications by polling `models/current.json` (every `WORKER_RELOAD_POLL_S` unless
GDREC_CONSUMER_RELOAD_POLL_S says otherwise): POST /v1/admin/reload reaches only the worker that answers it. Rate
limits and metrics are each worker's own: N workers allow N times the configured rates."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Annotated

import typer

from model_consumer.cli.common import DataDirOption, fail, load_settings

WORKER_RELOAD_POLL_S = 2.0


def serve(
    data_dir: DataDirOption = None,
    host: Annotated[str | None, typer.Option(help="default: $GDREC_CONSUMER_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="default: $GDREC_CONSUMER_PORT or 8200")] = None,
    log_level: Annotated[str | None, typer.Option(help="critical, error, warning, info or debug")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="server processes, each with its own copy of the "
                                                "model (default: $GDREC_CONSUMER_WORKERS or 1)")] = None,
) -> None:
    """Serve the recommendation API over the published model (503 on /ready until there is one)."""
    import uvicorn

    from model_consumer.api import create_app
    from model_consumer.api.app import APP_FACTORY
    from model_consumer.settings import ENV_PREFIX
    from model_consumer.students import remove_stale_staging

    settings = load_settings(data_dir=data_dir, host=host, port=port, log_level=log_level, workers=workers)
    if settings.workers > 1 and settings.metrics_port:
        raise fail(f"{ENV_PREFIX}METRICS_PORT={settings.metrics_port} cannot be bound by {settings.workers} worker "
                   f"processes: unset it (or set 0, any free port per worker), or serve one worker per process")
    remove_stale_staging(settings.layout)
    typer.echo(f"serving {settings.data_dir} on http://{settings.host}:{settings.port} ({settings.environment.value}"
               f"; {settings.workers} worker{'s' if settings.workers > 1 else ''}; API docs at /docs)", err=True)
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                    workers=1)
        return
    # The workers build their settings from the environment: hand them the options given here (no key is among
    # them; keys reach the workers the way they reached this process).
    os.environ.update({f"{ENV_PREFIX}DATA_DIR": str(settings.data_dir.resolve()),
                       f"{ENV_PREFIX}LOG_LEVEL": settings.log_level, f"{ENV_PREFIX}WORKERS": str(settings.workers)})
    if settings.reload_poll_s == 0:
        os.environ[f"{ENV_PREFIX}RELOAD_POLL_S"] = str(WORKER_RELOAD_POLL_S)
        typer.echo(f"each worker checks for a newly published model every {WORKER_RELOAD_POLL_S:g} s "
                   f"({ENV_PREFIX}RELOAD_POLL_S sets another interval)", err=True)
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(APP_FACTORY, factory=True, host=settings.host, port=settings.port,
                            log_level=settings.log_level, workers=settings.workers)
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[tcp_socket(config.bind_socket())]).run()


def tcp_socket(sock: socket.socket) -> socket.socket:
    """The listening socket `sock` declared as TCP. uvicorn binds the socket its workers share without naming the
    protocol, and asyncio only sets TCP_NODELAY on connections of a socket that names it: without it, Nagle's
    algorithm and delayed ACKs hold small responses back for about 40 ms each."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock
    return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
