"""Multi-user Kubeflow (the Kubeflow platform): `cgd kubeflow submit|schedule` through the real
kfp 2.5.0 client against tests/support/kfp_api_server.py in multi-user mode (127.0.0.1 only), and that
mode itself (KFP 2.0.5's authenticators, namespace checks and refusals)."""

from __future__ import annotations

import http.client
import json
import logging
from urllib.parse import urlsplit

import kfp
import kfp_server_api
import pytest
import yaml

from tests.support.kfp_api_server import KfpApiServer
from tests.support.test_kfp_api_server import SPEC
from tests.kubeflow.test_compiler_and_client import IMAGE, config_dict, error_lines, write_config

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
ROBOT = "system:serviceaccount:team-a:default-editor"  # the token file's ServiceAccount
FILE_TOKEN, ENV_TOKEN = "file-token-3f9c2e7a", "env-token-81b04d6c"  # never to be printed
COOKIE = "authservice_session=cookie-5d2e90aa"
USERS = {ALICE: ["team-a"], BOB: ["team-a"], ROBOT: ["team-a"], CAROL: ["team-b"]}
CREDENTIAL_VARIABLES = ("KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_TOKEN", "KF_PIPELINES_COOKIE")
CREDENTIALS = ["token file", "bearer token", "cookie"]
WHO = {"token file": ROBOT, "bearer token": BOB, "cookie": ALICE}
SECRETS = (FILE_TOKEN, ENV_TOKEN, COOKIE.split("=", 1)[1])


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory):
    """`cgd kubeflow compile` once for this module: the compiled PipelineJob's path."""
    from cli.main import main

    tmp = tmp_path_factory.mktemp("kubeflow_multi_user")
    config_file, _ = write_config(tmp)
    out = tmp / "pipeline.json"
    assert main(["kubeflow", "compile", "--config", config_file, "--image", IMAGE,
                 "--output", str(out)]) == 0
    return str(out)


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch, tmp_path):
    """Nothing from this machine: no credential variables, no in-cluster token at the default
    path, no ~/.config/kfp/context.json (kfp.Client reads its namespace and cookie)."""
    import kubeflow.credentials

    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(kubeflow.credentials, "SA_TOKEN_DEFAULT_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))


@pytest.fixture
def server():
    with KfpApiServer(multi_user=True, users=USERS, tokens={FILE_TOKEN: ROBOT, ENV_TOKEN: BOB},
                      cookies={COOKIE: ALICE}) as running:
        yield running


def use_credential(kind: str, monkeypatch, tmp_path) -> None:
    if kind == "token file":  # as the projected ServiceAccount token in a pod
        token = tmp_path / "token"
        token.write_text(FILE_TOKEN + "\n")
        monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    elif kind == "bearer token":
        monkeypatch.setenv("KF_PIPELINES_TOKEN", ENV_TOKEN)
    else:
        monkeypatch.setenv("KF_PIPELINES_COOKIE", COOKIE)


def cgd(action: list[str], pipeline: str, server: KfpApiServer, tmp_path, *flags: str,
        **kubeflow) -> int:
    from cli.main import main

    config_file, _ = write_config(tmp_path, **dict({"host": server.host}, **kubeflow))
    return main(["kubeflow", *action, "--config", config_file, "--pipeline", pipeline, *flags])


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


SUBMIT, SCHEDULE = ["submit"], ["schedule", "--cron", "0 3 * * 0"]


# ------------------------------------------------------------------ cgd kubeflow submit|schedule

@pytest.mark.slow
@pytest.mark.parametrize("kind", CREDENTIALS)
def test_submit_with_each_credential_lands_in_the_namespace(
        kind, pipeline_file, server, tmp_path, monkeypatch, capsys, caplog):
    use_credential(kind, monkeypatch, tmp_path)
    with caplog.at_level(logging.INFO, logger="cgd"):
        assert cgd(SUBMIT, pipeline_file, server, tmp_path, "--namespace", "team-a",
                   "--experiment", "cars") == 0
    assert server.refusals == []
    [run] = server.runs
    experiment = server.experiments[run["experiment_id"]]
    assert (experiment["display_name"], experiment["namespace"]) == ("cars", "team-a")
    assert {user for _, user in server.identities} == {WHO[kind]}
    variable = {"token file": "KF_PIPELINES_SA_TOKEN_PATH", "bearer token": "KF_PIPELINES_TOKEN",
                "cookie": "KF_PIPELINES_COOKIE"}[kind]
    assert any("authenticating with" in m and variable in m for m in caplog.messages)
    captured = capsys.readouterr()
    assert_no_secret(caplog.text, captured.out, captured.err)


@pytest.mark.slow
@pytest.mark.parametrize("kind", CREDENTIALS)
def test_schedule_with_each_credential_lands_in_the_namespace(
        kind, pipeline_file, server, tmp_path, monkeypatch, capsys, caplog):
    use_credential(kind, monkeypatch, tmp_path)
    with caplog.at_level(logging.DEBUG):
        assert cgd(SCHEDULE, pipeline_file, server, tmp_path, "--job-name", "weekly",
                   namespace="team-a") == 0
    [recurring] = server.recurring_runs
    assert (recurring["display_name"], recurring["namespace"]) == ("weekly", "team-a")
    assert server.experiments[recurring["experiment_id"]]["namespace"] == "team-a"
    assert {user for _, user in server.identities} == {WHO[kind]}
    captured = capsys.readouterr()
    assert_no_secret(caplog.text, captured.out, captured.err)


@pytest.mark.slow
def test_the_namespace_flag_wins_over_kubeflow_namespace(pipeline_file, server, tmp_path,
                                                         monkeypatch):
    use_credential("cookie", monkeypatch, tmp_path)
    server.users[ALICE] = {"team-a", "team-c"}
    assert cgd(SUBMIT, pipeline_file, server, tmp_path, "--namespace", "team-c",
               namespace="team-a") == 0
    [run] = server.runs
    assert server.experiments[run["experiment_id"]]["namespace"] == "team-c"


@pytest.mark.slow
@pytest.mark.parametrize("set_, who", [
    (["token file", "bearer token", "cookie"], ROBOT),
    (["bearer token", "cookie"], BOB),
    (["token file", "cookie"], ROBOT),
])
def test_credential_precedence_token_file_then_bearer_token_then_cookie(
        set_, who, pipeline_file, server, tmp_path, monkeypatch):
    for kind in set_:
        use_credential(kind, monkeypatch, tmp_path)
    assert cgd(SUBMIT, pipeline_file, server, tmp_path, namespace="team-a") == 0
    assert {user for _, user in server.identities} == {who}


@pytest.mark.slow
def test_without_any_credential_one_line_names_the_variables(pipeline_file, server, tmp_path,
                                                             capsys):
    assert cgd(SUBMIT, pipeline_file, server, tmp_path, namespace="team-a") == 1
    err = capsys.readouterr().err
    [line] = error_lines(err)
    assert "multi-user" in line and all(name in line for name in CREDENTIAL_VARIABLES)
    assert "Traceback" not in err
    assert (server.experiments, server.runs, server.refusals) == ({}, [], [])  # nothing sent


@pytest.mark.slow
@pytest.mark.parametrize("action", [SUBMIT, SCHEDULE])
def test_without_a_namespace_one_line_names_the_key_and_the_flag(action, pipeline_file, server,
                                                                 tmp_path, monkeypatch, capsys):
    use_credential("bearer token", monkeypatch, tmp_path)
    assert cgd(action, pipeline_file, server, tmp_path) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert "kubeflow.namespace" in line and "--namespace" in line
    assert (server.experiments, server.refusals) == ({}, [])


@pytest.mark.slow
@pytest.mark.parametrize("action", [SUBMIT, SCHEDULE])
def test_a_namespace_the_identity_may_not_use_is_one_line_with_the_403(
        action, pipeline_file, server, tmp_path, monkeypatch, capsys, caplog):
    use_credential("bearer token", monkeypatch, tmp_path)
    assert cgd(action, pipeline_file, server, tmp_path, "--namespace", "team-b") == 1
    captured = capsys.readouterr()
    [line] = error_lines(captured.err)
    assert "HTTP 403" in line and "team-b" in line and f"User '{BOB}' is not authorized" in line
    assert (server.experiments, server.runs, server.recurring_runs) == ({}, [], [])
    assert_no_secret(caplog.text, captured.out, captured.err)


@pytest.mark.slow
def test_an_unknown_token_is_one_line_with_kfps_401_and_the_variables(
        pipeline_file, server, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "expired-token-77aa01")
    assert cgd(SUBMIT, pipeline_file, server, tmp_path, namespace="team-a") == 1
    captured = capsys.readouterr()
    [line] = error_lines(captured.err)
    assert "HTTP 401" in line and "Review.Status.Authenticated is false" in line
    assert all(name in line for name in CREDENTIAL_VARIABLES)
    assert "expired-token-77aa01" not in captured.err + captured.out + caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("variable, value, message", [
    ("KF_PIPELINES_SA_TOKEN_PATH", "MISSING", "no such token file"),
    ("KF_PIPELINES_SA_TOKEN_PATH", "EMPTY", "is empty"),
    ("KF_PIPELINES_COOKIE", "cookie-5d2e90aa", "NAME=VALUE"),
    ("KF_PIPELINES_TOKEN", f"Bearer {ENV_TOKEN}", "without 'Bearer '"),
])
def test_a_bad_credential_is_one_line_naming_its_variable_not_its_value(
        variable, value, message, pipeline_file, server, tmp_path, monkeypatch, capsys):
    if value in ("MISSING", "EMPTY"):
        path = tmp_path / "token"
        if value == "EMPTY":
            path.write_text("\n")
        value = str(path)
    monkeypatch.setenv(variable, value)
    assert cgd(SUBMIT, pipeline_file, server, tmp_path, namespace="team-a") == 1
    captured = capsys.readouterr()
    [line] = error_lines(captured.err)
    assert variable in line and message in line
    assert_no_secret(captured.err, captured.out)
    assert server.experiments == {}


@pytest.mark.slow
def test_a_bad_namespace_is_refused_before_any_call(pipeline_file, server, tmp_path, capsys):
    assert cgd(SUBMIT, pipeline_file, server, tmp_path, "--namespace", "Team_A") == 1
    [line] = error_lines(capsys.readouterr().err)
    assert "--namespace 'Team_A'" in line
    assert server.identities == server.refusals == []


def test_kubeflow_namespace_in_the_config_is_validated(tmp_path, capsys):
    from cli.main import main

    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump(config_dict(tmp_path, namespace="Team A")))
    assert main(["kubeflow", "submit", "--config", str(config_file), "--pipeline", "x.json"]) == 1
    assert "kubeflow.namespace" in capsys.readouterr().err


@pytest.mark.slow
def test_single_user_kfp_takes_a_credential_and_a_namespace_it_does_not_need(
        pipeline_file, tmp_path, monkeypatch):
    use_credential("bearer token", monkeypatch, tmp_path)
    with KfpApiServer() as single_user:
        assert cgd(SUBMIT, pipeline_file, single_user, tmp_path, namespace="team-a") == 0
        assert len(single_user.runs) == 1 and single_user.refusals == []


@pytest.mark.slow
def test_the_token_file_is_read_at_every_call_as_the_kubelet_rotates_it(server, tmp_path,
                                                                       monkeypatch):
    from kubeflow.client import make_client

    token = tmp_path / "token"
    token.write_text(FILE_TOKEN)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    client, credential = make_client(server.host, "team-a")
    assert "KF_PIPELINES_SA_TOKEN_PATH" in credential.source
    assert FILE_TOKEN not in credential.source + repr(credential)
    client.create_experiment(name="first", namespace="team-a")
    token.write_text(ENV_TOKEN)  # the rotated token belongs to another user here
    client.create_experiment(name="second", namespace="team-a")
    assert [user for _, user in server.identities][0] == ROBOT
    assert [user for _, user in server.identities][-1] == BOB


@pytest.mark.slow
def test_namespace_kubeflow_is_kept_although_kfp_takes_it_for_its_default(server, tmp_path,
                                                                          monkeypatch):
    from kubeflow.client import make_client

    monkeypatch.setenv("KF_PIPELINES_COOKIE", COOKIE)
    client, _ = make_client(server.host, "kubeflow")
    assert client.get_user_namespace() == "kubeflow"


# ------------------------------------------------------------------ the multi-user stand-in

def call(server: KfpApiServer, method: str, path: str, body: dict | None = None,
         headers: list[tuple[str, str]] = ()) -> tuple[int, dict]:
    """One raw request (repeated headers allowed); (HTTP status, JSON body)."""
    connection = http.client.HTTPConnection(urlsplit(server.host).netloc, timeout=5)
    data = json.dumps(body).encode() if body is not None else b""
    connection.putrequest(method, f"/apis/v2beta1/{path}")
    for name, value in [*headers, ("Content-Length", str(len(data)))]:
        connection.putheader(name, value)
    connection.endheaders(data)
    response = connection.getresponse()
    reply = response.status, json.loads(response.read())
    connection.close()
    return reply


USERID = [("kubeflow-userid", ALICE)]
NO_HEADER = ("Unauthenticated: Request header error: there is no user identity header.: "
             "Request header error: there is no user identity header.")


@pytest.mark.slow
def test_healthz_says_multi_user_and_needs_no_identity(server):
    assert call(server, "GET", "healthz") == (200, {
        "commit_sha": "unknown", "tag_name": "unknown", "multi_user": True})


@pytest.mark.slow
def test_a_call_without_identity_is_unauthenticated_with_kfps_message(server):
    status, body = call(server, "GET", "experiments?namespace=team-a")
    assert (status, body["code"]) == (401, 16)
    assert body["message"] == (
        "List experiments failed: Failed to authorize with API: Failed to authorize with API: "
        "Unauthenticated: Failed to check authorization. User identity is empty in the request "
        f"header: {NO_HEADER}")
    assert body["details"][0]["message"] == ("Failed to check authorization. User identity is "
                                             "empty in the request header")


@pytest.mark.slow
@pytest.mark.parametrize("headers, who", [
    (USERID, ALICE),
    ([("Authorization", f"Bearer {ENV_TOKEN}")], BOB),
    ([("Cookie", f"theme=dark; {COOKIE}")], ALICE),  # the auth proxy's kubeflow-userid
])
def test_the_userid_header_a_known_token_or_a_known_cookie_is_an_identity(server, headers, who):
    status, experiment = call(server, "POST", "experiments",
                              {"display_name": "cgd", "namespace": "team-a"}, headers)
    assert (status, experiment["namespace"]) == (200, "team-a")
    assert server.identities == [("/apis/v2beta1/experiments", who)]


@pytest.mark.slow
def test_an_unknown_token_or_cookie_is_no_identity(server):
    status, body = call(server, "GET", "experiments?namespace=team-a",
                        headers=[("Authorization", "Bearer nope")])
    assert status == 401
    assert body["message"].endswith(
        f"[{NO_HEADER}, Authentication failure: Unauthenticated: Review.Status.Authenticated is "
        "false. Error [invalid bearer token]: Failed to authenticate token review]")
    status, body = call(server, "GET", "experiments?namespace=team-a",
                        headers=[("Cookie", "authservice_session=forged")])
    assert status == 401 and body["message"].endswith(NO_HEADER)
    assert server.identities == []


@pytest.mark.slow
def test_malformed_identity_headers_are_kfps_bad_requests(server):
    _, body = call(server, "GET", "experiments?namespace=team-a",
                   headers=[("Authorization", ENV_TOKEN)])
    assert "Header 'Authorization' is incorrectly formatted. Expected prefix 'Bearer '" in (
        body["message"])
    _, body = call(server, "GET", "experiments?namespace=team-a",
                   headers=[("kubeflow-userid", ALICE), ("kubeflow-userid", BOB)])
    assert "unexpected number of 'kubeflow-userid' headers. Expect 1 got 2" in body["message"]
    # Both authenticators failed, so IsAuthorized's Unauthenticated is what the client gets.
    assert body["code"] == 16


@pytest.mark.slow
def test_an_experiment_without_namespace_is_refused(server):
    status, body = call(server, "POST", "experiments", {"display_name": "cgd"}, USERID)
    assert (status, body["message"]) == (400, (
        "Failed to create a experiment: Failed to authorize the request: Invalid input error: An "
        "experiment cannot have an empty namespace in multi-user mode"))
    assert server.experiments == {}


@pytest.mark.slow
def test_a_run_or_recurring_run_without_experiment_is_refused(server):
    status, body = call(server, "POST", "runs", {"display_name": "r", "pipeline_spec": SPEC},
                        USERID)
    assert (status, body["message"]) == (400, (
        "Failed to create a new run: Failed to create a run due to invalid experimentId and "
        "namespace combination: Invalid input error: Experiment id can not be empty in "
        "multi-user mode"))
    status, body = call(server, "POST", "recurringruns", {
        "display_name": "j", "pipeline_spec": SPEC, "max_concurrency": "1",
        "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}}}, USERID)
    assert status == 400 and "Experiment id can not be empty in multi-user mode" in (
        body["message"])
    assert server.runs == server.recurring_runs == []


@pytest.mark.slow
def test_another_namespace_is_permission_denied(server):
    status, body = call(server, "POST", "experiments",
                        {"display_name": "cgd", "namespace": "team-b"}, USERID)
    assert (status, body["code"]) == (403, 7)
    assert body["message"] == (
        "Failed to create a experiment: Failed to authorize the request: Failed to authorize with "
        f"API: PermissionDenied: User '{ALICE}' is not authorized with reason:  (request: "
        "&ResourceAttributes{Namespace:team-b,Verb:create,Group:pipelines.kubeflow.org,"
        "Version:v1beta1,Resource:experiments,Subresource:,Name:cgd,}): Unauthorized access")
    carol = [("kubeflow-userid", CAROL)]
    _, theirs = call(server, "POST", "experiments",
                     {"display_name": "cgd", "namespace": "team-b"}, carol)
    status, body = call(server, "POST", "runs", {
        "display_name": "r", "pipeline_spec": SPEC, "experiment_id": theirs["experiment_id"]},
        USERID)
    assert status == 403 and body["message"].startswith(
        "Failed to create a new run: Failed to create a run due to authorization error. Check if "
        "you have write permissions to namespace team-b: Failed to access run . Check if you "
        "have access to namespace team-b: PermissionDenied: ")
    status, body = call(server, "POST", "recurringruns", {
        "display_name": "j", "pipeline_spec": SPEC, "max_concurrency": "1",
        "experiment_id": theirs["experiment_id"],
        "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}}}, USERID)
    assert status == 403 and "Check if you have write permission to namespace team-b" in (
        body["message"])
    status, body = call(server, "GET", f"experiments/{theirs['experiment_id']}", headers=USERID)
    assert status == 403 and "Verb:get" in body["message"]
    assert server.runs == server.recurring_runs == []


@pytest.mark.slow
def test_resources_are_per_namespace_and_runs_take_their_experiments(server, tmp_path):
    alice = kfp.Client(host=server.host, namespace="team-a", cookies=COOKIE)
    mine = alice.create_experiment(name="cgd")
    package = tmp_path / "pipeline.yaml"
    package.write_text(yaml.safe_dump(SPEC))
    run = alice.create_run_from_pipeline_package(str(package), arguments={}, run_name="r",
                                                 experiment_name="cgd")
    recurring = alice.create_recurring_run(mine.experiment_id, "j", cron_expression="@daily",
                                           pipeline_package_path=str(package))
    assert (alice.get_run(run.run_id).display_name,
            alice.get_recurring_run(recurring.recurring_run_id).namespace) == ("r", "team-a")
    status, theirs = call(server, "POST", "experiments",  # the same name in another namespace
                          {"display_name": "cgd", "namespace": "team-b"},
                          [("kubeflow-userid", CAROL)])
    assert status == 200 and theirs["experiment_id"] != mine.experiment_id
    status, body = call(server, "GET", f"runs/{run.run_id}", headers=[("kubeflow-userid", CAROL)])
    assert (status, body["message"].split(": PermissionDenied")[0]) == (403, (
        f"Failed to get a run: Failed to authorize the request: Failed to access run {run.run_id}"
        ". Check if you have access to namespace team-a"))
    status, body = call(server, "GET", f"recurringruns/{recurring.recurring_run_id}",
                        headers=[("kubeflow-userid", CAROL)])
    assert status == 403 and body["message"].startswith("Failed to fetch a recurring run")
    with pytest.raises(kfp_server_api.ApiException) as missing:
        alice.get_run("nope")
    assert json.loads(missing.value.body)["message"] == (
        "Failed to get a run: Failed to authorize the request: Failed to authorize with the run "
        "ID nope: Failed to fetch run nope: ResourceNotFoundError: Run nope not found")
    assert [e.display_name for e in alice.list_experiments().experiments] == ["cgd"]
