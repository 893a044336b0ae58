"""`gdrec-consumer pull`: the owner's export into the data directory (authenticated, retried, verified, resumable)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from model_consumer.cli.common import DataDirOption, fail, load_settings

log = logging.getLogger("gdrec.consumer")


def pull(
    owner: Annotated[str | None, typer.Option(help="the owner's base URL (default: $GDREC_CONSUMER_OWNER_URL)")] = None,
    key: Annotated[str | None, typer.Option(help="the owner-issued API key (prefer $GDREC_CONSUMER_OWNER_KEY)")
                   ] = None,
    data_dir: DataDirOption = None,
    limit: Annotated[int | None, typer.Option(min=1, max=1000, help="users per page")] = None,
    attempts: Annotated[int | None, typer.Option(min=1, help="tries per request")] = None,
    backoff: Annotated[float | None, typer.Option(min=0.0, help="first retry delay, seconds (doubles)")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.1, help="seconds per request")] = None,
    max_pages: Annotated[int | None, typer.Option(min=1, help="stop after this many pages (resume later)")] = None,
) -> None:
    """Pull the export; a rerun resumes after the last verified page (or starts over if the export changed)."""
    import httpx

    from model_consumer.client import PullError
    from model_consumer.client import pull as pull_export
    from model_consumer.store import ExportStore
    from shared.http import make_client

    settings = load_settings(owner_url=owner, owner_key=key, data_dir=data_dir, page_limit=limit, attempts=attempts,
                         backoff_s=backoff, timeout_s=timeout)
    if not settings.owner_url:
        raise fail("no owner URL: pass --owner or set GDREC_CONSUMER_OWNER_URL")
    if settings.owner_key is None:
        raise fail("no API key for the owner: set GDREC_CONSUMER_OWNER_KEY (from `gdrec-owner keys add`)")
    store = ExportStore(settings.layout.export)
    try:
        client = make_client(settings.owner_url, settings.owner_key.get_secret_value(),
                             timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 5.0)),
                             connect_retries=0)
    except ValueError as exc:
        raise fail(str(exc)) from None

    def report(done: int, total: int) -> None:
        log.info("pulled %d of %d users", done, total)

    with client:
        try:
            result = pull_export(client, store, limit=settings.page_limit, attempts=settings.attempts,
                                 backoff_s=settings.backoff_s, max_pages=max_pages, on_page=report)
        except PullError as exc:
            raise fail(str(exc), code=1) from None
    state = "complete" if result.complete else "incomplete (run pull again to resume)"
    typer.echo(f"export {result.export_id}: {result.users} users in {result.pages} page(s), {result.fetched} "
               f"fetched now starting at page {result.resumed_at}; {state}; stored in {store.root}")
