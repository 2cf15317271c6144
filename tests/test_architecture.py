"""The layer picture of docs/architecture.md, kept true.

Imports are read from the source (ast), inside functions included, so that a
lazy import cannot hide an upward dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import small_config
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
# Lower layers never import higher ones; packages of one layer do not import each other.
LAYERS = {"core": 0, "search": 1, "components": 2, "trainer": 3, "serving": 3, "kubeflow": 4,
          "pipeline": 5, "cli": 6}
# Math and domain code: tested and benchmarked alone, so no TFX in them.
WITHOUT_TFX = [
    "search/exact.py", "search/index.py", "search/catalogue.py",
    "components/gallery_indexer/recall.py", "components/gallery_indexer/verdict.py",
    "components/recall_evaluator/metrics.py", "components/recall_evaluator/verdict.py",
    "components/recall_evaluator/ranking_picture.py", "components/recall_evaluator/production.py",
    "components/recall_evaluator/significance.py",
    "components/preprocessing/image_ops.py", "components/datasets/cars196/sample.py",
    "trainer/losses.py", "trainer/model.py", "trainer/sampler.py", "trainer/augmentation.py",
    "trainer/keras_autograph.py",
]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_imports() -> dict[str, set[tuple[str, str]]]:
    """package -> {(importing file, imported module of another of our packages)}."""
    edges: dict[str, set[tuple[str, str]]] = {p: set() for p in LAYERS}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            for module in imported_modules(path):
                top = module.split(".")[0]
                if top in LAYERS and top != package:
                    edges[package].add((str(path.relative_to(ROOT)), module))
    return edges


def test_every_import_between_packages_runs_down_the_layers():
    upward = [f"{file} imports {module}"
              for package, edges in package_imports().items()
              for file, module in edges
              if LAYERS[module.split(".")[0]] >= LAYERS[package]]
    assert upward == []


def test_the_package_import_graph_has_no_cycle():
    graph = {p: {m.split(".")[0] for _, m in edges} for p, edges in package_imports().items()}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, seen + (n,)))
                   for n in graph[start])

    assert [p for p in graph if reaches(p, p)] == []


def test_core_imports_nothing_of_ours():
    assert package_imports()["core"] == set()


@pytest.mark.parametrize("relative", WITHOUT_TFX)
def test_math_and_domain_modules_import_no_tfx(relative):
    assert not {m for m in imported_modules(ROOT / relative) if m.split(".")[0] == "tfx"}


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipeline.definition import create_pipeline\n")
    assert "pipeline.definition" in imported_modules(module)


# ------------------------------------------------------------------ a dataset is one folder

DATASETS_DIR = ROOT / "components" / "datasets"
DATASET_FILES = ("__init__.py", "spec.py", "source.py", "sample.py", "README.md")


def dataset_folders() -> list[str]:
    return sorted(p.name for p in DATASETS_DIR.iterdir()
                  if p.is_dir() and any(p.glob("*.py")))


def test_every_registered_dataset_is_one_complete_folder_and_every_folder_is_registered():
    from core.names import DATASETS

    assert sorted(DATASETS) == dataset_folders()
    missing = [f"components/datasets/{name}/{file}" for name in DATASETS
               for file in DATASET_FILES if not (DATASETS_DIR / name / file).is_file()]
    assert missing == []


def test_a_dataset_spec_is_pure_data_importing_only_core():
    """core/config.py imports the specs (by name): importing one, which also runs the
    package __init__s above it, must load nothing of ours but core, and no library."""
    import sys

    path_to_spec = [ROOT / "components" / "__init__.py", DATASETS_DIR / "__init__.py"]
    for name in dataset_folders():
        path_to_spec += [DATASETS_DIR / name / "__init__.py", DATASETS_DIR / name / "spec.py"]
    wrong = sorted(f"{path.relative_to(ROOT)} imports {module}" for path in path_to_spec
                   for module in imported_modules(path)
                   if module.split(".")[0] not in sys.stdlib_module_names | {"core"})
    assert wrong == []


def test_core_reaches_components_only_through_spec_for_and_only_specs(monkeypatch):
    """The one upward reference: core/dataset_spec.py names the datasets' package by string
    and imports only ``<name>.spec`` from it. Nowhere else in core names another of our
    packages, or imports by name."""
    import importlib
    import re

    from core import dataset_spec
    from core.config import load_config
    from core.names import DATASETS

    def names_our_module(text: str) -> bool:
        """"components.datasets" does, "trainer.margin" (a config key) does not."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+", text):
            return False
        top, sub = text.split(".")[:2]
        return top in LAYERS and top != "core" and (
            (ROOT / top / sub).is_dir() or (ROOT / top / f"{sub}.py").is_file())

    named, by_name = [], []
    for path in (ROOT / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and names_our_module(node.value):
                named.append((path.name, node.value))
            if isinstance(node, ast.Attribute) and node.attr == "import_module" \
                    or isinstance(node, ast.Name) and node.id == "__import__":
                by_name.append(path.name)
    assert named == [("dataset_spec.py", "components.datasets")]
    assert set(by_name) == {"dataset_spec.py"}

    imported = []
    real = importlib.import_module
    monkeypatch.setattr(dataset_spec.importlib, "import_module",
                        lambda module: imported.append(module) or real(module))
    for name in DATASETS:
        load_config(None, {"data": {"dataset": name}})
    assert imported and {m.rsplit(".", 1)[1] for m in imported} == {"spec"}
    assert {m.split(".")[2] for m in imported} == set(DATASETS)


def test_a_dataset_folder_imports_no_other_dataset_folder():
    from core.names import DATASETS

    wrong = []
    for path in DATASETS_DIR.rglob("*.py"):
        own = path.parent.name if path.parent != DATASETS_DIR else None
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[:2] == ["components", "datasets"] and len(parts) > 2 \
                    and parts[2] in DATASETS and parts[2] != own:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


# ------------------------------------------------------------------ each component gets what it reads

def node_parameters(cfg, node_id: str):
    """The compiled (IR) parameters of one node: what TFX's cache key takes from it."""
    from tfx.dsl.compiler import compiler

    from pipeline.definition import create_pipeline

    ir = compiler.Compiler().compile(create_pipeline(cfg))
    [node] = [n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == node_id]
    return node.parameters


@pytest.mark.parametrize("node_id", ["Trainer", "RecallEvaluator", "Transform",
                                     "RetrievalExampleGen", "GalleryIndexer"])
def test_settings_a_component_does_not_read_leave_its_cache_key_alone(tmp_path, node_id):
    cfg = small_config(tmp_path, tmp_path / "cars196")
    unrelated = cfg.replace(serving={"grpc_port": 9100, "max_batch_size": 8},
                            kubeflow={"memory": "64G", "schedule_cron": "0 4 * * 1"},
                            pipeline={"beam_args": ["--direct_num_workers=2"]})
    assert node_parameters(cfg, node_id) == node_parameters(unrelated, node_id)


@pytest.mark.parametrize("change, changed, unchanged", [
    ({"trainer": {"learning_rate": 0.01}}, ["Trainer"],
     ["RecallEvaluator", "Transform", "GalleryIndexer"]),
    ({"evaluator": {"baseline_tolerance": 0.05}}, ["RecallEvaluator"],
     ["Trainer", "Transform", "GalleryIndexer"]),
    # The gallery index's settings are the GalleryIndexer's alone.
    ({"gallery_index": {"nprobe": 8, "recall_floor": 0.9}}, ["GalleryIndexer"],
     ["RecallEvaluator", "Trainer", "Transform", "RetrievalExampleGen"]),
    ({"evaluator": {"min_queries": 30}}, ["RecallEvaluator", "Trainer", "RetrievalExampleGen"],
     ["Transform"]),
    ({"transform": {"image_size": 48}}, ["Trainer", "Transform"], ["RecallEvaluator"]),
    # A loss option is the Trainer's alone, and moves its cache key like any other setting.
    ({"trainer": {"loss": {"name": "batch_hard", "margin": 0.3}}}, ["Trainer"],
     ["RecallEvaluator", "Transform"]),
    ({"trainer": {"loss": {"name": "hap2s_exp", "sigma": 0.25}}}, ["Trainer"],
     ["RecallEvaluator", "Transform"]),
])
def test_settings_a_component_reads_change_its_cache_key(tmp_path, change, changed, unchanged):
    cfg = small_config(tmp_path, tmp_path / "cars196")
    edited = cfg.replace(**change)
    for node_id in changed:
        assert node_parameters(cfg, node_id) != node_parameters(edited, node_id), node_id
    for node_id in unchanged:
        assert node_parameters(cfg, node_id) == node_parameters(edited, node_id), node_id


def test_a_loss_option_the_loss_does_not_take_fails_when_the_pipeline_is_built(tmp_path):
    """core cannot import the trainer, so the loss checks its options when the pipeline
    is built (every runner builds it) rather than when training starts."""
    from core.errors import ConfigError
    from pipeline.definition import create_pipeline

    cfg = small_config(tmp_path, tmp_path / "cars196")
    bad = cfg.replace(trainer={"loss": {"name": "batch_hard", "sigma": 0.5}})
    with pytest.raises(ConfigError, match=r"'trainer\.loss\.sigma' is not an option of loss "
                                          r"'batch_hard'"):
        create_pipeline(bad)


# ------------------------------------------------------------------ one definition per name

SOURCE_PACKAGES = list(LAYERS)


def _assigned_constants(path: Path) -> set[str]:
    """UPPER_CASE names assigned at the top level of ``path``."""
    found = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        found.update(t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper())
    return found


def test_a_shared_name_of_core_names_is_defined_nowhere_else():
    """core/names.py holds the names two modules share; a second definition of one of
    them (once CODE_FINGERPRINT_KEY: "code" there, "code_fingerprint" in the evaluator's
    constants) lets two writers and readers disagree."""
    shared = _assigned_constants(ROOT / "core" / "names.py")
    again = sorted(f"{path.relative_to(ROOT)}: {name}"
                   for package in SOURCE_PACKAGES for path in (ROOT / package).rglob("*.py")
                   if path != ROOT / "core" / "names.py"
                   for name in _assigned_constants(path) & shared)
    assert again == []


def test_the_code_fingerprint_sits_under_one_key_in_every_component(tmp_path):
    from core import names

    cfg = small_config(tmp_path, tmp_path / "cars196")
    for node_id in ("Transform", "Trainer"):
        custom = node_parameters(cfg, node_id).parameters["custom_config"]
        assert f'"{names.CODE_FINGERPRINT_KEY}"' in custom.field_value.string_value, node_id
    assert names.CODE_FINGERPRINT_KEY in node_parameters(cfg, "RecallEvaluator").parameters


def test_the_example_gen_input_split_is_dataset_neutral(tmp_path):
    """One input split for all the files, named as TFX's default: no dataset's name."""
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    cfg = small_config(tmp_path, tmp_path / "cars196")
    raw = node_parameters(cfg, "RetrievalExampleGen").parameters["input_config"]
    config = proto_utils.json_to_proto(raw.field_value.string_value, example_gen_pb2.Input())
    assert [s.name for s in config.splits] == ["single_split"]
    assert [s.pattern for s in config.splits] == [cfg.data.file_pattern]


# ------------------------------------------------------------------ serving's own layers

# Which serving modules each serving module may import (serving/__init__.py draws the picture).
SERVING_IMPORTS = {
    "__init__": set(), "errors": set(), "batching": set(), "deploy_config": set(),
    "standin": set(), "client": set(), "stderr_filter": set(),
    "model_repository": {"errors"},
    "dataplane": {"errors", "model_repository", "batching"},
    "metrics": {"errors"},
    "rest_codec": {"errors", "dataplane"},
    "grpc_api": {"errors", "dataplane", "metrics"},
    "rest_api": {"errors", "dataplane", "model_repository", "metrics", "rest_codec"},
    "ports": set(),
    "model_server": {"batching", "dataplane", "grpc_api", "metrics", "model_repository", "ports",
                     "rest_api"},
    "index": {"client"},
    "search_protocol": set(),
    "search_versions": {"model_repository"},
    "search_embeddings": {"client", "errors"},
    "search_service": {"errors", "model_repository", "search_embeddings", "search_versions"},
    "search_grpc": {"errors", "grpc_api", "metrics", "search_protocol", "search_service"},
    "search_rest": {"errors", "metrics", "model_repository", "rest_api", "rest_codec",
                    "search_protocol", "search_service"},
    "search_server": {"metrics", "ports", "search_embeddings", "search_grpc",
                      "search_protocol", "search_rest", "search_service"},
    "search_client": {"client", "search_protocol"},
}
# Of our other packages, serving may import core and search, the layer under components
# (search.index's GalleryIndex; search.exact, the evaluator's own exact k-NN, only from
# serving/index.py should it need it).
SERVING_OTHER_PACKAGES = tuple(p for p in LAYERS if p != "serving")
ALLOWED_OTHER = ("core", "core.names", "core.config", "core.errors", "core.stderr_filter")


def serving_modules():
    for path in sorted((ROOT / "serving").glob("*.py")):
        yield path.stem, path, ast.parse(path.read_text())


def serving_imports(tree):
    """Modules imported anywhere in ``tree``; `from serving import x` as serving.x."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "serving":  # from serving import x
                yield from (f"serving.{alias.name}" for alias in node.names)
            else:
                yield node.module


def test_serving_modules_import_one_way_and_stay_small():
    modules = {}
    for name, path, tree in serving_modules():
        assert len(path.read_text().splitlines()) <= 350, f"{path.name} is over 350 lines"
        imported = set(serving_imports(tree))
        modules[name] = {m.split(".", 1)[1] for m in imported if m.startswith("serving.")}
        others = {m for m in imported if m.split(".")[0] in SERVING_OTHER_PACKAGES}
        outside = {m for m in others - set(ALLOWED_OTHER) if m.split(".")[0] != "search"}
        assert outside == set(), (name, outside)
        if "search.exact" in others:
            assert name == "index", name
    assert set(modules) == set(SERVING_IMPORTS), "a serving module was added or removed: " \
                                                 "update SERVING_IMPORTS and serving/__init__.py"
    for name, imported in modules.items():
        assert imported <= SERVING_IMPORTS[name], (name, imported - SERVING_IMPORTS[name])



def test_shared_names_are_not_spelled_out_in_serving():
    """Signature and tensor names come from core.names, never as string literals."""
    from core import names
    spelled = {names.SERVING_SIGNATURE, names.PIXELS_SIGNATURE, names.IMAGES_INPUT,
               names.PIXELS_INPUT, names.EMBEDDING_OUTPUT}
    found = [(path.name, node.lineno, node.value) for _, path, tree in serving_modules()
             for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and node.value in spelled]
    assert found == []

# ------------------------------------------------------------------ the slow tier

# What a test or fixture may not name without being in the slow tier (`make test-fast`
# leaves it out): a process, a pipeline run, a server or stand-in, generated sample archives.
SLOW_NAMES = {"subprocess", "Popen", "LocalDagRunner", "BeamDagRunner", "make_sample_data",
              "ModelServer", "SearchServer", "KfpApiServer", "KfpEmulator", "VertexApiServer",
              "GcsEmulator", "cgd_serve"}
# Tests (by name: they keep it when their file moves) that name one of them and are
# fast all the same, with the reason.
FAST_ALL_THE_SAME = {
    "test_a_new_dataset_is_its_folder_and_one_registry_line":
        "the toy dataset's sample is 12 tiny images, not a dataset's archives (0.1 s)",
}


def _test_files():
    return sorted(p for p in (ROOT / "tests").rglob("test_*.py"))


def _names_in(node) -> set[str]:
    """The names of what ``node`` calls: `subprocess.run(...)` gives run and subprocess
    (a function only passed around, as to `callable`, is not called)."""
    found = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            func = call.func
            while isinstance(func, ast.Attribute):
                found.add(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                found.add(func.id)
    return found


def _is_fixture(function) -> bool:
    return any("fixture" in ast.unparse(d) for d in function.decorator_list)


def _marked_slow(node) -> bool:
    return any(ast.unparse(d) == "pytest.mark.slow" for d in node.decorator_list)


def _module_marked_slow(tree) -> bool:
    return any(isinstance(node, ast.Assign) and "pytestmark" in ast.unparse(node.targets[0])
               and "pytest.mark.slow" in ast.unparse(node.value) for node in tree.body)


def test_a_test_not_marked_slow_that_uses_a_slow_fixture_stops_the_collection():
    from types import SimpleNamespace

    from tests import conftest

    def item(name, fixtures, slow):
        return SimpleNamespace(nodeid=name, fixturenames=fixtures,
                               get_closest_marker=lambda mark: object() if slow else None)

    items = [item("t::fast", ["tmp_path"], False), item("t::marked", ["sample_data"], True),
             item("t::forgot", ["tmp_path", "data_pipeline", "sample_data"], False)]
    assert conftest.unmarked_slow_tests(items) == ["t::forgot uses data_pipeline, sample_data"]
    with pytest.raises(pytest.UsageError, match=r"t::forgot uses data_pipeline, sample_data"):
        conftest.pytest_collection_modifyitems(items)
    conftest.pytest_collection_modifyitems(items[:2])  # nothing to say


def test_the_check_sees_a_fixture_used_through_another_fixture(request, tmp_path):
    """pytest's fixturenames is the closure: tmp_path's own tmp_path_factory is in it, so
    a test using data_pipeline only through, say, `trained` is seen too."""
    assert "tmp_path_factory" in request.node.fixturenames


def test_every_slow_fixture_is_listed_and_every_listed_one_exists():
    from tests.conftest import SLOW_FIXTURES

    defined, starting = set(), set()
    # Fixtures live in conftest files, in tests/support/ (shared by test packages) and in
    # the test files themselves.
    support = sorted((ROOT / "tests").rglob("conftest.py")) + sorted(
        (ROOT / "tests" / "support").rglob("*.py"))
    for path in [*support, *_test_files()]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef) and _is_fixture(node):
                defined.add(node.name)
                if _names_in(node) & SLOW_NAMES:
                    starting.add(f"{path.relative_to(ROOT)}: {node.name}")
    assert sorted(SLOW_FIXTURES - defined) == []
    assert sorted(s for s in starting if s.rsplit(": ", 1)[1] not in SLOW_FIXTURES) == []


def test_a_test_that_starts_a_process_a_pipeline_or_a_server_is_marked_slow():
    unmarked = []
    for path in _test_files():
        tree = ast.parse(path.read_text(), str(path))
        if _module_marked_slow(tree):
            continue
        unmarked += [f"{path.relative_to(ROOT)}::{node.name} names "
                     f"{', '.join(sorted(_names_in(node) & SLOW_NAMES))}"
                     for node in ast.walk(tree)
                     if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
                     and not _marked_slow(node) and _names_in(node) & SLOW_NAMES
                     and node.name not in FAST_ALL_THE_SAME]
    assert unmarked == [], "mark them @pytest.mark.slow (or, if fast, say why in FAST_ALL_THE_SAME)"
