"""The comparison with production only on eval classes neither model has seen.

Pure tests of components/recall_evaluator/class_overlap.py (the overlap, the verdict
with an overlap, too few unseen classes, a production model of unknown classes), the
contract reader (production.seen_classes), and the RecallEvaluator's executor on real
artifacts: raw eval Examples with class names, SavedModels with a contract.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil

import numpy as np
import pytest

from components.recall_evaluator import class_overlap, metrics, production
from components.recall_evaluator.class_overlap import find_overlap, judge_fairly
from components.recall_evaluator.verdict import judge
from core.names import CONTRACT_CLASSES_KEY, CONTRACT_FILE
from tests.conftest import small_config


def evaluator(tmp_path, **overrides):
    return small_config(tmp_path, tmp_path, evaluator=dict(
        {"bootstrap_samples": 500, "confidence_level": 0.9, "baseline_tolerance": 0.0},
        **overrides)).evaluator


def clusters(labels, spread, seed, dim=16):
    """Embeddings with one centre per class, ``spread`` of noise: small spread, good retrieval."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(labels.max()) + 1, dim))
    x = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# 10 eval classes x 8 images; production has trained on classes c0-c3.
LABELS = np.repeat(np.arange(10), 8)
NAMES = [f"c{label}" for label in LABELS]
PRODUCTION_SEEN = frozenset({"c0", "c1", "c2", "c3", "t1", "t2"})


def test_find_overlap_names_the_seen_eval_classes_and_keeps_the_rest():
    overlap = find_overlap(NAMES, PRODUCTION_SEEN, candidate_seen={"t9"})
    assert overlap.eval_classes == tuple(f"c{i}" for i in range(10))
    assert overlap.seen_by_production == ("c0", "c1", "c2", "c3")
    assert overlap.seen_by_candidate == ()
    assert overlap.unseen.tolist() == [label >= 4 for label in LABELS]
    assert (overlap.unseen_classes, overlap.unseen_queries) == (6, 48)
    assert overlap.judgeable(2, 20) and not overlap.judgeable(7, 20)
    assert not find_overlap(NAMES, {"t1"}).any_seen


def test_a_candidate_that_saw_an_eval_class_is_not_compared_on_it():
    overlap = find_overlap(NAMES, {"c0"}, candidate_seen={"c9"})
    assert overlap.seen_by_candidate == ("c9",) and overlap.unseen_classes == 8
    assert not overlap.unseen[LABELS == 9].any() and not overlap.unseen[LABELS == 0].any()


def test_production_that_memorised_the_seen_classes_is_compared_only_on_unseen_ones(tmp_path):
    ev = evaluator(tmp_path)
    # Production: perfect on the classes it trained on (c0-c3), poor on new ones.
    # The candidate: good everywhere. On the whole split production would look better on
    # the classes it has seen; on the unseen ones the candidate is clearly better.
    seen = LABELS < 4
    production_emb = np.where(seen[:, None], clusters(LABELS, 0.0, 1), clusters(LABELS, 1.5, 2))
    candidate_emb = clusters(LABELS, 0.45, 3)
    result, verdict = judge_fairly(ev, LABELS, NAMES, candidate_emb, production_emb,
                                   production_seen=PRODUCTION_SEEN)
    assert result["baseline_seen_eval_classes"] == ["c0", "c1", "c2", "c3"]
    info = result["class_overlap"]
    assert info["comparison"] == class_overlap.UNSEEN
    assert (info["num_eval_classes"], info["num_baseline_seen_eval_classes"],
            info["num_unseen_eval_classes"], info["unseen_queries"]) == (10, 4, 6, 48)
    assert result["comparison"]["classes"] == [f"c{i}" for i in range(4, 10)]
    # The candidate's own metrics stay the whole eval split's ...
    full = metrics.recall_at_k(candidate_emb, LABELS, ks=(1,))[1]
    assert result["candidate"]["recall@1"] == pytest.approx(full)
    # ... the comparison is production's and the candidate's on the unseen subset only,
    # the gallery restricted to it too.
    keep = ~seen
    assert result["baseline"]["recall@1"] == pytest.approx(
        metrics.recall_at_k(production_emb[keep], LABELS[keep], ks=(1,))[1])
    assert result["comparison"]["candidate"]["recall@1"] == pytest.approx(
        metrics.recall_at_k(candidate_emb[keep], LABELS[keep], ks=(1,))[1])
    assert result["difference"]["recall@1"] > 0
    assert verdict.blessed, verdict.reason
    assert "neither model has seen" in verdict.reason
    assert "production has seen 4 of the 10 eval classes" in verdict.reason
    assert "c0, c1, c2, c3" in verdict.reason
    # The comparison on the whole split (what the gate did before) is not what was judged.
    _, naive = judge(ev, LABELS, candidate_emb, production_emb)
    assert naive.reason != verdict.reason


def test_the_subset_comparison_refuses_a_candidate_worse_on_unseen_classes(tmp_path):
    ev = evaluator(tmp_path)
    production_emb = clusters(LABELS, 0.2, 1)  # good on every class
    candidate_emb = np.where((LABELS < 4)[:, None], clusters(LABELS, 0.2, 3),
                             clusters(LABELS, 2.0, 4))  # poor on the unseen classes
    result, verdict = judge_fairly(ev, LABELS, NAMES, candidate_emb, production_emb,
                                   production_seen=PRODUCTION_SEEN)
    assert not verdict.blessed, verdict.reason
    assert result["difference"]["recall@1"] < 0
    assert "neither model has seen" in verdict.reason


def test_too_few_unseen_classes_judge_on_the_threshold_alone(tmp_path):
    ev = evaluator(tmp_path, recall_threshold=0.5)
    labels = np.repeat(np.arange(4), 8)
    names = [f"c{label}" for label in labels]
    candidate_emb = clusters(labels, 0.3, 3)
    production_emb = clusters(labels, 0.0, 1)  # far better: would refuse the candidate
    # Production saw c0-c2: one unseen class stays, fewer than min_eval_classes (2).
    result, verdict = judge_fairly(ev, labels, names, candidate_emb, production_emb,
                                   production_seen={"c0", "c1", "c2"})
    assert verdict.blessed, verdict.reason
    assert verdict.reason.startswith("BLESSED on the threshold alone")
    assert "too few to judge" in verdict.reason and "evaluator.min_eval_classes" in verdict.reason
    assert result["baseline_seen_eval_classes"] == ["c0", "c1", "c2"]
    assert result["class_overlap"]["comparison"] == "none: judged on the threshold alone"
    assert "baseline" not in result and "difference" not in result
    # Below the threshold it is still refused.
    poor = judge_fairly(dataclasses.replace(ev, recall_threshold=0.99), labels, names,
                        clusters(labels, 2.0, 5), production_emb,
                        production_seen={"c0", "c1", "c2"})[1]
    assert not poor.blessed and "below the threshold" in poor.reason
    assert "production has seen 3 of the 4 eval classes" in poor.reason


def test_too_few_unseen_queries_judge_on_the_threshold_alone(tmp_path):
    ev = evaluator(tmp_path)
    # Production saw c0-c7: c8 and c9 stay, 16 queries, fewer than min_queries (20).
    result, verdict = judge_fairly(ev, LABELS, NAMES, clusters(LABELS, 0.3, 3),
                                   clusters(LABELS, 0.0, 1),
                                   production_seen={f"c{i}" for i in range(8)})
    assert verdict.blessed and "16 queries with a match" in verdict.reason, verdict.reason
    assert result["class_overlap"]["unseen_queries"] == 16


def test_production_without_classes_is_unknown_and_compared_as_before(tmp_path):
    ev = evaluator(tmp_path)
    candidate_emb, production_emb = clusters(LABELS, 0.4, 3), clusters(LABELS, 0.4, 1)
    before, before_verdict = judge(ev, LABELS, candidate_emb, production_emb)
    result, verdict = judge_fairly(ev, LABELS, NAMES, candidate_emb, production_emb,
                                   production_seen=None)
    assert result["baseline_seen_eval_classes"] is None
    assert result["class_overlap"]["production_classes"] == "unknown"
    assert result["difference"] == before["difference"]
    assert verdict.blessed == before_verdict.blessed
    assert verdict.reason.startswith(before_verdict.reason)
    assert "unknown" in verdict.reason and "pushed before models carried them" in verdict.reason


def test_no_overlap_compares_on_the_whole_split(tmp_path):
    ev = evaluator(tmp_path)
    candidate_emb, production_emb = clusters(LABELS, 0.4, 3), clusters(LABELS, 0.4, 1)
    before, before_verdict = judge(ev, LABELS, candidate_emb, production_emb)
    result, verdict = judge_fairly(ev, LABELS, NAMES, candidate_emb, production_emb,
                                   production_seen={"t1", "t2"})
    assert verdict == before_verdict and result["difference"] == before["difference"]
    assert result["baseline_seen_eval_classes"] == []
    assert result["class_overlap"]["comparison"] == "the whole eval split"


def test_the_query_gallery_protocol_keeps_its_roles_on_the_subset(tmp_path):
    ev = evaluator(tmp_path)
    roles = np.tile(np.array(["query"] * 4 + ["gallery"] * 4), 10)
    production_emb, candidate_emb = clusters(LABELS, 0.5, 1), clusters(LABELS, 0.5, 3)
    result, _ = judge_fairly(ev, LABELS, NAMES, candidate_emb, production_emb,
                             production_seen=PRODUCTION_SEEN, roles=roles)
    keep = LABELS >= 4
    expected = metrics.per_query_metrics(production_emb[keep], LABELS[keep], ks=(1,),
                                         roles=roles[keep])
    assert result["comparison"]["protocol"] == "query/gallery"
    assert result["class_overlap"]["unseen_queries"] == 24
    assert result["baseline"]["recall@1"] == pytest.approx(
        expected.summary(0.0)["recall@1"])


# ------------------------------------------------------------------ contract reader

def write_contract(model_dir, seen=None, **extra):
    os.makedirs(os.path.join(model_dir, "assets.extra"), exist_ok=True)
    contract = {"crop_protocol": "none", **extra}
    if seen is not None:
        contract[CONTRACT_CLASSES_KEY] = seen
    with open(os.path.join(model_dir, "assets.extra", CONTRACT_FILE), "w") as f:
        json.dump(contract, f)


def test_seen_classes_reads_the_contract_and_unknown_is_none(tmp_path):
    assert production.seen_classes(str(tmp_path / "none")) is None  # no contract at all
    write_contract(tmp_path / "old")  # a model pushed before models carried classes
    assert production.seen_classes(str(tmp_path / "old")) is None
    write_contract(tmp_path / "new", {"train": ["a", "b"], "valid": ["c"], "digest": "x"})
    assert production.seen_classes(str(tmp_path / "new")) == {"a", "b", "c"}
    write_contract(tmp_path / "bad", {"train": "a"})
    with pytest.raises(ValueError, match=r"contract.json: 'seen_classes' must hold the lists"):
        production.seen_classes(str(tmp_path / "bad"))


def test_seen_classes_entry_digest_tells_class_sets_apart():
    from trainer.export import seen_classes_entry
    a = seen_classes_entry(["b", "a", "a"], ["c"])
    assert a["train"] == ["a", "b"] and a["valid"] == ["c"]
    assert a["digest"] == seen_classes_entry(["a", "b"], ["c"])["digest"]
    assert a["digest"] != seen_classes_entry(["a"], ["b", "c"])["digest"]


# ------------------------------------------------------------------ the executor

EXECUTOR_CLASSES = 8
EXECUTOR_IMAGES = 6


@pytest.fixture(scope="module")
def named_eval_examples(tmp_path_factory):
    """Raw eval Examples as RetrievalExampleGen writes them: 8 classes x 6 images, named."""
    import tensorflow as tf
    from PIL import Image
    from tfx.types import standard_artifacts

    root = tmp_path_factory.mktemp("named_examples")
    os.makedirs(root / "Split-eval")
    rng = np.random.default_rng(0)

    def feature(kind, value):
        if kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    with tf.io.TFRecordWriter(str(root / "Split-eval" / "data.gz"), "GZIP") as writer:
        for label in range(EXECUTOR_CLASSES):
            base = rng.integers(0, 255, size=3)
            for i in range(EXECUTOR_IMAGES):
                pixels = np.clip(base + rng.normal(0, 8, (24, 32, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, "JPEG")
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "image": feature("bytes", buffer.getvalue()),
                    "label": feature("int", label),
                    "class_name": feature("bytes", f"class-{label}".encode()),
                    "image_id": feature("bytes", f"eval/{label}-{i}".encode()),
                })).SerializeToString())
    examples = standard_artifacts.Examples()
    examples.uri = str(root)
    from tfx.types import artifact_utils
    examples.split_names = artifact_utils.encode_split_names(["eval"])
    return examples


def run_executor(tmp_path, examples, candidate_dir, serving_model_dir, **overrides):
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components.recall_evaluator import constants
    from components.recall_evaluator.executor import Executor
    from core import names

    ev = small_config(tmp_path, tmp_path, evaluator=dict(
        {"ranking_queries": 2, "baseline_tolerance": 1.0}, **overrides)).evaluator
    model = standard_artifacts.Model()
    model.uri = str(candidate_dir)
    blessing, evaluation = standard_artifacts.ModelBlessing(), standard_artifacts.ModelEvaluation()
    blessing.uri, evaluation.uri = str(tmp_path / "blessing"), str(tmp_path / "evaluation")
    for a in (blessing, evaluation):
        os.makedirs(a.uri)
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_num_workers=1"], tmp_dir=str(tmp_path / "beam-tmp"),
        unique_id="overlap")
    Executor(context).Do(
        {"examples": [examples], "model": [model]},
        {"blessing": [blessing], "evaluation": [evaluation]},
        {constants.EVALUATOR_JSON_KEY: json.dumps(dataclasses.asdict(ev)),
         constants.EVAL_SPLIT_KEY: "eval", constants.SERVING_MODEL_DIR_KEY: str(serving_model_dir),
         names.CODE_FINGERPRINT_KEY: ""})
    result = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    verdict = (tmp_path / "evaluation" / "verdict.txt").read_text()
    return result, verdict


def stand_in(model_dir, seed, seen=None):
    from serving.standin import write_stand_in_model
    serving_dir = os.path.join(model_dir, "Format-Serving")
    write_stand_in_model(serving_dir, size=16, dim=32, seed=seed)
    write_contract(serving_dir, seen)
    return serving_dir


@pytest.mark.slow
def test_executor_names_the_overlap_and_compares_on_unseen_classes(tmp_path, named_eval_examples):
    from components.recall_evaluator.embedding import embed_with_signature, read_eval_images

    serving = tmp_path / "serving" / "cgd"
    production_files = stand_in(tmp_path / "prod", seed=6, seen={
        "train": ["class-0", "class-1", "old-9"], "valid": ["class-2"], "digest": ""})
    shutil.copytree(production_files, serving / "100")
    candidate = tmp_path / "candidate"
    stand_in(candidate, seed=7, seen={"train": ["t-0", "t-1"], "valid": ["t-2"], "digest": ""})
    result, verdict = run_executor(tmp_path, named_eval_examples, candidate, serving)

    assert result["production_version"] == 100
    assert result["baseline_seen_eval_classes"] == ["class-0", "class-1", "class-2"]
    assert result["class_overlap"]["num_unseen_eval_classes"] == EXECUTOR_CLASSES - 3
    assert result["comparison"]["classes"] == [f"class-{i}" for i in range(3, EXECUTOR_CLASSES)]
    assert "production has seen 3 of the 8 eval classes" in verdict
    # production's Recall@1 in metrics.json is on the unseen classes' images only.
    images, labels, _, _ = read_eval_images(named_eval_examples.uri, "eval")
    keep = labels >= 3
    prod = embed_with_signature(str(serving / "100"), [b for b, k in zip(images, keep) if k])
    assert result["baseline"]["recall@1"] == pytest.approx(
        metrics.recall_at_k(prod, labels[keep], ks=(1,))[1])
    # The candidate's Recall@1 stays the whole eval split's.
    cand = embed_with_signature(str(candidate / "Format-Serving"), images)
    assert result["candidate"]["recall@1"] == pytest.approx(
        metrics.recall_at_k(cand, labels, ks=(1,))[1])


@pytest.mark.slow
def test_executor_with_a_production_model_of_unknown_classes_says_so(tmp_path,
                                                                     named_eval_examples):
    serving = tmp_path / "serving" / "cgd"
    shutil.copytree(stand_in(tmp_path / "prod", seed=6), serving / "100")  # no seen_classes
    candidate = tmp_path / "candidate"
    stand_in(candidate, seed=7, seen={"train": ["t-0"], "valid": ["t-1"], "digest": ""})
    result, verdict = run_executor(tmp_path, named_eval_examples, candidate, serving)
    assert result["baseline_seen_eval_classes"] is None
    assert result["class_overlap"]["production_classes"] == "unknown"
    assert "whether production has seen any eval class is unknown" in verdict
    assert "baseline" in result and "comparison" not in result
