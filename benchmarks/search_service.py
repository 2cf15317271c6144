"""The search service's per-query overhead: one query through the service against the same
index searched in-process.

Issue #25's target: at batch 1, the service's p50/p99 over in-process ``GalleryIndex.search``
at most 1.3x. The served path is what a client sees: ``SearchClient.search_embeddings``
(an embedding given, k=10, one query per request; tensor protos, gRPC, HTTP/2 on
loopback) against a ``SearchServer`` whose pair is a stand-in model with the same
dimension and a GalleryIndex of ``clustered_embeddings`` (benchmarks/search.py's data);
the baseline is ``in_process_latency`` (benchmarks/search.py) on the same index loaded
from the same directory. Both sides alternate query by query, so drift on a shared
2-core machine hits both alike. The client, the search server and the embedding server
(``ModelServer``, needed for the pair's check; not called for a query with an embedding)
share this one process, as in ``cgd serve --search``; the client's own gRPC work is part of
the served time.

    python benchmarks/search_service.py --size 10000            # seconds
    python benchmarks/search_service.py --size 1000000 --kind ivf_sq6

Or ``measure(size, ...)`` from another benchmark. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

MODEL = "cgd"
K = 10


def _push_version(base: str, work: str, gallery: np.ndarray, config) -> str:
    """Version 1 of a stand-in model of gallery's dimension, with its index, pushed as the
    Pusher does (saved_model.pb last). Returns the index directory."""
    from search.index import GalleryIndex, ModelStamp, model_fingerprint
    from serving.search_versions import index_dir
    from serving.standin import write_stand_in_model
    write_stand_in_model(work, size=8, dim=gallery.shape[1])
    stamp = ModelStamp(MODEL, model_fingerprint(work), gallery.shape[1], "1")
    ids = [str(i) for i in range(gallery.shape[0])]
    GalleryIndex.build(gallery, ids, None, config, stamp).save(index_dir(work))
    dst = os.path.join(base, MODEL, "1")
    shutil.copytree(work, dst, ignore=lambda d, names: ["saved_model.pb"] if d == work else [])
    shutil.copyfile(os.path.join(work, "saved_model.pb"), os.path.join(dst, "saved_model.pb"))
    return index_dir(dst)


def _percentiles(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def measure(size: int, dim: int = 128, kind: str = "auto", queries: int = 300,
            seed: int = 0) -> dict:
    """p50/p99 of one query (batch 1, k=10) through the service and in-process, and ratios."""
    from benchmarks.search import clustered_embeddings, in_process_latency
    from core.config import load_config
    from search.index import GalleryIndex
    from serving.model_server import ModelServer
    from serving.search_client import SearchClient
    from serving.search_server import SearchServer

    x, _ = clustered_embeddings(size + queries, dim, seed=seed)
    gallery, query_rows = x[:size], x[size:]
    config = dataclasses.replace(load_config(None).gallery_index, kind=kind)
    tmp = tempfile.mkdtemp(prefix="search-service-bench-")
    try:
        base = os.path.join(tmp, "serving")
        t0 = time.perf_counter()
        directory = _push_version(base, os.path.join(tmp, "work"), gallery, config)
        build_s = time.perf_counter() - t0
        local = GalleryIndex.load(directory)
        with ModelServer(base, MODEL, grpc_port=0, rest_port=None, poll_seconds=3600,
                         num_versions=2) as models, \
                SearchServer(base, MODEL, models.grpc_target, grpc_port=0, rest_port=None,
                             poll_seconds=3600) as search, \
                SearchClient(search.grpc_target, MODEL, timeout_s=60, retries=0) as client:
            if search.service.served_version() != 1:
                raise RuntimeError(f"the search service serves no pair: "
                                   f"{search.service.version_states()}")
            for q in query_rows[:5]:  # warm-up: channel, faiss, allocator
                client.search_embeddings(q[None, :], k=K)
            in_process_latency(local, query_rows[:5], K)
            served, direct = [], []
            for q in query_rows:
                t = time.perf_counter()
                version, hits = client.search_embeddings(q[None, :], k=K)
                served.append(time.perf_counter() - t)
                t = time.perf_counter()
                local.search(q[None, :], K)
                direct.append(time.perf_counter() - t)
                assert version == 1 and len(hits[0]) == K
            same = [h["id"] for h in client.search_embeddings(query_rows[:1], k=K)[1][0]] == \
                [h.id for h in local.search(query_rows[:1], K)[0]]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    service, in_process = _percentiles(served), _percentiles(direct)
    return {
        "size": size, "dimension": dim, "kind": local.kind, "queries": queries, "k": K,
        "build_and_push_s": round(build_s, 2), "same_answer": same,
        "service": service, "in_process": in_process,
        "ratio_p50": service["p50_ms"] / in_process["p50_ms"],
        "ratio_p99": service["p99_ms"] / in_process["p99_ms"],
        "overhead_p50_ms": service["p50_ms"] - in_process["p50_ms"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="gallery items")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--kind", default="auto", help="gallery_index.kind (default auto)")
    parser.add_argument("--queries", type=int, default=300, help="timed queries")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.size, args.dim, args.kind, args.queries), indent=1))


if __name__ == "__main__":
    main()
