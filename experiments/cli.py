"""`gdrec-lab`: the research CLI, one typer app with `gd` (experiments.lab), `run` (experiments.runner), `report`
(experiments.reports) and `timing` (experiments.timing). It sits above the modules whose commands it gathers, so
none of them needs to import another to be on the command line."""

from __future__ import annotations

import typer

from experiments import lab, reports, runner, timing


def full_app() -> typer.Typer:
    """The research app with every command registered (once, however often this is called)."""
    app = lab.app
    names = {command.name for command in app.registered_commands}
    for name, command in (("run", runner.run_command), ("report", reports.report_command),
                          ("timing", timing.timing_command)):
        if name not in names:
            app.command(name)(command)
    return app


def main() -> None:
    lab.run_cli(full_app())
