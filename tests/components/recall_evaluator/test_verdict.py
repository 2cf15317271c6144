"""The blessing rule (threshold, first model, cached rerun, the paired interval against
production: non-inferiority by default, the old "not significantly worse" as an option),
the eval split that can judge, and ``judge`` on synthetic embeddings where the answer is
known."""
import dataclasses
import json

import numpy as np
import pytest

from components.recall_evaluator import significance
from components.recall_evaluator.verdict import (BaselineComparison, bless, cannot_judge, judge,
                                                 split_size)
from core.config import load_config


def production(baseline_r1, difference, low, high, confidence=0.95):
    return BaselineComparison(baseline_r1, difference, low, high, confidence)


# --------------------------------------------------------------------------
# bless: the rule alone
# --------------------------------------------------------------------------

NI, NSW = "non_inferior", "not_significantly_worse"


@pytest.mark.parametrize("r1, threshold, baseline, tol, rule, blessed, words", [
    (0.50, 0.40, None, 0.0, NI, True, "first model"),
    (0.30, 0.40, None, 0.0, NI, False, "below the threshold"),
    # Non-inferiority (the default): the LOWER bound must be at or above -tolerance.
    # Inside the noise, a little below production: not shown to be within the tolerance.
    (0.50, 0.40, production(0.51, -0.01, -0.03, 0.01), 0.02, NI, False,
     "not shown to be at most the tolerance 0.0200 below the blessed baseline"),
    (0.50, 0.40, production(0.51, -0.01, -0.03, 0.01), 0.03, NI, True, "non-inferior"),
    (0.50, 0.40, production(0.51, -0.01, -0.02, 0.01), 0.02, NI, True, "non-inferior"),  # edge
    (0.50, 0.40, production(0.50, 0.0, 0.0, 0.0), 0.0, NI, True, "non-inferior"),
    (0.55, 0.40, production(0.50, 0.05, 0.03, 0.07), 0.0, NI, True, "significantly better"),
    # Significantly worse: refused by both rules, with the phrase the end-to-end tests
    # look for.
    (0.45, 0.40, production(0.50, -0.05, -0.07, -0.03), 0.0, NI, False,
     "below the blessed baseline"),
    (0.45, 0.40, production(0.50, -0.05, -0.07, -0.03), 0.0, NSW, False,
     "significantly below the blessed baseline"),
    # The old rule: inside the noise is blessed, even a little below production.
    (0.50, 0.40, production(0.51, -0.01, -0.03, 0.01), 0.0, NSW, True,
     "not significantly worse"),
    (0.48, 0.40, production(0.50, -0.02, -0.03, -0.01), 0.03, NSW, True, "within the tolerance"),
    (0.48, 0.40, production(0.50, -0.02, -0.03, -0.03), 0.03, NSW, True, "tolerance 0.0300"),
    (0.45, 0.40, production(0.50, -0.05, -0.07, -0.04), 0.03, NSW, False,
     "worse by more than the tolerance 0.0300"),
    # The threshold comes first, whatever production scores.
    (0.35, 0.40, production(0.10, 0.25, 0.2, 0.3), 0.0, NI, False, "below the threshold"),
])
def test_bless(r1, threshold, baseline, tol, rule, blessed, words):
    verdict = bless(r1, threshold, baseline=baseline, tolerance=tol, rule=rule)
    assert verdict.blessed is blessed
    assert words in verdict.reason
    assert ("NOT BLESSED" in verdict.reason) is (not blessed)


def test_the_default_rule_is_non_inferiority_and_refuses_what_the_noise_hides():
    """The same interval: blessed by the old rule, refused by the default one."""
    hidden = production(0.7333, -0.0833, -0.2000, 0.0333)  # the 60-query candidate
    ev = load_config(None).evaluator
    assert ev.baseline_rule == "non_inferior"
    assert not bless(0.65, 0.0, baseline=hidden, tolerance=ev.baseline_tolerance).blessed
    assert bless(0.65, 0.0, baseline=hidden, tolerance=ev.baseline_tolerance,
                 rule=NSW).blessed
    with pytest.raises(ValueError, match="rule"):
        bless(0.65, 0.0, baseline=hidden, rule="majority")


def test_a_candidate_8_points_worse_on_60_queries_is_not_pushed_by_default():
    """Per-query hits built by hand: production hits 44 of 60 queries (0.7333), the
    candidate 39 (0.6500), sharing 36 of production's hits, i.e. a paired difference of
    -5/60 = -0.0833 whose interval reaches well above 0."""
    production_hits = np.zeros(60)
    production_hits[:44] = 1
    candidate_hits = np.zeros(60)
    candidate_hits[:36] = 1        # 36 of production's 44 hits kept, 8 lost
    candidate_hits[44:47] = 1      # 3 queries production misses, found
    assert candidate_hits.mean() == pytest.approx(0.65)
    ev = load_config(None).evaluator
    d = significance.paired_difference(candidate_hits, production_hits, ev.confidence_level,
                                       ev.bootstrap_samples)
    assert d.estimate == pytest.approx(-8 / 60 + 3 / 60) and d.high > 0  # inside the noise
    comparison = production(production_hits.mean(), d.estimate, d.low, d.high,
                            ev.confidence_level)
    verdict = bless(candidate_hits.mean(), ev.recall_threshold, baseline=comparison,
                    tolerance=ev.baseline_tolerance, rule=ev.baseline_rule,
                    detectable=d.width / 2)
    assert not verdict.blessed, verdict.reason
    assert "not shown to be at most the tolerance" in verdict.reason
    assert f"detects differences of about {d.width / 2:.4f}" in verdict.reason


def test_verdict_texts_state_the_difference_and_its_interval():
    blessed = bless(0.8123, 0.0, baseline=production(0.8150, -0.0027, -0.0081, 0.0026),
                    tolerance=0.02, detectable=0.0054)
    assert blessed.reason == (
        "BLESSED: Recall@1 0.8123 vs production 0.8150: difference -0.0027 "
        "[95% CI -0.0081, +0.0026], non-inferior: at most the tolerance worse (tolerance "
        "0.0200, rule non_inferior); the eval set detects differences of about 0.0054 or more")
    refused = bless(0.7800, 0.0, baseline=production(0.8150, -0.0350, -0.0480, -0.0220, 0.9))
    assert refused.reason == (
        "NOT BLESSED: Recall@1 0.7800 is significantly below the blessed baseline's 0.8150: "
        "difference -0.0350 [90% CI -0.0480, -0.0220], worse by more than the tolerance 0.0000")
    unproven = bless(0.80, 0.0, baseline=production(0.81, -0.01, -0.06, 0.04), tolerance=0.02)
    assert unproven.reason == (
        "NOT BLESSED: Recall@1 0.8000 vs production 0.8100: difference -0.0100 [95% CI "
        "-0.0600, +0.0400]: not shown to be at most the tolerance 0.0200 below the blessed "
        "baseline (the lower bound -0.0600 is below -0.0200; rule non_inferior)")
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
    assert verdict.blessed and "non-inferior" in verdict.reason
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
    # Non-inferior: the lower bound is within the default tolerance on 800 queries.
    assert low >= -evaluator().baseline_tolerance
    assert verdict.blessed and "non-inferior" in verdict.reason
    # The old rule blesses it too, for another reason.
    old = judge(evaluator(baseline_rule="not_significantly_worse"), labels, marginal, x)[1]
    assert old.blessed and "not significantly worse" in old.reason
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


# --------------------------------------------------------------------------
# An eval split that can judge
# --------------------------------------------------------------------------

def test_split_size_counts_classes_and_queries_with_a_match():
    assert split_size([0, 0, 1, 1, 1, 2]) == (3, 5)  # class 2's single image matches nothing
    labels = np.array([0, 0, 1, 1, 2, 3])
    roles = np.array(["query", "gallery", "query", "query", "query", "gallery"])
    # Queries of classes 0, 1, 1, 2; only class 0 has a gallery image; class 3 is no query.
    assert split_size(labels, roles) == (3, 1)


def test_one_eval_class_is_never_blessed_whatever_the_recall(no_kmeans):
    """The issue's case: 1 eval class, every neighbour a match, Recall@1 1.0."""
    x, labels, _ = clustered(6, num_classes=1, per_class=179)
    result, verdict = judge(evaluator(), labels, x)
    assert result["candidate"]["recall@1"] == 1.0  # what used to be blessed
    assert not verdict.blessed and not result["can_judge"]
    assert verdict.reason.startswith("NOT BLESSED: the eval split has 1 class(es)")
    assert "evaluator.min_eval_classes 2" in verdict.reason
    assert result["eval_split"] == {"num_classes": 1, "num_matchable_queries": 179,
                                    "min_eval_classes": 2, "min_queries": 20}
    # With a production model too: the split, not the comparison, decides.
    assert not judge(evaluator(), labels, x, x.copy())[1].blessed


def test_too_few_matchable_queries_are_never_blessed(no_kmeans):
    x, labels, _ = clustered(7, num_classes=4, per_class=4)  # 16 queries
    result, verdict = judge(evaluator(), labels, x)
    assert not verdict.blessed and "16 queries with a match" in verdict.reason
    assert "fewer than evaluator.min_queries 20" in verdict.reason
    assert judge(evaluator(min_queries=16), labels, x)[1].blessed
    # In-shop: only the queries that have a gallery image count.
    roles = np.where(np.arange(labels.size) % 4 == 0, "gallery", "query")
    assert split_size(labels, roles) == (4, 12)
    assert "12 queries" in judge(evaluator(min_queries=16), labels, x, roles=roles)[1].reason


def test_cannot_judge_names_the_count_the_minimum_and_the_key():
    assert cannot_judge(5, 100, 2, 20) is None
    assert "3 class(es), fewer than evaluator.min_eval_classes 5" in cannot_judge(
        3, 100, 5, 20).reason
    assert "19 queries with a match" in cannot_judge(5, 19, 2, 20).reason


def test_the_verdict_and_metrics_json_state_the_smallest_detectable_difference(no_kmeans):
    x, labels, rng = clustered(8)
    other = x + 0.2 * rng.standard_normal(x.shape).astype(np.float32) / 4
    result, verdict = judge(evaluator(), labels, other, x)
    low, high = result["difference"]["intervals"]["recall@1"]
    sig = result["significance"]
    assert high > low and sig["detectable_difference"] == pytest.approx((high - low) / 2)
    assert sig["detectable_difference_basis"].startswith("half-width of the paired interval")
    assert f"detects differences of about {(high - low) / 2:.4f}" in verdict.reason
    # The first model: its own interval's half-width.
    first, verdict = judge(evaluator(), labels, x)
    low, high = first["candidate"]["intervals"]["recall@1"]
    assert first["significance"]["detectable_difference"] == pytest.approx((high - low) / 2)
    assert "detects differences of about" in verdict.reason
    # Identical rankings: every paired difference is 0, so the candidate's own stands in.
    same, _ = judge(evaluator(), labels, x, x.copy())
    assert same["significance"]["detectable_difference"] == pytest.approx((high - low) / 2)
    # Every query a hit: a zero-width interval, but no set resolves less than one query.
    perfect, _ = judge(evaluator(), np.repeat([0, 1], 20), np.repeat(np.eye(2), 20, axis=0))
    assert perfect["candidate"]["intervals"]["recall@1"] == [1.0, 1.0]
    assert perfect["significance"]["detectable_difference"] == pytest.approx(1 / 40)
