"""`cgd demo` (cli/demo.py): its steps, what it refuses, its search, its output files.

run_tfx_cli runs a stand-in for the tfx CLI that prints lines copied from real runs
(tests/support/tfx_logs.py; what the console filter makes of them: tests/cli/test_console.py).

Any dataset (the end of the file): what the demo refuses before the pipeline, where its
search takes queries, and one whole `cgd demo` on configs/demo-sop.yaml with a few training
steps (a module fixture: the only pipeline run of this file), searching through the search
service the pushed model and its index.
"""
import os
import sys
from types import SimpleNamespace

import pytest

from core.errors import CliError
from cli import demo
from tests.support.paths import REPO_ROOT
from tests.support.tfx_logs import CREATE_LOG, SOURCE_FAILURE_LOG


FAKE_TFX = """\
import sys
if sys.argv[1] == "pipeline":
    sys.stdout.write(open(sys.argv[2]).read())
else:
    sys.stdout.write(open(sys.argv[3]).read())
    sys.exit(1)
"""


@pytest.fixture
def fake_tfx(tmp_path, monkeypatch):
    """The tfx CLI replaced by a script printing the create/run logs above; the run fails."""
    script, create, run = tmp_path / "tfx.py", tmp_path / "create.log", tmp_path / "run.log"
    script.write_text(FAKE_TFX)
    create.write_text("".join(CREATE_LOG))
    run.write_text("".join(SOURCE_FAILURE_LOG))
    monkeypatch.setattr(demo, "tfx_command", lambda *args: [
        sys.executable, str(script), args[0], str(create), str(run)])
    return tmp_path


@pytest.mark.slow
def test_run_tfx_cli_prints_progress_and_the_error_then_raises(fake_tfx, capsys):
    cfg = SimpleNamespace(pipeline=SimpleNamespace(root=str(fake_tfx / "pipelines"),
                                                   name="cgd-demo"))
    log_path = fake_tfx / "logs" / "tfx.log"
    with pytest.raises(CliError) as raised:
        demo.run_tfx_cli(cfg, str(fake_tfx / "demo.yaml"), str(log_path))
    assert str(raised.value) == (
        f"`tfx run create` failed (exit 1) in component RetrievalExampleGen: Cars196SourceError; "
        f"full log: {log_path}")
    console = capsys.readouterr().out.splitlines()
    assert [line.split(" --")[0] for line in console[:5]] == [
        "    $ tfx pipeline create", '    Pipeline "cgd-demo" created successfully.',
        "    $ tfx run create", "    Component RetrievalExampleGen: running",
        "    Component RetrievalExampleGen: failed"]
    assert console[5] == "    error in component RetrievalExampleGen:"
    assert console[6].startswith("      components.datasets.cars196.source.Cars196SourceError: ")
    assert console[7:] == [f"    full log: {log_path}"]
    logged = log_path.read_text()
    assert "".join(SOURCE_FAILURE_LOG) in logged and "".join(CREATE_LOG) in logged


def demo_config(path, work, source, dataset="cars196", data=None, trainer=None, **sections):
    """A demo config file at ``path`` with its work directory ``work`` (absolute paths)."""
    import yaml
    text = {"pipeline": {"name": "cgd-demo", "root": f"{work}/pipelines",
                         "metadata_path": f"{work}/metadata.sqlite",
                         "serving_dir": f"{work}/serving"},
            "data": {"dataset": dataset, "source_dir": str(source), **(data or {})},
            "trainer": dict(trainer or {}), **sections}
    path.write_text(yaml.safe_dump(text))
    return path


# A Cars196 sample of 4 classes x 4 images that the demo's own checks accept.
SMALL_CARS196 = dict(data={"train_classes": [1, 2], "eval_classes": [3, 4],
                           "validation_classes": 0},
                     trainer={"classes_per_batch": 2}, evaluator={"min_queries": 4})


@pytest.mark.slow
def test_cgd_demo_failure_is_one_error_line(fake_tfx, capsys):
    from cli import main as cli
    from components.datasets.cars196.sample import make_sample_data
    source = fake_tfx / "cars196"
    make_sample_data(source, num_classes=4, images_per_class=4, seed=0)
    config = demo_config(fake_tfx / "demo.yaml", fake_tfx / "out", source, **SMALL_CARS196)
    assert cli.main(["demo", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "cgd demo: error: `tfx run create` failed (exit 1) in component RetrievalExampleGen: "
        f"Cars196SourceError; full log: {fake_tfx}/out/logs/tfx.log"]
    assert "Traceback" not in out
    assert "Cars196SourceError: Cars196 source directory" in out
    assert f"    using the cars196 files in {source}" in out.splitlines()


@pytest.mark.slow
def test_demo_search_names_each_image_by_archive_and_member(tmp_path):
    """The archives number their members alike (cars_train/00003.jpg and cars_test/00003.jpg
    are different cars): the query and every hit are named by archive and member, the hits
    by their gallery id (the examples' image_id)."""
    from components.datasets.cars196.sample import make_sample_data
    from core.config import load_config
    source = tmp_path / "cars196"
    make_sample_data(source, num_classes=4, images_per_class=4, seed=0)
    config = demo_config(tmp_path / "demo.yaml", tmp_path / "work", source, **SMALL_CARS196)
    cfg = load_config(config)
    splits = demo.split_records(cfg, str(tmp_path / "work"))
    queries, origins = demo.demo_queries(cfg, str(tmp_path / "work"), splits["eval"])
    assert [q.class_id for q in queries] == [3, 4]
    assert all(q.origin.startswith("cars_train.tgz:cars_train/") and q.origin.endswith(".jpg")
               for q in queries)
    # Cars196's eval split is all-vs-all: the pushed index holds the queries too.
    assert all(q.in_index and origins[q.image_id] == q.origin for q in queries)
    assert sorted(origins) == sorted(r["image_id"] for r in splits["eval"])
    assert {o.split(":")[0] for o in origins.values()} == {"cars_train.tgz", "cars_test.tgz"}
    assert not (tmp_path / "work" / "gallery").exists()

    query = demo.Query("/x/00003.jpg", 3, "cars_train.tgz:cars_train/00003.jpg", "train-3", True)
    hits = [{"id": "test-7", "distance": 0.1, "metadata": {"label": 3, "class_name": "Car D"}},
            {"id": "test-3", "distance": 0.2, "metadata": {"label": 2, "class_name": "Car C"}}]
    lines = demo.search_lines(query, 4, hits, {"test-7": "cars_test.tgz:cars_test/00007.jpg",
                                               "test-3": "cars_test.tgz:cars_test/00003.jpg"},
                              index_size=16, kind="exact")
    assert lines == [
        "    query cars_train.tgz:cars_train/00003.jpg (class 3, in the index, its own hit left "
        "out); top 2 of 16 indexed images from cars_test.tgz, answered by version 4 (exact "
        "index):",
        "    1. 0.1000  cars_test.tgz:cars_test/00007.jpg (class 4, Car D)",
        "    2. 0.2000  cars_test.tgz:cars_test/00003.jpg (class 3, Car C)  <- same class"]


def test_demo_search_lines_of_a_query_outside_the_index():
    """In-shop's queries are not in the index; a hit the eval split does not know (a
    catalogue addition) is named by its id, its class unknown."""
    query = demo.Query("/q.jpg", 2, "img/q.jpg", "q-1", False)
    hits = [{"id": "added-1", "distance": 0.5, "metadata": {}},
            {"id": "g-2", "distance": 0.75, "metadata": {"label": 1}}]
    assert demo.search_lines(query, 7, hits, {"g-2": "img/g2.jpg"}, 40, "ivf_flat") == [
        "    query img/q.jpg (class 2, not in the index); top 2 of 40 indexed images, "
        "answered by version 7 (ivf_flat index):",
        "    1. 0.5000  added-1 (class ?)",
        "    2. 0.7500  img/g2.jpg (class 2)  <- same class"]


def test_demo_search_step_of_a_version_pushed_without_an_index_is_one_line(tmp_path):
    """gallery_index.enabled: false pushes the model alone: step 5 says so and asks nothing
    (no search service is reached: ``search`` is None here)."""
    (tmp_path / "cgd" / "3").mkdir(parents=True)
    (tmp_path / "cgd" / "3" / "saved_model.pb").write_bytes(b"a model")
    query = demo.Query("/q.jpg", 1, "q.jpg", "q", True)
    assert demo.search_step(None, str(tmp_path / "cgd"), 3, query, {}) == [
        "    version 3 was pushed without a gallery index (gallery_index.enabled: false): "
        "no search"]


def test_readme_where_outputs_go_lists_what_the_demo_writes_itself():
    """Every path the demo joins onto its work directory (out/demo/) is in the README's table,
    and the table lists nothing the demo no longer writes."""
    import re
    root = REPO_ROOT
    written = set(re.findall(r'os\.path\.join\(work, "([^"]+)"\)', (root / "cli" / "demo.py").read_text()))
    assert "parse" in written
    readme = root.joinpath("README.md").read_text()
    table = readme[readme.index("### Where outputs go"):readme.index("## Real Cars196")]
    for name in written:
        assert f"`out/demo/{name}" in table, name
    for gone in ("gallery/", "gallery.index.npz"):  # the demo's own gallery, before #25
        assert gone not in written and f"`out/demo/{gone}" not in table, gone


# --- any dataset: the refusals (before any work), the queries, one whole demo on SOP ---


@pytest.fixture
def no_tfx(monkeypatch):
    """The tfx CLI must not be reached: a refusal comes before the pipeline."""
    def refuse(*args):
        raise AssertionError(f"the demo ran `tfx {' '.join(args)}`")
    monkeypatch.setattr(demo, "tfx_command", refuse)


def refusal(config, capsys) -> str:
    from cli import main as cli
    assert cli.main(["demo", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    [line] = err.splitlines()
    assert line.startswith("cgd demo: error: ")
    return line[len("cgd demo: error: "):]


def test_demo_refuses_missing_real_data_in_one_line_and_keeps_what_was_written(
        tmp_path, no_tfx, capsys):
    """A source_dir outside the work directory is real data: the demo never writes a
    sample there, and says which key and which files."""
    work, real = tmp_path / "out", tmp_path / "data" / "sop"
    (work / "serving").mkdir(parents=True)
    (work / "serving" / "kept.txt").write_text("an earlier demo's output")
    config = demo_config(tmp_path / "demo-sop.yaml", work, real, dataset="sop")
    message = refusal(config, capsys)
    assert message.startswith("data.source_dir: ") and f"{real} does not exist" in message
    assert "Stanford_Online_Products.zip" in message and str(work) in message
    assert not real.exists()
    assert (work / "serving" / "kept.txt").read_text() == "an earlier demo's output"


def test_demo_refuses_a_non_empty_directory_without_the_files(tmp_path, no_tfx, capsys):
    """Inside the work directory too, the demo writes a sample only into a new or empty
    directory: it never overwrites or mixes with files already there."""
    work = tmp_path / "out"
    source = work / "inshop_sample"
    source.mkdir(parents=True)
    (source / "img.zip").write_bytes(b"a partial download")
    config = demo_config(tmp_path / "demo-inshop.yaml", work, source, dataset="inshop")
    message = refusal(config, capsys)
    assert message.startswith(f"data.source_dir: ") and "list_eval_partition.txt" in message
    assert sorted(p.name for p in source.iterdir()) == ["img.zip"]
    assert (source / "img.zip").read_bytes() == b"a partial download"


def test_demo_refuses_unreadable_real_data_naming_the_file(tmp_path, no_tfx, capsys):
    real = tmp_path / "data" / "sop"
    real.mkdir(parents=True)
    (real / "Stanford_Online_Products.zip").write_bytes(b"an interrupted download")
    config = demo_config(tmp_path / "demo-sop.yaml", tmp_path / "out", real, dataset="sop")
    message = refusal(config, capsys)
    assert message.startswith(f"data.source_dir {real}: Stanford_Online_Products.zip: ")
    assert (real / "Stanford_Online_Products.zip").read_bytes() == b"an interrupted download"


@pytest.mark.slow
@pytest.mark.parametrize("change, key", [
    # 9 training classes (12 minus 3 held out) cannot fill a batch of 12 classes.
    ({"trainer": {"classes_per_batch": 12}}, "trainer.classes_per_batch is 12"),
    # The eval split's 60 queries (6 classes x 10) cannot reach 1000.
    ({"evaluator": {"min_queries": 1000}}, "evaluator.min_queries 1000"),
])
def test_demo_refuses_a_split_it_cannot_train_or_judge_before_the_pipeline(
        tmp_path, no_tfx, capsys, change, key):
    work = tmp_path / "out"
    config = demo_config(tmp_path / "demo-cub200.yaml", work, work / "cub200_sample",
                         dataset="cub200", data={"train_classes": [1, 12],
                                                 "eval_classes": [13, 18],
                                                 "validation_classes": 3},
                         trainer=change.get("trainer"),
                         **{k: v for k, v in change.items() if k != "trainer"})
    message = refusal(config, capsys)
    assert key in message
    assert (work / "cub200_sample" / "CUB_200_2011.tgz").exists()  # the sample is kept
    assert not (work / "pipelines").exists()


def test_demo_refuses_spans(tmp_path, no_tfx, capsys):
    config = demo_config(tmp_path / "demo.yaml", tmp_path / "out", tmp_path / "out" / "src",
                         data={"file_pattern": "span-{SPAN}/*"})
    assert refusal(config, capsys).startswith("data.file_pattern is 'span-{SPAN}/*'")
    assert not (tmp_path / "out" / "src").exists()


def _image(path, ok=True):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    if ok:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    else:
        path.write_bytes(b"not an image")
    return str(path)


@pytest.mark.parametrize("kind", ["roles", "files", "none"])
def test_demo_queries_follow_the_datasets_own_roles_and_are_never_in_the_gallery(
        tmp_path, kind):
    """In-shop: its query images; a class-range dataset: the eval classes' original train
    files (its test files are the gallery); otherwise one image per class taken out."""
    from components.datasets.records import record
    rows = []
    for class_id in range(4):
        for n in range(3):
            role = ("query" if n == 0 else "gallery") if kind == "roles" else ""
            source_split = {"roles": role, "files": "train" if n == 0 else "test",
                            "none": ""}[kind]
            ok = not (class_id == 0 and n < 2)  # class 0's first two images are corrupt
            rows.append(record(_image(tmp_path / f"c{class_id}_{n}.jpg", ok), f"c{class_id}_{n}",
                               class_id, f"class {class_id}", source_split=source_split,
                               eval_role=role))
    queries, gallery = demo.queries_and_gallery(rows)
    ids = [q["image_id"] for q in queries]
    if kind == "none":
        assert ids == ["c0_2", "c1_0", "c2_0"]  # class 0: its first decodable image
    else:
        assert ids == ["c1_0", "c2_0", "c3_0"]  # class 0's only query candidate is corrupt
    assert not {q["image_id"] for q in queries} & {g["image_id"] for g in gallery}
    if kind == "none":
        assert len(queries) + len(gallery) == len(rows)
    else:  # the gallery is exactly the gallery-role / test-file images
        assert sorted(g["image_id"] for g in gallery) == sorted(
            f"c{c}_{n}" for c in range(4) for n in (1, 2))


# configs/demo-sop.yaml with a handful of training steps: the pipeline's mechanics for a
# dataset other than Cars196, not its Recall (the shipped config trains 600 steps).
SOP_STEPS = {"epochs": 2, "steps_per_epoch": 5}


@pytest.fixture(scope="module")
def sop_demo(tmp_path_factory):
    """One `cgd demo` on configs/demo-sop.yaml (work directory in tmp): (config, console)."""
    import contextlib
    import io
    from pathlib import Path

    import yaml

    from cli import main as cli
    from core.config import load_config
    root = tmp_path_factory.mktemp("sop_demo")
    shipped = yaml.safe_load((REPO_ROOT / "configs"
                              / "demo-sop.yaml").read_text())
    shipped["pipeline"].update(root=f"{root}/out/pipelines",
                               metadata_path=f"{root}/out/metadata/metadata.sqlite",
                               serving_dir=f"{root}/out/serving")
    shipped["data"]["source_dir"] = f"{root}/out/sop_sample"
    shipped["trainer"].update(SOP_STEPS)
    config = root / "demo-sop.yaml"
    config.write_text(yaml.safe_dump(shipped))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["demo", "--config", str(config)])
    assert code == 0, out.getvalue() + err.getvalue()
    return load_config(config), out.getvalue().splitlines()


@pytest.mark.slow
def test_sop_demo_runs_every_step_and_names_the_dataset(sop_demo):
    cfg, lines = sop_demo
    steps = [line for line in lines if line.startswith("==> ")]
    assert [s.split(" ")[1] for s in steps] == ["1/5", "2/5", "3/5", "4/5", "5/5", "summary"]
    assert steps[0] == f"==> 1/5 data: sop in {cfg.data.source_dir}"
    assert f"    writing sop sample data (18 classes, 10 images each, 2 corrupt) to " \
           f"{cfg.data.source_dir}" in lines
    assert steps[1].startswith("==> 2/5 pipeline cgd-demo-sop on sop through the tfx CLI")
    assert "    Component Pusher: finished" in lines
    assert any(line.startswith("    model server: gRPC 127.0.0.1:") and ", REST http://127.0.0.1:"
               in line for line in lines)
    assert any(line.startswith("    search service: gRPC 127.0.0.1:")
               and ", REST http://127.0.0.1:" in line for line in lines)
    assert any(line.startswith("    verdict: BLESSED") for line in lines)


def _served_version(lines) -> str:
    served = [line for line in lines if line.startswith("    served: ")][0]
    return served.split(" version ")[1].split()[0]


@pytest.mark.slow
def test_sop_demo_searches_the_eval_products_leaving_the_query_out_of_its_hits(sop_demo):
    cfg, lines = sop_demo
    [header] = [line for line in lines if line.startswith("    query ")]
    query = header.split()[1]
    assert query.startswith("Stanford_Online_Products.zip:Stanford_Online_Products/")
    # SOP is all-vs-all: the pushed index holds every eval image, the query too.
    assert "in the index, its own hit left out); top 8 of " in header
    hits = lines[lines.index(header) + 1:lines.index(header) + 9]
    assert [h.split(".")[0].strip() for h in hits] == [str(r) for r in range(1, 9)]
    assert all(query not in hit for hit in hits)
    # The sample's 18 products: 1-9 train (Ebay_train.txt), 10-18 test (the eval split).
    classes = {int(h.split("(class ")[1].split(",")[0].split(")")[0]) for h in hits}
    assert classes <= set(range(10, 19))
    query_class = header.split("(class ")[1].split(",")[0]
    assert all(h.endswith("<- same class") == (f"(class {query_class}," in h
                                               or f"(class {query_class})" in h) for h in hits)


@pytest.mark.slow
def test_sop_demo_search_answers_from_the_pushed_model_and_its_own_index(sop_demo):
    """The version that answered is the served one, and the hits are that version's index
    searched with its model's embedding of the query (recomputed here from the SavedModel)."""
    from components.recall_evaluator.embedding import embed_with_signature
    from search.index import GalleryIndex, model_fingerprint, read_manifest
    from serving.search_versions import index_dir
    cfg, lines = sop_demo
    version = _served_version(lines)
    assert f"==> 5/5 a search through the search service, against the gallery index pushed " \
           f"with version {version}" in lines
    [header] = [line for line in lines if line.startswith("    query ")]
    assert f"answered by version {version} (" in header
    version_dir = os.path.join(cfg.pipeline.serving_dir, cfg.serving.model_name, version)
    manifest = read_manifest(index_dir(version_dir))
    assert manifest["model"]["fingerprint"] == model_fingerprint(version_dir)
    assert f"top 8 of {manifest['size']} indexed images" in header
    assert f"({manifest['kind']} index):" in header

    work = os.path.dirname(cfg.pipeline.root)
    queries, origins = demo.demo_queries(cfg, work, demo.split_records(cfg, work)["eval"])
    assert header.split()[1] == queries[0].origin
    index = GalleryIndex.load(index_dir(version_dir))
    with open(queries[0].path, "rb") as f:
        embedding = embed_with_signature(version_dir, [f.read()])
    expected = [h for h in index.search(embedding, 9)[0] if h.id != queries[0].image_id][:8]
    shown = lines[lines.index(header) + 1:lines.index(header) + 9]
    assert [h.split()[2] for h in shown] == [origins[h.id] for h in expected]
    for line, hit in zip(shown, expected):
        assert abs(float(line.split()[1]) - hit.distance) < 1e-3


@pytest.mark.slow
def test_sop_demo_evaluates_all_vs_all_and_draws_the_ranking_picture(sop_demo):
    import json
    cfg, lines = sop_demo
    [picture] = [line for line in lines if line.startswith("    ranking picture: ")]
    png = picture.split(": ", 1)[1].split(" ")[0]
    assert os.path.getsize(png) > 0
    metrics = json.load(open(os.path.join(os.path.dirname(png), "metrics.json")))
    assert metrics["protocol"] == "all-vs-all"
    assert metrics["candidate"]["num_queries"] > 0
    version = _served_version(lines)
    assert os.path.isdir(os.path.join(cfg.pipeline.serving_dir, cfg.serving.model_name, version))
