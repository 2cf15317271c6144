"""The layer picture of docs/architecture.md, kept true.

Imports are read from the source (ast), inside functions included, so that a
lazy import cannot hide an upward dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import small_config

ROOT = Path(__file__).resolve().parent.parent
# Lower layers never import higher ones; packages of one layer do not import each other.
LAYERS = {"core": 0, "search": 1, "components": 2, "trainer": 3, "serving": 3, "kubeflow": 4,
          "pipeline": 5, "cli": 6}
# Math and domain code: tested and benchmarked alone, so no TFX in them.
WITHOUT_TFX = [
    "search/exact.py",
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


# ------------------------------------------------------------------ each component gets what it reads

def node_parameters(cfg, node_id: str):
    """The compiled (IR) parameters of one node: what TFX's cache key takes from it."""
    from tfx.dsl.compiler import compiler

    from pipeline.definition import create_pipeline

    ir = compiler.Compiler().compile(create_pipeline(cfg))
    [node] = [n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == node_id]
    return node.parameters


@pytest.mark.parametrize("node_id", ["Trainer", "RecallEvaluator", "Transform",
                                     "RetrievalExampleGen"])
def test_settings_a_component_does_not_read_leave_its_cache_key_alone(tmp_path, node_id):
    cfg = small_config(tmp_path, tmp_path / "cars196")
    unrelated = cfg.replace(serving={"grpc_port": 9100, "max_batch_size": 8},
                            kubeflow={"memory": "64G", "schedule_cron": "0 4 * * 1"},
                            pipeline={"beam_args": ["--direct_num_workers=2"]})
    assert node_parameters(cfg, node_id) == node_parameters(unrelated, node_id)


@pytest.mark.parametrize("change, changed, unchanged", [
    ({"trainer": {"learning_rate": 0.01}}, ["Trainer"], ["RecallEvaluator", "Transform"]),
    ({"evaluator": {"baseline_tolerance": 0.05}}, ["RecallEvaluator"], ["Trainer", "Transform"]),
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
