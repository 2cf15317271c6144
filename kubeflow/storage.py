"""Artifact URIs on Kubeflow Pipelines' object store, and where the launcher puts them locally.

KFP's launcher (backend/src/v2/component/launcher_v2.go, objectstore) accepts
pipeline roots on gs://, s3:// and minio:// only. It downloads every input
artifact to a local path before the step runs and uploads every output artifact
from its local path after it exits:

    gs://BUCKET/KEY     <->  /gcs/BUCKET/KEY
    s3://BUCKET/KEY     <->  /s3/BUCKET/KEY
    minio://BUCKET/KEY  <->  /minio/BUCKET/KEY

Where the executors read and write is the entrypoint's ``--artifact_access``,
which ``cgd kubeflow compile`` sets for the target:

- ``launcher_copies`` (Kubeflow Pipelines): the launcher's local copies, for every
  scheme. On gs:// the executors must not write the store themselves:
  TensorFlow's GCS filesystem leaves a zero-byte ``<dir>/`` object for every
  directory it creates, and the launcher downloads that marker as a file, so
  the next step cannot create the directory beneath it (``mkdir ...: not a
  directory``, kubeflow/pipelines#13476). The launcher uploads files only.
- ``store`` (Vertex AI, which copies nothing): gs:// as it is; minio:// and s3://
  (which ``tf.io.gfile`` cannot open) still the local copies. This is also what
  a step compiled without the flag gets, as before it existed.

``LOCAL_ROOT_ENV`` moves the local side away from ``/`` (the pod's filesystem
root): the launcher emulation in the tests runs each step in its own directory.
"""

from __future__ import annotations

import os

LOCAL_ROOT_ENV = "CGD_KFP_LOCAL_ROOT"
# Schemes the launcher accepts, and their local mount directories.
LAUNCHER_MOUNTS = {"gs://": "gcs", "s3://": "s3", "minio://": "minio"}
# --artifact_access -> the schemes whose URIs become the launcher's local copies.
LOCAL_COPY_SCHEMES = {"launcher_copies": ("gs://", "s3://", "minio://"),
                      "store": ("minio://", "s3://")}  # tf.io.gfile opens gs:// only
DEFAULT_ACCESS = "store"


def local_root() -> str:
    return os.environ.get(LOCAL_ROOT_ENV, "/")


def launcher_local_path(uri: str, root: str | None = None) -> str:
    """The local path where KFP's launcher keeps the artifact at ``uri``."""
    for scheme, mount in LAUNCHER_MOUNTS.items():
        if uri.startswith(scheme):
            return os.path.join(root or local_root(), mount, uri[len(scheme):])
    raise ValueError(f"{uri!r} is not on a store KFP's launcher supports "
                     f"({', '.join(LAUNCHER_MOUNTS)})")


def to_executor_uri(uri: str, root: str | None = None, access: str = DEFAULT_ACCESS) -> str:
    """What our executors are given for ``uri`` under ``access`` (see the module docstring)."""
    if uri.startswith(LOCAL_COPY_SCHEMES[access]):
        return launcher_local_path(uri, root)
    return uri


def to_store_uri(path: str, root: str | None = None) -> str:
    """The inverse of ``to_executor_uri``: a launcher-local path back to its store URI."""
    base = root or local_root()
    for scheme, mount_dir in LAUNCHER_MOUNTS.items():
        mount = os.path.join(base, mount_dir) + os.sep
        if path.startswith(mount):
            return scheme + path[len(mount):]
    return path
