"""The one place that picks resources for the environment: a configured server or embedded PostgreSQL."""

from __future__ import annotations

import os

import dagster as dg

from resources.database import DATABASE_URL_ENV, DatabaseResource
from resources.landing import LandingResource
from resources.target_store import TargetsResource
from resources.wal import WriteAheadLog

LANDING_ENV = "DATA_MASH_LANDING"
OUTBOUND_ENV = "DATA_MASH_OUTBOUND"
FAULT_ENV = "DATA_MASH_FAULT"


def resources_for_environment(*, resolved: bool = False) -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment, read when definitions are loaded, never at import.

    Dagster resolves `EnvVar` fields at run time (and hides their values in the UI). Code that
    uses a resource directly, like the CLI, asks for `resolved=True` to get plain values.
    """

    def setting(name: str):
        value = os.environ.get(name, "")
        return (value if resolved else dg.EnvVar(name)) if value else ""

    database = DatabaseResource(url=setting(DATABASE_URL_ENV))  # "" = embedded PostgreSQL
    return {
        "database": database,
        "landing": LandingResource(path=setting(LANDING_ENV)),  # "" = $DATA_MASH_HOME/landing
        "wal": WriteAheadLog(database=database, fault=setting(FAULT_ENV)),  # fault: crash injection, tests/demos
        "targets": TargetsResource(database=database, outbound=setting(OUTBOUND_ENV)),  # "" = $DATA_MASH_HOME/outbound
    }
