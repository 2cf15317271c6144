"""The whole pipeline end to end on generated data.

- through the tfx CLI (`tfx pipeline create` / `tfx run create`, local engine,
  ML Metadata on SQLite): a run killed mid-training restarts and finishes,
  resuming from its checkpoint; a rerun with nothing changed is served from
  the cache and pushes nothing new;
- scheduled retraining on new data spans: a worse model is not pushed and
  serving keeps the old version; a better one is pushed and served.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from components.datasets.cars196.sample import make_sample_data
from tests.conftest import BLACK_PADDING, RETRAIN_SAMPLE, UNTRAINED, latest_output, small_config
from tests.support.paths import REPO_ROOT

# Slow tier: whole pipelines, the tfx CLI in a subprocess and a model server.
pytestmark = pytest.mark.slow

ROOT = str(REPO_ROOT)
TFX = os.path.join(os.path.dirname(sys.executable), "tfx")


def versions(serving_dir, model="cgd"):
    path = os.path.join(serving_dir, model)
    return sorted(int(v) for v in os.listdir(path)) if os.path.isdir(path) else []


def newest_metrics(cfg):
    evaluation = latest_output(cfg, "RecallEvaluator", "evaluation")
    return json.load(open(os.path.join(evaluation, "metrics.json")))


def tfx_cli(args, env, timeout=900):
    return subprocess.run([TFX, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_tfx_cli_run_killed_restarts_then_rerun_is_cached(sample_data, tmp_path):
    # Beam components on the DirectRunner in multi-processing mode (the packaged default is
    # multi-threading; this keeps the other local mode exercised).
    cfg = small_config(tmp_path, sample_data.out_dir, pipeline={
        "name": "cgd-cli",
        "beam_args": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    env = dict(os.environ, CGD_CONFIG=str(config_path), LOCAL_HOME=str(tmp_path / "tfx_home"),
               TF_USE_LEGACY_KERAS="1")

    created = tfx_cli(["pipeline", "create", "--engine", "local", "--pipeline_path",
                       os.path.join(ROOT, "pipeline", "local_runner.py")], env)
    assert created.returncode == 0, created.stderr[-3000:]
    assert (tmp_path / "tfx_home" / "cgd-cli" / "pipeline_args.json").exists()

    # 0. A new shell without CGD_CONFIG would run the packaged defaults: refused, nothing written.
    bare = {k: v for k, v in env.items() if k != "CGD_CONFIG"}
    bare["HOME"] = str(tmp_path / "home")
    refused = tfx_cli(["run", "create", "--engine", "local", "--pipeline_name", "cgd-cli"], bare)
    assert refused.returncode != 0
    [line] = [l for l in refused.stderr.splitlines() if l.startswith("error:")]
    assert "CGD_CONFIG is not set" in line and "was created with root" in line
    assert not (tmp_path / "home" / "cgd").exists()

    # 1. A run killed in the middle of training.
    proc = subprocess.Popen([TFX, "run", "create", "--engine", "local", "--pipeline_name",
                             "cgd-cli"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed_at = None
    deadline = time.monotonic() + 900
    for line in proc.stdout:
        if "epoch 2/" in line:  # a checkpoint of epoch 1-2 exists, training goes on
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = line
            break
        assert time.monotonic() < deadline, "training never started"
    proc.wait(timeout=60)
    assert killed_at, "the run finished before it could be killed"
    assert versions(cfg.pipeline.serving_dir) == []

    # 2. Started again: finishes, resuming the interrupted training.
    rerun = tfx_cli(["run", "create", "--engine", "local", "--pipeline_name", "cgd-cli"], env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    output = rerun.stdout + rerun.stderr
    assert "resuming an interrupted training" in output
    assert "resumed model selection" in output  # epochs before the kill still count
    assert len(versions(cfg.pipeline.serving_dir)) == 1
    first = newest_metrics(cfg)
    assert first["blessed"] and "first model" in first["reason"]
    evaluation = latest_output(cfg, "RecallEvaluator", "evaluation")
    for name in ("metrics.json", "verdict.txt", "rankings.png", "rankings.html"):
        assert os.path.getsize(os.path.join(evaluation, name)) > 0, name
    assert os.path.exists(os.path.join(latest_output(cfg, "RecallEvaluator", "blessing"), "BLESSED"))
    assert set(first["candidate"]) >= {"recall@1", "recall@2", "recall@4", "recall@8",
                                       "map@r", "nmi"}
    _assert_live_artifacts_are_complete(cfg)

    # 3. Nothing changed: everything up to the Trainer comes from the cache, and
    #    the model already in production is not pushed again.
    # The terminal gets the digest; the whole run's log is appended to the pipeline's log
    # file (cli/tfx_cli.py), where TFX's own launcher lines are.
    log_file = os.path.join(os.path.dirname(cfg.pipeline.root), "logs", "cgd-cli.log")
    logged_before = os.path.getsize(log_file)
    again = tfx_cli(["run", "create", "--engine", "local", "--pipeline_name", "cgd-cli"], env)
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stdout + again.stderr
    with open(log_file) as f:
        f.seek(logged_before)
        logged = f.read()
    assert logged.count("A cached execution") >= 6
    assert "Trainer cached" in output
    assert "validation Recall@1" not in logged  # no training happened
    assert len(versions(cfg.pipeline.serving_dir)) == 1
    assert "ALREADY SERVING" in newest_metrics(cfg)["reason"]


def _assert_live_artifacts_are_complete(cfg):
    """LIVE artifacts all come from completed executions; the killed one published nothing."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(
        cfg.pipeline.metadata_path))
    executions = {e.id: e for e in store.get_executions()}
    done = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    unfinished = [e for e in executions.values() if e.last_known_state not in done]
    assert unfinished, "the killed execution should be recorded as not complete"
    live = {a.id: a for a in store.get_artifacts() if a.state == a.LIVE}
    for event in store.get_events_by_artifact_ids(list(live)):
        if event.type == metadata_store_pb2.Event.OUTPUT:
            assert executions[event.execution_id].last_known_state in done, live[event.artifact_id]
    unfinished_outputs = [ev.artifact_id for ev in store.get_events_by_execution_ids(
        [e.id for e in unfinished]) if ev.type == metadata_store_pb2.Event.OUTPUT]
    assert not set(unfinished_outputs) & set(live)
    for model in (a for a in live.values() if "/Trainer/model/" in a.uri):
        assert os.path.exists(os.path.join(model.uri, "Format-Serving", "saved_model.pb"))


def test_retraining_on_new_spans_pushes_only_better_models_and_serving_follows(tmp_path):
    from cli.main import main as cgd
    from pipeline.run import run_local
    from serving.client import EmbeddingClient
    from serving.model_server import ModelServer

    source = tmp_path / "cars196"
    make_sample_data(source / "span-1", **dict(RETRAIN_SAMPLE, seed=11))
    cfg = small_config(tmp_path, source, pipeline={"name": "cgd-retrain"},
                       data={"file_pattern": "span-{SPAN}/*"},
                       # 144 eval queries: the tests check the gate's mechanics at 50%.
                       evaluator={"baseline_tolerance": 0.0, "confidence_level": 0.5})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg.replace(trainer=UNTRAINED).to_dict()))

    # Run 1 through the retrain command (one run): the first model is pushed.
    assert cgd(["retrain", "--config", str(config_path), "--every", "1s",
                "--max-runs", "1"]) == 0
    [v1] = versions(cfg.pipeline.serving_dir)
    with ModelServer(cfg.pipeline.serving_dir, "cgd", grpc_port=0, rest_port=None,
                     poll_seconds=0.5) as server, \
            EmbeddingClient(server.grpc_target, "cgd", timeout_s=60) as client:
        image = open(_probe(source, tmp_path), "rb").read()
        client.embed_bytes([image])
        assert client.last_model_version == v1

        # Run 2 on a new span with black padding (see conftest): worse; not pushed.
        make_sample_data(source / "span-2", **dict(RETRAIN_SAMPLE, seed=12))
        run_local(cfg.replace(trainer=UNTRAINED, transform=BLACK_PADDING))
        worse = newest_metrics(cfg)
        assert worse["candidate"]["recall@1"] < worse["baseline"]["recall@1"]  # the premise
        assert not worse["blessed"], worse["reason"]
        assert "below the blessed baseline" in worse["reason"]
        assert worse["difference"]["intervals"]["recall@1"][1] < 0  # significantly worse
        assert worse["significance"]["baseline_rule"] == "non_inferior"  # the default
        assert versions(cfg.pipeline.serving_dir) == [v1]
        client.embed_bytes([image])
        assert client.last_model_version == v1

        # Run 3 on the next span, as good as production within a tolerance of 0.1 Recall@1
        # (the same recipe as v1 on new data): pushed, and the server switches.
        make_sample_data(source / "span-3", **dict(RETRAIN_SAMPLE, seed=13))
        run_local(cfg.replace(trainer=UNTRAINED, evaluator={"baseline_tolerance": 0.1}))
        better = newest_metrics(cfg)
        assert better["blessed"], better["reason"]
        # Non-inferiority: blessed because the interval's lower bound is within -0.1.
        assert better["difference"]["intervals"]["recall@1"][0] >= -0.1
        new_versions = versions(cfg.pipeline.serving_dir)
        assert len(new_versions) == 2 and new_versions[0] == v1
        server.wait_for_version(new_versions[1], timeout_s=60)
        client.embed_bytes([image])
        assert client.last_model_version == new_versions[1]


def _probe(source, tmp_path):
    import tarfile
    with tarfile.open(source / "span-1" / "cars_test.tgz") as tar:
        tar.extract("cars_test/00001.jpg", tmp_path)
    return str(tmp_path / "cars_test" / "00001.jpg")


def test_a_split_change_compares_with_production_only_on_classes_it_has_not_seen(
        sample_data, tmp_path):
    """Run 1 blesses a model trained on classes 1-10; run 2 moves the split (eval 9-16), so
    two eval classes are production's validation classes: named, and left out of the
    paired comparison, which runs on classes 11-16 alone."""
    from components.datasets.cars196.source import CLASS_NAMES
    from components.recall_evaluator import production
    from pipeline.run import run_local

    cfg = small_config(tmp_path, sample_data.out_dir, pipeline={"name": "cgd-split"},
                       evaluator={"baseline_tolerance": 1.0})
    run_local(cfg.replace(trainer=UNTRAINED))
    [v1] = versions(cfg.pipeline.serving_dir)
    assert newest_metrics(cfg)["blessed"]
    served = os.path.join(cfg.pipeline.serving_dir, "cgd", str(v1))
    assert production.seen_classes(served) == set(CLASS_NAMES[:10])  # classes 1-10
    # Pushed as one version: the model and the index built through it, stamped with it.
    from core.names import INDEX_DIR
    from search.index import GalleryIndex, model_fingerprint
    index = GalleryIndex.load(os.path.join(served, "assets.extra", INDEX_DIR))
    assert index.model.fingerprint == model_fingerprint(served)
    indexed = json.load(open(os.path.join(latest_output(cfg, "GalleryIndexer", "evaluation"),
                                          "metrics.json")))
    assert indexed["blessed"] and index.size == indexed["gallery"]["size"] > 0

    moved = {"train_classes": [1, 8], "eval_classes": [9, 16]}
    run_local(cfg.replace(trainer=UNTRAINED, data=moved))
    second = newest_metrics(cfg)
    assert second["production_version"] == v1
    assert second["baseline_seen_eval_classes"] == sorted(CLASS_NAMES[8:10])  # classes 9, 10
    overlap = second["class_overlap"]
    assert (overlap["num_eval_classes"], overlap["num_baseline_seen_eval_classes"],
            overlap["num_unseen_eval_classes"]) == (8, 2, 6)
    assert second["comparison"]["classes"] == sorted(CLASS_NAMES[10:16])
    assert "neither model has seen" in second["reason"]
    assert "production has seen 2 of the 8 eval classes" in second["reason"]
    # The comparison ran on the images of classes 11-16 (label >= 10) only.
    from components.recall_evaluator.embedding import read_eval_images
    labels = read_eval_images(latest_output(cfg, "RetrievalExampleGen", "examples"),
                              "eval").labels
    assert overlap["unseen_images"] == int((labels >= 10).sum()) < len(labels)
