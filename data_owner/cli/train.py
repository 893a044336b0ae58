"""`gdrec-owner train`: KD teacher (its settings searched first on a dataset without a preset), list generator,
generated lists, GD teacher and export into an artifacts directory, stage by stage (a rerun skips the finished
stages)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from data_owner.cli.common import (
    ArtifactsOption,
    DatasetOption,
    DeviceOption,
    Family,
    SeedOption,
    TeacherOptimizerOption,
    TuneBudgetOption,
    TuneMaxParamsOption,
    TuneOption,
    TuneTrialsOption,
    fail,
    json_option,
    load_settings,
    refuse_unused_tuning,
    tuning_fields,
)
from data_owner.config import (
    AUTO_BUDGET_S,
    AUTO_FAMILIES,
    BATCH_SIZE,
    CGAN_EPOCHS,
    CONSUMER_ID,
    EVAL_EVERY,
    GD_EPOCHS,
    GENERATOR_CHOICES,
    GENERATOR_FAMILIES,
    LIST_LENGTH,
    PATIENCE,
    PRODUCT_GENERATOR,
    PRODUCT_INCLUDE_OBSERVED,
    TEACHER_EPOCHS,
    TEMPERATURE,
    RrTrueSizeEpochs,
    product_optimizer,
)

if TYPE_CHECKING:
    from data_owner.pipeline import PipelineResult


def stage_table(result: PipelineResult) -> list[str]:
    """One line per stage: status, seconds, validation HR@50, test HR@50 and NDCG@50 ('-' where not measured)."""
    lines = [f"{'stage':12}{'status':>9}{'seconds':>9}{'valid HR@50':>13}{'test HR@50':>12}{'test NDCG@50':>14}"]
    for stage in result.stages:
        valid, test = stage.summary.get("valid", {}), stage.summary.get("test", {})
        cells = [f"{m[name]:.4f}" if name in m else "-" for m, name in
                 ((valid, "HR@50"), (test, "HR@50"), (test, "NDCG@50"))]
        lines.append(f"{stage.name:12}{stage.status:>9}{stage.seconds:9.1f}{cells[0]:>13}{cells[1]:>12}{cells[2]:>14}")
    return lines


def privacy_switches(include_observed: bool, rr_epsilon: float | None) -> str:
    """The privacy switches of a run in words."""
    switches = "include observed" if include_observed else "exclude observed"
    return switches + ("; randomized response off" if rr_epsilon is None else
                       f"; randomized response eps={rr_epsilon:g} per interaction")


def train(
    dataset: DatasetOption,
    model: Annotated[Family, typer.Option(help="teacher family")] = Family.bpr,
    artifacts: ArtifactsOption = None,
    data_dir: Annotated[Path | None, typer.Option(help="raw data folder (default: $GDREC_OWNER_DATA_DIR or "
                                                       "$GDREC_DATA_DIR)")] = None,
    consumer_id: Annotated[str, typer.Option(help="the consumer the export is for (its tokens are per consumer)")] = (
        CONSUMER_ID),
    list_length: Annotated[int, typer.Option(min=1, help="L: items per generated list")] = LIST_LENGTH,
    generator: Annotated[str, typer.Option(
        help=f"list generator: one of {', '.join(GENERATOR_FAMILIES)}, or auto (each of --auto-families is fitted, "
             "a student is distilled from its export as a dry run, and the family whose student ranks the "
             "validation items best is kept); cgan is the paper's")] = PRODUCT_GENERATOR,
    generator_json: Annotated[str | None, typer.Option(
        help="settings per generator family as JSON, over the family's defaults, e.g. "
             "'{\"itemknn\": {\"ks\": [50, 100]}, \"teacher\": {\"noise_temperature\": 0.5}}'")] = None,
    auto_families: Annotated[str, typer.Option(
        help="--generator auto: the candidate families, comma-separated, tried in this order")] = ",".join(
        AUTO_FAMILIES),
    auto_budget: Annotated[float, typer.Option(
        min=1, help="--generator auto: seconds after which no further candidate is started")] = AUTO_BUDGET_S,
    include_observed: Annotated[bool, typer.Option(
        "--include-observed/--exclude-observed",
        help="may a user's own training items appear in their list (the paper's lists may; the default leaves "
             "them out)")] = PRODUCT_INCLUDE_OBSERVED,
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
    teacher_optimizer: TeacherOptimizerOption = None,
    tune: TuneOption = None,
    tune_budget: TuneBudgetOption = None,
    tune_trials: TuneTrialsOption = None,
    tune_max_params: TuneMaxParamsOption = None,
    patience: Annotated[int, typer.Option(min=0, help="evaluations without gain before stopping")] = PATIENCE,
    eval_every: Annotated[int, typer.Option(min=1)] = EVAL_EVERY,
    batch_size: Annotated[int, typer.Option(min=1)] = BATCH_SIZE,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    restart: Annotated[bool, typer.Option(help="redo every stage, even those already finished")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train the owner's models and build the export, stage by stage; a rerun skips the finished stages."""
    from data_owner.chain_options import chain_config
    from data_owner.pipeline import TUNING_STAGE, run_pipeline

    settings = load_settings(artifacts_dir=artifacts, data_dir=data_dir)
    teacher_fields = json_option(teacher_json, "teacher-json")
    generator_settings = json_option(generator_json, "generator-json")
    if generator not in GENERATOR_CHOICES:
        raise fail(f"--generator must be one of {', '.join(GENERATOR_CHOICES)}, got {generator!r}")
    families = tuple(name.strip() for name in auto_families.split(",") if name.strip())
    search = tuning_fields(tune_budget, tune_trials, tune_max_params)
    try:
        config = chain_config(
            dataset, model.value, cgan_epochs=cgan_epochs, cgan_json=cgan_json, teacher_fields=teacher_fields,
            tune=tune, tuning_fields=search,
            consumer_id=consumer_id, seed=seed, list_length=list_length, include_observed=include_observed,
            rr_epsilon=rr_epsilon, rr_true_size_epochs=rr_true_size_epochs, temperature=temperature,
            teacher_epochs=teacher_epochs, gd_epochs=gd_epochs, patience=patience, eval_every=eval_every,
            batch_size=batch_size, device=device, progress=progress, generator=generator,
            teacher_optimizer=teacher_optimizer.value if teacher_optimizer else product_optimizer(model.value),
            generator_settings=generator_settings, auto_families=families, auto_budget_s=auto_budget,
        )
    except (TypeError, ValueError) as exc:
        raise fail(str(exc)) from None
    refuse_unused_tuning(search, config.tunes_teacher)
    try:
        result = run_pipeline(config, settings.artifacts_dir, settings.secret_bytes(), data_dir=settings.data_dir,
                              restart=restart)
    except (FileNotFoundError, ValueError, RuntimeError, ArithmeticError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"\n{result.split_summary}")
    for line in stage_table(result):
        typer.echo(line)
    teacher = result.stage("kd_teacher").summary
    if any(stage.name == TUNING_STAGE for stage in result.stages):
        typer.echo(result.stage(TUNING_STAGE).summary.get("summary_line", ""))
    how = teacher.get("optimizer", "adam") + (f", {teacher['negatives']} negatives"
                                              if teacher.get("optimizer") == "sgd" else "")
    typer.echo(f"teacher: {model.value} {teacher.get('config', {})} lr {teacher.get('lr', '-')} ({how})")
    chosen = result.stage("generator").summary
    typer.echo(f"list generator: {chosen.get('family')} {chosen.get('settings', {})}")
    for candidate in chosen.get("selection", {}).get("candidates", []):
        typer.echo(f"  candidate {candidate['family']:8} own valid HR@50 {candidate['own_valid'].get('HR@50', 0):.4f}"
                   f"  student valid HR@50 {candidate['student_valid'].get('HR@50', 0):.4f}"
                   f"  ({candidate['seconds']:.0f} s)")
    observed = result.stage("lists").summary.get("observed_share")
    if observed is not None:
        typer.echo(f"listed items that are the user's own training items: {observed:.1%}")
    typer.echo(f"privacy switches: {privacy_switches(config.include_observed, config.rr_epsilon)} "
               "(gdrec-owner audit leakage measures what the export reveals)")
    typer.echo(f"export {result.export_id} for consumer '{config.consumer_id}': {result.export_path}")
    typer.echo(f"next: gdrec-owner keys add --consumer {config.consumer_id} --artifacts {settings.artifacts_dir}; "
               f"gdrec-owner serve --artifacts {settings.artifacts_dir}")
