"""The one error type of the kubeflow package."""

from core.errors import CliError


class KubeflowError(CliError, ValueError):
    """A Kubeflow setting or file is wrong; the message names the flag, key or file."""
