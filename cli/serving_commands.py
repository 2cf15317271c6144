"""`cgd serve`, `cgd search-serve`, `cgd embed`, `cgd index build`, `cgd search`.

Defaults come from the ``serving`` section of the config (``--config``), so
``cgd serve`` with no flags serves ``pipeline.serving_dir/<serving.model_name>``
on 127.0.0.1:8500 (gRPC) and :8501 (REST), like ``tensorflow_model_server``, and
the search service (``serving.search_server``) beside it on :8510 and :8511 when
the versions carry a gallery index. ``cgd search-serve`` runs the search service
alone, beside the real ``tensorflow/serving``.
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
    p.add_argument("--search", action=argparse.BooleanOptionalAction, default=None,
                   help="also serve gallery search in this process (default: when a pushed "
                        "version carries a gallery index)")
    _search_port_args(p)
    p.set_defaults(func=serve)

    p = subparsers.add_parser(
        "search-serve", help="serve gallery search beside a TF Serving model server",
        description="The search service alone: query embeddings from --embedding-server (the "
                    "official tensorflow/serving, or `cgd serve`), each version's index from "
                    "MODEL_BASE_PATH/MODEL_NAME/<version>/assets.extra/gallery_index/, the "
                    "catalogue at MODEL_BASE_PATH/MODEL_NAME/catalogue/.")
    p.add_argument("--config", help="YAML config (default: the packaged defaults)")
    p.add_argument("--embedding-server", required=True,
                   help="gRPC HOST:PORT of the TF-Serving-protocol server of the same model")
    p.add_argument("--model-base-path", help="directory holding MODEL_NAME/<version>/ "
                                             "(default: pipeline.serving_dir)")
    p.add_argument("--model-name", help="default: serving.model_name")
    p.add_argument("--host", help="address to bind (default: serving.host)")
    p.add_argument("--poll-seconds", type=float, help="how often to look for new versions")
    _search_port_args(p)
    p.set_defaults(func=search_serve)

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
        "build", help="embed every image under a directory into a gallery index",
        description="Embed all .jpg/.jpeg/.png under --images (recursively) through the "
                    "served model and build a gallery index (search.index, the config's "
                    "gallery_index section) stamped with that model version's fingerprint. "
                    "Written atomically into that version's assets.extra/gallery_index/ "
                    "(where the search service looks), or --out. Ids are the paths relative "
                    "to --images; metadata holds the path and the class (first sub-folder).")
    _client_args(b)
    b.add_argument("--images", required=True, help="gallery directory")
    b.add_argument("--model-base-path",
                   help="directory holding MODEL_NAME/<version>/, as the server reads it "
                        "(default: pipeline.serving_dir): the version's saved_model.pb is "
                        "fingerprinted")
    b.add_argument("--out", help="index directory to write (default: the version's own)")
    b.add_argument("--strict", action="store_true",
                   help="fail on an image the server rejects instead of skipping it")
    b.set_defaults(func=index_build)
    p.set_defaults(func=lambda args, _p=p: _missing_action(_p))

    p = subparsers.add_parser(
        "search", help="nearest gallery images of a query image, through the search service",
        description="Send IMAGE to the search service (`cgd serve`, `cgd search-serve`), which "
                    "embeds it with the served version's model and searches that version's "
                    "index; print the top-k ids, distances and metadata.")
    p.add_argument("--config", help="YAML config (default: the packaged defaults)")
    p.add_argument("--server", help="search service gRPC HOST:PORT (default: serving.host:"
                                    "8510)")
    p.add_argument("--model-name", help="default: serving.model_name")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
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


def _search_port_args(p: argparse.ArgumentParser) -> None:
    from serving.search_protocol import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT
    p.add_argument("--search-port", type=int, default=DEFAULT_GRPC_PORT,
                   help=f"search gRPC port (default {DEFAULT_GRPC_PORT}; 0 = any free port)")
    p.add_argument("--search-rest-port", type=int, default=DEFAULT_REST_PORT,
                   help=f"search REST port (default {DEFAULT_REST_PORT}; 0 = any, -1 = off)")


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
    _check_search_ports(args)

    from serving.model_server import ModelServer
    from serving.search_server import SearchServer
    from serving.search_versions import versions_with_index
    from serving.stderr_filter import without_libjpeg_messages

    search = args.search
    if search is None:
        # From the disk, not gallery_index.enabled (true by default): a server of models
        # without an index opens no search ports it could not answer on.
        search = bool(versions_with_index(model_dir))
    host = args.host or sc.host
    poll_seconds = args.poll_seconds or sc.poll_seconds
    # A corrupt upload is answered and logged by the server (serving.dataplane): libjpeg's
    # own bare lines about it are dropped (serving.stderr_filter says why).
    with without_libjpeg_messages():
        servers = []
        try:
            # With search, the version before the newest stays loaded: the search answers
            # from it until the new version's index is loaded (serving.search_service).
            servers.append(ModelServer(
                base, name, host=host, grpc_port=port,
                rest_port=None if rest_port < 0 else rest_port, poll_seconds=poll_seconds,
                max_batch_size=max_batch, batch_timeout_ms=timeout_ms,
                max_request_bytes=args.max_request_bytes or sc.max_request_bytes,
                num_versions=2 if search else 1).start())
            if search:
                servers.append(SearchServer(
                    base, name, servers[0].grpc_target, host=host, grpc_port=args.search_port,
                    rest_port=None if args.search_rest_port < 0 else args.search_rest_port,
                    poll_seconds=poll_seconds).start())
        except (ValueError, OSError) as e:
            for server in reversed(servers):
                server.stop()
            raise CliError(str(e)) from None
        log.info("serve: ready (batching %s; search %s); Ctrl-C to stop",
                 f"max {max_batch} rows / {timeout_ms} ms" if max_batch else "off",
                 f"on {servers[1].grpc_target}" if search else "off")
        _serve_until_signalled(servers)
    return 0


def _check_search_ports(args) -> None:
    from core.errors import CliError
    for flag, value, low in (("--search-port", args.search_port, 0),
                             ("--search-rest-port", args.search_rest_port, -1)):
        if not low <= value <= 65535:
            raise CliError(f"{flag} {value} is not a port")


def _serve_until_signalled(servers) -> None:
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for server in reversed(servers):
            server.stop()


def search_serve(args: argparse.Namespace) -> int:
    from core.errors import CliError

    cfg = _serving_config(args)
    base = args.model_base_path or cfg.pipeline.serving_dir
    name = args.model_name or cfg.serving.model_name
    if not os.path.isdir(base):
        raise CliError(f"model base path {base} does not exist")
    _check_search_ports(args)

    from serving.search_server import SearchServer
    try:
        server = SearchServer(base, name, args.embedding_server, host=args.host or cfg.serving.host,
                              grpc_port=args.search_port,
                              rest_port=None if args.search_rest_port < 0 else args.search_rest_port,
                              poll_seconds=args.poll_seconds or cfg.serving.poll_seconds).start()
    except (ValueError, OSError) as e:
        raise CliError(str(e)) from None
    log.info("search-serve: ready (embeddings from %s); Ctrl-C to stop", args.embedding_server)
    _serve_until_signalled([server])
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
    from search.index import GalleryIndexError
    from serving.client import ServingError
    from serving.index import build_gallery_index, progress_printer
    from serving.search_versions import index_dir

    cfg = _serving_config(args)
    base = args.model_base_path or cfg.pipeline.serving_dir
    with _client(args) as client:
        try:
            report = build_gallery_index(client, args.images, base, cfg.gallery_index,
                                         batch_size=args.batch_size, strict=args.strict,
                                         progress=progress_printer("index build"))
        except (ServingError, FileNotFoundError, ValueError, RuntimeError) as e:
            raise CliError(str(e)) from None  # GalleryIndexError is a ValueError
    out = args.out or index_dir(report.version_dir)
    try:
        report.index.save(out)
    except (OSError, GalleryIndexError) as e:
        raise CliError(f"{out}: {e}") from None
    index = report.index
    # One line; embed_paths has already warned once per skipped file, naming it.
    log.info("index build: indexed %d of %d images (%d skipped) -> %s (%s index, model %s "
             "version %s, dim %d)", index.size, index.size + len(report.skipped),
             len(report.skipped), out, index.kind, index.model.name, index.model.version,
             index.dimension)
    return 0


def search(args: argparse.Namespace) -> int:
    from core.errors import CliError
    from serving.client import ServingError
    from serving.search_client import SearchClient
    from serving.search_protocol import DEFAULT_GRPC_PORT

    if args.k <= 0:
        raise CliError("-k must be > 0")
    if args.timeout <= 0:
        raise CliError("--timeout must be > 0")
    if not os.path.isfile(args.image):
        raise CliError(f"image {args.image} does not exist")
    sc = _serving_config(args).serving
    host = sc.host if sc.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    target = args.server or f"{host}:{DEFAULT_GRPC_PORT}"
    with open(args.image, "rb") as f:
        image = f.read()
    with SearchClient(target, args.model_name or sc.model_name,
                      timeout_s=args.timeout) as client:
        try:
            version, [hits] = client.search_images([image], k=args.k)
        except ServingError as e:
            raise CliError(str(e)) from None
    if args.json:
        print(json.dumps({"model_version": version, "results": hits}))
    else:
        print(f"model version {version}")
        print(f"{'rank':>4}  {'distance':>10}  id  metadata")
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:>4}  {hit['distance']:>10.6f}  {hit['id']}  "
                  f"{json.dumps(hit['metadata'])}")
    return 0
