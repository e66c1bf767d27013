"""Data Mash's Dagster code location: definitions, jobs, sensors, schedules and the CLI."""
