"""The search service (serving.search_*): image or embedding in, top-k gallery ids out,
over gRPC and REST, model and index switching as a pair, faults, the living catalogue.

Versions are built as the pipeline pushes them: a stand-in SavedModel (serving.standin)
with a GalleryIndex of its own embeddings (search.index) in assets.extra/gallery_index/,
copied with saved_model.pb last. The embedding server is the embedded ModelServer,
keeping the previous version loaded (num_versions=2) as the deploy config does. Both
servers poll only when a test says so (poll_seconds very long, ``poll()`` called), so
every switch happens at a known point. Servers bind 127.0.0.1 on free ports.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import threading

import numpy as np
import pytest

from tests.support.serving import cgd_serve, make_images
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow  # model and search servers

MODEL = "cgd"
SIZE, DIM = 32, 16
NEVER = 3600.0  # poll_seconds: the tests poll by hand
GALLERY = make_images(12, seed=3)
OTHERS = make_images(6, seed=9)  # images in no gallery
# An image's distance to itself in the index: float32's |q|^2 + |g|^2 - 2 q.g leaves about
# 1e-7 of the square, a few 1e-4 after the root; distinct images are 0.1 and more apart.
SAME = 1e-3


# --------------------------------------------------------------------------- building versions


@pytest.fixture(scope="module")
def staging(tmp_path_factory):
    """Stand-in SavedModels by seed, and a direct embedding call for each."""
    import tensorflow as tf

    from serving.standin import write_stand_in_model
    root = tmp_path_factory.mktemp("staging")
    loaded = {}
    for seed in (1, 2):
        write_stand_in_model(str(root / f"model{seed}"), size=SIZE, dim=DIM, seed=seed)
        loaded[seed] = tf.saved_model.load(str(root / f"model{seed}"))

    def embed(seed, images):
        return loaded[seed].signatures["serving_default"](
            images=tf.constant(images, dtype=tf.string))["embedding"].numpy()
    return {"root": root, "embed": embed}


def index_config():
    import dataclasses

    from core.config import load_config
    return dataclasses.replace(load_config(None).gallery_index, kind="exact")


def build_version(staging, base, version: int, seed: int, prefix: str, stamp_seed=None,
                  dimension=None):
    """Push model ``seed`` as ``version`` with an index of GALLERY embedded by it (ids
    ``<prefix><i>``). ``stamp_seed`` stamps the index with another model's fingerprint;
    ``dimension`` indexes random vectors of that size instead."""
    from search.index import GalleryIndex, ModelStamp, model_fingerprint
    from serving.search_versions import index_dir
    src = staging["root"] / f"model{seed}"
    work = base.parent / f"work-{version}"
    shutil.copytree(src, work)
    vectors = staging["embed"](seed, GALLERY)
    if dimension is not None:
        vectors = np.random.RandomState(0).randn(len(GALLERY), dimension).astype(np.float32)
    stamp = ModelStamp(MODEL, model_fingerprint(str(staging["root"] / f"model{stamp_seed or seed}")),
                       vectors.shape[1], str(version))
    ids = [f"{prefix}{i}" for i in range(len(GALLERY))]
    metadata = [{"n": i, "prefix": prefix} for i in range(len(GALLERY))]
    GalleryIndex.build(vectors, ids, metadata, index_config(), stamp).save(index_dir(str(work)))
    return push(work, base / MODEL / str(version))


def push(src, dst):
    """As the Pusher: everything, then saved_model.pb last."""
    shutil.copytree(src, dst, ignore=lambda d, names: ["saved_model.pb"] if d == str(src) else [])
    shutil.copyfile(src / "saved_model.pb", dst / "saved_model.pb")
    return dst


@pytest.fixture
def servers(staging, tmp_path):
    """Version 1 pushed; the model server and the search service beside it."""
    from serving.model_server import ModelServer
    from serving.search_server import SearchServer
    base = tmp_path / "serving"
    build_version(staging, base, 1, seed=1, prefix="a")
    with ModelServer(str(base), MODEL, grpc_port=0, rest_port=None, poll_seconds=NEVER,
                     num_versions=2) as models:
        search = SearchServer(str(base), MODEL, models.grpc_target, grpc_port=0, rest_port=0,
                              poll_seconds=NEVER).start()
        box = {"base": base, "models": models, "search": search}
        try:
            yield box
        finally:
            box["search"].stop()


def restart(box):
    """A new search service on the same directories (the old one stopped first)."""
    from serving.search_server import SearchServer
    box["search"].stop()
    box["search"] = SearchServer(str(box["base"]), MODEL, box["models"].grpc_target, grpc_port=0,
                                 rest_port=0, poll_seconds=NEVER).start()
    return box["search"]


def client(search):
    from serving.search_client import SearchClient
    return SearchClient(search.grpc_target, MODEL, timeout_s=30, retries=0)


def rest(search, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", search.rest_port, timeout=30)
    try:
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def status_rows(search) -> dict:
    status, body = rest(search, "GET", f"/v1/models/{MODEL}")
    assert status == 200, body
    return {int(row["version"]): row for row in body["model_version_status"]}


# --------------------------------------------------------------------------- queries


def test_search_by_image_and_by_embedding_over_grpc_and_rest(servers, staging):
    search = servers["search"]
    embeddings = staging["embed"](1, GALLERY[2:4])
    with client(search) as c:
        version, hits = c.search_images(GALLERY[2:4], k=3)
        assert version == 1 and [row[0]["id"] for row in hits] == ["a2", "a3"]
        assert hits[0][0]["distance"] < SAME and hits[0][0]["metadata"] == {"n": 2, "prefix": "a"}
        assert all(len(row) == 3 for row in hits)
        assert hits[0][1]["distance"] >= hits[0][0]["distance"]
        version, by_embedding = c.search_embeddings(embeddings, k=3)
        assert version == 1 and [[h["id"] for h in row] for row in by_embedding] == \
            [[h["id"] for h in row] for row in hits]

    status, body = rest(search, "POST", f"/v1/models/{MODEL}:search",
                        {"instances": [b64(GALLERY[5])], "k": 2})
    assert status == 200 and body["model_version"] == 1
    assert body["results"][0][0]["id"] == "a5" and body["results"][0][0]["metadata"]["n"] == 5
    status, body = rest(search, "POST", f"/v1/models/{MODEL}/versions/1:search",
                        {"embeddings": embeddings.tolist(), "k": 1})
    assert status == 200 and [r[0]["id"] for r in body["results"]] == ["a2", "a3"]
    status, body = rest(search, "POST", f"/v1/models/{MODEL}/versions/7:search",
                        {"embeddings": embeddings.tolist()})
    assert status == 404 and "version 1" in body["error"]


def test_k_outside_its_range_and_a_wrong_dimension_are_invalid_argument(servers):
    import grpc

    from serving.client import ServingError
    search = servers["search"]
    with client(search) as c:
        for k in (0, len(GALLERY) + 1):
            with pytest.raises(ServingError) as err:
                c.search_images(GALLERY[:1], k=k)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert f"k {k} is outside [1, {len(GALLERY)}]" in err.value.details
        with pytest.raises(ServingError) as err:
            c.search_embeddings(np.zeros((1, 8), np.float32), k=1)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "dimension 8" in err.value.details and f"dimension {DIM}" in err.value.details
    status, body = rest(search, "POST", f"/v1/models/{MODEL}:search",
                        {"instances": [b64(GALLERY[0])], "k": 0})
    assert status == 400 and "outside [1, 12]" in body["error"]
    status, body = rest(search, "POST", f"/v1/models/{MODEL}:search",
                        {"embeddings": [[0.0] * 8], "k": 1})
    assert status == 400 and "dimension 8" in body["error"]
    status, body = rest(search, "POST", "/v1/models/other:search", {"embeddings": [[0.0] * DIM]})
    assert status == 404


# --------------------------------------------------------------------------- the pair


def test_a_new_version_switches_model_and_index_together(servers, staging):
    base, models, search = servers["base"], servers["models"], servers["search"]
    build_version(staging, base, 2, seed=2, prefix="b")
    # The embedding server has not loaded version 2: the service keeps version 1's pair.
    assert search.service.poll() is False
    assert "waiting for the embedding server" in status_rows(search)[2]["status"]["error_message"]
    with client(search) as c:
        version, hits = c.search_images(GALLERY[4:5], k=1)
    assert (version, hits[0][0]["id"]) == (1, "a4")

    assert models.repository.poll() and search.service.poll()
    with client(search) as c:
        version, hits = c.search_images(GALLERY[4:5], k=1)
    # Version 2's model and version 2's index: the image finds itself at distance ~0
    # (version 2's embedding searched in version 1's index would not).
    assert (version, hits[0][0]["id"]) == (2, "b4") and hits[0][0]["distance"] < SAME
    rows = status_rows(search)
    assert rows[2]["state"] == "AVAILABLE" and rows[1]["state"] == "END"


def test_a_query_in_flight_finishes_on_the_pair_it_started_with(servers, staging):
    base, models, search = servers["base"], servers["models"], servers["search"]
    embedder = search.service.embedder
    entered, release, asked = threading.Event(), threading.Event(), []

    class Blocking:
        def embed(self, images, version):
            asked.append(version)
            entered.set()
            assert release.wait(30)
            return embedder.embed(images, version)

        def dimension(self, version):
            return embedder.dimension(version)

    search.service.embedder = Blocking()
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(
        result=search.service.search(MODEL, None, 1, images=GALLERY[6:7])))
    thread.start()
    assert entered.wait(30)
    build_version(staging, base, 2, seed=2, prefix="b")
    assert models.repository.poll() and search.service.poll()
    assert search.service.served_version() == 2
    release.set()
    thread.join(30)
    version, hits = answer["result"]
    assert asked == [1] and version == 1 and hits[0][0].id == "a6" and hits[0][0].distance < SAME
    search.service.embedder = embedder
    version, hits = search.service.search(MODEL, None, 1, images=GALLERY[6:7])
    assert (version, hits[0][0].id) == (2, "b6")


def test_a_corrupt_or_missing_index_keeps_the_previous_pair_and_says_why(servers, staging):
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from serving.search_versions import index_dir
    base, models, search = servers["base"], servers["models"], servers["search"]
    v2 = build_version(staging, base, 2, seed=2, prefix="b")
    vectors = os.path.join(index_dir(str(v2)), "vectors.npy")
    data = bytearray(open(vectors, "rb").read())
    data[-1] ^= 0xFF
    open(vectors, "wb").write(bytes(data))
    assert models.repository.poll() and search.service.poll() is False
    with client(search) as c:
        assert c.search_images(GALLERY[1:2], k=1)[0] == 1
    row = status_rows(search)[2]
    assert row["state"] == "END" and row["status"]["error_code"] == "DATA_LOSS"
    assert "version 2 refused" in row["status"]["error_message"]
    assert vectors in row["status"]["error_message"]
    channel = grpc.insecure_channel(search.grpc_target)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    channel.close()
    assert {s.version: s.status.error_code for s in reply.model_version_status}[2] == \
        grpc.StatusCode.DATA_LOSS.value[0]
    assert 'cgd_search_versions_refused{model_name="cgd"} 1' in search.metrics_text()
    # Restarted right after the bad push, it starts on the newest good pair below it.
    search = restart(servers)
    assert search.service.served_version() == 1
    assert status_rows(search)[2]["status"]["error_code"] == "DATA_LOSS"

    # An index without its manifest is never complete: the model server does not load
    # that version, and the search service says why, naming the file.
    v3 = build_version(staging, base, 3, seed=2, prefix="c")
    os.remove(os.path.join(index_dir(str(v3)), "manifest.json"))
    assert models.repository.poll() is False and search.service.poll() is False
    message = status_rows(search)[3]["status"]["error_message"]
    assert "version 3 refused" in message
    assert os.path.join(index_dir(str(v3)), "manifest.json") in message
    with client(search) as c:
        assert c.search_images(GALLERY[1:2], k=1)[0] == 1

    # Repaired in place: tried again, and served.
    shutil.rmtree(index_dir(str(v3)))
    shutil.copytree(index_dir(str(base.parent / "work-2")), index_dir(str(v3)))
    assert models.repository.poll() and search.service.poll() is True
    assert search.service.served_version() == 3


def test_an_index_of_another_model_or_dimension_is_refused_naming_both(servers, staging):
    from search.index import model_fingerprint
    base, models, search = servers["base"], servers["models"], servers["search"]
    build_version(staging, base, 2, seed=2, prefix="b", stamp_seed=1)
    # The embedded model server does not count that version complete (tensorflow/serving
    # would load it); either way the search service refuses it.
    models.repository.poll()
    assert search.service.poll() is False
    message = status_rows(search)[2]["status"]["error_message"]
    for seed in (1, 2):
        assert model_fingerprint(str(staging["root"] / f"model{seed}")) in message
    assert status_rows(search)[2]["status"]["error_code"] == "FAILED_PRECONDITION"

    build_version(staging, base, 3, seed=2, prefix="c", dimension=8)
    assert models.repository.poll() and search.service.poll() is False
    message = status_rows(search)[3]["status"]["error_message"]
    assert "dimension 8" in message and f"model {DIM}" in message
    assert search.service.served_version() == 1


# --------------------------------------------------------------------------- the catalogue


def test_catalogue_add_search_restart_remove(servers, staging, monkeypatch):
    import grpc

    from serving.client import ServingError
    from serving.search_embeddings import EmbeddingServer
    search = servers["search"]
    status, body = rest(search, "POST", f"/v1/models/{MODEL}/gallery:add",
                        {"items": [{"id": "new-1", "metadata": {"sku": 7}, **b64(OTHERS[0])}]})
    assert status == 200 and body["model_version"] == 1, body
    with client(search) as c:
        version, hits = c.search_images(OTHERS[:1], k=1)
        assert (version, hits[0][0]["id"], hits[0][0]["metadata"]) == (1, "new-1", {"sku": 7})
        assert hits[0][0]["distance"] < SAME
        for taken in ("new-1", "a0"):  # in the catalogue, in the pushed gallery
            with pytest.raises(ServingError) as err:
                c.add([taken], [OTHERS[1]])
            assert err.value.code == grpc.StatusCode.ALREADY_EXISTS and taken in err.value.details
        seq = c.add(["new-2"], [OTHERS[1]], [{"sku": 8}])
    status, body = rest(search, "POST", f"/v1/models/{MODEL}/gallery:add",
                        {"items": [{"id": "new-2", **b64(OTHERS[1])}]})
    assert status == 409 and "new-2" in body["error"]

    # A restart replays the catalogue, from the embeddings it cached: no embedding call.
    calls = []
    original = EmbeddingServer.embed
    monkeypatch.setattr(EmbeddingServer, "embed",
                        lambda self, images, version: calls.append(version) or
                        original(self, images, version))
    search = restart(servers)
    assert calls == []
    with client(search) as c:
        assert c.search_images(OTHERS[:2], k=1)[1][0][0]["id"] == "new-1"
        _, hits = c.search_images(OTHERS[1:2], k=1)
        assert hits[0][0]["id"] == "new-2" and hits[0][0]["metadata"] == {"sku": 8}
        assert c.remove(["new-1"]) > seq
        assert c.search_images(OTHERS[:1], k=1)[1][0][0]["id"] != "new-1"
        with pytest.raises(ServingError) as err:
            c.remove(["never-added"])
        assert err.value.code == grpc.StatusCode.NOT_FOUND and "never-added" in err.value.details
    status, body = rest(search, "POST", f"/v1/models/{MODEL}/gallery:remove", {"ids": ["nope"]})
    assert status == 404

    search = restart(servers)
    with client(search) as c:
        assert c.search_images(OTHERS[:1], k=1)[1][0][0]["id"] != "new-1"
        assert c.search_images(OTHERS[1:2], k=1)[1][0][0]["id"] == "new-2"

    # The next version gets the catalogue replayed, embedded (once) by its own model.
    build_version(staging, servers["base"], 2, seed=2, prefix="b")
    calls.clear()
    assert servers["models"].repository.poll() and search.service.poll()
    assert calls == [2]
    with client(search) as c:
        version, hits = c.search_images(OTHERS[1:2], k=1)
    assert (version, hits[0][0]["id"]) == (2, "new-2") and hits[0][0]["distance"] < SAME


def test_concurrent_adds_removes_and_searches(servers):
    search = servers["search"].service
    images = make_images(16, seed=21)
    errors = []

    def adder(t):
        try:
            for i in range(t, 16, 4):
                search.add(MODEL, [f"c{i}"], [images[i]], [{"i": i}])
            search.remove(MODEL, [f"a{t}"])
        except Exception as e:  # noqa: BLE001 - collected, asserted below
            errors.append(e)

    def searcher():
        try:
            for _ in range(10):
                version, hits = search.search(MODEL, None, 3, images=GALLERY[8:10])
                assert version == 1 and len(hits) == 2 and all(len(r) == 3 for r in hits)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=adder, args=(t,)) for t in range(4)]
    threads += [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    expected = {f"c{i}" for i in range(16)} | {f"a{i}" for i in range(4, 12)}
    assert set(search._pair.index.ids()) == expected
    assert set(restart(servers).service._pair.index.ids()) == expected


# --------------------------------------------------------------------------- errors, CLI


def test_the_error_table_maps_the_index_errors():
    from search import index
    from serving.errors import as_request_error, http_status
    for error, code, status in ((index.DuplicateIdError("x"), "ALREADY_EXISTS", 409),
                              (index.UnknownIdError("x"), "NOT_FOUND", 404),
                              (index.IndexQueryError("x"), "INVALID_ARGUMENT", 400),
                              (index.ModelMismatchError("x"), "FAILED_PRECONDITION", 400),
                              (index.CorruptIndexError("x"), "DATA_LOSS", 500),
                              (index.MissingIndexError("x"), "FAILED_PRECONDITION", 400)):
        mapped = as_request_error(error)
        assert (mapped.code, http_status(mapped), mapped.message) == (code, status, "x")
    assert as_request_error(ValueError("y")).code == "INTERNAL"


def test_cgd_index_build_then_cgd_search_through_the_service(staging, tmp_path, capsys):
    """`cgd index build` indexes a folder against the served version, into that version;
    the search service picks it up; `cgd search` asks the service."""
    from cli.main import main
    from serving.model_server import ModelServer
    from serving.search_server import SearchServer
    base = tmp_path / "serving"
    push(staging["root"] / "model1", base / MODEL / "5")  # pushed without an index
    folder = tmp_path / "gallery"
    for i, data in enumerate(GALLERY[:6]):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"class{i % 2}" / f"img{i}.jpg").write_bytes(data)
    with ModelServer(str(base), MODEL, grpc_port=0, rest_port=None, poll_seconds=NEVER) as models, \
            SearchServer(str(base), MODEL, models.grpc_target, grpc_port=0, rest_port=None,
                         poll_seconds=NEVER) as search:
        assert search.service.served_version() is None
        from serving.errors import Unavailable
        with pytest.raises(Unavailable) as err:  # not ready, and why
            search.service.model_status(MODEL, None)
        assert "version 5 refused" in err.value.message and "gallery_index" in err.value.message
        assert main(["index", "build", "--server", models.grpc_target, "--model-name", MODEL,
                     "--model-base-path", str(base), "--images", str(folder)]) == 0
        assert search.service.poll() and search.service.served_version() == 5
        query = folder / "class1" / "img3.jpg"
        assert main(["search", "--server", search.grpc_target, "--model-name", MODEL,
                     str(query), "-k", "2", "--json"]) == 0
        reply = json.loads(capsys.readouterr().out)
        assert reply["model_version"] == 5
        assert reply["results"][0]["id"] == os.path.join("class1", "img3.jpg")
        assert reply["results"][0]["metadata"] == {"path": str(query), "class": "class1"}
        assert main(["search", "--server", search.grpc_target, "--model-name", MODEL,
                     str(query), "-k", "99"]) == 1
        assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_search_deploy_manifest_pairs_tf_serving_with_the_search_service():
    """serving/deploy/search.yaml: one pod, TF Serving keeping two versions and the search
    service asking it on localhost; its ConfigMap says what the files say; the search
    command is one `cgd` parses."""
    import yaml
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from cli.main import build_parser
    from serving.deploy_config import deploy_proto_classes
    deploy = REPO_ROOT / "serving" / "deploy"
    docs = {d["kind"]: d for d in yaml.safe_load_all((deploy / "search.yaml").read_text())}
    claim = next(d for d in yaml.safe_load_all((deploy / "k8s.yaml").read_text())
                 if d["kind"] == "PersistentVolumeClaim")["metadata"]["name"]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    tfs, search = containers["tensorflow-serving"], containers["search"]
    assert tfs["image"] == "tensorflow/serving:2.16.1"
    assert "--model_config_file=/config/models.config" in tfs["args"] and "--port=8500" in tfs["args"]
    args = build_parser().parse_args(search["command"][1:])
    assert args.func.__name__ == "search_serve" and args.embedding_server == "localhost:8500"
    assert (args.model_base_path, args.model_name) == ("/models", MODEL)
    assert {p["name"]: p["containerPort"] for p in search["ports"]} == \
        {"search-grpc": args.search_port, "search-rest": args.search_rest_port}
    assert search["readinessProbe"]["httpGet"] == {"path": f"/v1/models/{MODEL}",
                                                   "port": args.search_rest_port}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == claim
    assert [m.get("readOnly", False) for m in search["volumeMounts"] if m["name"] == "models"] \
        == [False]  # the catalogue is written there
    assert [m["readOnly"] for m in tfs["volumeMounts"] if m["name"] == "models"] == [True]
    ports = {p["name"]: p["port"] for p in docs["Service"]["spec"]["ports"]}
    assert ports == {"grpc": 8500, "rest": 8501, "search-grpc": 8510, "search-rest": 8511}
    assert docs["Service"]["spec"]["selector"] == \
        docs["Deployment"]["spec"]["template"]["metadata"]["labels"]

    data, classes = docs["ConfigMap"]["data"], deploy_proto_classes()
    for key, name, cls in (
            ("models.config", "models_search.config", model_server_config_pb2.ModelServerConfig),
            ("batching_parameters.txt", "batching_parameters.txt", classes["BatchingParameters"]),
            ("monitoring.config", "monitoring.config", classes["MonitoringConfig"])):
        assert text_format.Parse(data[key], cls()) == text_format.Parse(
            (deploy / name).read_text(), cls()), name
    config = text_format.Parse(data["models.config"], model_server_config_pb2.ModelServerConfig())
    assert config.model_config_list.config[0].model_version_policy.latest.num_versions == 2
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]


def test_cgd_serve_hosts_the_search_when_a_version_carries_an_index(staging, tmp_path):
    """`cgd serve` in a subprocess, no --search: the pushed version has an index, so the
    search service starts beside the model server and answers; SIGTERM stops both."""
    import re
    import signal
    base = tmp_path / "serving"
    build_version(staging, base, 1, seed=1, prefix="a")
    with cgd_serve("--model-base-path", str(base), "--model-name", MODEL, "--port", "0",
                   "--rest-port", "-1", "--search-port", "0", "--search-rest-port", "-1"
                   ) as (proc, lines):
        targets = [m.group(1) for line in lines for m in [re.search(
            r"search service for model cgd .*: gRPC (127\.0\.0\.1:\d+)", line)] if m]
        assert targets and "search on" in lines[-1], "".join(lines)
        target = targets[-1]
        search = type("Search", (), {"grpc_target": target})
        with client(search) as c:
            version, hits = c.search_images(GALLERY[3:4], k=2)
        assert version == 1 and hits[0][0]["id"] == "a3"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_bad_requests_are_refused_with_what_is_wrong(servers):
    search = servers["search"]
    path = f"/v1/models/{MODEL}"
    for verb, body, words in (
            (":search", {"instances": ["not b64 wrapped"]}, "instances[0] must be"),
            (":search", {"instances": [b64(GALLERY[0])], "embeddings": [[0.0] * DIM]}, "either"),
            (":search", {"instances": [b64(GALLERY[0])], "k": "3"}, "'k' must be an integer"),
            (":search", {"instances": [{"b64": "%%%"}]}, "invalid base64"),
            ("/gallery:add", {"items": [{"id": "x"}]}, "items[0].b64 must be the base64"),
            ("/gallery:add", {"items": [{"id": "", "b64": "aGk="}]}, "non-empty strings"),
            ("/gallery:add", {"items": [{"id": "x", "b64": "aGk="}, {"id": "x", "b64": "aGk="}]},
             "repeated"),
            ("/gallery:remove", {"ids": "a0"}, "'ids' must be a list")):
        status, reply = rest(search, "POST", path + verb, body)
        assert status == 400 and words in reply["error"], (verb, body, reply)
    status, reply = rest(search, "POST", path + "/gallery:add",
                         {"items": [{"id": "x", **b64(b"not an image")}]})
    assert status == 400 and "not a decodable JPEG/PNG image" in reply["error"]
    assert "x" not in search.service._pair.index  # nothing added, nothing journaled
    assert search.service.catalogue.last_seq == 0
    status, reply = rest(search, "POST", f"{path}:predict", {"instances": []})
    assert status == 400 and ":search" in reply["error"]
