"""`gdrec-owner audit verify|head|reseal|leakage|boundary`: the export audit log (chain, MACs, head), what the
export reveals of the raw data, and the data boundary of a running deployment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from data_owner.cli.common import ArtifactsOption, fail, load_settings

if TYPE_CHECKING:
    from data_owner.audit import VerifyReport

app = typer.Typer(help="The export audit log, and the leakage audit of the export.", no_args_is_help=True)

AuditLogOption = Annotated[Path | None, typer.Option(
    "--log", help="audit log (default: <artifacts>/audit/audit.jsonl; its sealed segments and head record lie beside "
                  "it)")]
SHOWN_PROBLEMS = 50


def echo_problems(problems: Sequence[object], prefix: str) -> None:
    """The first SHOWN_PROBLEMS problems on stderr, one a line after `prefix`, then how many more there are."""
    for problem in problems[:SHOWN_PROBLEMS]:
        typer.echo(f"{prefix}{problem}", err=True)
    if len(problems) > SHOWN_PROBLEMS:
        typer.echo(f"{prefix}... and {len(problems) - SHOWN_PROBLEMS} more", err=True)


def show_report(report: VerifyReport) -> None:
    """Notes, acknowledged problems and problems on stderr; the verdict on stdout when the log verifies."""
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    echo_problems(report.acknowledged, "acknowledged: ")
    if report.ok:
        typer.echo(f"{report.path}: {report.lines} line(s), chain intact, every MAC verifies ({report.segments} "
                   f"file(s)); head seq {report.head.seq} hash {report.head.hash}")
        return
    typer.echo(f"{report.path}: TAMPERED OR DAMAGED ({len(report.problems)} problem(s); {report.lines} entries in "
               f"{report.segments} file(s))", err=True)
    echo_problems(report.problems, "  ")


@app.command("verify")
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
    from data_owner.audit_head import parse_expected_head

    try:
        expected = parse_expected_head(expect_head, "--expect-head")
    except ValueError as exc:
        raise fail(str(exc)) from None
    settings = load_settings(artifacts_dir=artifacts, audit_log=log_file)
    report = verify_log(settings.audit_path, settings.secret_bytes(), expect_head=expected)
    show_report(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("head")
def audit_head(
    artifacts: ArtifactsOption = None,
    log_file: AuditLogOption = None,
) -> None:
    """Print the log's signed head record (seq, hash, tag) as one JSON line, to publish elsewhere and check later
    with `audit verify --expect-head`; exit 1 when the log does not verify."""
    from data_owner.audit import verify_log

    settings = load_settings(artifacts_dir=artifacts, audit_log=log_file)
    report = verify_log(settings.audit_path, settings.secret_bytes())
    if not report.ok:
        show_report(report)
        raise typer.Exit(1)
    head = report.head_record or report.head  # the record: written once its entries were fsynced
    typer.echo(head.model_dump_json())


@app.command("reseal")
def audit_reseal(
    reason: Annotated[str, typer.Option(help="what happened to the log, as far as you know: recorded in it")],
    artifacts: ArtifactsOption = None,
    log_file: AuditLogOption = None,
) -> None:
    """Record why a log that fails verification is trusted again: append an entry (MACed) with the reason, the
    problems found and the old head record, then write a new head. The problems stay visible as acknowledged.
    The service must be stopped."""
    from data_owner.audit import AuditError, reseal_log

    settings = load_settings(artifacts_dir=artifacts, audit_log=log_file)
    try:
        outcome = reseal_log(settings.audit_path, settings.secret_bytes(), reason,
                             segment_bytes=settings.audit_segment_bytes)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except (AuditError, OSError) as exc:
        raise fail(str(exc), code=1) from None
    if outcome.entry is None:
        typer.echo(f"{settings.audit_path}: verifies; nothing to reseal")
        return
    problems = outcome.before.problems
    typer.echo(f"recorded {len(problems)} problem(s):", err=True)
    echo_problems(problems, "  ")
    typer.echo(f"{settings.audit_path}: resealed by entry {outcome.entry.seq}; its new head, to publish:", err=True)
    typer.echo(outcome.head.model_dump_json() if outcome.head is not None else "")


@app.command("leakage")
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
    from data_owner.privacy.leakage_audit import audit_export_leakage

    settings = load_settings(artifacts_dir=artifacts, data_dir=data_dir)
    try:
        audit = audit_export_leakage(settings, max_fpr=max_fpr, out=out)
    except ValueError as exc:
        raise fail(str(exc)) from None
    typer.echo(audit.report.to_markdown())
    typer.echo(f"written: {audit.out}")


@app.command("boundary")
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
    from data_owner.boundary import BoundaryAuditError
    from data_owner.boundary_live import audit_running_deployment

    try:
        report = audit_running_deployment(project, owner=owner, consumer=consumer)
    except BoundaryAuditError as exc:
        raise fail(str(exc)) from None
    typer.echo(report.to_markdown())
    markdown, data = report.write(out)
    typer.echo(f"written: {markdown}, {data}")
    if not report.passed:
        typer.echo(f"error: the data boundary is violated: {', '.join(report.violated)}", err=True)
        raise typer.Exit(1)
