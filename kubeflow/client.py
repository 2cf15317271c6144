"""Submit and schedule a compiled pipeline on a Kubeflow Pipelines cluster (``kfp.Client``).

    cgd kubeflow submit   --config prod.yaml --pipeline pipeline.json
    cgd kubeflow schedule --config prod.yaml --pipeline pipeline.json --cron "0 3 * * 0"

``kfp.Client`` (2.5) reads a YAML package (the ``PipelineSpec``, then optionally
the kubernetes platform spec), so a .json ``PipelineJob`` is rewritten into one
and its root passed as the run's ``pipeline_root``. Everything here takes the
client as an argument; the tests point a real ``kfp.Client`` at a local server
that speaks KFP's v2beta1 API (tests/support/kfp_api_server.py). On multi-user Kubeflow
the client carries a profile namespace and a credential from the environment
(make_client; kubeflow/README.md, "Multi-user Kubeflow").
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
from typing import Any

from kubeflow.credentials import (COOKIE_ENV, CREDENTIAL_VARIABLES, SA_TOKEN_PATH_ENV,
                                  TOKEN_ENV, credential_from_environment)
from kubeflow.errors import KubeflowError


log = logging.getLogger("cgd")

HEALTHZ = "GET /apis/v2beta1/healthz"
CHECK_HOST = "--host / 'kubeflow.host'"


def make_client(host: str, namespace: str = ""):
    """The KFP API client for ``host``: in ``namespace`` (multi-user Kubeflow's profile;
    empty for single-user KFP) with the credential found in the environment, if any.

    Returns (client, credential or None). The client asks GET healthz (once: _client_class)
    when it has no namespace, so a host that does not answer fails here, in one line.
    """
    credential = credential_from_environment()
    if credential:
        log.info("kubeflow: authenticating with %s", credential.source)
    client = _client_class()(host=host, **({"namespace": namespace} if namespace else {}),
                             **(credential.kwargs if credential else {}))
    if namespace and client.get_user_namespace() != namespace:
        # kfp 2.5 takes namespace="kubeflow" (its default) for "not given"; set_user_namespace
        # would also write ~/.config/kfp/context.json, so set the client's own setting only.
        client._context_setting["namespace"] = namespace
    return client, credential


@functools.lru_cache(maxsize=None)
def _client_class():
    """kfp.Client asking GET healthz at most once, a failure of it one KubeflowError line.

    kfp 2.5's get_kfp_healthz (its constructor calls it when the client has no namespace)
    tries 5 times, 5 s apart, logging each failure's traceback, then raises TimeoutError
    without the reason; a refused connection or a TLS failure is not retried there but escapes
    as urllib3's MaxRetryError with a 90-line traceback. urllib3 still retries a failed
    connection (3 times, at once); its "Retrying" warnings are quieted by the command
    (cli/noise.py quiet_kfp_client).
    """
    import kfp

    class Client(kfp.Client):
        def __init__(self, host: str, **kwargs):
            self.cgd_host, self._cgd_healthz = host, None  # before kfp asks healthz
            super().__init__(host=host, **kwargs)

        def get_kfp_healthz(self, sleep_duration: int = 5):
            if self._cgd_healthz is None:
                self._cgd_healthz = _kfp_call(f"answer {HEALTHZ}", self._healthz_api.get_healthz,
                                              host=self.cgd_host)
            return self._cgd_healthz

    return Client


def is_multi_user(client: Any) -> bool:
    """What the API server says in GET healthz (``multi_user``, apiserver/main.go)."""
    return client.get_kfp_healthz().multi_user is True


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


def _package(pipeline_file: "str | PipelinePackage") -> PipelinePackage:
    """The file loaded and checked, unless the caller did that already (before any call)."""
    if isinstance(pipeline_file, PipelinePackage):
        return pipeline_file
    return load_pipeline_file(pipeline_file)


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


def _kfp_call(what: str, call, host: str | None = None):
    """Run a kfp.Client call to ``host``; a failure (no connection, TLS, an HTTP refusal)
    becomes one KubeflowError line naming the host, KFP's reason and what to check."""
    import kfp_server_api
    import urllib3

    try:
        return call()
    except (kfp_server_api.ApiException, urllib3.exceptions.HTTPError) as e:
        raise api_error(host, what, e) from None


def _host_of(client: Any) -> str | None:
    return getattr(client, "cgd_host", None)


def api_error(host: str | None, what: str, error: Exception) -> KubeflowError:
    """The one line for ``error`` of a call to the KFP API at ``host`` that was to ``what``."""
    import kfp_server_api
    import urllib3

    at = f"Kubeflow Pipelines at {host}" if host else "Kubeflow Pipelines"
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason  # what the last of urllib3's attempts met
    if isinstance(error, kfp_server_api.ApiException) and error.status == 0:
        # kfp_server_api turns urllib3's SSLError into ApiException(0, "SSLError\n<text>").
        return _tls_error(at, str(error.reason).split("\n", 1)[-1])
    if isinstance(error, urllib3.exceptions.SSLError):
        return _tls_error(at, str(error))
    if isinstance(error, (urllib3.exceptions.NewConnectionError,
                          urllib3.exceptions.ConnectTimeoutError)):
        return KubeflowError(f"cannot connect to {at} ({_os_reason(error)}): check {CHECK_HOST} "
                             "(scheme, address, port) and that the KFP API server is reachable "
                             "from here (e.g. through `kubectl port-forward`)")
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return KubeflowError(f"{at} did not answer in time to {what}: check {CHECK_HOST} and "
                             "the API server's health")
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return KubeflowError(f"{at} closed the connection without an HTTP answer "
                             f"({_os_reason(error)}): if it speaks TLS, use https:// in "
                             f"{CHECK_HOST}")
    if not isinstance(error, kfp_server_api.ApiException):
        return KubeflowError(f"cannot reach {at}: {error} (check {CHECK_HOST})")
    reason = error.reason
    try:
        reason = json.loads(error.body).get("message") or reason
    except (TypeError, ValueError, AttributeError):  # no body, not JSON, not an object
        pass
    refused = f"{at} refused to {what} (HTTP {error.status}): {reason}"
    if error.status == 401:
        # The identity is missing or was not accepted (KFP's message says which, never the
        # credential); name the variables that carry one.
        return KubeflowError(f"{refused}; the identity comes from {CREDENTIAL_VARIABLES} "
                             "(kubeflow/README.md): set one, or renew the one set")
    if error.status == 403:
        # KFP's own 403 names the user and namespace; an auth proxy's ("RBAC: access
        # denied") names nothing: both come down to the identity and the namespace.
        return KubeflowError(f"{refused}; check the identity sent ({SA_TOKEN_PATH_ENV}, "
                             f"{TOKEN_ENV} or {COOKIE_ENV}) and that it may use the namespace "
                             "(--namespace / 'kubeflow.namespace': a Kubeflow profile you are "
                             "an owner or contributor of)")
    if error.status == 404 and what.endswith(HEALTHZ):
        return KubeflowError(f"no Kubeflow Pipelines API at {host} (HTTP 404 for {HEALTHZ}): "
                             f"check the path in {CHECK_HOST} (behind the Kubeflow dashboard "
                             "it ends in /pipeline, e.g. https://kubeflow.example.com/pipeline)")
    return KubeflowError(refused)


def _tls_error(at: str, text: str) -> KubeflowError:
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        hint = f"the server does not speak TLS there: use http:// in {CHECK_HOST}"
    elif "CERTIFICATE_VERIFY_FAILED" in text:
        hint = ("its certificate is not trusted here (self-signed, or from a private CA), or "
                f"not for this host name: use the name it was issued for in {CHECK_HOST}, or "
                "reach the API through `kubectl port-forward` and http://")
    else:
        hint = f"check the scheme and port in {CHECK_HOST}"
    reason = text.rsplit("] ", 1)[-1].split(" (_ssl.c", 1)[0].strip("()' \"")
    return KubeflowError(f"TLS with {at} failed ({reason}): {hint}")


def _os_reason(error: Exception) -> str:
    """"Connection refused" of "...: Failed to establish a new connection: [Errno 111]
    Connection refused" (urllib3 keeps only the text of the socket's error); "Connection
    reset by peer" of ProtocolError('Connection aborted.', ConnectionResetError(104, ...))."""
    for cause in getattr(error, "args", ())[1:]:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        if isinstance(cause, Exception):
            return str(cause) or type(cause).__name__
    text = str(error)
    for marker in ("] ", "Failed to establish a new connection: ", ": "):
        if marker in text:
            return text.rsplit(marker, 1)[-1].strip("()' \"")
    return text


def submit(client: Any, pipeline_file: str | PipelinePackage, experiment: str, run_name: str | None = None,
           default_root: str = "", namespace: str | None = None):
    """One run of the compiled pipeline on the client's cluster; returns the client's result.

    The run's pipeline root is the file's (a .json PipelineJob carries it), else
    ``default_root`` (``kubeflow.pipeline_root``, what the spec was compiled for). The
    experiment, hence the run, is in ``namespace``, by default the client's (make_client).
    """
    import tempfile

    package = _package(pipeline_file)
    with tempfile.TemporaryDirectory(prefix="cgd-kfp-") as tmp:
        return _kfp_call("create the run", lambda: client.create_run_from_pipeline_package(
            pipeline_file=write_pipeline_package(package, tmp),
            arguments={},
            run_name=run_name or default_run_name(package.spec),
            experiment_name=experiment,
            namespace=_namespace(client, namespace),
            pipeline_root=package.root or default_root or None,
        ), host=_host_of(client))


def schedule(client: Any, pipeline_file: str | PipelinePackage, experiment: str, job_name: str, cron: str,
             default_root: str = "", namespace: str | None = None):
    """A recurring run on KFP's cron (5- or 6-field ``cron``); returns the client's result.

    One run at a time (``max_concurrency=1``) and no catch-up of missed runs: a
    retraining that was skipped must not be replayed in a burst. The recurring run is in
    its experiment's namespace (KFP 2.0.5 job_server.go), ``namespace`` as in submit.
    """
    import tempfile

    kfp_cron = to_kfp_cron(cron)
    package = _package(pipeline_file)
    experiment_id = _kfp_call("create the experiment",
                              lambda: client.create_experiment(
                                  name=experiment,
                                  namespace=_namespace(client, namespace)).experiment_id,
                              host=_host_of(client))
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
        ), host=_host_of(client))


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
