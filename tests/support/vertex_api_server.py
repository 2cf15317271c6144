"""A local stand-in for Vertex AI's Pipelines REST API (v1), for tests.

It answers what google-cloud-aiplatform 1.165 sends over its REST transport for
`PipelineJob(...).submit()` (POST v1/{parent}/pipelineJobs?pipelineJobId=...) and
`PipelineJob(...).create_schedule()` (POST v1/{parent}/schedules), and GET of either
resource, and refuses what Vertex AI documents it refuses, as Google API errors.
Sources:
  - routes, bodies (camelCase JSON of the v1 protos, `$alt=json;enum-encoding=int`):
    google/cloud/aiplatform_v1/services/{pipeline_service,schedule_service}/transports/
    rest_base.py (`_get_http_options`, `_get_request_body_json`);
  - what the SDK puts in them: google/cloud/aiplatform/pipeline_jobs.py (PipelineJob.__init__,
    submit), pipeline_job_schedules.py (PipelineJobSchedule.__init__, _create);
  - fields and rules: Vertex AI REST reference, projects.locations.pipelineJobs (pipelineSpec
    a PipelineSpec, runtimeConfig.gcsOutputDirectory "a path in a Cloud Storage bucket",
    serviceAccount an email, pipelineJobId `[a-z0-9][a-z0-9-]{0,127}`) and
    projects.locations.schedules (cron: unix cron, optional "CRON_TZ=${IANA_TIME_ZONE}" or
    "TZ=${IANA_TIME_ZONE}" prefix; displayName up to 128 characters; maxConcurrentRunCount
    required); accelerator names: aiplatform_v1 AcceleratorType;
  - error shape: google.rpc.Status as JSON (AIP-193, {"error": {"code", "message",
    "status"}}), which google.api_core.exceptions.from_http_response turns into
    BadRequest/PermissionDenied/NotFound.
The messages are this stand-in's own wording (Vertex's texts are not public source). Not
reproduced: long-running state changes (jobs stay PENDING), IAM beyond "known project,
existing service account", quotas, list/cancel/delete, Private Service Connect.
The SDK's other call in submit(), the pipeline root's bucket check on Cloud Storage and
Resource Manager, is not Vertex's API: tests/kubeflow/test_vertex.py replaces it.
"""
from __future__ import annotations

import itertools
import re
import threading
import time
import zoneinfo
from http.server import ThreadingHTTPServer
from typing import Any, Callable

from google.cloud.aiplatform_v1.types import AcceleratorType
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

from tests.support.json_http import JsonApiHandler

Json = dict[str, Any]
# google.rpc.Code names and the HTTP status Google's front end gives each.
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "PERMISSION_DENIED": 403, "NOT_FOUND": 404}
PARENT = r"projects/([^/]+)/locations/([^/]+)"
JOB_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
ACCELERATORS = {a.name for a in AcceleratorType} - {"ACCELERATOR_TYPE_UNSPECIFIED"}


class VertexError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def body(self) -> Json:
        return {"error": {"code": HTTP_STATUS[self.status], "message": self.message,
                          "status": self.status}}


def invalid(message: str) -> VertexError:
    return VertexError("INVALID_ARGUMENT", message)


# unix cron (crontab(5)): minute hour day-of-month month day-of-week; 7 is Sunday too.
_CRON_FIELDS = [("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
                ("month", 1, 12, {m: i + 1 for i, m in enumerate(
                    "jan feb mar apr may jun jul aug sep oct nov dec".split())}),
                ("day of week", 0, 7, {d: i for i, d in enumerate(
                    "sun mon tue wed thu fri sat".split())})]


def cron_error(cron: str) -> str | None:
    """None if `cron` is a unix cron with an optional (CRON_)TZ= prefix, else why not."""
    text = cron.strip()
    if match := re.fullmatch(r"(?:CRON_)?TZ=(\S+)\s+(.*)", text):
        zone, text = match.groups()
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return f"unknown time zone {zone!r}"
    fields = text.split()
    if len(fields) != 5:
        return f"expected 5 fields, got {len(fields)}"
    for field, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        for item in field.split(","):
            match = re.fullmatch(r"(\*|\w+(?:-\w+)?)(?:/(\d+))?", item)
            if not match or match.group(2) == "0":
                return f"invalid {name} {item!r}"
            bounds = [] if match.group(1) == "*" else match.group(1).split("-")
            for bound in bounds:
                value = names.get(bound.lower(), int(bound) if bound.isdigit() else None)
                if value is None or not low <= value <= high:
                    return f"{name} {bound!r} is out of range {low}-{high}"
    return None


def check_pipeline_job(job: Json, field: str, service_accounts: set[str]) -> None:
    """What Vertex checks of a PipelineJob before it runs: a PipelineSpec, a gs:// root,
    an existing service account, accelerators it has."""
    spec = job.get("pipelineSpec")
    if not isinstance(spec, dict) or not spec:
        raise invalid(f"{field}.pipeline_spec is required")
    try:
        parsed = json_format.ParseDict(spec, pb.PipelineSpec())
    except json_format.ParseError as error:
        raise invalid(f"{field}.pipeline_spec is not a valid PipelineSpec: {error}") from None
    if not parsed.schema_version or not parsed.pipeline_info.name or not parsed.HasField("root"):
        raise invalid(f"{field}.pipeline_spec must have schemaVersion, pipelineInfo.name and "
                      "root")
    root = (job.get("runtimeConfig") or {}).get("gcsOutputDirectory", "")
    if not root.startswith("gs://"):
        raise invalid(f"{field}.runtime_config.gcs_output_directory must be a Cloud Storage "
                      f"path (gs://), got {root!r}")
    account = job.get("serviceAccount", "")
    if account and not EMAIL.fullmatch(account):
        raise invalid(f"{field}.service_account {account!r} is not an email address")
    if account and account not in service_accounts:
        raise invalid(f"Service account {account} does not exist")
    for label, executor in sorted(spec.get("deploymentSpec", {}).get("executors", {}).items()):
        accelerator = (executor.get("container", {}).get("resources", {})
                       .get("accelerator", {}).get("type"))
        if accelerator and accelerator not in ACCELERATORS:
            raise invalid(f"{label}: accelerator type {accelerator!r} is not supported")


class VertexApiServer:
    """Vertex AI on 127.0.0.1:<free port>: `with VertexApiServer() as server:`, then
    `aiplatform.init(api_endpoint=server.endpoint, api_transport="rest", ...)`.

    `projects`: the projects the caller may use (others: 403); `service_accounts`: the
    accounts that exist. Accepted resources, refusals and every request are recorded."""

    def __init__(self, projects: set[str], service_accounts: set[str] = frozenset()) -> None:
        self.projects, self.service_accounts = set(projects), set(service_accounts)
        self.pipeline_jobs: list[Json] = []  # as stored: request body + name, state, times
        self.schedules: list[Json] = []
        self.refusals: list[tuple[str, str]] = []  # (path, message)
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, query)
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._routes: list[tuple[str, str, Callable[..., Json]]] = [
            ("POST", f"{PARENT}/pipelineJobs", self._create_pipeline_job),
            ("GET", f"{PARENT}/pipelineJobs/([^/:]+)", self._get("pipelineJobs")),
            ("POST", f"{PARENT}/schedules", self._create_schedule),
            ("GET", f"{PARENT}/schedules/([^/:]+)", self._get("schedules"))]
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.api = self  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> VertexApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Json]:
        with self._lock:
            self.requests.append((method, path, query))
            for route_method, route, endpoint in self._routes:
                if route_method == method and (match := re.fullmatch(f"/v1/{route}", path)):
                    project, location, *rest = match.groups()
                    try:
                        if project not in self.projects:
                            raise VertexError(
                                "PERMISSION_DENIED", "Permission denied on resource "
                                f"'//aiplatform.googleapis.com/projects/{project}/locations/"
                                f"{location}' (or it may not exist).")
                        return 200, endpoint(f"projects/{project}/locations/{location}", query,
                                             body, *rest)
                    except VertexError as refused:
                        self.refusals.append((path, refused.message))
                        return HTTP_STATUS[refused.status], refused.body()
            return 404, VertexError("NOT_FOUND", f"no such method: {method} {path}").body()

    def _create_pipeline_job(self, parent: str, query: dict[str, str], job: Json) -> Json:
        job_id = query.get("pipelineJobId") or f"pipeline-job-{next(self._ids)}"
        if not JOB_ID.fullmatch(job_id):
            raise invalid(f"pipeline_job_id {job_id!r} must match [a-z0-9][a-z0-9-]{{0,127}}")
        if len(job.get("displayName", "")) > 128:
            raise invalid("pipeline_job.display_name is longer than 128 characters")
        check_pipeline_job(job, "pipeline_job", self.service_accounts)
        name = f"{parent}/pipelineJobs/{job_id}"
        if any(stored["name"] == name for stored in self.pipeline_jobs):
            raise VertexError("INVALID_ARGUMENT", f"PipelineJob {name} already exists")
        stored = {**job, "name": name, "state": "PIPELINE_STATE_PENDING",
                  "createTime": _now(), "updateTime": _now()}
        self.pipeline_jobs.append(stored)
        return stored

    def _create_schedule(self, parent: str, query: dict[str, str], schedule: Json) -> Json:
        if not schedule.get("displayName") or len(schedule["displayName"]) > 128:
            raise invalid("schedule.display_name is required, at most 128 characters")
        if error := cron_error(schedule.get("cron", "")):
            raise invalid(f"schedule.cron {schedule.get('cron', '')!r} is invalid: {error}")
        if int(schedule.get("maxConcurrentRunCount") or 0) < 1:
            raise invalid("schedule.max_concurrent_run_count must be positive")
        request = schedule.get("createPipelineJobRequest") or {}
        if request.get("parent") != parent:
            raise invalid(f"schedule.create_pipeline_job_request.parent must be {parent}, got "
                          f"{request.get('parent')!r}")
        check_pipeline_job(request.get("pipelineJob") or {},
                           "schedule.create_pipeline_job_request.pipeline_job",
                           self.service_accounts)
        stored = {**schedule, "name": f"{parent}/schedules/{next(self._ids)}", "state": "ACTIVE",
                  "startTime": _now(), "createTime": _now(), "updateTime": _now()}
        self.schedules.append(stored)
        return stored

    def _get(self, collection: str) -> Callable[..., Json]:
        def get(parent: str, query: dict[str, str], body: Any, id_: str) -> Json:
            name = f"{parent}/{collection}/{id_}"
            stored = self.pipeline_jobs if collection == "pipelineJobs" else self.schedules
            if found := [item for item in stored if item["name"] == name]:
                return found[0]
            raise VertexError("NOT_FOUND", f"{name} not found")
        return get


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Handler(JsonApiHandler):
    """HTTP to VertexApiServer.handle, JSON replies as Google's front end gives them."""
    content_type = "application/json; charset=UTF-8"

    def refuse_body(self, error):
        return 400, invalid(f"Invalid JSON payload received. {error}").body()
