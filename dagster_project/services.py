"""The Dagster services a project runs on: webserver, daemon and code server.

With `DATA_MASH_DAGSTER_URL` set, they are somebody else's (a deployment): the CLI only checks that the webserver
answers. Otherwise the CLI starts them itself, once, in the background (`dagster dev` on this project's instance and
code location) and later commands reuse them; `data-mash services status|stop` shows and ends them. They carry the
environment they were started with, so a command with another database or landing folder is refused rather than sent
to the wrong place.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from dagster_project.instance import dagster_home, ensure_instance_config
from legacy.errors import DataMashError
from resources.database import DatabaseResource, data_mash_home

URL_ENV = "DATA_MASH_DAGSTER_URL"
PORT_ENV = "DATA_MASH_UI_PORT"
LOCATION = "data_mash"
# what the code location reads from the environment: services started with other values serve another project
CARRIED = ("DATA_MASH_HOME", "DAGSTER_HOME", "DATA_MASH_DATABASE_URL", "DATA_MASH_LANDING", "DATA_MASH_OUTBOUND")


STARTED: list[int] = []  # process groups of the services this process started (tests end them after)


class ServicesError(DataMashError, RuntimeError):
    """The Dagster services cannot be reached or started; the message says what to do."""


@dataclass
class Services:
    url: str
    pid: int | None  # None: a deployment this project did not start
    started_now: bool = False
    log: Path | None = None


def _state_file() -> Path:
    return dagster_home() / "services.json"


def _environment() -> dict[str, str]:
    return {name: os.environ.get(name, "") for name in CARRIED}


def _alive(pid: int) -> bool:
    try:  # reap it if it is our own child that has ended (a test, or `services start` then `stop` in one process)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def location_loaded(url: str, timeout: float = 5.0) -> bool:
    """Whether the webserver answers and has loaded the `data_mash` code location."""
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError " \
            "{ __typename } } } } }"
    try:
        response = requests.post(f"{url}/graphql", json={"query": query}, timeout=timeout)
        entries = response.json()["data"]["workspaceOrError"]["locationEntries"]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return False
    return any(e["name"] == LOCATION and e["loadStatus"] == "LOADED"
               and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation" for e in entries)


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise ServicesError("no free port for the Dagster webserver")


def current() -> Services | None:
    """The services this project started and that still run, if any."""
    path = _state_file()
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if not _alive(state["pid"]):
        path.unlink(missing_ok=True)
        return None
    if state.get("environment") != _environment():
        differs = [k for k in CARRIED if state.get("environment", {}).get(k, "") != os.environ.get(k, "")]
        raise ServicesError(
            f"The Dagster services of this project (pid {state['pid']}, {state['url']}) were started with other "
            f"settings ({', '.join(differs)}). Stop them with `data-mash services stop`, then run this again.")
    return Services(state["url"], state["pid"], log=Path(state["log"]))


def ensure(database: DatabaseResource | None = None, *, timeout: float = 180.0, say=None) -> Services:
    """The Dagster services to submit runs to: the configured deployment, or this project's own, started if needed."""
    if url := os.environ.get(URL_ENV):
        url = url.rstrip("/")
        if not location_loaded(url):
            raise ServicesError(f"The Dagster webserver at {url} ({URL_ENV}) does not answer, or has not loaded the "
                                f"code location '{LOCATION}'.")
        return Services(url, None)
    if database is None:  # the environment's database (DATA_MASH_DATABASE_URL, else the embedded server)
        from dagster_project.environment import resources_for_environment

        database = resources_for_environment(resolved=True)["database"]
    ensure_instance_config(database)
    running = current()
    if running is not None:
        _wait_loaded(running, timeout)
        return running
    return start(timeout=timeout, say=say)


def start(*, timeout: float = 180.0, say=None) -> Services:
    """Start webserver, daemon and code server (`dagster dev`) in the background on this project's instance."""
    home = dagster_home()
    workspace = home / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: dagster_project.definitions\n"
                         f"      location_name: {LOCATION}\n")
    port = _free_port(int(os.environ.get(PORT_ENV) or 3000))
    url = f"http://127.0.0.1:{port}"
    logs = data_mash_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / "dagster.log"
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster) if dagster.exists() else "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1",
               "-p", str(port), "--log-level", "warning"]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=home, start_new_session=True, env={**os.environ, "DAGSTER_HOME": str(home)})
    _state_file().write_text(json.dumps({"pid": process.pid, "url": url, "log": str(log),
                                         "environment": _environment()}))
    STARTED.append(process.pid)
    services = Services(url, process.pid, started_now=True, log=log)
    if say:
        say(f"Started Dagster for this project (webserver, daemon, code server; pid {process.pid}) at {url}; "
            f"logs in {log}. It keeps running for later commands; `data-mash services stop` ends it.")
    _wait_loaded(services, timeout)
    return services


def _wait_loaded(services: Services, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not location_loaded(services.url, timeout=2.0):
        if services.pid is not None and not _alive(services.pid):
            _state_file().unlink(missing_ok=True)
            raise ServicesError(f"The Dagster services stopped while starting; see {services.log}.")
        if time.monotonic() > deadline:
            raise ServicesError(f"The Dagster webserver at {services.url} did not load the code location within "
                                f"{timeout:.0f} s; see {services.log}.")
        time.sleep(0.5)


def stop(timeout: float = 30.0) -> Services | None:
    """End the services this project started (runs in progress are ended with them)."""
    path = _state_file()
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    terminate(state["pid"], timeout)
    path.unlink(missing_ok=True)
    return Services(state["url"], state["pid"])


def terminate(pid: int, timeout: float = 30.0) -> None:
    """End a process group started by `start`: SIGTERM, then SIGKILL if it lingers."""
    if not _alive(pid):
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
