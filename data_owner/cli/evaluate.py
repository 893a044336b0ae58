"""`gdrec-owner evaluate`: score a consumer's served model on the owner's held-out items, over its REST API."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from data_owner.cli.common import ArtifactsOption, fail, load_settings


def evaluate(
    consumer: Annotated[str, typer.Option(help="the consumer's base URL, e.g. http://127.0.0.1:8200")],
    key: Annotated[str | None, typer.Option(envvar="GDREC_OWNER_CONSUMER_KEY", show_envvar=True,
                                            help="the consumer's API key (prefer the environment variable)")] = None,
    k: Annotated[int, typer.Option(min=1, help="the K of HR@K / NDCG@K")] = 50,
    extra: Annotated[int | None, typer.Option(min=0, help="items asked beyond K for every user, to make room for "
                                                        "the history removed locally (default: longest history + 1)")
                     ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="requests in flight")] = 8,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds per request")] = 30.0,
    out: Annotated[Path | None, typer.Option(help="JSON result (default: <artifacts>/evaluations/remote-<time>.json)")
                   ] = None,
    artifacts: ArtifactsOption = None,
    data_dir: Annotated[Path | None, typer.Option(help="raw data folder (default: the one used by train)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar over the evaluated users")] = True,
) -> None:
    """Score the consumer's served model on the owner's held-out test items. Only user tokens and K cross; the
    test items and histories stay here (the history is removed from the answers locally)."""
    from data_owner.remote_eval import RemoteEvalConfig, RemoteEvalError, render
    from data_owner.remote_eval_job import evaluate_consumer

    settings = load_settings(artifacts_dir=artifacts, data_dir=data_dir)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request: shown with --verbose only
    try:
        config = RemoteEvalConfig(k=k, extra=extra, concurrency=concurrency)
        evaluation = evaluate_consumer(settings, consumer, key, config, timeout=timeout, out=out, progress=progress)
    except (ValueError, RemoteEvalError) as exc:
        raise fail(str(exc)) from None
    typer.echo(render(evaluation.result, evaluation.reference))
    typer.echo(f"written: {evaluation.out}")
