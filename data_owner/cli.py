"""`gdrec-owner`: the data owner's command line.

    train           KD teacher, CGAN, generated lists, GD teacher and export into an artifacts directory (resumable)
    serve           the export API (uvicorn) over those artifacts
    evaluate        score a consumer's served model on the owner's held-out items, over its REST API
    keys add|revoke|list   consumer API keys (hashed at rest)
    audit verify|head|reseal   check the audit log (chain, MACs, head), print its head, record a recovery
    audit leakage   what the export reveals of the raw training data (reconstruction, membership inference)
    audit boundary  the data boundary of a running Docker Compose deployment (mounts, networks, users, secrets)
    train-teacher   one teacher alone (for choosing hyperparameters)

Settings come from `GDREC_OWNER_*` environment variables or `.env` (see `data_owner.settings`); options override."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from data_owner.config import (
    BATCH_SIZE,
    CGAN_EPOCHS,
    CONSUMER_ID,
    EVAL_EVERY,
    GD_EPOCHS,
    LIST_LENGTH,
    PATIENCE,
    TEACHER_EPOCHS,
    TEMPERATURE,
    RrTrueSizeEpochs,
)
from shared.options import json_object

app = typer.Typer(
    help="GD-REC data owner: trains on raw interactions, exports only what may cross.",
    no_args_is_help=True,
    add_completion=False,
)
log = logging.getLogger("gdrec.owner")


class Family(StrEnum):
    bpr = "bpr"
    neumf = "neumf"


class Metric(StrEnum):
    ndcg = "NDCG@50"
    hr = "HR@50"


def teacher_config(family: Family, dim: int, hidden: str | None, reg: float | None) -> dict[str, Any]:
    """Architecture config from CLI flags. NeuMF: both embedding branches `dim` wide, MLP `hidden` (default
    "dim,dim/2")."""
    if family is Family.bpr:
        return {"dim": dim, "reg": 1e-4 if reg is None else reg}
    widths = [int(w) for w in hidden.split(",")] if hidden else [dim, max(1, dim // 2)]
    return {"dim_gmf": dim, "dim_mlp": dim, "hidden": widths, "reg": 1e-5 if reg is None else reg}


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command("train-teacher")
def train_teacher(
    dataset: Annotated[str, typer.Option(help="dataset name (ml-100k, citeulike-t, foursquare) or a file path")],
    model: Annotated[Family, typer.Option(help="base model family")] = Family.bpr,
    dim: Annotated[int, typer.Option(min=1, help="embedding width")] = 64,
    hidden: Annotated[str | None, typer.Option(help="NeuMF MLP widths, comma-separated")] = None,
    reg: Annotated[float | None, typer.Option(min=0.0, help="L2 weight on the batch embeddings")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = TEACHER_EPOCHS,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1)] = BATCH_SIZE,
    patience: Annotated[int, typer.Option(min=0, help="evaluations without gain before stopping")] = PATIENCE,
    eval_every: Annotated[int, typer.Option(min=1)] = EVAL_EVERY,
    metric: Annotated[Metric, typer.Option(help="validation metric for model selection")] = Metric.ndcg,
    pretrain: Annotated[bool, typer.Option(help="NeuMF: train its GMF and MLP branches alone first (NCF "
                                                "pre-training), then NeuMF from them")] = False,
    pretrain_json: Annotated[str | None, typer.Option(
        help="pre-training settings (implies --pretrain): {\"alpha\": 0.5, \"gmf_reg\": ..., \"mlp_reg\": ..., "
             "\"finetune_lr\": ...}")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:n]")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="overrides GDREC_DATA_DIR")] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint directory")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train a teacher on the raw training split, select the epoch on validation, report validation and test."""
    from data_owner.data import leave_one_out_split, load_dataset
    from data_owner.teacher import Pretraining, train_base_model
    from shared.checkpoint import save_checkpoint
    from shared.device import resolve_device
    from shared.training import TrainConfig

    started = time.perf_counter()
    try:
        table = load_dataset(dataset, data_dir=data_dir)
        split = leave_one_out_split(table)
        resolved = resolve_device(device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    config = teacher_config(model, dim, hidden, reg)
    train_config = TrainConfig(
        epochs=epochs,
        lr=lr,
        patience=patience,
        eval_every=eval_every,
        metric=metric.value,
        seed=seed,
        progress=progress,
    )
    try:
        pretraining = Pretraining(**_json_option(pretrain_json, "pretrain-json")) if pretrain or pretrain_json else None
    except (TypeError, ValueError) as exc:  # an unknown key or a bad value
        raise _fail(f"--pretrain-json: {exc}") from None
    try:
        run = train_base_model(split, model.value, config, train_config, batch_size=batch_size, device=resolved,
                               pretrain=pretraining)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    name = Path(dataset).stem if Path(dataset).exists() else dataset
    out = out or Path("artifacts") / "teachers" / f"{name}-{model.value}-d{dim}-s{seed}"
    summary = {
        "dataset": name,
        "model": model.value,
        "config": config,
        "num_parameters": run.model.num_parameters(),
        "best_epoch": run.train.best_epoch,
        "epochs_run": run.train.epochs_run,
        "valid": run.valid,
        "test": run.test,
        "train_seconds": round(run.train.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "device": str(resolved),
        "seed": seed,
        "pretrain": None if pretraining is None else {**asdict(pretraining), "branches": run.extra["pretrain"]},
    }
    save_checkpoint(
        out,
        run.model,
        {**summary, "item_ids": [str(i) for i in split.item_ids], "user_ids": [str(u) for u in split.user_ids]},
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    typer.echo(f"\n{split.summary()}")
    typer.echo(
        f"{model.value} {config}: {summary['num_parameters']:,} parameters, best epoch "
        f"{run.train.best_epoch} of {run.train.epochs_run}, {summary['train_seconds']} s on {resolved}"
    )
    typer.echo(f"{'':10}{'HR@50':>8}{'NDCG@50':>9}")
    for part in ("valid", "test"):
        metrics = summary[part]
        typer.echo(f"{part:10}{metrics['HR@50']:8.4f}{metrics['NDCG@50']:9.4f}")
    typer.echo(f"checkpoint: {out}")


# ----------------------------------------------------------------------------------------------------------------
# Settings shared by the service commands


ArtifactsOption = Annotated[
    Path | None, typer.Option("--artifacts", help="artifacts directory (default: $GDREC_OWNER_ARTIFACTS_DIR)")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(**overrides: Any):
    """OwnerSettings from the environment, secret files and .env, with the given options (those not None) on top. A
    refused setting (e.g. no secret in production, the default) or an unreadable secret file ends the command with
    the message that says what to set, never a traceback or the secret."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from data_owner.settings import OwnerSettings

    try:
        return OwnerSettings(**{key: value for key, value in overrides.items() if value is not None})
    except SettingsError as exc:
        raise _fail(f"invalid settings: {exc}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{field} (GDREC_OWNER_{field.upper()}): {message}" if field else message)
        raise _fail("invalid settings: " + "; ".join(problems)) from None


def _json_option(value: str | None, what: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        return json_object(value, f"--{what}")
    except ValueError as exc:
        raise _fail(str(exc)) from None


# ----------------------------------------------------------------------------------------------------------------
# train


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="dataset name (ml-100k, citeulike-t, foursquare) or a file path")],
    model: Annotated[Family, typer.Option(help="teacher family")] = Family.bpr,
    artifacts: ArtifactsOption = None,
    data_dir: Annotated[Path | None, typer.Option(help="raw data folder (default: $GDREC_OWNER_DATA_DIR or "
                                                       "$GDREC_DATA_DIR)")] = None,
    consumer_id: Annotated[str, typer.Option(help="the consumer the export is for (its tokens are per consumer)")] = (
        CONSUMER_ID),
    list_length: Annotated[int, typer.Option(min=1, help="L: items per generated list")] = LIST_LENGTH,
    include_observed: Annotated[bool, typer.Option(
        "--include-observed/--exclude-observed", help="may a user's own training items appear in their list")] = True,
    rr_epsilon: Annotated[float | None, typer.Option(
        help="randomized response on the models' input: train the CGAN and the teachers on, "
        "and draw the lists from, training sets with every bit flipped with p = 1/(1+e^eps) (epsilon-LDP per "
        "interaction, not per user); default off")] = None,
    rr_true_size_epochs: RrTrueSizeEpochs = False,
    temperature: Annotated[float, typer.Option(min=1e-3, help="t of the soft targets sigmoid(z / t)")] = TEMPERATURE,
    teacher_epochs: Annotated[int, typer.Option(min=1)] = TEACHER_EPOCHS,
    gd_epochs: Annotated[int, typer.Option(min=1, help="epochs of the GD continuation (raw + generated)")] = GD_EPOCHS,
    cgan_epochs: Annotated[int, typer.Option(min=1)] = CGAN_EPOCHS,
    cgan_json: Annotated[str | None, typer.Option(help="CGANConfig fields as JSON, e.g. '{\"lr_g\": 1e-4}'")] = None,
    teacher_json: Annotated[str | None, typer.Option(
        help="teacher settings as JSON: {\"model\": {...architecture...}, \"lr\": ..., \"pretrain\": {\"alpha\": ..., "
             "\"gmf_reg\": ..., \"mlp_reg\": ..., \"finetune_lr\": ...} or null} (default: the dataset's "
             "preset)")] = None,
    patience: Annotated[int, typer.Option(min=0, help="evaluations without gain before stopping")] = PATIENCE,
    eval_every: Annotated[int, typer.Option(min=1)] = EVAL_EVERY,
    batch_size: Annotated[int, typer.Option(min=1)] = BATCH_SIZE,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:n]")] = "auto",
    restart: Annotated[bool, typer.Option(help="redo every stage, even those already finished")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train the owner's models and build the export, stage by stage; a rerun skips the finished stages."""
    from data_owner.config import ChainConfig, cgan_preset, teacher_from_fields
    from data_owner.pipeline import run_pipeline

    settings = _settings(artifacts_dir=artifacts, data_dir=data_dir)
    teacher_fields = _json_option(teacher_json, "teacher-json")
    try:
        cgan = cgan_preset(dataset, cgan_epochs).with_json(cgan_json)
        teacher = teacher_from_fields(dataset, model.value, teacher_fields) if teacher_fields else None
        config = ChainConfig(
            dataset=dataset, family=model.value, teacher=teacher, consumer_id=consumer_id, seed=seed,
            list_length=list_length, include_observed=include_observed, rr_epsilon=rr_epsilon,
            rr_true_size_epochs=rr_true_size_epochs, temperature=temperature,
            teacher_epochs=teacher_epochs, gd_epochs=gd_epochs, patience=patience, eval_every=eval_every,
            batch_size=batch_size, cgan=cgan, device=device, progress=progress,
        )
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None
    try:
        result = run_pipeline(config, settings.artifacts_dir, settings.secret_bytes(), data_dir=settings.data_dir,
                              restart=restart)
    except (FileNotFoundError, ValueError, RuntimeError, ArithmeticError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"\n{result.split_summary}")
    typer.echo(f"{'stage':12}{'status':>9}{'seconds':>9}{'valid HR@50':>13}{'test HR@50':>12}{'test NDCG@50':>14}")
    for stage in result.stages:
        valid, test = stage.summary.get("valid", {}), stage.summary.get("test", {})
        cells = [f"{m[name]:.4f}" if name in m else "-" for m, name in
                 ((valid, "HR@50"), (test, "HR@50"), (test, "NDCG@50"))]
        typer.echo(f"{stage.name:12}{stage.status:>9}{stage.seconds:9.1f}{cells[0]:>13}{cells[1]:>12}{cells[2]:>14}")
    observed = result.stage("lists").summary.get("observed_share")
    if observed is not None:
        typer.echo(f"listed items that are the user's own training items: {observed:.1%}")
    switches = "include observed" if config.include_observed else "exclude observed"
    switches += "; randomized response off" if config.rr_epsilon is None else (
        f"; randomized response eps={config.rr_epsilon:g} per interaction")
    typer.echo(f"privacy switches: {switches} (gdrec-owner audit leakage measures what the export reveals)")
    typer.echo(f"export {result.export_id} for consumer '{config.consumer_id}': {result.export_path}")
    typer.echo(f"next: gdrec-owner keys add --consumer {config.consumer_id} --artifacts {settings.artifacts_dir}; "
               f"gdrec-owner serve --artifacts {settings.artifacts_dir}")


# ----------------------------------------------------------------------------------------------------------------
# serve


@app.command()
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

    settings = _settings(artifacts_dir=artifacts, host=host, port=port, log_level=log_level)
    try:
        check_artifacts(settings)
    except OwnerStartupError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"serving {settings.artifacts_dir} on http://{settings.host}:{settings.port} "
               f"({settings.environment.value}; API docs at /docs)", err=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                workers=1)


# ----------------------------------------------------------------------------------------------------------------
# evaluate


@app.command()
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
    from datetime import UTC, datetime

    import httpx

    from data_owner.pipeline import load_split, read_stage, split_fingerprint
    from data_owner.remote_eval import RemoteEvalConfig, RemoteEvalError, evaluate_remote, render, user_tokens
    from data_owner.settings import secret_fingerprint
    from shared.checkpoint import atomic_write_text
    from shared.http import make_client

    settings = _settings(artifacts_dir=artifacts, data_dir=data_dir)
    layout = settings.layout
    record = read_stage(layout, "export")
    if record is None:
        raise _fail(f"no finished export in {layout.root}: run `gdrec-owner train --artifacts {layout.root}` first")
    built = record["summary"]
    secret = settings.secret_bytes()
    if built.get("secret_fingerprint") not in (None, secret_fingerprint(secret)):
        raise _fail("the export was built under another secret than GDREC_OWNER_SECRET holds now: its tokens "
                    "cannot be recomputed; set the secret used by train")
    try:
        split = load_split(built["dataset"], settings.data_dir or built.get("data_dir"))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    if built.get("data_fingerprint") not in (None, split_fingerprint(split)):
        raise _fail(f"the data of {built['dataset']} changed since the export was built: the held-out items would "
                    "not match; run `gdrec-owner train` again")
    try:
        config = RemoteEvalConfig(k=k, extra=extra, concurrency=concurrency)
        client = make_client(consumer, key, timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                             max_connections=concurrency)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request: shown with --verbose only
    with client:
        try:
            result = evaluate_remote(client, split, user_tokens(split, secret, built["consumer_id"]), config,
                                     consumer=consumer, progress=progress)
        except RemoteEvalError as exc:
            raise _fail(str(exc)) from None
    reference = {}
    try:
        stages = json.loads(layout.summary_file.read_text()).get("stages", {})
        for name, label in (("gd_teacher", "owner's GD teacher (local)"), ("kd_teacher", "owner's KD teacher (local)")):
            if "test" in stages.get(name, {}):
                reference[label] = stages[name]["test"]
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    typer.echo(render(result, reference))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out or layout.evaluations / f"remote-{stamp}.json"
    payload = {**result.to_dict(), "export_id": built.get("export_id"), "dataset": built["dataset"],
               "reference": reference}
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    typer.echo(f"written: {out}")


# ----------------------------------------------------------------------------------------------------------------
# keys


keys_app = typer.Typer(help="Consumer API keys (stored as sha256 hashes; a key is shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


class ScopeName(StrEnum):
    export = "export"
    admin = "admin"


def _key_store(artifacts: Path | None, keys_file: Path | None):
    from data_owner.keys import KeyFileError, KeyStore

    settings = _settings(artifacts_dir=artifacts, keys_file=keys_file)
    try:
        return KeyStore(settings.keys_path), settings
    except KeyFileError as exc:
        raise _fail(str(exc)) from None


KeysFileOption = Annotated[Path | None, typer.Option(help="key file (default: <artifacts>/keys.json)")]


@keys_app.command("add")
def keys_add(
    consumer: Annotated[str | None, typer.Option(help="the consumer the key is for (default: the export's)")] = None,
    scope: Annotated[list[ScopeName] | None, typer.Option(help="repeat for several (default: export)")] = None,
    artifacts: ArtifactsOption = None,
    keys_file: KeysFileOption = None,
) -> None:
    """Create a key and print it once on stdout (only its hash is stored)."""
    from data_owner.keys import KeyFileError
    from data_owner.pipeline import read_stage

    store, settings = _key_store(artifacts, keys_file)
    if consumer is None:
        record = read_stage(settings.layout, "export")
        if record is None:
            raise _fail("pass --consumer (there is no export to take the consumer id from)")
        consumer = record["summary"]["consumer_id"]
    try:
        key, plain = store.add(consumer, [s.value for s in (scope or [ScopeName.export])])
    except (ValueError, KeyFileError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"key {key.key_id} for consumer '{key.consumer}', scopes {', '.join(key.scopes)}; stored (hashed) in "
               f"{store.path}. The key is shown only now:", err=True)
    typer.echo(plain)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key id (the 12 hex digits after 'gdr_')")],
    artifacts: ArtifactsOption = None,
    keys_file: KeysFileOption = None,
) -> None:
    """Revoke a key; a running service refuses it from its next request on."""
    from data_owner.keys import KeyFileError

    store, _ = _key_store(artifacts, keys_file)
    try:
        key = store.revoke(key_id)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    except (KeyFileError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"key {key.key_id} (consumer '{key.consumer}') revoked at {key.revoked_at}")


@keys_app.command("list")
def keys_list(
    artifacts: ArtifactsOption = None,
    keys_file: KeysFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the keys (ids, consumers, scopes, dates; never the keys or their hashes)."""
    store, _ = _key_store(artifacts, keys_file)
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


# ----------------------------------------------------------------------------------------------------------------
# audit


audit_app = typer.Typer(help="The export audit log, and the leakage audit of the export.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


AuditLogOption = Annotated[Path | None, typer.Option(
    "--log", help="audit log (default: <artifacts>/audit/audit.jsonl; its sealed segments and head record lie beside "
                  "it)")]
_SHOWN_PROBLEMS = 50


def _expected_head(value: str | None):
    """--expect-head: a head's hash, or the JSON line `audit head` printed."""
    from pydantic import ValidationError

    from shared.schemas import AuditHead

    if value is None:
        return None
    text = value.strip()
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    if text.startswith("{"):
        try:
            return AuditHead.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise _fail(f"--expect-head: not a head record ({'.'.join(map(str, first['loc'])) or 'JSON'}: "
                        f"{first['msg']})") from None
    raise _fail("--expect-head takes a head's hash (64 lowercase hex digits) or the JSON line that `gdrec-owner "
                "audit head` prints")


def _show_report(report) -> None:
    """Notes, acknowledged problems and problems on stderr; the verdict on stdout when the log verifies."""
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    for acknowledged in report.acknowledged[:_SHOWN_PROBLEMS]:
        typer.echo(f"acknowledged: {acknowledged}", err=True)
    if len(report.acknowledged) > _SHOWN_PROBLEMS:
        typer.echo(f"acknowledged: ... and {len(report.acknowledged) - _SHOWN_PROBLEMS} more", err=True)
    if report.ok:
        typer.echo(f"{report.path}: {report.lines} line(s), chain intact, every MAC verifies ({report.segments} "
                   f"file(s)); head seq {report.head.seq} hash {report.head.hash}")
        return
    typer.echo(f"{report.path}: TAMPERED OR DAMAGED ({len(report.problems)} problem(s); {report.lines} entries in "
               f"{report.segments} file(s))", err=True)
    for problem in report.problems[:_SHOWN_PROBLEMS]:
        typer.echo(f"  {problem}", err=True)
    if len(report.problems) > _SHOWN_PROBLEMS:
        typer.echo(f"  ... and {len(report.problems) - _SHOWN_PROBLEMS} more", err=True)


@audit_app.command("verify")
def audit_verify(
    artifacts: ArtifactsOption = None,
    log_file: AuditLogOption = None,
    expect_head: Annotated[str | None, typer.Option(
        help="a head recorded earlier (its hash, or the JSON line `audit head` printed): it must still be in the "
             "log")] = None,
) -> None:
    """Check every entry of every segment (seq, hash chain, MAC under the owner's secret) and the signed head
    record; exit 1 naming each problem. Safe while the service runs."""
    from data_owner.audit import verify_log

    expected = _expected_head(expect_head)
    settings = _settings(artifacts_dir=artifacts, audit_log=log_file)
    report = verify_log(settings.audit_path, settings.secret_bytes(), expect_head=expected)
    _show_report(report)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("head")
def audit_head(
    artifacts: ArtifactsOption = None,
    log_file: AuditLogOption = None,
) -> None:
    """Print the log's signed head record (seq, hash, tag) as one JSON line, to publish elsewhere and check later
    with `audit verify --expect-head`; exit 1 when the log does not verify."""
    from data_owner.audit import verify_log

    settings = _settings(artifacts_dir=artifacts, audit_log=log_file)
    report = verify_log(settings.audit_path, settings.secret_bytes())
    if not report.ok:
        _show_report(report)
        raise typer.Exit(1)
    head = report.head_record or report.head  # the record: written once its entries were fsynced
    typer.echo(head.model_dump_json())


@audit_app.command("reseal")
def audit_reseal(
    reason: Annotated[str, typer.Option(help="what happened to the log, as far as you know: recorded in it")],
    artifacts: ArtifactsOption = None,
    log_file: AuditLogOption = None,
) -> None:
    """Record why a log that fails verification is trusted again: append an entry (MACed) with the reason, the
    problems found and the old head record, then write a new head. The problems stay visible as acknowledged.
    The service must be stopped."""
    from data_owner.audit import AuditError, reseal_log

    settings = _settings(artifacts_dir=artifacts, audit_log=log_file)
    try:
        outcome = reseal_log(settings.audit_path, settings.secret_bytes(), reason,
                             segment_bytes=settings.audit_segment_bytes)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except (AuditError, OSError) as exc:
        raise _fail(str(exc), code=1) from None
    if outcome.entry is None:
        typer.echo(f"{settings.audit_path}: verifies; nothing to reseal")
        return
    problems = outcome.before.problems
    typer.echo(f"recorded {len(problems)} problem(s):", err=True)
    for problem in problems[:_SHOWN_PROBLEMS]:
        typer.echo(f"  {problem}", err=True)
    if len(problems) > _SHOWN_PROBLEMS:
        typer.echo(f"  ... and {len(problems) - _SHOWN_PROBLEMS} more", err=True)
    typer.echo(f"{settings.audit_path}: resealed by entry {outcome.entry.seq}; its new head, to publish:", err=True)
    typer.echo(outcome.head.model_dump_json() if outcome.head is not None else "")


@audit_app.command("leakage")
def audit_leakage(
    artifacts: ArtifactsOption = None,
    data_dir: Annotated[Path | None, typer.Option(help="raw data folder (default: the one used by train)")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON report (default: <artifacts>/evaluations/leakage-<time>.json)")
                   ] = None,
    max_fpr: Annotated[float, typer.Option(min=0.0, max=0.5, help="the false-positive rate of the TPR column")] = 0.01,
) -> None:
    """Measure what the finished export reveals of the raw training data: how much of each user's history its list
    reconstructs, and whether its soft targets tell training items from held-out ones (membership inference), beside
    a popularity list and the raw history as references. Needs the raw data, the secret and the export teacher."""
    from datetime import UTC, datetime

    from data_owner.pipeline import load_export, load_split, read_stage, split_fingerprint
    from data_owner.privacy import export_pairs, leakage_report, soft_target_scorer
    from data_owner.settings import secret_fingerprint
    from shared.checkpoint import atomic_write_text, load_checkpoint

    settings = _settings(artifacts_dir=artifacts, data_dir=data_dir)
    layout = settings.layout
    try:
        bundle, built = load_export(layout)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from None
    secret = settings.secret_bytes()
    if built.get("secret_fingerprint") not in (None, secret_fingerprint(secret)):
        raise _fail("the export was built under another secret than GDREC_OWNER_SECRET holds now: its tokens "
                    "cannot be mapped back to users; set the secret used by train")
    try:
        split = load_split(built["dataset"], settings.data_dir or built.get("data_dir"))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    if built.get("data_fingerprint") not in (None, split_fingerprint(split)):
        raise _fail(f"the data of {built['dataset']} changed since the export was built: audit it against the data "
                    "it was built from, or run `gdrec-owner train` again")
    manifest = bundle.manifest
    scorer = None
    teacher_record = read_stage(layout, "gd_teacher")
    export_inputs = (read_stage(layout, "export") or {}).get("inputs", {})
    if teacher_record is None or teacher_record.get("output_id") != export_inputs.get("gd_teacher"):
        log.warning("the GD teacher that built this export is no longer in %s: membership is not measured "
                    "(rerun `gdrec-owner train` to rebuild both)", layout.stage("gd_teacher"))
    else:
        teacher, _ = load_checkpoint(layout.stage("gd_teacher"), "cpu")
        scorer = soft_target_scorer(teacher, manifest.temperature)
    context = {"dataset": built["dataset"], "export_id": manifest.export_id, "consumer": built["consumer_id"],
               "users": manifest.n_users, "items": len(manifest.item_ids), "list_length": manifest.list_length,
               "temperature": manifest.temperature, "include_observed": manifest.privacy.include_observed,
               "rr_epsilon": manifest.privacy.randomized_response_epsilon}
    try:
        pairs = export_pairs(bundle, split, secret, built["consumer_id"])
        report = leakage_report(split, pairs, scorer, max_fpr=max_fpr, context=context)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(report.to_markdown())
    out = out or layout.evaluations / f"leakage-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, report.to_json())
    typer.echo(f"written: {out}")


@audit_app.command("boundary")
def audit_boundary(
    project: Annotated[str | None, typer.Option(
        help="compose project (default: the only one on the engine that runs an owner service)")] = None,
    out: Annotated[Path, typer.Option(help="folder for boundary.md and boundary.json")] = Path("boundary-audit"),
    owner: Annotated[str, typer.Option(help="the owner's compose service")] = "owner",
    consumer: Annotated[str, typer.Option(help="the consumer's compose service")] = "consumer",
) -> None:
    """Audit the data boundary of a running Docker Compose deployment through the Docker engine (run it on the
    engine's host: it compares the secret files with what the images hold): the raw data is mounted into the owner
    only, read-only; no volume is shared; the consumer meets the owner only on an internal network and cannot see
    the raw-data path; both run as non-root; secrets are files, in no image. Exit 1 naming each violated rule."""
    from data_owner.boundary import BoundaryAuditError, audit, inspect_live

    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise _fail("the boundary audit needs the Docker SDK: pip install 'gdrec[audit]'") from None
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise _fail(f"cannot reach the Docker engine ({exc}): start it or set DOCKER_HOST") from None
    try:
        deployment = inspect_live(client, project, owner=owner, consumer=consumer)
    except (BoundaryAuditError, DockerException) as exc:
        raise _fail(str(exc)) from None
    finally:
        client.close()
    report = audit(deployment)
    typer.echo(report.to_markdown())
    markdown, data = report.write(out)
    typer.echo(f"written: {markdown}, {data}")
    if not report.passed:
        typer.echo(f"error: the data boundary is violated: {', '.join(report.violated)}", err=True)
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
