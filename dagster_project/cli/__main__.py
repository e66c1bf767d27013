"""`python -m dagster_project.cli`: the same as `data-mash`."""

from dagster_project.cli import main

main()
