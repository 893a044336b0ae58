"""`gdrec-consumer`: the model consumer's command line.

    pull      the owner's export (manifest + pages) into the data directory: authenticated, retried, verified,
              resumable
    distill   a student from the pulled export; published atomically as the served model
    serve     the recommendation API (uvicorn)
    status    what the data directory holds

Settings come from `GDREC_CONSUMER_*` environment variables or `.env` (see `model_consumer.settings`); options
override. There is no option for raw data: the consumer only ever has what it pulled."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.distillation import DistillConfig

app = typer.Typer(help="GD-REC model consumer: learns from the owner's export alone and serves top-K.",
                  no_args_is_help=True, add_completion=False)
log = logging.getLogger("gdrec.consumer")

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="default: $GDREC_CONSUMER_DATA_DIR")]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(**overrides: Any):
    """ConsumerSettings from the environment, key files and .env, with the given options (those not None) on top. A
    refused setting (e.g. no API key in production, the default) or an unreadable key file ends the command with the
    message that says what to set, never a traceback or the key."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from model_consumer.settings import ENV_PREFIX, ConsumerSettings

    try:
        return ConsumerSettings(**{key: value for key, value in overrides.items() if value is not None})
    except SettingsError as exc:
        raise _fail(f"invalid settings: {exc}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{field} ({ENV_PREFIX}{field.upper()}): {message}" if field else message)
        raise _fail("invalid settings: " + "; ".join(problems)) from None


@app.command()
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

    settings = _settings(owner_url=owner, owner_key=key, data_dir=data_dir, page_limit=limit, attempts=attempts,
                         backoff_s=backoff, timeout_s=timeout)
    if not settings.owner_url:
        raise _fail("no owner URL: pass --owner or set GDREC_CONSUMER_OWNER_URL")
    if settings.owner_key is None:
        raise _fail("no API key for the owner: set GDREC_CONSUMER_OWNER_KEY (from `gdrec-owner keys add`)")
    store = ExportStore(settings.layout.export)
    try:
        client = make_client(settings.owner_url, settings.owner_key.get_secret_value(),
                             timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 5.0)),
                             connect_retries=0)
    except ValueError as exc:
        raise _fail(str(exc)) from None

    def report(done: int, total: int) -> None:
        log.info("pulled %d of %d users", done, total)

    with client:
        try:
            result = pull_export(client, store, limit=settings.page_limit, attempts=settings.attempts,
                                 backoff_s=settings.backoff_s, max_pages=max_pages, on_page=report)
        except PullError as exc:
            raise _fail(str(exc), code=1) from None
    state = "complete" if result.complete else "incomplete (run pull again to resume)"
    typer.echo(f"export {result.export_id}: {result.users} users in {result.pages} page(s), {result.fetched} "
               f"fetched now starting at page {result.resumed_at}; {state}; stored in {store.root}")


_DISTILL = DistillConfig()  # the defaults of the distill command


@app.command()
def distill(
    data_dir: DataDirOption = None,
    fraction: Annotated[float, typer.Option(min=0.01, max=1.0, help="student size / teacher size")] = (
        _DISTILL.fraction),
    lam: Annotated[float, typer.Option("--lambda", min=0.0, help="weight of L_GD")] = _DISTILL.lam,
    temperature: Annotated[float | None, typer.Option(
        min=1e-3, help="t of eq. 6 (default: the export's; another t re-tempers the shipped soft targets)")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = _DISTILL.epochs,
    lr: Annotated[float, typer.Option(min=0.0)] = _DISTILL.lr,
    batch_size: Annotated[int, typer.Option(min=1)] = _DISTILL.batch_size,
    patience: Annotated[int, typer.Option(min=0)] = _DISTILL.patience,
    eval_every: Annotated[int, typer.Option(min=1)] = _DISTILL.eval_every,
    reg: Annotated[float | None, typer.Option(
        min=0.0, help="the student's L2 regularisation (default: the teacher's, from the export's teacher card)"
    )] = None,
    reg_factors: Annotated[str, typer.Option(
        help="comma-separated factors on --reg: one student per factor, the one that best ranks a held-out item "
             "of each user's list is kept (data-free); '1' trains one student")] = ",".join(
        f"{f:g}" for f in _DISTILL.reg_factors),
    transfer: Annotated[str, typer.Option(
        help="paper (L_GF + lambda L_GD, eq. 6), listwise (adds the teacher's softmax over each list) or "
             "weighted (L_GF weighted by the soft targets)")] = _DISTILL.transfer,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda[:n]")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    checkpoint_every: Annotated[float | None, typer.Option(
        min=0.0, help="save the resumable training state at most every this many seconds, 0: every epoch "
        "(default: $GDREC_CONSUMER_CHECKPOINT_EVERY_S or 60)")] = None,
    restart: Annotated[bool, typer.Option(
        "--restart", help="discard the saved training state of this export and settings; train from epoch 1")] = False,
) -> None:
    """Train a student from the pulled export and publish it (checkpoint written atomically, then current.json).

    The training state is saved under <data dir>/training/ as it goes: run again with the same export and settings
    after an interruption and it continues where the last save left off. It is removed once the student is
    published."""
    from model_consumer.store import ExportStore, StoreError
    from model_consumer.students import distill_and_publish
    from shared.device import resolve_device


    settings = _settings(data_dir=data_dir, device=device, checkpoint_every_s=checkpoint_every)
    try:
        bundle = ExportStore(settings.layout.export).load_bundle()
        resolved = resolve_device(None if settings.device == "auto" else settings.device)
        factors = tuple(float(f) for f in reg_factors.split(",") if f.strip())
        config = DistillConfig(fraction=fraction, lam=lam, temperature=temperature, epochs=epochs, lr=lr,
                               batch_size=batch_size, patience=patience, eval_every=eval_every, seed=seed,
                               progress=progress, checkpoint_every_s=settings.checkpoint_every_s, reg=reg,
                               reg_factors=factors, transfer=transfer)
        card = distill_and_publish(bundle, config, settings.layout, resolved, resumable=True, restart=restart)
    except (StoreError, ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"student {card.model_version}: {card.family} {card.num_parameters:,} parameters "
               f"({card.parameter_ratio:.0%} of the teacher's {card.teacher_parameters:,}), export "
               f"{card.export_id[:12]}, best epoch {card.best_epoch} of {card.epochs_run}, lambda {card.lam}, "
               f"t {card.temperature}; published in {settings.layout.models}")


@app.command()
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

    settings = _settings(data_dir=data_dir, host=host, port=port, log_level=log_level)
    remove_stale_staging(settings.layout)
    typer.echo(f"serving {settings.data_dir} on http://{settings.host}:{settings.port} ({settings.environment.value}"
               "; API docs at /docs)", err=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                workers=1)


@app.command()
def status(data_dir: DataDirOption = None) -> None:
    """What the data directory holds: the export pulled (and how far) and the published model."""
    from model_consumer.store import ExportStore
    from model_consumer.students import PublishedModelError, current_version

    settings = _settings(data_dir=data_dir)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
