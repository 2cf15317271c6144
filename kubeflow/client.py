"""Submit and schedule a compiled pipeline on a Kubeflow Pipelines cluster (``kfp.Client``).

    cgd kubeflow submit   --config prod.yaml --pipeline pipeline.json
    cgd kubeflow schedule --config prod.yaml --pipeline pipeline.json --cron "0 3 * * 0"

``kfp.Client`` (2.5) reads a YAML package (the ``PipelineSpec``, then optionally
the kubernetes platform spec), so a .json ``PipelineJob`` is rewritten into one
and its root passed as the run's ``pipeline_root``. Everything here takes the
client as an argument; the tests point a real ``kfp.Client`` at a local server
that speaks KFP's v2beta1 API (tests/kfp_api_server.py). On multi-user Kubeflow
the client carries a profile namespace and a credential from the environment
(make_client; kubeflow/README.md, "Multi-user Kubeflow").
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
from typing import Any

from kubeflow.credentials import CREDENTIAL_VARIABLES, credential_from_environment
from kubeflow.errors import KubeflowError


log = logging.getLogger("cgd")

def make_client(host: str, namespace: str = ""):
    """The KFP API client for ``host``: in ``namespace`` (multi-user Kubeflow's profile;
    empty for single-user KFP) with the credential found in the environment, if any.

    Returns (client, credential or None). kfp.Client calls GET healthz when it has no
    namespace (kfp/client/client.py), so a host that does not answer fails here.
    """
    import kfp

    credential = credential_from_environment()
    if credential:
        log.info("kubeflow: authenticating with %s", credential.source)
    try:
        client = kfp.Client(host=host, **({"namespace": namespace} if namespace else {}),
                            **(credential.kwargs if credential else {}))
    except TimeoutError:  # get_kfp_healthz after 5 attempts
        raise KubeflowError(f"Kubeflow Pipelines at {host} does not answer GET "
                            "/apis/v2beta1/healthz (check --host / 'kubeflow.host')") from None
    if namespace and client.get_user_namespace() != namespace:
        # kfp 2.5 takes namespace="kubeflow" (its default) for "not given"; set_user_namespace
        # would also write ~/.config/kfp/context.json, so set the client's own setting only.
        client._context_setting["namespace"] = namespace
    return client, credential


def is_multi_user(client: Any) -> bool:
    """What the API server says in GET healthz (``multi_user``, apiserver/main.go)."""
    try:
        return client.get_kfp_healthz().multi_user is True
    except TimeoutError:
        raise KubeflowError("Kubeflow Pipelines does not answer GET /apis/v2beta1/healthz "
                            "(check --host / 'kubeflow.host')") from None


@dataclasses.dataclass(frozen=True)
class PipelinePackage:
    """A compiled pipeline as submitted: the spec, its platform spec and pipeline root."""
    spec: dict
    platform: dict
    root: str


def load_pipeline_file(path: str) -> PipelinePackage:
    """The compiled file (PipelineJob .json, or .yaml spec + optional platform spec).

    Validated against the kfp-pipeline-spec protos and checked for what Kubeflow
    Pipelines refuses (kfp_compat.check_runnable), so that a file compiled by an
    older version fails here with the reason, not on the cluster. Errors name the file.
    """
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from kubeflow import kfp_compat

    if not os.path.isfile(path):
        raise KubeflowError(f"pipeline file {path} does not exist (create it with "
                            "`cgd kubeflow compile`)")
    try:
        with open(path) as f:
            docs = [json.load(f)] if path.endswith(".json") else list(yaml.safe_load_all(f))
    except (ValueError, yaml.YAMLError) as e:
        raise KubeflowError(f"{path}: not valid JSON/YAML: {e}") from None
    if not docs or not all(isinstance(d, dict) for d in docs) or len(docs) > 2:
        raise KubeflowError(f"{path}: not a compiled pipeline (expected a PipelineJob, or a "
                            "PipelineSpec optionally followed by a platform spec)")
    doc, platform = docs[0], (docs[1] if len(docs) == 2 else {})
    root = ""
    try:
        if "pipelineSpec" in doc:  # a PipelineJob, as `cgd kubeflow compile` writes .json
            job = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineJob())
            spec = doc["pipelineSpec"]  # a Struct in PipelineJob: check it on its own
            root = job.runtime_config.gcs_output_directory
        else:
            spec = doc
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as e:
        raise KubeflowError(f"{path}: not a KFP PipelineJob or PipelineSpec: {e}") from None
    if not spec.get("pipelineInfo", {}).get("name") or "root" not in spec:
        raise KubeflowError(f"{path}: the pipeline spec has no pipelineInfo.name or root")
    try:
        kfp_compat.check_runnable(spec)
    except kfp_compat.SpecError as e:
        raise KubeflowError(f"{path}: {e}; compile it again with `cgd kubeflow compile`") \
            from None
    return PipelinePackage(spec, platform, root or spec.get("defaultPipelineRoot", ""))


def write_pipeline_package(package: PipelinePackage, directory: str) -> str:
    """Write the package as the YAML ``kfp.Client`` 2.5 reads (spec, then platform spec)."""
    import yaml

    path = os.path.join(directory, "pipeline.yaml")
    with open(path, "w") as f:
        yaml.safe_dump_all([package.spec] + ([package.platform] if package.platform else []),
                           f, sort_keys=True)
    return path


def default_run_name(spec: dict, now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{spec['pipelineInfo']['name']} {now:%Y-%m-%d %H-%M-%S}"


def _namespace(client: Any, namespace: str | None) -> str | None:
    """``namespace``, else the client's (kfp.Client's own default); None for single-user."""
    if namespace:
        return namespace
    getter = getattr(client, "get_user_namespace", None)
    return (getter() if getter else None) or None


def _kfp_call(what: str, call):
    """Run a kfp.Client call; an API refusal becomes one KubeflowError line with KFP's reason."""
    import kfp_server_api

    try:
        return call()
    except kfp_server_api.ApiException as e:
        reason = e.reason
        try:
            reason = json.loads(e.body).get("message") or reason
        except (TypeError, ValueError):
            pass
        # 401: the identity is missing or was not accepted (KFP's message says which, never
        # the credential); name the variables that carry one.
        hint = f"; the identity comes from {CREDENTIAL_VARIABLES}" if e.status == 401 else ""
        raise KubeflowError(f"Kubeflow Pipelines refused to {what} (HTTP {e.status}): "
                            f"{reason}{hint}") from None


def submit(client: Any, pipeline_file: str, experiment: str, run_name: str | None = None,
           default_root: str = "", namespace: str | None = None):
    """One run of the compiled pipeline on the client's cluster; returns the client's result.

    The run's pipeline root is the file's (a .json PipelineJob carries it), else
    ``default_root`` (``kubeflow.pipeline_root``, what the spec was compiled for). The
    experiment, hence the run, is in ``namespace``, by default the client's (make_client).
    """
    import tempfile

    package = load_pipeline_file(pipeline_file)
    with tempfile.TemporaryDirectory(prefix="cgd-kfp-") as tmp:
        return _kfp_call("create the run", lambda: client.create_run_from_pipeline_package(
            pipeline_file=write_pipeline_package(package, tmp),
            arguments={},
            run_name=run_name or default_run_name(package.spec),
            experiment_name=experiment,
            namespace=_namespace(client, namespace),
            pipeline_root=package.root or default_root or None,
        ))


def schedule(client: Any, pipeline_file: str, experiment: str, job_name: str, cron: str,
             default_root: str = "", namespace: str | None = None):
    """A recurring run on KFP's cron (5- or 6-field ``cron``); returns the client's result.

    One run at a time (``max_concurrency=1``) and no catch-up of missed runs: a
    retraining that was skipped must not be replayed in a burst. The recurring run is in
    its experiment's namespace (KFP 2.0.5 job_server.go), ``namespace`` as in submit.
    """
    import tempfile

    kfp_cron = to_kfp_cron(cron)
    package = load_pipeline_file(pipeline_file)
    experiment_id = _kfp_call("create the experiment",
                              lambda: client.create_experiment(
                                  name=experiment,
                                  namespace=_namespace(client, namespace)).experiment_id)
    with tempfile.TemporaryDirectory(prefix="cgd-kfp-") as tmp:
        return _kfp_call("create the recurring run", lambda: client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=kfp_cron,
            pipeline_package_path=write_pipeline_package(package, tmp),
            params={},
            pipeline_root=package.root or default_root or None,
            max_concurrency=1,
            no_catchup=True,
            enabled=True,
        ))


# --------------------------------------------------------------------------- cron

# KFP's scheduler (robfig/cron) reads 6 fields, seconds first, and also takes these.
_CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                     "@hourly")


def to_kfp_cron(expr: str) -> str:
    """Standard 5-field cron -> KFP's 6-field form (seconds first), validated by croniter.

    "0 3 * * 0" -> "0 0 3 * * 0". A 6-field expression is taken as KFP's form
    already; @daily-style descriptors pass through. The conversion matters: KFP
    reads a 5-field crontab seconds-first too, so "0 3 * * *" would run hourly.
    """
    from croniter import croniter

    text = " ".join(str(expr).split())
    if text.lower() in _CRON_DESCRIPTORS:
        return text.lower()
    fields = text.split(" ") if text else []
    if len(fields) == 5:
        fields = ["0"] + fields
    elif len(fields) != 6:
        raise KubeflowError(
            f"cron {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week, "
            f"e.g. '0 3 * * 0') or KFP's 6 (seconds first), got {len(fields)}")
    kfp_cron = " ".join(fields)
    try:
        croniter.expand(kfp_cron, second_at_beginning=True)
    except (ValueError, KeyError) as e:  # croniter's errors subclass ValueError
        raise KubeflowError(f"cron {expr!r} is not valid: {e}") from None
    return kfp_cron
