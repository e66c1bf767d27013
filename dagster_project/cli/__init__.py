"""`data-mash`: the operator's command line. Work that changes stored state runs through Dagster.

Exit codes: 0 done; 1 the work ran and failed (a run, a check, quarantined records in `decode`, a wave in the
wrong state, an error nobody anticipated: one line and the log with its traceback); 2 bad usage or input that
could not be read, refused before anything changed: a file (named with its line and field), an unknown wave,
policy, source or drop, an output that cannot be written, a database that does not answer. How errors are told:
`common.py` (`DataMashGroup`) and `legacy/errors.py`.
"""

from __future__ import annotations

import sys

from dagster_project.cli import (  # noqa: F401 (register)
    demo,
    intake,
    mappings,
    registry,
    services,
    sync,
    wal,
    waves,
)
from dagster_project.cli.common import app, console, dumps_exact, report  # noqa: F401 (what scripts and tests import)
from dagster_project.cli.reprocess import register as _register_reprocess

_register_reprocess(app)  # data-mash reprocess

# `--help` lists the commands by noun, in the order of a migration
ORDER = ("intake", "demo", "mappings", "reprocess", "registry", "waves", "sync", "wal", "services")
app.registered_commands.sort(key=lambda c: ORDER.index(c.callback.__module__.rsplit(".", 1)[-1]))


def main() -> None:
    """The `data-mash` console script. Errors inside a command are told by `DataMashGroup` (common.py); this
    catches what happens around one, so that no traceback ever reaches a person."""
    try:
        app()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as error:  # noqa: BLE001 - the last resort: a message and the log with the traceback
        sys.exit(report(error))
