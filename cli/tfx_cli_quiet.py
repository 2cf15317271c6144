"""Quiet the `tfx` CLI process itself: the same filters as `cgd` (cli/noise.py).

`tfx pipeline create/update` and `tfx run create` import TensorFlow and TFX in the CLI
process before they run our DSL file: three CUDA-plugin lines, Google's Python-version
FutureWarnings and absl INFO lines, on every call; the processes it starts (the DSL file
under `tfx run create`, Beam's worker processes) print the first two again. The CLI
process gets all of `cgd`'s filters; its children, marked by an environment variable, only
those two (their INFO logs are the run's log). A `.pth`
file in the venv (written by `make env`: `python -m cli.tfx_cli_quiet`) imports this
module at interpreter start; it does nothing unless the program is the venv's `tfx` and
CGD_VERBOSE is unset, so other Python processes of the venv are untouched.
`tfx run create` (local engine) also shows only the run's digest, as `cgd pipeline run`
does, and appends its whole output to the pipeline's log file (cli/tfx_cli.py
start_run_digest). `CGD_VERBOSE=1 tfx ...` shows everything.
"""

import os
import sys

QUIET_CHILD_ENV = "CGD_QUIET_TFX_CHILD"
# Sorted after easy-install.pth, which puts the project (an editable install) on sys.path.
PTH_FILE = "zz_cgd_tfx_cli_quiet.pth"


def is_tfx_cli(argv) -> bool:
    return bool(argv) and os.path.basename(argv[0]) == "tfx"


def install() -> str:
    """Write the .pth file into this interpreter's site-packages; returns its path."""
    import sysconfig
    path = os.path.join(sysconfig.get_paths()["purelib"], PTH_FILE)
    with open(path, "w") as f:
        f.write(f"import {__spec__.name}\n")
    return path


if __name__ == "__main__":
    print(f"installed {install()}")
elif is_tfx_cli(getattr(sys, "argv", None)) and not os.environ.get("CGD_VERBOSE"):
    from cli.noise import quiet_third_party_noise
    quiet_third_party_noise(verbose=False)
    try:  # `tfx run create`: the digest of the run, its full output in the log file
        from cli.tfx_cli import start_run_digest
        start_run_digest(sys.argv)
    except Exception:  # never stop the tfx CLI itself: it then shows everything
        pass
    os.environ[QUIET_CHILD_ENV] = "1"
elif os.environ.get(QUIET_CHILD_ENV):
    from cli.noise import quiet_google_version_warnings, quiet_tensorflow_import
    quiet_google_version_warnings()
    quiet_tensorflow_import()
