"""`cgd demo`: the whole product on generated data, end to end, for any ``data.dataset``.

1. the dataset's files: its sample data (``components/datasets/samples.py``) written into
   a new or empty ``data.source_dir`` inside the demo's work directory, or the files
   already there, checked by the dataset's own source; parsed once (the images written out
   under ``<work>/parse/``) and split as RetrievalExampleGen will split them,
2. the full pipeline through the tfx CLI on the local orchestrator,
3. the embedded TF-Serving-compatible server on the pushed model, and the search service
   beside it (both in this process, as `cgd serve --search` hosts them),
4. gRPC embedding requests for query images of the eval classes,
5. a search through the search service, against the gallery index pushed with the served
   version; then a summary: Recall@K table, blessing verdict, served version, ranking picture.

A config the demo cannot run (real data missing, spans, a split too small, more classes
per batch than the training split has) is refused in one line naming the key, before
the pipeline starts and without removing anything.

The console shows what a person should read; everything the tfx CLI and the
pipeline print goes to the log file (``<work>/logs/tfx.log``): cli/console.py
chooses the lines (tests/cli/test_demo.py).
"""

from __future__ import annotations

import collections
import functools
import importlib
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from core.config import Config, load_config
from core.errors import CliError
from core.names import CLASS_NAME_KEY, EVAL_GALLERY, LABEL_KEY
from cli.console import INDENT, import_tensorflow_quietly, log_records_to, run_shown
from pipeline.artifacts import newest_numbered_dir, newest_output
from pipeline.run import LOCAL_RUNNER

# The sample the demo writes: images per class, and corrupt files (to show that they are
# skipped and counted). Cars196's demo sample has always been 10 per class, 2 corrupt.
SAMPLE_IMAGES_PER_CLASS = 10
SAMPLE_CORRUPT = 2
# Query images of the demo's search step (distinct eval classes), and the hits shown.
QUERIES = 3
SEARCH_K = 8


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


def source_module(dataset: str):
    """The dataset's source (``components/datasets/<name>/source.py``)."""
    from core.dataset_spec import dataset_module
    return importlib.import_module(dataset_module(dataset, "source"))


def _call_with_options(function, *args, options: dict):
    """``function(*args, **options)`` with the options it takes: a source's
    ``check_source_dir`` takes fewer of ``data.source_options`` than its ``iter_records``."""
    accepted = inspect.signature(function).parameters
    return function(*args, **{k: v for k, v in options.items() if k in accepted})


def sample_classes(cfg: Config) -> int:
    """Classes of the sample the demo writes.

    A class-range dataset (cars196, cub200): the classes the ranges name. A dataset split by
    its own protocol (sop, inshop; folder by a hash of the names): twice what training
    needs, the held-out ``validation_classes`` plus one P×K batch of classes, since its
    sample keeps about half the classes for evaluation.
    """
    if cfg.data.train_range is not None:
        return max(cfg.data.train_range[1], cfg.data.eval_range[1])
    return 2 * (cfg.data.validation_classes + cfg.trainer.classes_per_batch)


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def ensure_source(cfg: Config, work: str) -> None:
    """The dataset's files in ``data.source_dir``, checked by its own source; or its sample
    written there when that is a new or empty directory inside the work directory.

    Anywhere else the directory is meant to hold real data, which the demo never replaces:
    a directory failing the check is refused (CliError naming data.source_dir).
    """
    dataset, source = cfg.data.dataset, cfg.data.source_dir
    if "{SPAN}" in cfg.data.file_pattern:
        raise CliError(f"data.file_pattern is {cfg.data.file_pattern!r}: the demo reads the "
                       f"files in data.source_dir itself, not spans (use `cgd pipeline run` "
                       f"or `cgd retrain`)")
    from components.datasets.records import DatasetSourceError
    try:
        _call_with_options(source_module(dataset).check_source_dir, source,
                           options=cfg.data.source_options)
        print(f"{INDENT}using the {dataset} files in {source}", flush=True)
        return
    except DatasetSourceError as e:
        empty = not os.path.exists(source) or (os.path.isdir(source) and not os.listdir(source))
        if not (empty and _inside(source, work)):
            raise CliError(f"data.source_dir: {e} (the demo writes {dataset} sample data only "
                           f"into a new or empty directory inside its work directory "
                           f"{work})") from None
    from components.datasets.samples import make_sample_data
    classes = sample_classes(cfg)
    print(f"{INDENT}writing {dataset} sample data ({classes} classes, "
          f"{SAMPLE_IMAGES_PER_CLASS} images each, {SAMPLE_CORRUPT} corrupt) to {source}",
          flush=True)
    try:
        make_sample_data(dataset, source, num_classes=classes,
                         images_per_class=SAMPLE_IMAGES_PER_CLASS, seed=0,
                         corrupt=SAMPLE_CORRUPT)
    except ValueError as e:  # e.g. more classes than the dataset has
        raise CliError(f"{dataset} sample data for {cfg.pipeline.name}: {e}") from None


def split_records(cfg: Config, work: str) -> dict[str, list[dict]]:
    """{split: records} of the dataset's files, split as RetrievalExampleGen splits them.

    The source parses ``data.source_dir`` with its images written out as files under
    ``<work>/parse/`` (the search's queries are read there). A split that cannot train or judge
    (``sources.check_split_sizes``, as ingestion would fail), or a 'train' split with fewer
    classes than one P×K batch, is refused here, before the pipeline runs.
    """
    from components.datasets.archive import ArchiveError
    from components.datasets.records import CLASS_ID, DatasetSourceError
    from components.example_gen import sources
    rule = cfg.data.split_rule(cfg.evaluator)
    try:  # a malformed file (the message names it and what was expected)
        records = list(source_module(cfg.data.dataset).iter_records(
            cfg.data.source_dir, os.path.join(work, "parse"), **cfg.data.source_options))
    except (DatasetSourceError, ArchiveError) as e:
        raise CliError(f"data.source_dir {cfg.data.source_dir}: {e}") from None
    try:  # a split too small: the message names the keys to change
        keyed, _ = sources.assign_splits(records, rule)
        sources.check_split_sizes(keyed, rule, {r[CLASS_ID] for r in records})
    except DatasetSourceError as e:
        raise CliError(str(e)) from None
    by_split = collections.defaultdict(list)
    for split, record in keyed:
        by_split[split].append(record)
    per_class = collections.Counter(r[CLASS_ID] for r in by_split["train"])
    trainable = sum(n >= 2 for n in per_class.values())
    if trainable < cfg.trainer.classes_per_batch:
        # The P×K sampler's own rule (trainer/sampler.py), known here before any training.
        raise CliError(f"trainer.classes_per_batch is {cfg.trainer.classes_per_batch}, but the "
                       f"{cfg.data.dataset} 'train' split has {trainable} classes with 2 or "
                       f"more images: lower it (or data.validation_classes)")
    return by_split


@functools.lru_cache(maxsize=8)
def _source_files(source_dir: str) -> tuple[str, ...]:
    # Listed once per directory, not once per image (SOP's eval split has 60,502).
    return tuple(os.listdir(source_dir))


def origin(record: dict, source_dir: str, parse_dir: str) -> str:
    """Where an image comes from, as its dataset's files name it.

    A member of an archive in source_dir is "<archive>:<member>", e.g.
    "cars_train.tgz:cars_train/00061.jpg" (Cars196's archives number their members alike:
    cars_train/00061.jpg and cars_test/00061.jpg are different cars); the sources inflate an
    archive under ``<parse>/extracted/<archive name without extension>/``. An image read in
    place is its path under source_dir; anything else, the source's ``file_name``.
    """
    from components.datasets.records import FILE_NAME, IMAGE_PATH
    path = os.path.abspath(record[IMAGE_PATH])
    extracted = os.path.abspath(os.path.join(parse_dir, "extracted"))
    if _inside(path, extracted):
        stem, _, member = os.path.relpath(path, extracted).partition(os.sep)
        archives = [name for name in _source_files(source_dir) if name.split(".")[0] == stem]
        if len(archives) == 1 and member:
            return f"{archives[0]}:{member.replace(os.sep, '/')}"
    if _inside(path, source_dir):
        return os.path.relpath(path, source_dir).replace(os.sep, "/")
    return record[FILE_NAME]


def _decodes(path: str) -> bool:
    from PIL import Image
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:  # a corrupt sample file (or real one): not a query
        return False


def queries_and_gallery(eval_records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Up to ``QUERIES`` query images of distinct classes, and the gallery, of the eval split.

    The dataset's own roles decide where it has them: In-shop's query and gallery images;
    the eval classes of a class-range dataset (Cars196, CUB) come with the original train
    and test files, whose test images are the gallery and train images the queries (as
    TFDS splits them). Otherwise (SOP's test products, a folder's classes) every image is
    a gallery image, and the first decodable image of a class with more is its query.
    Queries are never in the gallery.
    """
    from components.datasets.records import CLASS_ID, EVAL_ROLE, IMAGE_PATH, SOURCE_SPLIT
    is_candidate = [r[EVAL_ROLE] == "query"
                    or (r[EVAL_ROLE] == "" and r[SOURCE_SPLIT] == "train") for r in eval_records]
    candidates = [r for r, c in zip(eval_records, is_candidate) if c]
    gallery = [r for r, c in zip(eval_records, is_candidate) if not c]
    from_gallery = not candidates
    if from_gallery:
        per_class = collections.Counter(r[CLASS_ID] for r in gallery)
        candidates = [r for r in gallery if per_class[r[CLASS_ID]] >= 2]
    queries, classes = [], set()
    for record in candidates:
        if len(queries) == QUERIES:
            break
        if record[CLASS_ID] not in classes and _decodes(record[IMAGE_PATH]):
            queries.append(record)
            classes.add(record[CLASS_ID])
    if from_gallery:
        taken = {id(q) for q in queries}
        gallery = [r for r in gallery if id(r) not in taken]
    return queries, gallery


class Query(NamedTuple):
    """A query of the demo's search: its file, 1-based class id, origin and gallery id."""
    path: str
    class_id: int
    origin: str
    image_id: str
    in_index: bool  # all-vs-all: the pushed index holds the query itself


def demo_queries(cfg: Config, work: str, eval_records: list[dict]) -> tuple[
        list[Query], dict[str, str]]:
    """``queries_and_gallery``'s queries, and {image id: origin} of every eval image.

    The pushed index (``gallery_index.gallery: eval``) holds the eval split's images by
    their ``image_id``, all but In-shop's query images; the map names its hits.
    """
    from components.datasets.records import CLASS_ID, EVAL_ROLE, IMAGE_ID, IMAGE_PATH
    source, parse = cfg.data.source_dir, os.path.join(work, "parse")
    queries, _ = queries_and_gallery(eval_records)
    _source_files.cache_clear()  # a listing from an earlier call may be stale
    origins = {r[IMAGE_ID]: origin(r, source, parse) for r in eval_records}
    from_eval = cfg.gallery_index.gallery == EVAL_GALLERY
    return [Query(r[IMAGE_PATH], r[CLASS_ID] + 1, origins[r[IMAGE_ID]], r[IMAGE_ID],
                  from_eval and r[EVAL_ROLE] != "query") for r in queries], origins


def search_lines(query: Query, version: int, hits: list[dict], origins: dict[str, str],
                 index_size: int, kind: str) -> list[str]:
    """The demo's search, each image named by where it comes from (``origin``); ``hits``
    as ``SearchClient`` returns them, the query's own hit already left out."""
    files = sorted({origins.get(h["id"], "").split(":", 1)[0] for h in hits
                    if ":" in origins.get(h["id"], "")})
    where = f" from {', '.join(files)}" if files else ""
    itself = ("in the index, its own hit left out" if query.in_index
              else "not in the index")
    lines = [f"    query {query.origin} (class {query.class_id}, {itself}); top {len(hits)} "
             f"of {index_size} indexed images{where}, answered by version {version} "
             f"({kind} index):"]
    for rank, hit in enumerate(hits, 1):
        label = hit["metadata"].get(LABEL_KEY)
        name = hit["metadata"].get(CLASS_NAME_KEY)
        cls = "class ?" if label is None else f"class {int(label) + 1}"
        same = label is not None and int(label) + 1 == query.class_id
        lines.append(f"    {rank}. {hit['distance']:.4f}  {origins.get(hit['id'], hit['id'])} "
                     f"({cls}{f', {name}' if name else ''}){'  <- same class' if same else ''}")
    return lines


def search_step(search, model_dir: str, served_version: int, query: Query,
                origins: dict[str, str], k: int = SEARCH_K) -> list[str]:
    """Step 5: ``query`` through the search service ``search`` (a started ``SearchServer``),
    against the index pushed with ``served_version``; a line saying why when it cannot."""
    from search.index import read_manifest
    from serving.client import ServingError
    from serving.search_client import SearchClient
    from serving.search_versions import index_dir
    directory = index_dir(os.path.join(model_dir, str(served_version)))
    if not os.path.isdir(directory):
        return [f"    version {served_version} was pushed without a gallery index "
                f"(gallery_index.enabled: false): no search"]
    manifest = read_manifest(directory)
    # Recall@K's rule: a query in the index is not its own neighbour.
    ask = min(k + query.in_index, int(manifest["size"]))
    with open(query.path, "rb") as f:
        image = f.read()
    try:
        with SearchClient(search.grpc_target, search.model_name, timeout_s=60) as client:
            version, [hits] = client.search_images([image], k=ask)
    except ServingError as e:
        return [f"    no search: {e.code.name}: {e.details}"]
    if version != served_version:
        why = search.service.version_states().get(served_version, (None, "", ""))[2]
        return [f"    the search service answered from version {version}, the model server "
                f"serves {served_version}{f': {why}' if why else ''}: no search shown"]
    hits = [h for h in hits if h["id"] != query.image_id][:k]
    return search_lines(query, version, hits, origins, int(manifest["size"]),
                        manifest["kind"])


def run_demo(config_path: str) -> int:
    started = time.monotonic()
    cfg = load_config(config_path)
    log_path = os.path.join(os.path.dirname(cfg.pipeline.root), "logs", "tfx.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with log_records_to(log_path):
        return _run_demo(cfg, config_path, log_path, started)


def _run_demo(cfg: Config, config_path: str, log_path: str, started: float) -> int:
    work = os.path.dirname(cfg.pipeline.root)
    print(f"==> 1/5 data: {cfg.data.dataset} in {cfg.data.source_dir}", flush=True)
    # The sources read their files through TensorFlow: its import noise goes to the log.
    import_tensorflow_quietly(log_path)
    ensure_source(cfg, work)
    splits = split_records(cfg, work)
    print(f"{INDENT}{cfg.data.dataset} splits: " + ", ".join(
        f"{split} {len(records)} images" for split, records in splits.items()), flush=True)

    print(f"==> 2/5 pipeline {cfg.pipeline.name} on {cfg.data.dataset} through the tfx CLI "
          f"(local orchestrator); full log: {log_path}", flush=True)
    run_tfx_cli(cfg, config_path, log_path)

    evaluation = newest_output(cfg, "RecallEvaluator", "evaluation")
    metrics = json.load(open(os.path.join(evaluation, "metrics.json"))) if evaluation else {}
    model_dir = os.path.join(cfg.pipeline.serving_dir, cfg.serving.model_name)
    if not newest_numbered_dir(model_dir):
        raise CliError(f"no model has been pushed to {model_dir}: {metrics.get('reason', '?')}")

    print(f"==> 3/5 serving {model_dir}: the embedded TF-Serving-compatible server and the "
          f"search service", flush=True)
    from serving.client import EmbeddingClient
    from serving.model_server import ModelServer
    from serving.search_server import SearchServer
    from serving.stderr_filter import without_libjpeg_messages
    # Corrupt uploads are answered and logged by the server: libjpeg's bare lines about
    # them would only clutter the console (as for `cgd serve`). The version before the
    # newest stays loaded, as `cgd serve --search` keeps it: the search answers from it
    # until the new version's index is loaded (serving/search_service.py).
    with without_libjpeg_messages(), ModelServer(
            cfg.pipeline.serving_dir, cfg.serving.model_name, host="127.0.0.1", grpc_port=0,
            rest_port=0, poll_seconds=1.0, num_versions=2) as server, SearchServer(
            cfg.pipeline.serving_dir, cfg.serving.model_name, server.grpc_target,
            host="127.0.0.1", grpc_port=0, rest_port=0, poll_seconds=1.0) as search:
        print(f"    model server: gRPC {server.grpc_target}, REST {server.rest_url}", flush=True)
        print(f"    search service: gRPC {search.grpc_target}, REST {search.rest_url}",
              flush=True)
        with EmbeddingClient(server.grpc_target, cfg.serving.model_name, timeout_s=60) as client:
            status = client.model_status()
            queries, origins = demo_queries(cfg, work, splits["eval"])
            print(f"==> 4/5 gRPC embedding requests for {len(queries)} {cfg.data.dataset} "
                  f"query images", flush=True)
            embeddings = client.embed_files([q.path for q in queries])
            served = client.last_model_version
            for query, e in zip(queries, embeddings):
                print(f"    {query.origin} (class {query.class_id}): embedding dim "
                      f"{e.shape[0]}, norm {float((e ** 2).sum()) ** 0.5:.4f}, "
                      f"served by version {served}")
        print(f"==> 5/5 a search through the search service, against the gallery index "
              f"pushed with version {served}", flush=True)
        print("\n".join(search_step(search, model_dir, served, queries[0], origins)),
              flush=True)

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
