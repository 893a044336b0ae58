"""`gdrec-consumer`: the model consumer's command line.

    pull      the owner's export (manifest + pages) into the data directory: authenticated, retried, verified,
              resumable
    distill   a student from the pulled export; published atomically as the served model
    serve     the recommendation API (uvicorn)
    status    what the data directory holds

Settings come from `GDREC_CONSUMER_*` environment variables or `.env` (see `model_consumer.settings`); options
override. There is no option for raw data: the consumer only ever has what it pulled. One module per command; each
parses its options, calls one library function and prints."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from model_consumer.cli import distill, pull, serve, status

app = typer.Typer(help="GD-REC model consumer: learns from the owner's export alone and serves top-K.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


app.command()(pull.pull)
app.command()(distill.distill)
app.command()(serve.serve)
app.command()(status.status)


def main() -> None:
    app()


__all__ = ["app", "main"]
