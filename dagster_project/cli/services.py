"""`data-mash services ...`: the Dagster this project runs on."""

from __future__ import annotations

import typer

from dagster_project.cli.common import app, console, out

services_app = typer.Typer(help="The Dagster services runs go to: webserver, daemon, code server.", no_args_is_help=True)


app.add_typer(services_app, name="services")


@services_app.command("start")
def services_start() -> None:
    """Start this project's Dagster (unless it runs already) and print the UI's address."""
    from dagster_project import services

    running = services.ensure(say=lambda message: console.print(message))
    out.print(f"Dagster UI: {running.url}" + ("" if running.pid is None else f" (pid {running.pid})"))


@services_app.command("status")
def services_status() -> None:
    """Whether this project's Dagster runs, and where."""
    import os as _os

    from dagster_project import services

    if url := _os.environ.get(services.URL_ENV):
        loaded = services.location_loaded(url.rstrip("/"))
        out.print(f"Dagster at {url} ({services.URL_ENV}): {'answering' if loaded else 'NOT answering'}")
        raise typer.Exit(0 if loaded else 1)
    running = services.current()
    if running is None:
        out.print("Dagster is not running for this project; the next command that runs work starts it "
                  "(or `data-mash services start`).")
        raise typer.Exit(1)
    out.print(f"Dagster runs for this project at {running.url} (pid {running.pid}); logs in {running.log}")


@services_app.command("stop")
def services_stop() -> None:
    """Stop this project's Dagster (webserver, daemon, code server). Runs in progress end with it."""
    from dagster_project import services

    stopped = services.stop()
    out.print("Dagster was not running for this project." if stopped is None
              else f"Stopped Dagster (pid {stopped.pid}, {stopped.url}).")
