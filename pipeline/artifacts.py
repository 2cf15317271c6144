"""Where the local orchestrator puts artifacts: <root>/<name>/<Component>/<output>/<id>/."""

from __future__ import annotations

import os


def newest_numbered_dir(parent: str) -> str | None:
    """The subdirectory of ``parent`` with the largest integer name (artifact id, push
    version), or None when there is none."""
    if not os.path.isdir(parent):
        return None
    numbered = [d for d in os.listdir(parent) if d.isdigit()]
    return os.path.join(parent, max(numbered, key=int)) if numbered else None


def output_parent(cfg, component: str, output: str) -> str:
    return os.path.join(cfg.pipeline.root, cfg.pipeline.name, component, output)


def newest_output(cfg, component: str, output: str) -> str | None:
    """URI of the newest artifact ``component`` wrote to ``output``, or None."""
    return newest_numbered_dir(output_parent(cfg, component, output))
