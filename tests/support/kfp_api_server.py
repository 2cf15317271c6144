"""A local stand-in for the Kubeflow Pipelines 2.0.5 API server (v2beta1 REST), for tests.

It answers the calls `kfp.Client` 2.5.0 makes for construction (GET healthz),
`create_experiment` (list by name, then create), `create_run_from_pipeline_package`,
`create_recurring_run`, `get_run`, `get_recurring_run` and `get_experiment`, and refuses
what KFP 2.0.5 refuses, in the order it checks, with its gRPC codes and messages.
Sources (github.com/kubeflow/pipelines at tag 2.0.5 unless noted):
  - routes, JSON names: backend/api/v2beta1/{experiment,run,recurring_run,healthz}.proto;
    healthz body: backend/src/apiserver/main.go
  - request conversion, max_concurrency and cron checks: backend/src/apiserver/server/
    api_converter.go (toModelRun, toModelJob, toModelExperiment); cron grammar:
    github.com/robfig/cron v1.2.0 parser.go, spec.go (Parse: 5 or 6 fields, seconds first)
  - wrap messages: backend/src/apiserver/server/{run,job,experiment}_server.go and
    backend/src/apiserver/resource/resource_manager.go (CreateRun, CreateJob,
    fetchTemplateFromPipelineSpec, GetValidExperimentNamespacePair)
  - spec checks: backend/src/apiserver/template/{template,v2_template}.go (strict protojson
    parse, "KFP only supports schema version 2.1.0 ...", validatePipelineJobInputs); bodies
    {"pipeline_spec", "platform_spec"}: backend/src/apiserver/server/api_util.go
  - compile checks: backend/src/v2/compiler/visitor.go (Accept/dfs refuses a `resolver`
    executor with "non-container and non-importer executor not implemented" before
    argocompiler/argo.go's "resolver not implemented yet" can be reached)
  - error shape: backend/src/common/util/error.go (UserError.GRPCStatus, ToGRPCError) and
    grpc-gateway v1.16.0 runtime/errors.go (DefaultHTTPError, HTTPStatusFromCode).

Multi-user mode (`KfpApiServer(multi_user=True, users=..., tokens=..., cookies=...)`), as the
Kubeflow platform runs KFP (MULTIUSER=true):
  - healthz says "multi_user": true and needs no identity (apiserver/main.go);
  - identity, tried in KFP's order (auth/auth.go GetAuthenticators): the `kubeflow-userid`
    header with prefix "" (HTTPHeaderAuthenticator, auth/authenticator_http_headers.go; header
    and prefix as manifests/kustomize/base/installs/multi-user/api-service/deployment-patch.yaml
    sets KUBEFLOW_USERID_HEADER/PREFIX), then `Authorization: Bearer <token>`
    (TokenReviewAuthenticator, auth/authenticator_token_review.go: a TokenReview with audience
    pipelines.kubeflow.org; `tokens` maps the tokens the stand-in's "Kubernetes" accepts to
    their user, e.g. "system:serviceaccount:team-a:default-editor"); header parsing and its
    errors: auth/util.go; no identity: resource/resource_manager.go IsAuthorized's
    Unauthenticated (HTTP 401) wrapping every authenticator's error, aggregated as
    k8s.io/apimachinery v0.24.3 util/errors does (duplicates once, several in brackets);
  - `cookies` stands for the auth proxy in front of KFP (Dex + oidc-authservice, or
    oauth2-proxy, behind Istio): on the platform a valid session cookie never reaches KFP,
    the proxy turns it into the `kubeflow-userid` header; here a known "name=value" cookie
    sets that header (and replaces one the client sent, as the proxy's header does), an
    unknown one is dropped (the real proxy would redirect to its login page instead);
  - authorization: IsAuthorized's SubjectAccessReview becomes `users` (user -> namespaces
    they may use, what a Kubeflow Profile's RoleBindings grant); any other namespace is
    PermissionDenied (HTTP 403) with the review's reason empty, as RBAC leaves it;
  - namespaces, checks and wrap messages in KFP's order: server/experiment_server.go
    (createExperiment, listExperiments, getExperiment, canAccessExperiment: "An experiment
    cannot have an empty namespace in multi-user mode"), server/run_server.go (createRun,
    getRun, canAccessRun), server/job_server.go (createJob, getJob, canAccessJob),
    resource/resource_manager.go GetValidExperimentNamespacePair ("Experiment id can not be
    empty in multi-user mode"); runs and recurring runs take their experiment's namespace;
    error texts and codes: common/util/error.go (NewUnauthenticatedError,
    NewPermissionDeniedError, NewBadRequestError) and grpc-gateway's HTTPStatusFromCode.
Not reproduced: the Go stack frames that "%+v" puts between the lines of "Internal error:"
messages; pipeline versions; list filters other than name equality; checks kfp.Client cannot
trigger (empty names, periodic intervals, malformed DAGs); in multi-user mode the shared-read
mode, token audiences (a token is known or not), Kubernetes' own TokenReview error text
(`TOKEN_REVIEW_ERROR` stands for it), the resources' Kubernetes names in a denial (a run's
display name stands for its workflow name) and the proxy's redirects. Real KFP answers
unknown paths with a plain-text "Not Found"; this answers grpc-gateway-style JSON.
"""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from typing import Any, Callable

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

from tests.support.json_http import JsonApiHandler

# gRPC codes KFP uses here, and grpc-gateway's HTTP status for each.
UNKNOWN, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, UNIMPLEMENTED, INTERNAL = 2, 3, 5, 6, 12, 13
PERMISSION_DENIED, ABORTED, UNAUTHENTICATED = 7, 10, 16
HTTP_STATUS = {UNKNOWN: 500, INVALID_ARGUMENT: 400, NOT_FOUND: 404, ALREADY_EXISTS: 409,
               UNIMPLEMENTED: 501, INTERNAL: 500, PERMISSION_DENIED: 403, ABORTED: 409,
               UNAUTHENTICATED: 401}
API = "/apis/v2beta1"
Json = dict[str, Any]

# Multi-user mode (auth/auth.go, auth/util.go, common/const.go, the multi-user manifests).
USERID_HEADER, USERID_PREFIX = "kubeflow-userid", ""
BEARER_HEADER, BEARER_PREFIX = "Authorization", "Bearer "
IDENTITY_HEADER_MISSING = "Request header error: there is no user identity header."
NO_IDENTITY = "Failed to check authorization. User identity is empty in the request header"
TOKEN_REVIEW_ERROR = "[invalid bearer token]"  # Kubernetes' text, not KFP's: a stand-in


class KfpError(Exception):
    """A KFP error: wrap messages, outermost first, and for a util.UserError the external
    message that travels in the status details (None for a plain Go error)."""

    def __init__(self, code: int, chain: list[str], external: str | None) -> None:
        super().__init__(": ".join(chain))
        self.code, self.chain, self.external = code, chain, external

    @classmethod
    def invalid_input(cls, message: str) -> KfpError:  # util.NewInvalidInputError
        return cls(INVALID_ARGUMENT, [f"Invalid input error: {message}"], message)

    @classmethod
    def invalid_spec(cls, message: str) -> KfpError:  # ...WithDetails(ErrorInvalidPipelineSpec)
        return cls(INVALID_ARGUMENT, [f"InvalidInputError: {message}", "pipeline spec is invalid"],
                   message)

    @classmethod
    def not_found(cls, kind: str, name: str) -> KfpError:  # util.NewResourceNotFoundError
        message = f"{kind} {name} not found"
        return cls(NOT_FOUND, [f"ResourceNotFoundError: {message}"], message)

    @classmethod
    def unauthenticated(cls, message: str, cause: str) -> KfpError:  # util.NewUnauthenticatedError
        return cls(UNAUTHENTICATED, [f"Unauthenticated: {message}", cause], message)

    @classmethod
    def permission_denied(cls, message: str) -> KfpError:  # util.NewPermissionDeniedError
        return cls(PERMISSION_DENIED, [f"PermissionDenied: {message}", "Unauthorized access"],
                   message)

    @classmethod
    def bad_request(cls, message: str) -> KfpError:  # util.NewBadRequestError(errors.New(m), m)
        return cls(ABORTED, [f"BadRequestError: {message}", message], message)

    @classmethod
    def plain(cls, message: str) -> KfpError:
        return cls(INTERNAL, [message], None)

    @classmethod
    def unmodelled(cls, what: str) -> KfpError:  # this fake's limits, not KFP's
        message = f"fake KFP server does not model {what}"
        return cls(UNIMPLEMENTED, [message], message)

    def wrap(self, message: str) -> KfpError:  # util.Wrap / util.Wrapf keep the code
        return KfpError(self.code, [message, *self.chain], self.external)

    def internal(self, message: str) -> KfpError:  # util.NewInternalServerError(err, message)
        return KfpError(INTERNAL, [f"InternalServerError: {message}", *self.chain],
                        "Internal Server Error")

    def status(self) -> Json:
        """The grpc-gateway JSON body once ToGRPCError has converted this error."""
        if self.external is None:  # plain errors are printed with "%+v": cause first
            message = "Internal error: " + "\n".join(reversed(self.chain))
            detail_code, detail = UNKNOWN, message
        else:
            message, detail_code, detail = ": ".join(self.chain), self.code, self.external
        return {"error": message, "code": self.code, "message": message, "details": [
            {"@type": "type.googleapis.com/google.rpc.Status", "code": detail_code,
             "message": detail}]}


def _quote(text: str) -> str:  # Go's %q, for the names that occur here
    return json.dumps(text, ensure_ascii=False)


def _strict(doc: Any, message: Any) -> Any:
    """`message` filled from `doc`, or None if that fails (unknown fields fail, as in protojson)."""
    try:
        return json_format.ParseDict(doc, message)
    except (json_format.ParseError, TypeError, AttributeError):
        return None


def parse_template(struct: Json) -> tuple[pb.PipelineSpec, pb.PlatformSpec | None]:
    """template.New on the YAML the server makes of a request's `pipeline_spec` Struct."""
    docs = [struct] if "pipeline_spec" not in struct else [
        struct["pipeline_spec"], struct.get("platform_spec")]
    docs = [doc for doc in docs if isinstance(doc, dict) and doc]
    specs = [spec for spec in (_strict(doc, pb.PipelineSpec()) for doc in docs)  # isPipelineSpec
             if spec is not None and spec.pipeline_info.name and spec.HasField("root")]
    if not specs:
        raise KfpError.invalid_spec("unknown template format")
    if len(specs) > 1:
        raise KfpError.invalid_spec("multiple pipeline specs provided")
    if specs[0].schema_version != "2.1.0":
        raise KfpError.invalid_spec("KFP only supports schema version 2.1.0, but the pipeline "
                                    f"spec has version {specs[0].schema_version}")
    platforms = [_strict(doc, pb.PlatformSpec()) for doc in docs]  # others are skipped
    return specs[0], next((p for p in platforms if p and "kubernetes" in p.platforms), None)


ParameterType = pb.ParameterType
_NUMBER = (lambda value: isinstance(value, (int, float)) and not isinstance(value, bool), "")
_VALUE_KINDS: dict[int, tuple[Callable[[Any], bool], str]] = {
    ParameterType.NUMBER_DOUBLE: _NUMBER, ParameterType.NUMBER_INTEGER: _NUMBER,
    ParameterType.STRING: (lambda value: isinstance(value, str), "string"),
    ParameterType.BOOLEAN: (lambda value: isinstance(value, bool), "bool"),
    ParameterType.LIST: (lambda value: isinstance(value, list), "list"),
    ParameterType.STRUCT: (lambda value: isinstance(value, dict), "struct")}


def check_inputs(spec: pb.PipelineSpec, values: Json) -> None:
    """V2Spec.validatePipelineJobInputs: run arguments against the root's parameters."""
    required = spec.root.input_definitions.parameters
    for name in sorted(required):  # Go walks a map; sorting makes the first error stable
        param, prefix = required[name], f"input parameter {name}"
        if name not in values:
            if not param.is_optional and not param.HasField("default_value"):
                raise KfpError.invalid_input(f"parameter {name} is not optional, yet has neither "
                                             "default value nor user provided value")
        elif param.parameter_type == ParameterType.TASK_FINAL_STATUS:
            raise KfpError.invalid_input(f"{prefix} requires type TASK_FINAL_STATUS, which is "
                                         "invalid for root component")
        elif param.parameter_type not in _VALUE_KINDS:
            raise KfpError.invalid_input(f"{prefix} has unspecified type")
        elif not _VALUE_KINDS[param.parameter_type][0](values[name]):
            kind = _VALUE_KINDS[param.parameter_type][1]
            wrong = (f"requires type {kind}, but the input parameter is not of {kind} value type"
                     if kind else "requires type double or integer, but the parameter value is "
                     "not of number value type")
            raise KfpError.invalid_input(f"{prefix} {wrong}")
    if extra := [name for name in values if name not in required]:
        raise KfpError.invalid_input(
            f"parameter(s) provided are not required by pipeline: {', '.join(extra)}")


def check_compiles(spec: pb.PipelineSpec) -> None:
    """compiler.Accept's depth-first walk from the root: every executor reached must be a
    container or an importer. Failures are plain Go errors, hence reported as Internal."""
    deploy = pb.PipelineDeploymentConfig()
    try:  # GetDeploymentConfig allows unknown fields
        json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), deploy,
                              ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise KfpError.plain(str(error)) from None
    visited: set[str] = set()

    def visit(name: str, component: pb.ComponentSpec) -> None:
        if name in visited:
            return
        visited.add(name)
        fail = f"error processing component name={_quote(name)}: "
        if label := component.executor_label:
            if label not in deploy.executors:
                raise KfpError.plain(f"{fail}executor(label={_quote(label)}) not found in "
                                     "deployment config")
            if deploy.executors[label].WhichOneof("spec") not in ("container", "importer"):
                raise KfpError.plain(f"{fail}executor(label={_quote(label)}): non-container "
                                     "and non-importer executor not implemented")
            return
        for key in sorted(component.dag.tasks):  # sorted, as KFP walks them
            ref = component.dag.tasks[key].component_ref.name
            if ref not in spec.components:
                raise KfpError.plain(f"{fail}cannot find component ref name={_quote(ref)}")
            visit(ref, spec.components[ref])
    visit("root", spec.root)


_NAMES = {4: {name: i + 1 for i, name in enumerate("jan feb mar apr may jun jul aug sep oct nov "
                                                     "dec".split())},
          5: {name: i for i, name in enumerate("sun mon tue wed thu fri sat".split())}}
_CRON_BOUNDS = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]  # sec min hour dom mon dow
_GO_DURATION = re.compile(r"[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)")


def cron_error(spec: str) -> str | None:
    """robfig/cron v1.2.0 cron.Parse: None if it accepts `spec`, else its error text."""
    if not spec:
        return "Empty spec string"
    if spec.startswith("@every "):  # time.ParseDuration has finer texts; this is the usual one
        return None if _GO_DURATION.fullmatch(spec[7:]) else (
            f'Failed to parse duration {spec}: time: invalid duration "{spec[7:]}"')
    if spec.startswith("@"):
        return None if spec in {"@yearly", "@annually", "@monthly", "@weekly", "@daily",
                                "@midnight", "@hourly"} else f"Unrecognized descriptor: {spec}"
    fields = spec.split()
    if not 5 <= len(fields) <= 6:  # the day-of-week field is optional, seconds are not
        return f"Expected 5 to 6 fields, found {len(fields)}: {spec}"
    try:
        for place, field in enumerate(fields):
            for expr in filter(None, field.split(",")):
                _check_cron_range(expr, *_CRON_BOUNDS[place], _NAMES.get(place, {}))
    except ValueError as error:
        return str(error)
    return None


def _check_cron_range(expr: str, low: int, high: int, names: dict[str, int]) -> None:
    """robfig/cron getRange: one "start[-end][/step]" item of a field, in its check order."""
    def number(text: str, names: dict[str, int] = {}) -> int:
        if text.lower() in names:
            return names[text.lower()]
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError(f'Failed to parse int from {text}: strconv.Atoi: parsing "{text}": '
                             "invalid syntax")
        if int(text) < 0:
            raise ValueError(f"Negative number ({int(text)}) not allowed: {text}")
        return int(text)
    range_and_step, bounds = expr.split("/"), expr.split("/")[0].split("-")
    if bounds[0] in ("*", "?"):
        start, end = low, high
    else:
        start = number(bounds[0], names)
        if len(bounds) > 2:
            raise ValueError(f"Too many hyphens: {expr}")
        end = number(bounds[1], names) if len(bounds) == 2 else start
    if len(range_and_step) > 2:
        raise ValueError(f"Too many slashes: {expr}")
    step = number(range_and_step[1]) if len(range_and_step) == 2 else 1
    end = high if len(range_and_step) == 2 and len(bounds) == 1 else end  # "N/s" is "N-max/s"
    for failed, message in [(start < low, f"Beginning of range ({start}) below minimum ({low})"),
                            (end > high, f"End of range ({end}) above maximum ({high})"),
                            (start > end, f"Beginning of range ({start}) beyond end of range "
                                          f"({end})"),
                            (step == 0, "Step of range should be a positive number")]:
        if failed:
            raise ValueError(f"{message}: {expr}")


def _aggregate(errors: list[str]) -> str:
    """k8s.io/apimachinery v0.24.3 utilerrors.NewAggregate(errors).Error()."""
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def _resource_attributes(namespace: str, verb: str, resource: str, name: str) -> str:
    """authorizationv1.ResourceAttributes as "%+v" prints it (its generated String())."""
    return (f"&ResourceAttributes{{Namespace:{namespace},Verb:{verb},Group:pipelines.kubeflow."
            f"org,Version:v1beta1,Resource:{resource},Subresource:,Name:{name},}}")


class KfpApiServer:
    """Fake KFP API server on 127.0.0.1:<free port>: `with KfpApiServer() as server:`, then
    `kfp.Client(host=server.host)`. Accepted resources and refusals are recorded.

    `multi_user=True` runs it as the Kubeflow platform does (module docstring): `users` maps a
    user to the namespaces they may use, `tokens` a bearer token to its user, `cookies` an
    auth-proxy session cookie ("authservice_session=...") to its user; `identities` records
    (path, user) for every call an identity was found for."""

    def __init__(self, multi_user: bool = False, users: dict[str, list[str]] | None = None,
                 tokens: dict[str, str] | None = None,
                 cookies: dict[str, str] | None = None) -> None:
        self.multi_user = multi_user
        self.users = {user: set(namespaces) for user, namespaces in (users or {}).items()}
        self.tokens, self.cookies = dict(tokens or {}), dict(cookies or {})
        self.identities: list[tuple[str, str]] = []
        self.experiments: dict[str, Json] = {}
        self.runs: list[Json] = []  # accepted request bodies plus the fields the server sets
        self.recurring_runs: list[Json] = []
        self.refusals: list[tuple[str, str]] = []  # (path, gRPC status message)
        self._lock = threading.Lock()
        self._request: tuple[str, dict[str, list[str]]] = ("", {})  # (path, headers), locked
        self._run_namespaces: dict[str, str] = {}  # model.Run.Namespace (not in the v2 API)
        self._routes: list[tuple[str, str, Callable[..., Json]]] = [
            ("GET", "healthz", lambda query, body: {
                "commit_sha": "unknown", "tag_name": "unknown", "multi_user": multi_user}),
            ("GET", "experiments", self._list_experiments),
            ("POST", "experiments", self._create_experiment),
            ("GET", "experiments/([^/:]+)", self._get_experiment),
            ("POST", "runs", self._create_run),
            ("GET", "runs/([^/:]+)", self._get_run),
            ("POST", "recurringruns", self._create_recurring_run),
            ("GET", "recurringruns/([^/:]+)", self._get_recurring_run)]
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.api = self  # type: ignore[attr-defined]
        self.host = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(  # a short poll keeps shutdown quick
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> KfpApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def handle(self, method: str, path: str, query: dict[str, str], body: Any,
               headers: dict[str, list[str]] | None = None) -> tuple[int, Json]:
        """(HTTP status, JSON body) for one request; refusals are recorded. `headers`: lower-case
        name -> values, after the auth proxy (multi-user mode only reads them)."""
        for route_method, route, endpoint in self._routes:
            if route_method == method and (match := re.fullmatch(f"{API}/{route}", path)):
                with self._lock:
                    self._request = (path, self._behind_auth_proxy(headers or {}))
                    try:
                        return 200, endpoint(query, body, *match.groups())
                    except (ValueError, TypeError, AttributeError) as malformed:
                        # Malformed fields; grpc-gateway refuses them when decoding.
                        refusal = KfpError(INVALID_ARGUMENT, [str(malformed)], str(malformed))
                    except KfpError as refused:
                        refusal = refused
                    self.refusals.append((path, refusal.status()["message"]))
                    return HTTP_STATUS[refusal.code], refusal.status()
        return 404, {"error": "Not Found", "code": NOT_FOUND, "message": "Not Found", "details": []}

    # ------------------------------------------------------------ multi-user: who may do what

    def _behind_auth_proxy(self, headers: dict[str, list[str]]) -> dict[str, list[str]]:
        """What KFP receives: a known session cookie becomes the kubeflow-userid header."""
        pairs = [pair.strip() for value in headers.get("cookie", []) for pair in value.split(";")]
        users = [self.cookies[pair] for pair in pairs if pair in self.cookies]
        headers = {name: values for name, values in headers.items() if name != "cookie"}
        if users:
            headers[USERID_HEADER] = users[:1]
        return headers

    def _header(self, header: str, prefix: str) -> str:
        """auth/util.go singlePrefixedHeaderFromMetadata."""
        values = self._request[1].get(header.lower(), [])
        if not values:
            raise KfpError.unauthenticated(IDENTITY_HEADER_MISSING, IDENTITY_HEADER_MISSING)
        if len(values) != 1:
            raise KfpError.bad_request(f"Request header error: unexpected number of '{header}' "
                                       f"headers. Expect 1 got {len(values)}")
        if not values[0].startswith(prefix):
            raise KfpError.bad_request(f"Header '{header}' is incorrectly formatted. Expected "
                                       f"prefix '{prefix}'")
        return values[0][len(prefix):]

    def _user_from_token(self) -> str:
        """TokenReviewAuthenticator.GetUserIdentity (a TokenReview of `tokens`)."""
        token = self._header(BEARER_HEADER, BEARER_PREFIX)
        if token not in self.tokens:
            raise KfpError.unauthenticated(
                f"Review.Status.Authenticated is false. Error {TOKEN_REVIEW_ERROR}",
                "Failed to authenticate token review").wrap("Authentication failure")
        return self.tokens[token]

    def _authorize(self, namespace: str, verb: str, resource: str, name: str = "") -> None:
        """ResourceManager.IsAuthorized: the first authenticator that finds a user, then the
        SubjectAccessReview (here: `users`)."""
        errors, user = [], ""
        for authenticate in (lambda: self._header(USERID_HEADER, USERID_PREFIX),
                             self._user_from_token):
            try:
                user = authenticate()
                break
            except KfpError as error:
                errors.append(str(error))
        if not user:
            raise KfpError.unauthenticated(NO_IDENTITY, _aggregate(errors))
        self.identities.append((self._request[0], user))
        if namespace not in self.users.get(user, ()):
            raise KfpError.permission_denied(
                f"User '{user}' is not authorized with reason:  (request: "
                f"{_resource_attributes(namespace, verb, resource, name)})")

    def _can_access_experiment(self, verb: str, namespace: str = "", name: str = "",
                               experiment_id: str = "") -> None:
        """ExperimentServer.canAccessExperiment."""
        if experiment_id:
            if experiment_id not in self.experiments:
                raise KfpError.not_found("Experiment", experiment_id).wrap(
                    "Failed to authorize with the experiment ID")
            experiment = self.experiments[experiment_id]
            namespace, name = experiment["namespace"], name or experiment["display_name"]
        if namespace in ("", "-"):  # IsEmptyNamespace
            raise KfpError.invalid_input("An experiment cannot have an empty namespace in "
                                         "multi-user mode")
        try:
            self._authorize(namespace, verb, "experiments", name)
        except KfpError as error:
            raise error.wrap("Failed to authorize with API") from None

    def _can_access_run(self, verb: str, namespace: str, run_id: str = "",
                        name: str = "") -> None:
        """RunServer.canAccessRun (the run's namespace resolved by the caller)."""
        if namespace in ("", "-"):
            raise KfpError.invalid_input("A run cannot have an empty namespace in multi-user mode")
        try:
            self._authorize(namespace, verb, "runs", name)
        except KfpError as error:
            raise error.wrap(f"Failed to access run {run_id}. Check if you have access to "
                             f"namespace {namespace}") from None

    def _can_access_job(self, verb: str, namespace: str, name: str = "") -> None:
        """JobServer.canAccessJob."""
        if namespace in ("", "-"):
            raise KfpError.invalid_input("a recurring run cannot have an empty namespace in "
                                         "multi-user mode")
        try:
            self._authorize(namespace, verb, "jobs", name)
        except KfpError as error:
            raise error.wrap("failed to authorize with API") from None

    # ------------------------------------------------------------ endpoints

    def _list_experiments(self, query: dict[str, str], body: Any) -> Json:
        names = set()
        for predicate in json.loads(query.get("filter") or "{}").get("predicates", []):
            if (predicate.get("operation") not in (1, "EQUALS")
                    or predicate.get("key") not in ("display_name", "name")):
                raise KfpError.unmodelled(f"the filter {predicate}")
            names.add(predicate.get("stringValue", predicate.get("string_value")))
        namespace = ""  # ReplaceNamespace: "" in single-user mode
        if self.multi_user:
            namespace = query.get("namespace", "")
            try:
                self._can_access_experiment("list", namespace)
            except KfpError as error:
                raise error.wrap("Failed to authorize with API").wrap(
                    "List experiments failed") from None
        found = [e for e in self.experiments.values() if (not names or e["display_name"] in names)
                 and e.get("namespace", "") == namespace]
        return {"experiments": found, "total_size": len(found)} if found else {}

    def _create_experiment(self, query: dict[str, str], body: Json) -> Json:
        name = body.get("display_name", "")
        namespace = (body.get("namespace") or "") if self.multi_user else ""
        if self.multi_user:
            try:
                self._can_access_experiment("create", namespace, name)
            except KfpError as error:
                raise error.wrap("Failed to authorize the request").wrap(
                    "Failed to create a experiment") from None
        if any(e["display_name"] == name and e.get("namespace", "") == namespace
               for e in self.experiments.values()):  # names are unique per namespace
            message = (f"Failed to create a new experiment. The name {name} already exists. "
                       "Please specify a new name")
            raise KfpError(ALREADY_EXISTS, [f"Already exist error: {message}"], message).wrap(
                "Failed to create a experiment")
        return self._add_experiment(name, body.get("description", ""), namespace)

    def _add_experiment(self, name: str, description: str, namespace: str = "") -> Json:
        experiment = {"experiment_id": str(uuid.uuid4()), "display_name": name,
                      "description": description, "created_at": _now(),
                      "storage_state": "AVAILABLE"}  # single-user mode: namespace ""
        if self.multi_user:
            experiment["namespace"] = namespace
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _get_experiment(self, query: dict[str, str], body: Any, id_: str) -> Json:
        if self.multi_user:
            try:
                self._can_access_experiment("get", experiment_id=id_)
            except KfpError as error:
                raise error.wrap("Failed to authorize the request").wrap(
                    "Failed to fetch experiment") from None
        if id_ not in self.experiments:
            raise KfpError.not_found("Experiment", id_).wrap("Failed to fetch experiment")
        return self.experiments[id_]

    def _experiment_id(self, body: Json, kind: str) -> str:
        """GetValidExperimentNamespacePair: a known experiment, else the "Default" one
        (multi-user mode: a known experiment in the namespace the body claims, if any)."""
        combination = f"Failed to create a {kind} due to invalid experimentId and namespace " \
                      "combination"
        if self.multi_user and not body.get("experiment_id"):
            raise KfpError.invalid_input("Experiment id can not be empty in multi-user mode"
                                         ).wrap(combination)
        if not (id_ := body.get("experiment_id")):
            default = [e for e in self.experiments.values() if e["display_name"] == "Default"]
            return (default or [self._add_experiment("Default", "All runs created without "
                    "specifying an experiment will be grouped here.")])[0]["experiment_id"]
        if id_ not in self.experiments:
            raise KfpError.not_found("Experiment", id_).wrap(
                f"Failed to fetch namespace from experiment {id_}").wrap(
                f"Failed to fetch namespace for experiment {id_}").wrap(
                f"Failed to create a {kind} due to invalid experimentId and namespace combination")
        claimed, namespace = body.get("namespace") or "", self.experiments[id_].get("namespace", "")
        if self.multi_user and claimed and claimed != namespace:
            raise KfpError.invalid_input(f"Experiment {id_} belongs to namespace '{namespace}' "
                                         f"instead of '{claimed}'").wrap(combination)
        return id_

    @staticmethod
    def _workflow(body: Json, fetch_failed: str, compile_failed: str) -> None:
        """ResourceManager.CreateRun/CreateJob up to submitting to Argo: template, inputs,
        compiler, each failure wrapped as the caller does."""
        if body.get("pipeline_version_reference"):
            raise KfpError.unmodelled("pipeline versions")
        if not body.get("pipeline_spec"):
            raise KfpError.invalid_input(
                "Failed to fetch a template with an empty pipeline spec manifest"
            ).internal(fetch_failed)
        try:
            spec = parse_template(body["pipeline_spec"])[0]
        except KfpError as error:
            raise error.wrap("Failed to fetch a template with an invalid pipeline spec manifest"
                             ).internal(fetch_failed) from None
        try:
            check_inputs(spec, (body.get("runtime_config") or {}).get("parameters") or {})
        except KfpError as error:
            raise error.wrap("invalid pipeline job inputs").wrap(compile_failed) from None
        try:
            check_compiles(spec)
        except KfpError as error:
            raise error.wrap("Failed to compile job").wrap(compile_failed) from None

    def _create_run(self, query: dict[str, str], body: Json) -> Json:
        try:
            experiment_id = self._experiment_id(body, "run")
            namespace = self.experiments[experiment_id].get("namespace", "")
            if self.multi_user:  # RunServer.createRun, before the resource manager
                if not namespace:
                    raise KfpError.invalid_input("A run cannot have an empty namespace in "
                                                 "multi-user mode")
                try:
                    self._can_access_run("create", namespace)
                except KfpError as error:
                    raise error.wrap("Failed to create a run due to authorization error. Check "
                                     f"if you have write permissions to namespace {namespace}"
                                     ) from None
            self._workflow(body, "Failed to create a run due to error fetching manifest",
                           "Failed to generate the ExecutionSpec")
        except KfpError as error:
            raise error.wrap("Failed to create a new run") from None
        run = {**body, "run_id": str(uuid.uuid4()), "experiment_id": experiment_id,
               "service_account": body.get("service_account") or "pipeline-runner",
               "storage_state": "AVAILABLE", "state": "PENDING", "created_at": _now(),
               "scheduled_at": _now(), "finished_at": "1970-01-01T00:00:00Z"}
        self.runs.append(run)
        self._run_namespaces[run["run_id"]] = namespace
        return run

    def _get_run(self, query: dict[str, str], body: Any, id_: str) -> Json:
        found = [run for run in self.runs if run["run_id"] == id_]
        missing = KfpError.not_found("Run", id_).wrap(f"Failed to fetch run {id_}")
        if self.multi_user:
            try:
                if not found:
                    raise missing.wrap(f"Failed to authorize with the run ID {id_}")
                self._can_access_run("get", self._run_namespaces[id_], id_,
                                     found[0]["display_name"])
            except KfpError as error:
                raise error.wrap("Failed to authorize the request").wrap(
                    "Failed to get a run") from None
        if found:
            return found[0]
        raise missing.wrap("Failed to get a run")

    def _create_recurring_run(self, query: dict[str, str], body: Json) -> Json:
        """toModelJob's checks first, then JobServer.createJob and ResourceManager.CreateJob."""
        conversion = "Failed to create a recurring run due to conversion error"
        max_concurrency = int(body.get("max_concurrency") or 0)  # int64: a number or a string
        trigger = body.get("trigger") or {}
        if not 1 <= max_concurrency <= 10:  # "at leas" is KFP's spelling
            raise KfpError.invalid_input(
                "Max concurrency of a recurring run must be at leas 1 and at most 10. "
                f"Received {max_concurrency}").wrap(conversion)
        if "cron_schedule" in trigger and (
                error := cron_error((trigger["cron_schedule"] or {}).get("cron") or "")):
            raise KfpError.invalid_input("Schedule cron is not a supported format(https://godoc"
                                         f".org/github.com/robfig/cron). Error: {error}"
                                         ).wrap(conversion)
        try:
            experiment_id = self._experiment_id(body, "recurring run")
            namespace = self.experiments[experiment_id].get("namespace", "")
            if self.multi_user:  # JobServer.createJob, before the resource manager
                if not namespace:
                    raise KfpError.invalid_input("Recurring run cannot have an empty namespace "
                                                 "in multi-user mode")
                try:
                    self._can_access_job("create", namespace, body.get("display_name", ""))
                except KfpError as error:
                    raise error.wrap("Failed to create a recurring run due to authorization "
                                     "error. Check if you have write permission to namespace "
                                     f"{namespace}") from None
            self._workflow(body, "Failed to create a recurring run with an invalid pipeline spec "
                           "manifest", "Failed to create a recurring run during scheduled "
                           "workflow creation")
        except KfpError as error:
            raise error.wrap("Failed to create a recurring run") from None
        enabled = body.get("mode") == "ENABLE"
        recurring_run = {**body, "recurring_run_id": str(uuid.uuid4()),
                         "experiment_id": experiment_id, "max_concurrency": str(max_concurrency),
                         "mode": "ENABLE" if enabled else "DISABLE", "namespace": namespace,
                         "status": "ENABLED" if enabled else "DISABLED",
                         "service_account": body.get("service_account") or "pipeline-runner",
                         "created_at": _now(), "updated_at": _now()}
        self.recurring_runs.append(recurring_run)
        return recurring_run

    def _get_recurring_run(self, query: dict[str, str], body: Any, id_: str) -> Json:
        found = [run for run in self.recurring_runs if run["recurring_run_id"] == id_]
        if self.multi_user:
            try:
                if not found:
                    raise KfpError.not_found("Job", id_).wrap(
                        "failed to authorize with the recurring run ID")
                self._can_access_job("get", found[0]["namespace"], found[0]["display_name"])
            except KfpError as error:
                raise error.wrap("Failed to authorize the request").wrap(
                    "Failed to fetch a recurring run") from None
        if found:
            return found[0]
        raise KfpError.not_found("Job", id_).wrap("Failed to fetch a recurring run")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Handler(JsonApiHandler):
    """Turns HTTP requests into KfpApiServer.handle calls; replies JSON like grpc-gateway."""

    def refuse_body(self, error):  # grpc-gateway refuses undecodable bodies likewise
        return 400, KfpError(INVALID_ARGUMENT, [str(error)], str(error)).status()

    def call(self, method, path, query, body):
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():  # repeated headers stay separate
            headers.setdefault(name.lower(), []).append(value)
        return self.server.api.handle(  # type: ignore[attr-defined]
            method, path, query, body, headers)
