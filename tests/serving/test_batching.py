"""Server-side batching (serving.batching): merged requests, answers as if unbatched."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.support.serving import MODEL


@pytest.mark.slow
def test_batching_gives_same_results_as_unbatched(models, images, direct):
    """8 concurrent clients; batching merges their requests but not their answers."""
    import grpc

    from serving.client import EmbeddingClient, ServingError
    from serving.model_server import ModelServer
    expected = direct(1, images)
    requests = [[(k + r) % len(images) for r in range(1 + k % 2)] for k in range(8)]
    for batching in (0, 8):
        with ModelServer(str(models["base"]), MODEL, grpc_port=0, rest_port=None,
                         max_batch_size=batching, batch_timeout_ms=100) as srv:
            out, errors = {}, {}
            barrier = threading.Barrier(8, timeout=30)

            def worker(k):
                with EmbeddingClient(srv.grpc_target, MODEL, retries=0) as c:
                    for rnd in range(3):
                        barrier.wait()
                        blobs = [images[j] for j in requests[k]]
                        if rnd == 2 and k == 5:
                            blobs[-1] = b"corrupt"  # must fail alone
                        try:
                            out[(k, rnd)] = c.embed_bytes(blobs)
                        except ServingError as e:
                            errors[(k, rnd)] = e.code

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert errors == {(5, 2): grpc.StatusCode.INVALID_ARGUMENT}
            assert len(out) == 8 * 3 - 1
            for (k, _), emb in out.items():
                np.testing.assert_allclose(emb, expected[requests[k]], atol=1e-6)
            if batching:
                assert srv.batcher.requests_merged >= 2, "no requests were merged"
                assert srv.batcher.batches_run < 8 * 3
