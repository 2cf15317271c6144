"""Submit and schedule a compiled pipeline on Vertex AI Pipelines (google-cloud-aiplatform).

    cgd kubeflow compile  --config prod.yaml --image REGISTRY/cgd:TAG --output pipeline.json
    cgd kubeflow submit   --config prod.yaml --pipeline pipeline.json     # kubeflow.target: vertex
    cgd kubeflow schedule --config prod.yaml --pipeline pipeline.json --cron "0 3 * * 0"

The SDK does the work: ``aiplatform.PipelineJob(...).submit(service_account=...)`` and
``PipelineJob(...).create_schedule(cron=...)`` (a ``PipelineJobSchedule``). Everything is
checked before the SDK is called (project, region, gs:// root, the file, the cron), so a
mistake is one line naming the key, flag or file, not a Google API error.

Credentials are the SDK's default, Application Default Credentials (``gcloud auth
application-default login``, or the service account of the machine or workload).
``CGD_VERTEX_API_ENDPOINT`` (host[:port] or an http(s):// URL) replaces the SDK's
regional endpoint and switches it to its REST transport: for Private Service Connect
endpoints, and for the tests' local stand-in (tests/support/vertex_api_server.py).

Every function takes the SDK module as ``sdk`` (default ``google.cloud.aiplatform``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping

from core.config import (GCP_PROJECT_PATTERN, GCP_REGION_PATTERN, SERVICE_ACCOUNT_PATTERN,
                         VERTEX_ACCELERATORS, KubeflowConfig)
from kubeflow.client import PipelinePackage, default_run_name, load_pipeline_file
from kubeflow.compiler import ROOT_SCHEMES
from kubeflow.errors import KubeflowError

API_ENDPOINT_ENV = "CGD_VERTEX_API_ENDPOINT"


@dataclasses.dataclass(frozen=True)
class VertexTarget:
    """Where and as whom the pipeline runs on Vertex AI; checked by ``vertex_target``."""
    project: str
    location: str
    service_account: str = ""  # "": the project's Compute Engine default service account
    api_endpoint: str = ""  # "": the SDK's regional endpoint (LOCATION-aiplatform.googleapis.com)


def vertex_target(k: KubeflowConfig, project: str | None = None, location: str | None = None,
                  service_account: str | None = None,
                  environ: Mapping[str, str] | None = None) -> VertexTarget:
    """Flags (``--project``, ``--location``, ``--service-account``) win over the config keys."""
    environ = os.environ if environ is None else environ
    settings = {}
    for name, flag, key, value, pattern, example in (
            ("project", "--project", "vertex_project", project or k.vertex_project,
             GCP_PROJECT_PATTERN, "my-project-123"),
            ("location", "--location", "vertex_location", location or k.vertex_location,
             GCP_REGION_PATTERN, "us-central1"),
            ("service_account", "--service-account", "vertex_service_account",
             service_account or k.vertex_service_account, SERVICE_ACCOUNT_PATTERN,
             "pipelines@my-project.iam.gserviceaccount.com")):
        value = (value or "").strip()
        if not value and name != "service_account":
            raise KubeflowError(f"no Google Cloud {name} for Vertex AI: pass {flag} or set "
                                f"'kubeflow.{key}' in the config")
        if value and not re.fullmatch(pattern, value):
            raise KubeflowError(f"{flag} / 'kubeflow.{key}' {value!r} does not look like a "
                                f"Google Cloud {name.replace('_', ' ')} (e.g. {example})")
        settings[name] = value
    return VertexTarget(**settings, api_endpoint=environ.get(API_ENDPOINT_ENV, "").strip())


def _sdk(sdk):
    if sdk is None:
        from google.cloud import aiplatform as sdk
    return sdk


def _init(sdk, target: VertexTarget) -> None:
    """``aiplatform.init`` for ``target``; an unknown region fails here, naming the key."""
    try:
        sdk.utils.validate_region(target.location)
    except ValueError:  # the SDK's message lists every region: too long for one line
        raise KubeflowError(
            f"--location / 'kubeflow.vertex_location' {target.location!r} is not a Vertex AI "
            "region (e.g. us-central1, europe-west4)") from None
    endpoint = {}
    if target.api_endpoint:  # gRPC cannot reach an http:// endpoint; REST takes both schemes
        endpoint = {"api_endpoint": target.api_endpoint, "api_transport": "rest"}
    sdk.init(project=target.project, location=target.location, **endpoint)


def load_template(pipeline_file: str, default_root: str = "") -> PipelinePackage:
    """The compiled PipelineJob .json, checked for what Vertex AI takes.

    The checks of ``client.load_pipeline_file`` (protos, schema 2.1.0, no resolver)
    first; then: a .json file (a .yaml package may carry KFP's kubernetes platform
    spec, which Vertex has no use for), a gs:// root, Vertex's accelerator names.
    """
    if not pipeline_file.endswith(".json"):
        raise KubeflowError(
            f"{pipeline_file}: Vertex AI runs the PipelineJob .json that `cgd kubeflow compile "
            "--output pipeline.json` writes (a .yaml package is for KFP)")
    package = load_pipeline_file(pipeline_file)
    root = package.root or default_root
    schemes = ROOT_SCHEMES["vertex"]
    if not root.startswith(schemes):
        raise KubeflowError(
            f"{pipeline_file}: pipeline root {root!r}: Vertex AI stores artifacts only on "
            f"{', '.join(schemes)}; set 'kubeflow.pipeline_root: gs://BUCKET/PATH' and compile "
            "again")
    for label, executor in sorted(package.spec.get("deploymentSpec", {})
                                  .get("executors", {}).items()):
        accelerator = (executor.get("container", {}).get("resources", {})
                       .get("accelerator", {}).get("type"))
        if accelerator and accelerator not in VERTEX_ACCELERATORS:
            raise KubeflowError(
                f"{pipeline_file}: {label} asks for accelerator {accelerator!r}, which is not a "
                "Vertex AI accelerator type (compiled for kubeflow.target: kfp?); set "
                "'kubeflow.target: vertex' and 'kubeflow.vertex_accelerator', and compile again")
    return dataclasses.replace(package, root=root)


def _pipeline_job(sdk, target: VertexTarget, pipeline_file: str, package: PipelinePackage,
                  display_name: str):
    # enable_caching=None keeps each task's compiled cachingOptions: True or False would
    # overwrite every task's, and the span driver and the RecallEvaluator must never be
    # served from the cache (their results depend on state outside the cache key).
    return sdk.PipelineJob(display_name=display_name, template_path=pipeline_file,
                           pipeline_root=package.root, enable_caching=None,
                           project=target.project, location=target.location)


def _vertex_call(what: str, target: VertexTarget, call: Callable[[], Any]):
    """Run an SDK call; a refusal, a missing credential or no connection is one line."""
    import google.auth.exceptions
    import requests
    from google.api_core import exceptions as api_exceptions

    try:
        return call()
    except KubeflowError:
        raise
    except api_exceptions.GoogleAPICallError as e:
        status = f"HTTP {int(e.code)}" if e.code else type(e).__name__
        # api_core prefixes the REST error's message with "POST https://...: "
        message = re.sub(r"^[A-Z]+ \S+: ", "", str(e.message or ""))
        raise KubeflowError(f"Vertex AI refused to {what} ({status}): {message}") from None
    except google.auth.exceptions.DefaultCredentialsError:
        raise KubeflowError(
            f"no Google credentials to {what} on Vertex AI: run `gcloud auth application-default "
            "login`, or run where a service account is attached (Application Default "
            "Credentials)") from None
    except (google.auth.exceptions.GoogleAuthError, api_exceptions.GoogleAPIError,
            requests.exceptions.RequestException) as e:
        endpoint = target.api_endpoint or f"{target.location}-aiplatform.googleapis.com"
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise KubeflowError(f"could not {what} on Vertex AI ({endpoint}): {first_line}") \
            from None
    except ValueError as e:  # the SDK's own argument checks (display name, job ID)
        raise KubeflowError(f"could not {what} on Vertex AI: {e}") from None


def submit(target: VertexTarget, pipeline_file: str, display_name: str | None = None,
           default_root: str = "", sdk=None):
    """One run of the compiled pipeline; returns the submitted ``aiplatform.PipelineJob``.

    The root is the file's (``runtimeConfig.gcsOutputDirectory``), else ``default_root``
    (``kubeflow.pipeline_root``). The job runs as ``target.service_account`` if set.
    """
    sdk = _sdk(sdk)
    package = load_template(pipeline_file, default_root)
    _init(sdk, target)

    def create():
        job = _pipeline_job(sdk, target, pipeline_file, package,
                            display_name or default_run_name(package.spec))
        job.submit(service_account=target.service_account or None)
        return job
    return _vertex_call("create the pipeline job", target, create)


def schedule(target: VertexTarget, pipeline_file: str, cron: str, display_name: str,
             default_root: str = "", sdk=None):
    """A recurring run on Vertex's cron; returns the created ``PipelineJobSchedule``.

    One run at a time (``max_concurrent_run_count=1``), and a run that falls due while
    one is running is skipped, not queued (``allow_queueing=False``): a retraining must
    not pile up behind a slow one.
    """
    sdk = _sdk(sdk)
    vertex_cron = to_vertex_cron(cron)
    package = load_template(pipeline_file, default_root)
    _init(sdk, target)

    def create():
        job = _pipeline_job(sdk, target, pipeline_file, package,
                            package.spec["pipelineInfo"]["name"])
        return job.create_schedule(cron=vertex_cron, display_name=display_name,
                                   max_concurrent_run_count=1, allow_queueing=False,
                                   service_account=target.service_account or None)
    return _vertex_call("create the schedule", target, create)


# --------------------------------------------------------------------------- cron

# Descriptors as cron defines them, written out: Vertex documents only the 5 fields.
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                "@hourly": "0 * * * *"}
_TZ_PREFIX = re.compile(r"((?:CRON_)?TZ)=(\S+)\s+(.*)")
# unix-cron's grammar: numbers, month/day names, '*', lists, ranges and steps; no
# Quartz extensions ('?', L, W, #), which croniter takes but unix cron does not.
_UNIX_CRON_FIELD = re.compile(r"[0-9A-Za-z*,/-]+")
_CRON_NAMES = {3: "jan feb mar apr may jun jul aug sep oct nov dec".split(),  # month
               4: "sun mon tue wed thu fri sat".split()}  # day of week


def to_vertex_cron(expr: str) -> str:
    """The cron Vertex AI schedules take: 5 unix-cron fields, optional TZ= prefix.

    - "0 3 * * 0" and "TZ=Europe/Berlin 0 3 * * 0" (or CRON_TZ=) are sent as written
      (whitespace normalised); the zone must be an IANA name, every field is checked
      with croniter;
    - KFP's 6-field form (seconds first) is converted when its seconds field is 0
      ("0 0 3 * * 0" -> "0 3 * * 0", '?' -> '*'), refused otherwise: Vertex schedules
      have minute resolution;
    - @daily-style descriptors become their 5 fields (@weekly -> "0 0 * * 0").
    """
    from croniter import croniter

    text = " ".join(str(expr).split())
    prefix = ""
    if match := _TZ_PREFIX.fullmatch(text):
        name, zone, text = match.groups()
        if not _is_iana_zone(zone):
            raise KubeflowError(f"cron {expr!r}: {zone!r} is not an IANA time zone (e.g. "
                                f"{name}=Europe/Berlin)")
        prefix = f"{name}={zone} "
    if text.lower() in _DESCRIPTORS:
        return prefix + _DESCRIPTORS[text.lower()]
    fields = text.split(" ") if text else []
    if len(fields) == 6:
        if fields[0] != "0":
            raise KubeflowError(
                f"cron {expr!r}: Vertex AI schedules run at minute resolution; this 6-field "
                f"(KFP) form has seconds {fields[0]!r}: give 5 fields (minute hour "
                "day-of-month month day-of-week)")
        fields = [field.replace("?", "*") for field in fields[1:]]
    elif len(fields) != 5:
        raise KubeflowError(
            f"cron {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week, "
            f"e.g. '0 3 * * 0', optionally after TZ=Area/City), got {len(fields)}")
    for place, field in enumerate(fields):
        words = re.findall(r"[a-z]+", field.lower())
        if not _UNIX_CRON_FIELD.fullmatch(field) or \
                any(word not in _CRON_NAMES.get(place, ()) for word in words):
            raise KubeflowError(f"cron {expr!r}: field {field!r} is not unix-cron (numbers, "
                                "month and weekday names, '*', ',', '-', '/'; no '?', L, W, #)")
    vertex_cron = " ".join(fields)
    try:
        croniter.expand(vertex_cron)
    except (ValueError, KeyError) as e:  # croniter's errors subclass ValueError
        raise KubeflowError(f"cron {expr!r} is not valid: {e}") from None
    return prefix + vertex_cron


def _is_iana_zone(name: str) -> bool:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True
