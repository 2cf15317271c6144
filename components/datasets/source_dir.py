"""The one check every dataset source starts with: are the downloaded files in source_dir?

A missing directory or file fails at once, naming the directory, the files expected and
what was found (a listing, shortened for big directories).
"""

from __future__ import annotations

import os

import tensorflow as tf

from components.datasets.records import DatasetSourceError


def summarize_names(names: list[str], limit: int = 12) -> str:
    """``names`` for a message: "nothing", or the first ``limit`` and how many more."""
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def check_source_dir(source_dir: str, dataset: str, files, expected: str | None = None,
                     hint=None) -> dict[str, str]:
    """{file name: path} of ``files`` in ``source_dir``, or a DatasetSourceError.

    ``dataset`` names the dataset in messages ("CUB-200-2011"); ``expected`` describes the
    files (default: their names); ``hint(found)`` may add advice from what was found.
    """
    expected = expected or ", ".join(files)
    if not tf.io.gfile.isdir(source_dir):
        raise DatasetSourceError(
            f"{dataset} source directory {source_dir} does not exist; it must hold {expected}")
    found = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(source_dir))
    missing = [name for name in files if name not in found]
    if missing:
        advice = hint(found) if hint else ""
        raise DatasetSourceError(
            f"{dataset} source directory {source_dir} is missing {', '.join(missing)}. "
            f"Expected {expected}{advice}; found: {summarize_names(found)}")
    return {name: os.path.join(source_dir, name) for name in files}
