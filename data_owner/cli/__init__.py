"""`gdrec-owner`: the data owner's command line.

    train           KD teacher, CGAN, generated lists, GD teacher and export into an artifacts directory (resumable)
    serve           the export API (uvicorn) over those artifacts
    evaluate        score a consumer's served model on the owner's held-out items, over its REST API
    keys add|revoke|list   consumer API keys (hashed at rest)
    audit verify|head|reseal   check the audit log (chain, MACs, head), print its head, record a recovery
    audit leakage   what the export reveals of the raw training data (reconstruction, membership inference)
    audit boundary  the data boundary of a running Docker Compose deployment (mounts, networks, users, secrets)
    train-teacher   one teacher alone (for choosing hyperparameters)

One module per command or command group; each parses its options, calls one library function and prints. Settings
come from `GDREC_OWNER_*` environment variables or `.env` (see `data_owner.settings`); options override."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from data_owner.cli import audit, evaluate, keys, serve, train, train_teacher

app = typer.Typer(
    help="GD-REC data owner: trains on raw interactions, exports only what may cross.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


app.command("train-teacher")(train_teacher.train_teacher)
app.command()(train.train)
app.command()(serve.serve)
app.command()(evaluate.evaluate)
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")


def main() -> None:
    app()


__all__ = ["app", "main"]
