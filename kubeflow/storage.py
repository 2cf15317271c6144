"""Artifact URIs on Kubeflow Pipelines' object store, and where the launcher puts them locally.

KFP's launcher (backend/src/v2/component/launcher_v2.go, objectstore) accepts
pipeline roots on gs://, s3:// and minio:// only. It downloads every input
artifact to a local path before the step runs and uploads every output artifact
from its local path after it exits:

    gs://BUCKET/KEY     <->  /gcs/BUCKET/KEY
    s3://BUCKET/KEY     <->  /s3/BUCKET/KEY
    minio://BUCKET/KEY  <->  /minio/BUCKET/KEY

``tf.io.gfile`` opens gs:// itself but neither minio:// (the default KFP
install's store) nor s3:// (without a filesystem plugin), so our entrypoint
hands TFX's executors the local paths for those and keeps gs:// as it is.

``LOCAL_ROOT_ENV`` moves the local side away from ``/`` (the pod's filesystem
root): the launcher emulation in the tests runs each step in its own directory.
"""

from __future__ import annotations

import os

LOCAL_ROOT_ENV = "CGD_KFP_LOCAL_ROOT"
# Schemes the launcher accepts, and their local mount directories.
LAUNCHER_MOUNTS = {"gs://": "gcs", "s3://": "s3", "minio://": "minio"}
# Schemes tf.io.gfile cannot open: these are mapped to the launcher's local copies.
MAPPED_SCHEMES = ("minio://", "s3://")


def local_root() -> str:
    return os.environ.get(LOCAL_ROOT_ENV, "/")


def launcher_local_path(uri: str, root: str | None = None) -> str:
    """The local path where KFP's launcher keeps the artifact at ``uri``."""
    for scheme, mount in LAUNCHER_MOUNTS.items():
        if uri.startswith(scheme):
            return os.path.join(root or local_root(), mount, uri[len(scheme):])
    raise ValueError(f"{uri!r} is not on a store KFP's launcher supports "
                     f"({', '.join(LAUNCHER_MOUNTS)})")


def to_executor_uri(uri: str, root: str | None = None) -> str:
    """What our executors are given for ``uri``: its local copy when gfile cannot open it."""
    return launcher_local_path(uri, root) if uri.startswith(MAPPED_SCHEMES) else uri


def to_store_uri(path: str, root: str | None = None) -> str:
    """The inverse of ``to_executor_uri``: a launcher-local path back to its store URI."""
    base = root or local_root()
    for scheme in MAPPED_SCHEMES:
        mount = os.path.join(base, LAUNCHER_MOUNTS[scheme]) + os.sep
        if path.startswith(mount):
            return scheme + path[len(mount):]
    return path
