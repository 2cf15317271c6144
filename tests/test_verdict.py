"""The blessing rule (threshold, first model, cached rerun, the paired interval against
production) and ``judge`` on synthetic embeddings where the answer is known."""
import dataclasses
import json

import numpy as np
import pytest

from components.recall_evaluator.verdict import BaselineComparison, bless, judge
from core.config import load_config


def production(baseline_r1, difference, low, high, confidence=0.95):
    return BaselineComparison(baseline_r1, difference, low, high, confidence)


# --------------------------------------------------------------------------
# bless: the rule alone
# --------------------------------------------------------------------------

@pytest.mark.parametrize("r1, threshold, baseline, tol, blessed, words", [
    (0.50, 0.40, None, 0.0, True, "first model"),
    (0.30, 0.40, None, 0.0, False, "below the threshold"),
    # Inside the noise: blessed, even a little below production.
    (0.50, 0.40, production(0.51, -0.01, -0.03, 0.01), 0.0, True, "not significantly worse"),
    (0.50, 0.40, production(0.50, 0.0, 0.0, 0.0), 0.0, True, "not significantly worse"),
    (0.55, 0.40, production(0.50, 0.05, 0.03, 0.07), 0.0, True, "significantly better"),
    # Significantly worse: refused, with the phrase the end-to-end tests look for.
    (0.45, 0.40, production(0.50, -0.05, -0.07, -0.03), 0.0, False,
     "below the blessed baseline"),
    # Significantly worse but by less than the tolerance: blessed.
    (0.48, 0.40, production(0.50, -0.02, -0.03, -0.01), 0.03, True, "within the tolerance"),
    (0.48, 0.40, production(0.50, -0.02, -0.03, -0.03), 0.03, True, "tolerance 0.0300"),  # edge
    (0.45, 0.40, production(0.50, -0.05, -0.07, -0.04), 0.03, False,
     "worse by more than the tolerance 0.0300"),
    # The threshold comes first, whatever production scores.
    (0.35, 0.40, production(0.10, 0.25, 0.2, 0.3), 0.0, False, "below the threshold"),
])
def test_bless(r1, threshold, baseline, tol, blessed, words):
    verdict = bless(r1, threshold, baseline=baseline, tolerance=tol)
    assert verdict.blessed is blessed
    assert words in verdict.reason
    assert ("NOT BLESSED" in verdict.reason) is (not blessed)


def test_verdict_texts_state_the_difference_and_its_interval():
    blessed = bless(0.8123, 0.0, baseline=production(0.8150, -0.0027, -0.0081, 0.0026))
    assert blessed.reason == (
        "BLESSED: Recall@1 0.8123 vs production 0.8150: difference -0.0027 "
        "[95% CI -0.0081, +0.0026], not significantly worse (tolerance 0.0000)")
    refused = bless(0.7800, 0.0, baseline=production(0.8150, -0.0350, -0.0480, -0.0220, 0.9))
    assert refused.reason == (
        "NOT BLESSED: Recall@1 0.7800 is significantly below the blessed baseline's 0.8150: "
        "difference -0.0350 [90% CI -0.0480, -0.0220], worse by more than the tolerance 0.0000")
    assert bless(0.5, 0.4).reason == ("BLESSED: Recall@1 0.5000 meets the threshold 0.4000; "
                                      "no blessed baseline yet (first model)")
    assert bless(0.3, 0.4).reason == "NOT BLESSED: Recall@1 0.3000 is below the threshold 0.4000"
    assert "[97.5% CI" in bless(0.5, 0.0, baseline=production(0.5, 0, -0.1, 0.1, 0.975)).reason


def test_candidate_that_is_the_baseline_is_not_pushed_again():
    verdict = bless(0.9, 0.0, candidate_is_baseline=True)
    assert not verdict.blessed and "ALREADY SERVING" in verdict.reason


@pytest.mark.parametrize("args, message", [
    ((0.5, 0.0, 0.1, -0.1, 0.95), "above high"),
    ((0.5, 0.0, -0.1, 0.1, 1.0), "confidence"),
    ((0.5, float("nan"), -0.1, 0.1, 0.95), "finite"),
])
def test_baseline_comparison_is_validated(args, message):
    with pytest.raises(ValueError, match=message):
        BaselineComparison(*args)


# --------------------------------------------------------------------------
# judge: metrics, intervals and the verdict from embeddings
# --------------------------------------------------------------------------

def evaluator(**overrides):
    return dataclasses.replace(load_config(None).evaluator, **overrides)


def clustered(seed, num_classes=40, per_class=20, dim=16, noise=0.85):
    """800 embeddings of 40 classes; Recall@1 about 0.83 at the default noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(num_classes), per_class)
    x = centres[labels] + noise * rng.standard_normal((labels.size, dim)) / np.sqrt(dim)
    return x.astype(np.float32), labels, rng


@pytest.fixture
def no_kmeans(monkeypatch):
    """NMI (k-means, seconds at 800 x 40 classes) plays no part in the gate."""
    from components.recall_evaluator import metrics
    monkeypatch.setattr(metrics, "nmi", lambda embeddings, labels, **kw: 0.5)


def test_identical_models_differ_by_exactly_zero_and_are_blessed(no_kmeans):
    x, labels, _ = clustered(0)
    result, verdict = judge(evaluator(), labels, x, x.copy())
    assert verdict.blessed and "not significantly worse" in verdict.reason
    diff = result["difference"]
    assert all(diff[m] == 0.0 and diff["intervals"][m] == [0.0, 0.0]
               for m in diff["intervals"])
    assert "difference +0.0000 [95% CI +0.0000, +0.0000]" in verdict.reason
    assert result["candidate"] == result["baseline"]


def test_a_clearly_worse_model_is_not_blessed(no_kmeans):
    x, labels, rng = clustered(1)
    worse = x + 0.5 * rng.standard_normal(x.shape).astype(np.float32) / 4  # about -0.16
    result, verdict = judge(evaluator(), labels, worse, x)
    d, (low, high) = result["difference"]["recall@1"], result["difference"]["intervals"]["recall@1"]
    assert d < -0.05 and high < 0
    assert not verdict.blessed
    assert "below the blessed baseline" in verdict.reason and f"{d:+.4f}" in verdict.reason
    # ...unless the tolerance is wider than the whole interval's distance from 0.
    assert judge(evaluator(baseline_tolerance=-low + 0.01), labels, worse, x)[1].blessed


def test_a_marginally_different_model_is_blessed_with_an_interval_containing_zero(no_kmeans):
    x, labels, rng = clustered(2)
    marginal = x + 0.05 * rng.standard_normal(x.shape).astype(np.float32) / 4  # about -0.006
    result, verdict = judge(evaluator(), labels, marginal, x)
    d, (low, high) = result["difference"]["recall@1"], result["difference"]["intervals"]["recall@1"]
    assert d != 0.0 and low < 0.0 < high  # a difference inside the noise
    assert verdict.blessed and "not significantly worse" in verdict.reason
    assert result["candidate"]["recall@1"] - result["baseline"]["recall@1"] == pytest.approx(d)


def test_metrics_json_fields_carry_intervals_for_every_metric():
    x, labels, rng = clustered(3, num_classes=10)
    other = x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)
    result, verdict = judge(evaluator(recall_ks=[2, 4], bootstrap_samples=200,
                                      confidence_level=0.9), labels, other, x)
    json.dumps(result)
    per_query = {"recall@1", "recall@2", "recall@4", "map@r", "r_precision"}  # @1 always
    for side in ("candidate", "baseline"):
        assert set(result[side]) == per_query | {"nmi", "num_queries", "num_images",
                                                  "num_classes", "intervals"}
        assert set(result[side]["intervals"]) == per_query  # NMI: point value only
        for m, (low, high) in result[side]["intervals"].items():
            assert 0.0 <= low <= high <= 1.0
    assert set(result["difference"]) == per_query | {"intervals"}
    assert set(result["difference"]["intervals"]) == per_query
    for m in per_query:
        assert result["difference"][m] == pytest.approx(
            result["candidate"][m] - result["baseline"][m], abs=1e-12)
    sig = result["significance"]
    assert (sig["confidence_level"], sig["bootstrap_samples"]) == (0.9, 200)
    assert "point value only" in sig["nmi"] and "[90% CI" in verdict.reason


def test_first_model_and_already_serving_have_candidate_intervals_only():
    x, labels, _ = clustered(4, num_classes=8)
    result, verdict = judge(evaluator(recall_threshold=0.2), labels, x)
    assert verdict.blessed and "first model" in verdict.reason
    assert "baseline" not in result and "difference" not in result
    assert set(result["candidate"]["intervals"]) >= {"recall@1", "map@r"}
    result, verdict = judge(evaluator(), labels, x, candidate_is_baseline=True)
    assert not verdict.blessed and "ALREADY SERVING" in verdict.reason
    result, verdict = judge(evaluator(recall_threshold=1.0), labels, x, x)
    assert not verdict.blessed and "below the threshold" in verdict.reason


def test_judge_is_deterministic():
    x, labels, rng = clustered(5, num_classes=12)
    other = x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)
    assert judge(evaluator(), labels, other, x) == judge(evaluator(), labels, other, x)


def test_query_gallery_roles_reach_both_models_metrics(no_kmeans):
    """In-shop's protocol: half of each class queries, the other half is the gallery."""
    from components.recall_evaluator import metrics
    x, labels, rng = clustered(5)
    roles = np.where(np.arange(labels.size) % 2 == 0, "query", "gallery")
    worse = x + 0.5 * rng.standard_normal(x.shape).astype(np.float32)
    result, _ = judge(evaluator(), labels, worse, x, roles=roles)
    assert result["protocol"] == "query/gallery"
    for side, emb in (("candidate", worse), ("baseline", x)):
        expected = metrics.recall_at_k(emb, labels, ks=(1,), roles=roles)[1]
        assert result[side]["recall@1"] == pytest.approx(expected)
        assert result[side]["num_queries"] == 400 and result[side]["num_gallery"] == 400
    assert judge(evaluator(), labels, x)[0]["protocol"] == "all-vs-all"
