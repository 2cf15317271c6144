"""The tfx CLI's registry of local pipelines, as seen from the DSL file it runs.

`tfx run create --engine local --pipeline_name NAME` runs pipeline/local_runner.py in a
subprocess without saying which pipeline it runs; the registry
(``$LOCAL_HOME/NAME/pipeline_args.json``, written by `tfx pipeline create`) holds the
pipeline root the pipeline was created with. Reading NAME from the parent process lets the
DSL file refuse to run a *different* pipeline (a config other than the one it was created
with, e.g. the packaged defaults in a shell without CGD_CONFIG) before it writes anything.
"""

from __future__ import annotations

import json
import os

from core.errors import CliError

DEFAULT_LOCAL_HOME = os.path.join("~", "tfx", "local")


def pipeline_name_from_cli(cmdline: list[str] | None = None) -> str | None:
    """NAME of `tfx run create ... --pipeline_name NAME` in the parent process, else None."""
    if cmdline is None:
        try:
            import psutil
            cmdline = psutil.Process(os.getppid()).cmdline()
        except Exception:  # no psutil, no permission, no parent: nothing to check against
            return None
    if "run" not in cmdline or "create" not in cmdline:
        return None
    return flag_value(cmdline, "--pipeline_name")


def flag_value(cmdline: list[str], flag: str) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg == flag and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def registered_pipeline_args(name: str, local_home: str | None = None) -> dict | None:
    home = os.path.expanduser(local_home or os.environ.get("LOCAL_HOME") or DEFAULT_LOCAL_HOME)
    path = os.path.join(home, name, "pipeline_args.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_registered_pipeline(name: str, root: str, registered: dict | None,
                              config_source: str) -> None:
    """Refuse, in one line, to run a pipeline other than the registered one named ``name``."""
    if registered is None:
        return  # the tfx CLI itself refuses unknown pipelines
    created_root = registered.get("pipeline_root")
    if registered.get("pipeline_name") == name and created_root == root:
        return
    raise CliError(
        f"tfx run create --pipeline_name {registered.get('pipeline_name')}: {config_source} "
        f"describes pipeline {name!r} with root {root}, but that pipeline was created with "
        f"root {created_root}: export CGD_CONFIG=<the config it was created with> "
        f"(or `tfx pipeline update` it with this one)")
