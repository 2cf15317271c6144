"""`cgd`: one command line for the whole product.

Each package contributes its subcommands through a ``register(subparsers)``
function in its ``commands`` module; heavy imports (TensorFlow, TFX) happen
inside the command functions so that ``cgd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from core.errors import CliError
from cli.noise import quiet_third_party_noise

COMMAND_MODULES = (
    "cli.pipeline_commands",
    "cli.analysis_commands",
    "cli.serving_commands",
    "cli.kubeflow_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cgd", description="CGD fine-grained image retrieval: data, TFX pipeline, serving, Kubeflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that package has no commands yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TFT 1.16 needs Keras 2; must be set before TensorFlow is first imported.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    parser = build_parser()  # imports only our light command modules: no TensorFlow yet
    args = parser.parse_args(argv)
    quiet_third_party_noise(verbose=args.verbose)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as e:  # ConfigError included
        print(f"{command_name(args)}: error: {e}", file=sys.stderr)
        return 1


def command_name(args: argparse.Namespace) -> str:
    """'cgd kubeflow submit' for a nested action (its dest is '<command>_command')."""
    action = getattr(args, f"{args.command}_command", None)
    return " ".join(["cgd", args.command] + ([action] if isinstance(action, str) else []))


if __name__ == "__main__":
    sys.exit(main())
