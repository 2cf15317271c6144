"""The compiled Kubeflow spec, run end to end as KFP 2.x runs it (tests/support/kfp_emulator.py).

`cgd kubeflow compile` output goes through the API server's checks, then task
by task through the driver and launcher emulation, each step a subprocess of
this venv (standing in for the image), artifacts on an emulated MinIO store
(KFP's default), metadata in a real ML Metadata store. The same three runs also
go on an emulated GCS root (tests/support/gcs_emulator.py: TensorFlow's own GCS
filesystem writes its directory markers there, and the launcher downloads them
as KFP's does), with a crash injected at interpreter exit into every step (an
atexit hook that calls os.abort(), as TFX's executors sometimes die on KFP):

1. span 1: everything runs, the first model is pushed;
2. span 2, a worse model (black padding): ExampleGen and everything after it rerun,
   the evaluator compares with the model in production and does not push;
3. span 2 again: served from KFP's cache up to the evaluator, which runs
   (its verdict depends on production) and pushes nothing.

And the spec `main` compiled before this change is refused (or fails) there; on
the GCS root, the spec and entrypoint before --artifact_access fail at the
second step with the launcher's `not a directory`.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from components.datasets.cars196.sample import make_sample_data
from tests.conftest import BLACK_PADDING, RETRAIN_SAMPLE, UNTRAINED, small_config
from tests.support.kfp_emulator import KfpEmulator, Refused, TaskFailed
from tests.support.paths import REPO_ROOT

# Slow tier: compiled pipelines run on the KFP stand-in.
pytestmark = pytest.mark.slow

ROOT = str(REPO_ROOT)
PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"  # a default KFP install's store
GCS_ROOT = "gs://cgd-kfp-test/pipeline-root"
# The crash at exit TFX's executors sometimes die of on KFP v2 (sky-uk/kfp-operator#1286),
# injected into every step: Python runs sitecustomize at start-up, atexit hooks at exit.
CRASH_AT_EXIT = ("import atexit, os, sys\n"
                 "print('crash at exit armed', file=sys.stderr, flush=True)\n"
                 "atexit.register(os.abort)\n")
KUBEFLOW = {"pipeline_root": PIPELINE_ROOT, "image": "registry.example/cgd:test",
            "beam_args": ["--direct_num_workers=1"], "gpus": 1,
            "gpu_limit_resource": "nvidia.com/gpu", "memory": "8G", "cpu": "2"}
UP_TO_TRAINER = ["RetrievalExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                 "Transform", "Trainer"]


def compile_spec(cfg, path: Path, monkeypatch) -> tuple[dict, str]:
    """`cgd kubeflow compile`, with the image's project directory at this checkout.

    The venv stands in for the image, so the files the spec references inside
    the image (the raw schema) are where they are in this checkout.
    """
    from kubeflow import compiler
    from pipeline.kubeflow_runner import compile_for_kubeflow

    monkeypatch.setattr(compiler, "IMAGE_PROJECT_DIR", ROOT)
    compile_for_kubeflow(cfg, None, str(path))
    return KfpEmulator.load(path)


def versions(cfg) -> list[int]:
    path = Path(cfg.pipeline.serving_dir) / cfg.serving.model_name
    return sorted(int(p.name) for p in path.iterdir()) if path.is_dir() else []


def metrics(emulator: KfpEmulator, run) -> dict:
    evaluation = emulator.artifact(run.tasks["RecallEvaluator"].artifacts["evaluation"])
    return json.loads((emulator.download(evaluation["uri"]) / "metrics.json").read_text())


def crashing_at_exit(tmp: Path) -> dict:
    """The environment of a cluster whose step processes abort at interpreter exit."""
    hook_dir = tmp / "crash-at-exit"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(CRASH_AT_EXIT)
    path = os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path)


@pytest.fixture(scope="module", params=[PIPELINE_ROOT, GCS_ROOT], ids=["minio", "gcs"])
def kfp_runs(request, tmp_path_factory):
    """The three runs of the module docstring, sharing one emulated cluster per root."""
    pipeline_root = request.param
    gcs = pipeline_root.startswith("gs://")
    monkeypatch = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("kfp")
    source = tmp / "cars196"
    make_sample_data(source / "span-1", **dict(RETRAIN_SAMPLE, seed=11))
    cfg = small_config(tmp, source, pipeline={"name": "cgd-kfp"},
                       data={"file_pattern": "span-{SPAN}/*"},
                       # 144 eval queries: the tests check the gate's mechanics at 50%.
                       evaluator={"baseline_tolerance": 0.0, "confidence_level": 0.5},
                       kubeflow=dict(KUBEFLOW, pipeline_root=pipeline_root))
    emulator = KfpEmulator(tmp / "cluster", env=crashing_at_exit(tmp) if gcs else None)
    try:
        spec, root = compile_spec(cfg.replace(trainer=UNTRAINED), tmp / "good.json",
                                  monkeypatch)
        first = emulator.run(spec, root)
        first_versions = versions(cfg)

        # Black padding (see conftest): a worse model by construction.
        make_sample_data(source / "span-2", **dict(RETRAIN_SAMPLE, seed=12))
        bad_spec, _ = compile_spec(cfg.replace(trainer=UNTRAINED, transform=BLACK_PADDING),
                                   tmp / "bad.json", monkeypatch)
        second = emulator.run(bad_spec, root)
        second_versions = versions(cfg)
        third = emulator.run(bad_spec, root)
    finally:
        monkeypatch.undo()
    yield dict(cfg=cfg, emulator=emulator, runs=(first, second, third), root=pipeline_root,
               versions=(first_versions, second_versions, versions(cfg)))
    emulator.close()


def test_first_run_executes_every_task_and_pushes_the_first_model(kfp_runs):
    emulator, (first, _, _) = kfp_runs["emulator"], kfp_runs["runs"]
    assert {t.state for t in first.tasks.values()} == {"COMPLETE"}
    assert len(kfp_runs["versions"][0]) == 1
    result = metrics(emulator, first)
    assert result["blessed"] and "first model" in result["reason"], result["reason"]
    assert result["production_version"] is None


def test_span_driver_resolves_the_newest_span_and_records_it_on_the_examples(kfp_runs):
    emulator, (first, second, _) = kfp_runs["emulator"], kfp_runs["runs"]
    fingerprints = []
    for run, span in ((first, 1), (second, 2)):
        driver = run.tasks["RetrievalExampleGen-driver"]
        assert driver.parameters["span"] == span
        assert f"span-{span}/*" in driver.parameters["input_config"]
        examples = emulator.artifact(run.tasks["RetrievalExampleGen"].artifacts["examples"])
        assert examples["metadata"]["span"] == span
        assert examples["metadata"]["input_fingerprint"] == driver.parameters["input_fingerprint"]
        fingerprints.append(driver.parameters["input_fingerprint"])
        assert examples["uri"] == (f"{kfp_runs['root']}/cgd-kfp/{run.run_id}/"
                                   "RetrievalExampleGen/examples")
    assert fingerprints[0] != fingerprints[1] and "num_files:4" in fingerprints[0]


def test_steps_get_what_kfp_gives_them_and_still_run(kfp_runs):
    """Upstream artifacts arrive untyped with MLMD-roundtripped metadata, parameters as
    parameterValues only; the entrypoint copes and the Trainer pod asks for its GPU."""
    first = kfp_runs["runs"][0]
    transform_input = first.tasks["Transform"].executor_input
    examples = transform_input["inputs"]["artifacts"]["examples"]["artifacts"][0]
    assert examples["type"] == {"instanceSchema": ""}
    assert examples["name"].isdigit()
    assert examples["uri"].startswith(kfp_runs["root"].split("://")[0] + "://")
    assert isinstance(examples["metadata"]["span"], float)  # MLMD gives numbers back as doubles
    assert "parameters" not in transform_input["inputs"]
    assert first.tasks["Trainer"].pod_resources == {"nvidia.com/gpu": "1", "memory": "8G",
                                                     "cpu": "2"}


def test_a_worse_model_on_a_new_span_is_compared_with_production_and_not_pushed(kfp_runs):
    emulator, (_, second, _) = kfp_runs["emulator"], kfp_runs["runs"]
    first_versions, second_versions, _ = kfp_runs["versions"]
    # A new span: ExampleGen's cache key changed, so it and everything after it ran.
    assert all(second.state(t) == "COMPLETE" for t in UP_TO_TRAINER if t != "ImportSchemaGen")
    result = metrics(emulator, second)
    assert result["candidate"]["recall@1"] < result["baseline"]["recall@1"]  # the premise
    assert result["production_version"] == first_versions[0]
    assert not result["blessed"] and "below the blessed baseline" in result["reason"]
    assert result["difference"]["intervals"]["recall@1"][1] < 0  # significantly worse
    # The default rule, non-inferiority: refused since the lower bound is below -tolerance.
    assert result["significance"]["baseline_rule"] == "non_inferior"
    assert "the eval set detects differences of about" in result["reason"]
    assert second_versions == first_versions


def test_an_unchanged_span_is_cached_up_to_the_evaluator_which_still_runs(kfp_runs):
    emulator, (_, second, third) = kfp_runs["emulator"], kfp_runs["runs"]
    assert [third.state(t) for t in UP_TO_TRAINER] == ["CACHED"] * len(UP_TO_TRAINER)
    assert third.tasks["Trainer"].artifacts == second.tasks["Trainer"].artifacts
    for never_cached in ("RetrievalExampleGen-driver", "RecallEvaluator", "Pusher"):
        assert third.state(never_cached) == "COMPLETE", never_cached
    result = metrics(emulator, third)
    assert not result["blessed"] and result["production_version"] == kfp_runs["versions"][0][0]
    assert kfp_runs["versions"][2] == kfp_runs["versions"][0]


# ------------------------------------------------------------------ a split change between runs

@pytest.fixture(scope="module")
def kfp_split_change(tmp_path_factory, sample_data):
    """Two runs on one emulated cluster (MinIO root) and the small sample: the first trains
    on classes 1-10 and is pushed; the second moves the split to eval classes 9-16, two of
    which (9, 10) were the production model's validation classes."""
    monkeypatch = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("kfp-split")
    cfg = small_config(tmp, sample_data.out_dir, pipeline={"name": "cgd-kfp-split"},
                       evaluator={"baseline_tolerance": 1.0}, kubeflow=KUBEFLOW)
    emulator = KfpEmulator(tmp / "cluster")
    try:
        spec, root = compile_spec(cfg.replace(trainer=UNTRAINED), tmp / "first.json",
                                  monkeypatch)
        first = emulator.run(spec, root)
        first_versions = versions(cfg)
        moved, _ = compile_spec(cfg.replace(trainer=UNTRAINED, data={
            "train_classes": [1, 8], "eval_classes": [9, 16]}), tmp / "moved.json", monkeypatch)
        second = emulator.run(moved, root)
    finally:
        monkeypatch.undo()
    yield dict(cfg=cfg, emulator=emulator, runs=(first, second), first_versions=first_versions)
    emulator.close()


def test_the_pushed_model_carries_the_classes_it_was_trained_and_validated_on(kfp_split_change):
    from components.datasets.cars196.source import CLASS_NAMES
    from components.recall_evaluator import production

    [v1] = kfp_split_change["first_versions"]
    cfg = kfp_split_change["cfg"]
    served = Path(cfg.pipeline.serving_dir) / cfg.serving.model_name / str(v1)
    assert production.seen_classes(str(served)) == set(CLASS_NAMES[:10])  # classes 1-10
    first = metrics(kfp_split_change["emulator"], kfp_split_change["runs"][0])
    assert first["blessed"] and "baseline_seen_eval_classes" not in first
    # ... and the gallery index the GalleryIndexer step built through it, stamped with it.
    from core.names import INDEX_DIR
    from search.index import GalleryIndex, model_fingerprint
    index = GalleryIndex.load(str(served / "assets.extra" / INDEX_DIR))
    assert index.model.fingerprint == model_fingerprint(str(served)) and index.size > 0
    assert kfp_split_change["runs"][0].state("GalleryIndexer") == "COMPLETE"


def test_after_a_split_change_the_verdict_names_the_overlap_and_compares_on_unseen_classes(
        kfp_split_change):
    from components.datasets.cars196.source import CLASS_NAMES

    emulator, (_, second) = kfp_split_change["emulator"], kfp_split_change["runs"]
    assert second.state("RetrievalExampleGen") == "COMPLETE"  # the new split was ingested
    result = metrics(emulator, second)
    assert result["production_version"] == kfp_split_change["first_versions"][0]
    assert result["baseline_seen_eval_classes"] == sorted(CLASS_NAMES[8:10])  # classes 9, 10
    overlap = result["class_overlap"]
    assert (overlap["num_eval_classes"], overlap["num_unseen_eval_classes"]) == (8, 6)
    assert overlap["comparison"] == "eval classes neither model has seen"
    assert result["comparison"]["classes"] == sorted(CLASS_NAMES[10:16])
    assert "production has seen 2 of the 8 eval classes" in result["reason"]


# ------------------------------------------------------------------ the harness refuses main's spec

def old_main_spec(cfg, tmp_path) -> dict:
    """The spec `cgd kubeflow compile` wrote before: TFX's defaults plus the MLMD resolver."""
    from tfx import v1 as tfx

    from pipeline.kubeflow_runner import kubeflow_pipeline

    pipeline = kubeflow_pipeline(cfg)
    resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    pipeline.components.append(resolver)
    job = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image="img:1"),
        output_dir=str(tmp_path), output_filename="old.json").run(pipeline)
    return job["pipelineSpec"]


def test_the_spec_main_compiled_before_is_refused(tmp_path):
    cfg = small_config(tmp_path, tmp_path / "cars196", kubeflow=KUBEFLOW)
    spec = old_main_spec(cfg, tmp_path)
    emulator = KfpEmulator(tmp_path / "cluster")
    with pytest.raises(Refused, match="only supports schema version 2.1.0, but the pipeline "
                                      "spec has version 2.0.0"):
        emulator.run(spec, PIPELINE_ROOT)
    spec["schemaVersion"] = "2.1.0"  # even so, the resolver cannot be compiled
    with pytest.raises(Refused, match="non-container and non-importer executor not implemented"):
        emulator.run(spec, PIPELINE_ROOT)


def test_tfx_2_0_parameters_fail_in_kfps_driver(tmp_path, sample_data):
    """Without the schema check, the 2.0 spec's `constantValue` parameters fail the first task."""
    cfg = small_config(tmp_path, sample_data.out_dir, kubeflow=KUBEFLOW)
    spec = old_main_spec(cfg, tmp_path)
    emulator = KfpEmulator(tmp_path / "cluster")
    emulator.validate = lambda spec: None
    with pytest.raises(TaskFailed, match="ValueOrRuntimeParameter_ConstantValue not implemented"):
        emulator.run(spec, PIPELINE_ROOT)


def test_tfx_2_1_spec_without_our_changes_fails_where_kfp_skips_the_driver(tmp_path, monkeypatch):
    """TFX's own 2.1 spec: KFP never runs the ExampleGen driver hook, so {SPAN} stays unresolved."""
    from tfx import v1 as tfx

    from kubeflow import compiler
    from pipeline.kubeflow_runner import kubeflow_pipeline

    source = tmp_path / "cars196"
    make_sample_data(source / "span-1", num_classes=4, images_per_class=2, seed=3)
    cfg = small_config(tmp_path, source, data={"file_pattern": "span-{SPAN}/*",
                                                "train_classes": [1, 2], "eval_classes": [3, 4],
                                                "validation_classes": 0},
                       kubeflow=KUBEFLOW)
    monkeypatch.setattr(compiler, "IMAGE_PROJECT_DIR", ROOT)
    job = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image="img:1", use_pipeline_spec_2_1=True),
        output_dir=str(tmp_path), output_filename="tfx21.json").run(
            kubeflow_pipeline(cfg))
    spec = job["pipelineSpec"]
    spec["root"]["dag"]["tasks"] = {"RetrievalExampleGen": spec["root"]["dag"]["tasks"][
        "RetrievalExampleGen"]}
    with pytest.raises(TaskFailed, match=r"(?s)task RetrievalExampleGen: .*source directory "
                                         r".*span-\{SPAN\} does not exist"):
        KfpEmulator(tmp_path / "cluster").run(spec, PIPELINE_ROOT)


# ------------------------------------------------------------------ GCS: markers and crashes at exit

@pytest.mark.parametrize("kfp_runs", [GCS_ROOT], ids=["gcs"], indirect=True)
def test_on_gcs_no_artifact_holds_a_directory_marker_though_tensorflow_writes_them(kfp_runs):
    """Executors write the launcher's local copies, which it uploads file by file; the
    Trainer's checkpoints, which are not artifacts, go through TensorFlow's GCS filesystem
    and show that it does write markers in this emulation."""
    emulator = kfp_runs["emulator"]
    bucket, _, prefix = kfp_runs["root"][len("gs://"):].partition("/")
    names = emulator.stores["gs://"].names(bucket, prefix)
    run_ids = [run.run_id for run in kfp_runs["runs"]]
    artifacts = [n for n in names if any(f"/cgd-kfp/{run_id}/" in n for run_id in run_ids)]
    assert any("/Trainer/model/" in n for n in artifacts)
    assert [n for n in artifacts if n.endswith("/")] == []
    checkpoints = [n for n in names if "/Trainer/.checkpoints/" in n]
    assert any(n.endswith("/") for n in checkpoints), checkpoints[:5]


@pytest.mark.parametrize("kfp_runs", [GCS_ROOT], ids=["gcs"], indirect=True)
def test_on_gcs_every_step_crashed_at_exit_and_still_reported_its_executors_result(kfp_runs):
    ran = [(run.run_id, name, task) for run in kfp_runs["runs"]
           for name, task in run.tasks.items() if task.state == "COMPLETE"]
    assert {"Trainer", "RecallEvaluator", "Pusher"} <= {name for _, name, _ in ran}
    for run_id, name, task in ran:
        assert "crash at exit armed" in task.log, (run_id, name)


def without_artifact_access(spec: dict) -> dict:
    """The spec as `main` compiled it before --artifact_access: executors get gs:// URIs."""
    from kubeflow.kfp_compat import ARTIFACT_ACCESS_FLAG

    spec = copy.deepcopy(spec)
    for executor in spec["deploymentSpec"]["executors"].values():
        args = executor.get("container", {}).get("args", [])
        if ARTIFACT_ACCESS_FLAG in args:
            at = args.index(ARTIFACT_ACCESS_FLAG)
            del args[at:at + 2]
    return spec


def test_on_gcs_the_spec_and_entrypoint_before_the_fix_fail_at_the_second_step(tmp_path,
                                                                              monkeypatch):
    """kubeflow/pipelines#13476, reproduced: TensorFlow's GCS filesystem leaves a `<dir>/`
    marker in ImportSchemaGen's output (ExampleGen's is written by Beam's gcsio, which
    leaves none), and the launcher cannot download it for StatisticsGen."""
    source = tmp_path / "cars196"
    make_sample_data(source / "span-1", num_classes=4, images_per_class=2, seed=3)
    cfg = small_config(tmp_path, source, data={"file_pattern": "span-{SPAN}/*",
                                                "train_classes": [1, 2], "eval_classes": [3, 4],
                                                "validation_classes": 0},
                       # 4 eval queries: ingestion would refuse them at the default minimum.
                       evaluator={"min_queries": 4},
                       # --no_auth: Beam's gcsio would retry Application Default Credentials.
                       kubeflow=dict(KUBEFLOW, pipeline_root=GCS_ROOT,
                                     beam_args=["--direct_num_workers=1", "--no_auth"]))
    spec, root = compile_spec(cfg, tmp_path / "pipeline.json", monkeypatch)
    spec = without_artifact_access(spec)
    tasks = spec["root"]["dag"]["tasks"]
    spec["root"]["dag"]["tasks"] = {name: tasks[name] for name in (
        "RetrievalExampleGen-driver", "RetrievalExampleGen", "ImportSchemaGen", "StatisticsGen")}
    emulator = KfpEmulator(tmp_path / "cluster")
    try:
        with pytest.raises(TaskFailed, match=r"(?s)task StatisticsGen: failed to download input "
                                             r"artifact \"schema\".*mkdir .*: not a "
                                             r"directory$"):
            emulator.run(spec, root)
        bucket, _, prefix = root[len("gs://"):].partition("/")
        markers = [n for n in emulator.stores["gs://"].names(bucket, prefix) if n.endswith("/")]
        assert any(n.endswith("/ImportSchemaGen/schema/") for n in markers), markers
    finally:
        emulator.close()
