"""What the owner's commands share: the option types, settings loading that ends a command with a message, and
`fail`, the one way a command reports an error (on stderr, exit code 2 unless told)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from data_owner.config import TUNE_BUDGET_S, TUNE_TRIALS
from shared.options import json_object

if TYPE_CHECKING:  # the settings are imported when a command runs, not to render --help
    from data_owner.settings import OwnerSettings


class Family(StrEnum):
    bpr = "bpr"
    neumf = "neumf"


class Optimizer(StrEnum):
    adam = "adam"
    sgd = "sgd"


class Metric(StrEnum):
    ndcg = "NDCG@50"
    hr = "HR@50"


ArtifactsOption = Annotated[
    Path | None, typer.Option("--artifacts", help="artifacts directory (default: $GDREC_OWNER_ARTIFACTS_DIR)")
]
DatasetOption = Annotated[str, typer.Option(help="dataset name (ml-100k, citeulike-t, foursquare) or a file path")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda[:n]")]
SeedOption = Annotated[int, typer.Option()]
OPTIMIZER_HELP = ("how the teacher trains: sgd, BPR's per-triple SGD (compiled, on the CPU, one process), or adam on "
                  "batches of --batch-size (the paper's)")
TeacherOptimizerOption = Annotated[Optimizer | None, typer.Option(
    help=OPTIMIZER_HELP + "; default: sgd for BPR, adam for NeuMF")]
TuneOption = Annotated[bool | None, typer.Option(
    "--tune/--no-tune",
    help="search the teacher's settings on the validation item before training it (Optuna, within --tune-budget); "
         "default: when the dataset has no teacher preset (a file path), --no-tune: the preset or default settings")]
TuneBudgetOption = Annotated[float | None, typer.Option(
    min=1.0, help=f"wall-clock seconds the teacher's search may take (default {TUNE_BUDGET_S:.0f}); a trial still "
                  "training then stops at its next evaluation")]
TuneTrialsOption = Annotated[int | None, typer.Option(
    min=1, help=f"at most this many trials of the teacher's search (default {TUNE_TRIALS})")]
TuneMaxParamsOption = Annotated[int | None, typer.Option(
    min=1, help="the teacher's search tries no architecture with more parameters (default: the size of the preset "
                "or default teacher on this dataset)")]
TUNING_FLAGS = {"budget_s": "--tune-budget", "n_trials": "--tune-trials", "max_params": "--tune-max-params"}


def tuning_fields(budget_s: float | None, n_trials: int | None, max_params: int | None) -> dict[str, Any]:
    """The `TeacherTuning` fields of the --tune-* options that were given."""
    given = {"budget_s": budget_s, "n_trials": n_trials, "max_params": max_params}
    return {name: value for name, value in given.items() if value is not None}


def refuse_unused_tuning(fields: dict[str, Any], tunes: bool) -> None:
    """End the command when --tune-* options were given but the teacher is not tuned (they would do nothing)."""
    if fields and not tunes:
        flags = ", ".join(TUNING_FLAGS[name] for name in fields)
        raise fail(f"{flags}: only applies when the teacher is tuned; add --tune (this run uses the dataset's preset, "
                   "explicit teacher settings or --no-tune)")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: <message>` on stderr; return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_settings(**overrides: Any) -> OwnerSettings:
    """OwnerSettings with the given options (those not None) on top; a refused setting ends the command with the
    message that says what to set, never a traceback or the secret."""
    from data_owner.settings_loading import SettingsRefusedError, load_owner_settings

    try:
        return load_owner_settings(**overrides)
    except SettingsRefusedError as exc:
        raise fail(str(exc)) from None


def json_option(value: str | None, what: str) -> dict[str, Any]:
    """The JSON object of option `--<what>` ({} when not given); anything else ends the command naming the option."""
    if not value:
        return {}
    try:
        return json_object(value, f"--{what}")
    except ValueError as exc:
        raise fail(str(exc)) from None
