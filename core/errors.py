"""Errors a user can fix: the `cgd` command prints them as one line, without a traceback."""


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


class ConfigError(CliError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""
