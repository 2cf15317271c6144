"""`cgd serve`, `cgd embed`, `cgd index build`, `cgd search`.

Defaults come from the ``serving`` section of the config (``--config``), so
``cgd serve`` with no flags serves ``pipeline.serving_dir/<serving.model_name>``
on 127.0.0.1:8500 (gRPC) and :8501 (REST), like ``tensorflow_model_server``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from core.names import SERVING_SIGNATURE

log = logging.getLogger("cgd")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve the pushed model over gRPC and REST (TF Serving protocol)",
        description="Embedded TF-Serving-compatible server: serves the newest version under "
                    "MODEL_BASE_PATH/MODEL_NAME/<version>/, polls for new pushes. "
                    "Unset flags come from the config's serving section.")
    p.add_argument("--config", help="YAML config (default: the packaged defaults)")
    p.add_argument("--model-base-path",
                   help="directory holding MODEL_NAME/<version>/ (default: pipeline.serving_dir; "
                        "TF Serving's --model_base_path is this plus /MODEL_NAME)")
    p.add_argument("--model-name", help="model name in requests and the directory name")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, help="gRPC port (0 = any free port)")
    p.add_argument("--rest-port", type=int, help="REST port (0 = any free port, -1 = off)")
    p.add_argument("--poll-seconds", type=float, help="how often to look for new versions")
    p.add_argument("--max-batch-size", type=int, help="merge concurrent requests (0 = off)")
    p.add_argument("--batch-timeout-ms", type=float, help="longest wait for a batch to fill")
    p.add_argument("--batching-parameters-file",
                   help="TF Serving BatchingParameters text proto (serving/deploy/"
                        "batching_parameters.txt); explicit --max-batch-size/--batch-timeout-ms win")
    p.add_argument("--max-request-bytes", type=int,
                   help="larger requests fail with RESOURCE_EXHAUSTED (REST: 413)")
    p.set_defaults(func=serve)

    p = subparsers.add_parser(
        "embed", help="embed images through a model server (gRPC)",
        description="Embed image files with a TF Serving (or `cgd serve`) model. Prints JSON "
                    "{path: embedding} to stdout, or writes --output (.json, or .npy [N, D] "
                    "in argument order). A file the server cannot decode is named and left "
                    "out (of the .npy rows too), as `cgd index build` does; --strict fails instead.")
    _client_args(p)
    p.add_argument("image_files", nargs="+", metavar="IMAGE", help="JPEG/PNG files")
    p.add_argument("--output", help="out.json or out.npy (default: JSON to stdout)")
    p.add_argument("--strict", action="store_true",
                   help="fail on an image the server rejects instead of skipping it")
    p.set_defaults(func=embed)

    p = subparsers.add_parser("index", help="gallery index for retrieval")
    sub = p.add_subparsers(dest="index_command", metavar="ACTION")
    b = sub.add_parser(
        "build", help="embed every image under a directory into an index file",
        description="Embed all .jpg/.jpeg/.png under --images (recursively) through the "
                    "server in batches and write an .npz index (atomically).")
    _client_args(b)
    b.add_argument("--images", required=True, help="gallery directory")
    b.add_argument("--out", required=True, help="index file to write (.npz)")
    b.add_argument("--strict", action="store_true",
                   help="fail on an image the server rejects instead of skipping it")
    b.set_defaults(func=index_build)
    p.set_defaults(func=lambda args, _p=p: _missing_action(_p))

    p = subparsers.add_parser(
        "search", help="nearest gallery images of a query image",
        description="Embed IMAGE through the server and print the exact top-k gallery "
                    "images by Euclidean distance.")
    _client_args(p)
    p.add_argument("--index", required=True, help="index file from `cgd index build`")
    p.add_argument("image", metavar="IMAGE", help="query image")
    p.add_argument("-k", type=int, default=8, help="number of results (default 8)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=search)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (default: the packaged defaults)")
    p.add_argument("--server", help="gRPC HOST:PORT (default: serving.host:serving.grpc_port)")
    p.add_argument("--model-name", help="default: serving.model_name")
    p.add_argument("--signature-name", default=SERVING_SIGNATURE,
                   help=f"signature to call (default {SERVING_SIGNATURE}: encoded image bytes)")
    p.add_argument("--model-version", type=int, help="pin a version (default: newest served)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--retries", type=int, default=3, help="retries on UNAVAILABLE")
    p.add_argument("--batch-size", type=int, default=32, help="images per request")


def _missing_action(parser):
    from core.errors import CliError
    raise CliError(f"choose an action: {parser.prog} build ...")


def _serving_config(args):
    from core.config import load_config
    return load_config(getattr(args, "config", None))


def _client(args):
    from core.errors import CliError
    from serving.client import EmbeddingClient

    cfg = _serving_config(args).serving
    host = cfg.host if cfg.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    target = args.server or f"{host}:{cfg.grpc_port}"
    if args.batch_size <= 0 or args.timeout <= 0 or args.retries < 0:
        raise CliError("--batch-size and --timeout must be > 0, --retries >= 0")
    return EmbeddingClient(target, model_name=args.model_name or cfg.model_name,
                           signature_name=args.signature_name, timeout_s=args.timeout,
                           retries=args.retries, version=args.model_version,
                           batch_size=args.batch_size)


def serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from core.errors import CliError

    cfg = _serving_config(args)
    sc = cfg.serving
    base = args.model_base_path or cfg.pipeline.serving_dir
    name = args.model_name or sc.model_name
    if not os.path.isdir(base):
        raise CliError(f"model base path {base} does not exist")
    model_dir = os.path.join(base, name)
    if not os.path.isdir(model_dir) and any(d.isdigit() for d in os.listdir(base)):
        raise CliError(f"{base} holds version directories itself: pass its parent as "
                       f"--model-base-path and its name as --model-name (layout BASE/NAME/<version>/)")
    max_batch, timeout_ms = sc.max_batch_size, sc.batch_timeout_ms
    if args.batching_parameters_file:
        from google.protobuf import text_format

        from serving.deploy_config import read_batching_parameters
        try:
            max_batch, timeout_ms = read_batching_parameters(args.batching_parameters_file)
        except (OSError, text_format.ParseError) as e:
            raise CliError(f"{args.batching_parameters_file}: {e}") from None
    if args.max_batch_size is not None:
        max_batch = args.max_batch_size
    if args.batch_timeout_ms is not None:
        timeout_ms = args.batch_timeout_ms
    rest_port = sc.rest_port if args.rest_port is None else args.rest_port
    port = sc.grpc_port if args.port is None else args.port
    for flag, value in (("--port", port), ("--rest-port", rest_port)):
        if not -1 <= value <= 65535 or (flag == "--port" and value < 0):
            raise CliError(f"{flag} {value} is not a port")

    from serving.model_server import ModelServer
    from serving.stderr_filter import without_libjpeg_messages

    # A corrupt upload is answered and logged by the server (serving.dataplane): libjpeg's
    # own bare lines about it are dropped (serving.stderr_filter says why).
    with without_libjpeg_messages():
        try:
            server = ModelServer(base, name, host=args.host or sc.host, grpc_port=port,
                                 rest_port=None if rest_port < 0 else rest_port,
                                 poll_seconds=args.poll_seconds or sc.poll_seconds,
                                 max_batch_size=max_batch, batch_timeout_ms=timeout_ms,
                                 max_request_bytes=args.max_request_bytes or sc.max_request_bytes)
            server.start()
        except (ValueError, OSError) as e:
            raise CliError(str(e)) from None
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        log.info("serve: ready (batching %s); Ctrl-C to stop",
                 f"max {max_batch} rows / {timeout_ms} ms" if max_batch else "off")
        try:
            while not stop.wait(1.0):
                pass
        finally:
            server.stop()
    return 0


def embed(args: argparse.Namespace) -> int:
    import numpy as np

    from core.errors import CliError
    from serving.client import ServingError
    from serving.index import embed_paths

    for path in args.image_files:
        if not os.path.isfile(path):
            raise CliError(f"image {path} does not exist")
    if args.output and not args.output.endswith((".json", ".npy")):
        raise CliError(f"--output {args.output}: use a .json or .npy file name")
    with _client(args) as client:
        try:
            report = embed_paths(client, args.image_files, batch_size=args.batch_size,
                                 strict=args.strict)
        except (ServingError, ValueError, RuntimeError) as e:
            raise CliError(str(e)) from None
    embeddings = report.embeddings
    # One line; embed_paths has already warned once per skipped file, naming it.
    log.info("embed: %d of %d images -> %s from model %s version %s%s", len(report.paths),
             len(args.image_files), list(embeddings.shape), client.model_name,
             report.model_version,
             f" ({len(report.skipped)} skipped, not in the output: "
             f"{', '.join(p for p, _ in report.skipped)})" if report.skipped else "")
    if args.output and args.output.endswith(".npy"):
        _atomic_write(args.output, lambda f: np.save(f, embeddings))
        return 0
    text = json.dumps({p: e.tolist() for p, e in zip(report.paths, embeddings)})
    if args.output:
        _atomic_write(args.output, lambda f: f.write(text.encode() + b"\n"))
    else:
        sys.stdout.write(text + "\n")
    return 0


def _atomic_write(path: str, write) -> None:
    import tempfile
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def index_build(args: argparse.Namespace) -> int:
    from core.errors import CliError
    from serving.client import ServingError
    from serving.index import build_index, progress_printer

    with _client(args) as client:
        try:
            report = build_index(client, args.images, batch_size=args.batch_size,
                                 strict=args.strict, progress=progress_printer("index build"))
        except (ServingError, FileNotFoundError, ValueError, RuntimeError) as e:
            raise CliError(str(e)) from None
    report.index.save(args.out)
    # One line; build_index has already warned once per skipped file, naming it.
    log.info("index build: indexed %d of %d images (%d skipped) -> %s (model %s version %d, "
             "dim %d)", len(report.index), len(report.index) + len(report.skipped),
             len(report.skipped), args.out, report.index.model_name,
             report.index.model_version, report.index.dim)
    return 0


def search(args: argparse.Namespace) -> int:
    from core.errors import CliError
    from serving.client import ServingError
    from serving.index import GalleryIndex, GalleryIndexError

    if args.k <= 0:
        raise CliError("-k must be > 0")
    if not os.path.isfile(args.image):
        raise CliError(f"image {args.image} does not exist")
    try:
        index = GalleryIndex.load(args.index)
    except GalleryIndexError as e:
        raise CliError(str(e)) from None
    with _client(args) as client:
        if client.model_name != index.model_name:
            raise CliError(f"the index was built with model {index.model_name!r}, "
                           f"the query would use {client.model_name!r} (--model-name)")
        try:
            query = client.embed_files([args.image])[0]
        except ServingError as e:
            raise CliError(str(e)) from None
        if client.last_model_version != index.model_version:
            log.warning("search: the index holds model version %d, the server answered with "
                        "version %s: distances mix two models (rebuild the index)",
                        index.model_version, client.last_model_version)
    if query.shape[0] != index.dim:
        raise CliError(f"the server's embeddings have dimension {query.shape[0]}, "
                       f"the index {args.index} has {index.dim}: rebuild the index")
    results = index.search(query, args.k)
    if args.json:
        print(json.dumps([{"rank": r, "distance": d, "path": p} for r, d, p in results]))
    else:
        print(f"{'rank':>4}  {'distance':>10}  path")
        for rank, dist, path in results:
            print(f"{rank:>4}  {dist:>10.6f}  {path}")
    return 0
