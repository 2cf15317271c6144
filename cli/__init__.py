"""The `cgd` command line and everything about the terminal.

``main`` is the entry point; each command group has one ``*_commands`` module with a
``register(subparsers)``; ``demo`` is `cgd demo`; ``console`` (what a run shows, its full
log in a file), ``noise`` (third-party import noise) and the tfx CLI hook
(``tfx_cli_quiet``, ``tfx_cli``) shape the terminal. Nothing below this package imports it.
"""
