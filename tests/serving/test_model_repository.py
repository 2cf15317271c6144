"""Versions on disk (serving.model_repository): unavailable until the first complete push,
then the hot swap to a new version under load without a failed request."""

from __future__ import annotations

import base64
import shutil
import threading
import time

import numpy as np
import pytest

from tests.support.serving import MODEL, push_like_pusher, rest


@pytest.mark.slow
def test_unavailable_until_first_push_then_serves(models, images, direct, tmp_path):
    import grpc

    from serving.client import EmbeddingClient, ServingError
    from serving.model_server import ModelServer
    (tmp_path / MODEL / "3").mkdir(parents=True)  # a push in progress: no saved_model.pb yet
    with ModelServer(str(tmp_path), MODEL, grpc_port=0, rest_port=0, poll_seconds=0.1) as srv:
        with EmbeddingClient(srv.grpc_target, MODEL, retries=1, backoff_s=0.05) as c:
            with pytest.raises(ServingError) as err:
                c.embed_bytes(images[:1])
            assert err.value.code == grpc.StatusCode.UNAVAILABLE and err.value.attempts == 2
            assert rest(srv, "GET", f"/v1/models/{MODEL}")[0] == 404  # not ready
            code, _ = rest(srv, "POST", f"/v1/models/{MODEL}:predict",
                           {"instances": [{"b64": base64.b64encode(images[0]).decode()}]})
            assert code == 503
            shutil.rmtree(tmp_path / MODEL / "3")
            push_like_pusher(models["staging"] / "2", tmp_path / MODEL / "3", pause_s=0.3)
            assert srv.wait_for_version(3, timeout_s=30) == 3
            np.testing.assert_allclose(c.embed_bytes(images), direct(2, images), atol=1e-6)
            assert c.last_model_version == 3


@pytest.mark.slow
def test_new_version_under_concurrent_load_no_failed_requests(models, images, direct, tmp_path):
    """4 client threads, bounded requests; push v2 like the Pusher mid-stream."""
    from serving.client import EmbeddingClient
    from serving.model_server import ModelServer
    base = tmp_path / "base"
    shutil.copytree(models["staging"] / "1", base / MODEL / "1")
    (base / MODEL / "9").mkdir()  # newer but incomplete: must be ignored
    (base / MODEL / "latest").mkdir()  # non-numeric: ignored
    expected = {1: direct(1, images), 2: direct(2, images)}
    results, errors = [[] for _ in range(4)], []
    stop = threading.Event()
    deadline = time.monotonic() + 90

    with ModelServer(str(base), MODEL, grpc_port=0, rest_port=None, poll_seconds=0.05) as srv:
        def worker(k):
            with EmbeddingClient(srv.grpc_target, MODEL, retries=0, timeout_s=30) as c:
                for i in range(400):  # bounded
                    if stop.is_set() or time.monotonic() > deadline:
                        break
                    j = (i + k) % len(images)
                    try:
                        emb = c.embed_bytes([images[j]])
                    except Exception as e:  # noqa: BLE001
                        errors.append(repr(e))
                        continue
                    results[k].append((c.last_model_version, j, emb[0], time.monotonic()))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        while sum(map(len, results)) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        push_started = time.monotonic()
        push_like_pusher(models["staging"] / "2", base / MODEL / "2", pause_s=0.5)
        srv.wait_for_version(2, timeout_s=60)
        swapped = time.monotonic()
        mark = [len(r) for r in results]
        while min(len(r) - m for r, m in zip(results, mark)) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        status = {s["version"]: s["state"] for s in EmbeddingClient(srv.grpc_target, MODEL).model_status()}

    assert errors == []
    assert status == {2: "AVAILABLE", 1: "END"}
    # Requests kept being answered (by v1) while v2 was copied and loaded.
    assert sum(push_started < t < swapped and v == 1 for r in results for v, _, _, t in r) >= 4
    for per_thread in results:
        versions = [v for v, _, _, _ in per_thread]
        assert versions == sorted(versions), "a client went back to the old version"
        assert versions[0] == 1 and versions[-1] == 2
        for v, j, emb, _ in per_thread:
            np.testing.assert_allclose(emb, expected[v][j], atol=1e-6)
