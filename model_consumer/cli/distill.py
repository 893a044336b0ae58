"""`gdrec-consumer distill`: a student from the pulled export, published atomically as the served model. Started by
`torchrun --nproc-per-node N` it trains data-parallel on N processes (docs/scale-out.md); rank 0 publishes and
prints."""

from __future__ import annotations

from typing import Annotated

import typer

from model_consumer.cli.common import DataDirOption, fail, load_settings
from shared.distillation import DistillConfig

_DISTILL = DistillConfig()  # the defaults of the distill command


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
    from shared import distributed
    from shared.device import resolve_device

    settings = load_settings(data_dir=data_dir, device=device, checkpoint_every_s=checkpoint_every)
    try:
        bundle = ExportStore(settings.layout.export).load_bundle()
        resolved = resolve_device(None if settings.device == "auto" else settings.device)
        factors = tuple(float(f) for f in reg_factors.split(",") if f.strip())
        config = DistillConfig(fraction=fraction, lam=lam, temperature=temperature, epochs=epochs, lr=lr,
                               batch_size=batch_size, patience=patience, eval_every=eval_every, seed=seed,
                               progress=progress, checkpoint_every_s=settings.checkpoint_every_s, reg=reg,
                               reg_factors=factors, transfer=transfer)
        with distributed.session(resolved) as rank_device:
            card = distill_and_publish(bundle, config, settings.layout, rank_device, resumable=True, restart=restart)
            main = distributed.is_main()
    except (StoreError, ValueError, RuntimeError) as exc:
        raise fail(str(exc)) from None
    if not main:
        return
    typer.echo(f"student {card.model_version}: {card.family} {card.num_parameters:,} parameters "
               f"({card.parameter_ratio:.0%} of the teacher's {card.teacher_parameters:,}), export "
               f"{card.export_id[:12]}, best epoch {card.best_epoch} of {card.epochs_run}, lambda {card.lam}, "
               f"t {card.temperature}; published in {settings.layout.models}")
