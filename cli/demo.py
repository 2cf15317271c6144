"""`cgd demo`: the whole product on generated data, end to end.

1. sample Cars196 archives (if the source directory lacks them),
2. the full pipeline through the tfx CLI on the local orchestrator,
3. the embedded TF-Serving-compatible server on the pushed model,
4. gRPC embedding requests and a gallery search,
5. a summary: Recall@K table, blessing verdict, served version, ranking picture.

The console shows what a person should read; everything the tfx CLI and the
pipeline print goes to the log file (``<work>/logs/tfx.log``): cli/console.py
chooses the lines (tests/test_demo_output.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from core.config import Config, load_config
from core.errors import CliError
from core.names import CARS196_FILES
from cli.console import INDENT, import_tensorflow_quietly, log_records_to, run_shown
from pipeline.artifacts import newest_numbered_dir, newest_output
from pipeline.run import LOCAL_RUNNER



def tfx_command(*args: str) -> list[str]:
    """The tfx CLI of this environment (the one installed beside this Python)."""
    tfx = Path(sys.executable).with_name("tfx")
    return [str(tfx) if tfx.exists() else "tfx", *args]


def tfx_home(cfg: Config) -> str:
    return os.path.join(os.path.dirname(cfg.pipeline.root), "tfx_home")


def run_tfx_cli(cfg: Config, config_path: str, log_path: str) -> None:
    """`tfx pipeline create|update` then `tfx run create`, local engine, progress shown.

    All they print is appended to ``log_path``; the console gets its progress
    lines and, if a command fails, the failing component's error; then CliError.
    """
    env = dict(os.environ, CGD_CONFIG=os.path.abspath(config_path), LOCAL_HOME=tfx_home(cfg),
               TF_USE_LEGACY_KERAS="1")
    exists = os.path.exists(os.path.join(tfx_home(cfg), cfg.pipeline.name))
    steps = [
        ("pipeline", "update" if exists else "create", "--engine", "local",
         "--pipeline_path", str(LOCAL_RUNNER)),
        ("run", "create", "--engine", "local", "--pipeline_name", cfg.pipeline.name),
    ]
    for args in steps:
        print(f"{INDENT}$ tfx {' '.join(args)}", flush=True)
        run_shown(tfx_command(*args), env, log_path, f"`tfx {' '.join(args[:2])}`")


def ensure_sample_data(cfg: Config) -> None:
    source = cfg.data.source_dir
    if all(os.path.exists(os.path.join(source, f)) for f in CARS196_FILES):
        print(f"{INDENT}using the Cars196 files in {source}", flush=True)
        return
    from components.datasets.cars196.sample import make_sample_data
    classes = max(cfg.data.train_range[1], cfg.data.eval_range[1])
    print(f"{INDENT}writing sample Cars196 archives ({classes} classes) to {source}", flush=True)
    make_sample_data(source, num_classes=classes, images_per_class=10, seed=0, corrupt=2)


def origin(file_name: str) -> str:
    """Where a Cars196 image comes from: "cars_train/00061.jpg" -> "cars_train.tgz:cars_train/00061.jpg".

    The archives number their members alike (cars_train/00061.jpg and cars_test/00061.jpg
    are different cars), so a bare file name does not say which image it is.
    """
    return f"{file_name.split('/', 1)[0]}.tgz:{file_name}"


def gallery_and_queries(cfg: Config, work: str) -> tuple[str, list[tuple[str, int, str]],
                                                         dict[str, str]]:
    """Gallery = TFDS-test images of the eval classes; queries = TFDS-train images of them.

    Returns (gallery dir, [(query path, class id, origin)], {gallery file name: origin}).
    The TFDS parse writes the images out under ``<work>/parse/`` (the archives inflated).
    """
    from components.datasets.cars196 import source as tfds_source
    gallery = os.path.join(work, "gallery")
    shutil.rmtree(gallery, ignore_errors=True)
    os.makedirs(gallery)
    queries, origins = [], {}
    for record in tfds_source.iter_records(cfg.data.source_dir, os.path.join(work, "parse")):
        if cfg.data.split_of_class(record["class_id"] + 1) != "eval":
            continue
        name = f"class{record['class_id'] + 1:03d}_{os.path.basename(record['image_path'])}"
        if record["source_split"] == "test":
            shutil.copy(record["image_path"], os.path.join(gallery, name))
            origins[name] = origin(record["file_name"])
        elif len(queries) < 3 and all(c != record["class_id"] + 1 for _, c, _ in queries):
            queries.append((record["image_path"], record["class_id"] + 1,
                            origin(record["file_name"])))
    return gallery, queries, origins


def search_lines(query: tuple[str, int, str], hits, origins: dict[str, str],
                 gallery_size: int, skipped: int) -> list[str]:
    """The demo's search, each image named by its archive and member (``origin``)."""
    _, query_class, query_origin = query
    lines = [f"    query {query_origin} (class {query_class}, not in the gallery); top "
             f"{len(hits)} of {gallery_size} gallery images from cars_test.tgz "
             f"({skipped} unreadable skipped):"]
    for rank, (_, distance, path) in enumerate(hits, 1):
        name = os.path.basename(path)
        same = name.startswith(f"class{query_class:03d}_")
        lines.append(f"    {rank}. {distance:.4f}  {name} (from {origins.get(name, '?')})"
                     f"{'  <- same class' if same else ''}")
    return lines


def run_demo(config_path: str) -> int:
    started = time.monotonic()
    cfg = load_config(config_path)
    log_path = os.path.join(os.path.dirname(cfg.pipeline.root), "logs", "tfx.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with log_records_to(log_path):
        return _run_demo(cfg, config_path, log_path, started)


def _run_demo(cfg: Config, config_path: str, log_path: str, started: float) -> int:
    work = os.path.dirname(cfg.pipeline.root)
    print(f"==> 1/5 data: {cfg.data.source_dir}", flush=True)
    ensure_sample_data(cfg)

    print(f"==> 2/5 pipeline {cfg.pipeline.name} through the tfx CLI (local orchestrator); "
          f"full log: {log_path}", flush=True)
    run_tfx_cli(cfg, config_path, log_path)

    evaluation = newest_output(cfg, "RecallEvaluator", "evaluation")
    metrics = json.load(open(os.path.join(evaluation, "metrics.json"))) if evaluation else {}
    model_dir = os.path.join(cfg.pipeline.serving_dir, cfg.serving.model_name)
    if not newest_numbered_dir(model_dir):
        raise CliError(f"no model has been pushed to {model_dir}: {metrics.get('reason', '?')}")

    print(f"==> 3/5 serving {model_dir} (embedded TF-Serving-compatible server)", flush=True)
    import_tensorflow_quietly(log_path)
    from serving.client import EmbeddingClient
    from serving.index import build_index
    from serving.model_server import ModelServer
    from serving.stderr_filter import without_libjpeg_messages
    # The gallery holds the sample's corrupt images: the index build names them, so
    # libjpeg's bare lines about them would only clutter the console (as for `cgd serve`).
    with without_libjpeg_messages(), ModelServer(
            cfg.pipeline.serving_dir, cfg.serving.model_name, host="127.0.0.1", grpc_port=0,
            rest_port=0, poll_seconds=1.0) as server:
        print(f"    gRPC {server.grpc_target}, REST {server.rest_url}", flush=True)
        with EmbeddingClient(server.grpc_target, cfg.serving.model_name, timeout_s=60) as client:
            status = client.model_status()
            gallery, queries, origins = gallery_and_queries(cfg, work)
            print(f"==> 4/5 gRPC embedding requests for {len(queries)} query images", flush=True)
            embeddings = client.embed_files([path for path, *_ in queries])
            for (_, class_id, query_origin), e in zip(queries, embeddings):
                print(f"    {query_origin} (class {class_id}): embedding dim "
                      f"{e.shape[0]}, norm {float((e ** 2).sum()) ** 0.5:.4f}, "
                      f"served by version {client.last_model_version}")
            print(f"==> 5/5 gallery index of {gallery} and a search", flush=True)
            report = build_index(client, gallery)
            report.index.save(os.path.join(work, "gallery.index.npz"))
            hits = report.index.search(embeddings[0], k=8)
            print("\n".join(search_lines(queries[0], hits, origins, len(report.index),
                                         len(report.skipped))))

    candidate = metrics.get("candidate", {})
    print("\n==> summary")
    print("    " + "  ".join(f"{k:>9}" for k in candidate if k.startswith("recall@"))
          + f"  {'MAP@R':>7}  {'NMI':>6}")
    print("    " + "  ".join(f"{v:9.4f}" for k, v in candidate.items() if k.startswith("recall@"))
          + f"  {candidate.get('map@r', float('nan')):7.4f}  {candidate.get('nmi', float('nan')):6.4f}")
    print(f"    verdict: {metrics.get('reason')}")
    print(f"    served: model '{cfg.serving.model_name}' version "
          f"{status[0]['version'] if status else '?'} from {model_dir}")
    print(f"    ranking picture: {os.path.join(evaluation, 'rankings.png')} "
          f"(and rankings.html)")
    print(f"    finished in {time.monotonic() - started:.0f} s")
    return 0
