"""The blessing rule, as a pure function, and the evaluation behind it (no TFX imports).

The gate knows noise: with a production model, the candidate is compared on
the same eval queries through the PAIRED bootstrap interval of the difference
ΔRecall@1 = candidate - production (``significance.compare``). The candidate
carries the burden of proof (``evaluator.baseline_rule: non_inferior``, the
default): it is blessed only when the interval's LOWER bound is at or above
``-tolerance``, i.e. the evidence says it is at most the tolerance worse. A
small eval set gives a wide interval, so it cannot prove that and refuses; the
old rule (``not_significantly_worse``: refused only when the UPPER bound is
below ``-tolerance``) blesses whatever the noise hides. Every verdict states
the smallest difference the eval set can detect.

A split that cannot judge (fewer than ``evaluator.min_eval_classes`` classes,
or fewer than ``evaluator.min_queries`` queries with a match in the gallery) is
never blessed: with one class every neighbour is a match.

``bless`` is the rule alone (numbers in, Verdict out). ``judge`` computes what
it needs from embeddings (metrics, per-query vectors, bootstrap intervals) and
the metrics.json fields; the executor only reads, embeds and writes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from components.recall_evaluator import metrics, significance
from core.config import BASELINE_RULES, EvaluatorConfig


@dataclasses.dataclass(frozen=True)
class Verdict:
    blessed: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class BaselineComparison:
    """The production model's Recall@1 and the paired difference candidate - production.

    ``difference`` is the mean over the same queries of the candidate's hit
    minus production's (0.0 for identical models); ``[low, high]`` its
    two-sided interval at ``confidence`` (e.g. 0.95).
    """
    baseline_r1: float
    difference: float
    low: float
    high: float
    confidence: float

    def __post_init__(self):
        values = (self.baseline_r1, self.difference, self.low, self.high)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"BaselineComparison values must be finite, got {values}")
        if not self.low <= self.high:
            raise ValueError(f"interval low {self.low} is above high {self.high}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")


def _percent(confidence: float) -> str:
    return f"{round(confidence * 100, 2):g}%"


NON_INFERIOR, NOT_SIGNIFICANTLY_WORSE = BASELINE_RULES


def split_size(labels, roles=None) -> tuple[int, int]:
    """(classes, matchable queries) of an eval split, from its labels alone.

    A query is matchable when the gallery holds another image of its class: all-vs-all
    (``roles`` None), an image whose class has at least two images; with In-shop's
    roles, a "query" image whose class has a "gallery" image. Classes are those of the
    queries (the gallery's distractor classes are not judged).
    """
    labels = np.asarray(labels)
    if roles is None:
        classes, counts = np.unique(labels, return_counts=True)
        return int(classes.size), int(counts[counts >= 2].sum())
    roles = np.asarray(roles)
    queries = labels[roles == "query"]
    gallery = set(labels[roles == "gallery"].tolist())
    return (int(np.unique(queries).size),
            int(sum(1 for label in queries.tolist() if label in gallery)))


def cannot_judge(num_classes: int, num_queries: int, min_classes: int,
                 min_queries: int) -> Optional[Verdict]:
    """A NOT BLESSED verdict when the eval split is too small to judge, else None."""
    if num_classes < min_classes:
        return Verdict(False, f"NOT BLESSED: the eval split has {num_classes} class(es), "
                              f"fewer than evaluator.min_eval_classes {min_classes}: with so "
                              "few classes Recall@K says nothing (one class: every neighbour "
                              "matches); give the eval split more classes "
                              "(data.eval_classes / data.eval_fraction)")
    if num_queries < min_queries:
        return Verdict(False, f"NOT BLESSED: the eval split has {num_queries} queries with a "
                              f"match in the gallery, fewer than evaluator.min_queries "
                              f"{min_queries}: too few to judge; give the eval split more "
                              "images or classes, or lower evaluator.min_queries")
    return None


def _detectable(detectable: Optional[float]) -> str:
    return ("" if detectable is None else
            f"; the eval set detects differences of about {detectable:.4f} or more")


def bless(candidate_r1: float, threshold: float, *,
          baseline: Optional[BaselineComparison] = None, tolerance: float = 0.0,
          rule: str = NON_INFERIOR, candidate_is_baseline: bool = False,
          detectable: Optional[float] = None) -> Verdict:
    """Decide whether the candidate may be pushed.

    In order:

    1. ``candidate_is_baseline`` (its files are production's, a cached rerun):
       not blessed, "ALREADY SERVING"; the stock Pusher would push a copy.
    2. ``candidate_r1 < threshold``: not blessed, whatever the baseline.
    3. No ``baseline`` (no model in production yet): blessed on the threshold.
    4. ``baseline.high < -tolerance`` (significantly worse than production by
       more than ``tolerance`` at ``baseline.confidence``): not blessed, by either rule.
    5. ``rule`` non_inferior and ``baseline.low < -tolerance``: not blessed; the
       eval set cannot show the candidate is at most ``tolerance`` worse.
    6. Otherwise blessed: by non_inferior, at most the tolerance worse (or
       better); by not_significantly_worse, also a loss the noise hides.

    Args:
      candidate_r1: the candidate's Recall@1 on the eval split.
      threshold: the minimum Recall@1 (``evaluator.recall_threshold``).
      baseline: the comparison with production on the same queries, or None.
      tolerance: ``evaluator.baseline_tolerance`` (>= 0), in Recall@1 units.
      rule: ``evaluator.baseline_rule``: "non_inferior" or "not_significantly_worse".
      candidate_is_baseline: the candidate's SavedModel equals production's.
      detectable: the smallest difference of Recall@1 the eval set can detect (stated).
    """
    if rule not in BASELINE_RULES:
        raise ValueError(f"rule must be one of {BASELINE_RULES}, got {rule!r}")
    if candidate_is_baseline:
        return Verdict(False, f"ALREADY SERVING: the candidate is the blessed baseline "
                              f"(Recall@1 {candidate_r1:.4f}); not pushed again")
    if candidate_r1 < threshold:
        return Verdict(False, f"NOT BLESSED: Recall@1 {candidate_r1:.4f} is below the "
                              f"threshold {threshold:.4f}{_detectable(detectable)}")
    if baseline is None:
        return Verdict(True, f"BLESSED: Recall@1 {candidate_r1:.4f} meets the threshold "
                             f"{threshold:.4f}; no blessed baseline yet (first model)"
                             f"{_detectable(detectable)}")
    b = baseline
    interval = (f"difference {b.difference:+.4f} [{_percent(b.confidence)} CI "
                f"{b.low:+.4f}, {b.high:+.4f}]")
    if b.high < -tolerance:
        return Verdict(False, f"NOT BLESSED: Recall@1 {candidate_r1:.4f} is significantly "
                              f"below the blessed baseline's {b.baseline_r1:.4f}: {interval}, "
                              f"worse by more than the tolerance {tolerance:.4f}"
                              f"{_detectable(detectable)}")
    if rule == NON_INFERIOR and b.low < -tolerance:
        return Verdict(False, f"NOT BLESSED: Recall@1 {candidate_r1:.4f} vs production "
                              f"{b.baseline_r1:.4f}: {interval}: not shown to be at most the "
                              f"tolerance {tolerance:.4f} below the blessed baseline (the "
                              f"lower bound {b.low:+.4f} is below {-tolerance:+.4f}; rule "
                              f"non_inferior){_detectable(detectable)}")
    if b.low > 0:
        judgement = "significantly better"
    elif rule == NON_INFERIOR:
        judgement = "non-inferior: at most the tolerance worse"
    elif b.high < 0:
        judgement = "worse, but within the tolerance"
    else:
        judgement = "not significantly worse"
    return Verdict(True, f"BLESSED: Recall@1 {candidate_r1:.4f} vs production "
                         f"{b.baseline_r1:.4f}: {interval}, {judgement} "
                         f"(tolerance {tolerance:.4f}, rule {rule}){_detectable(detectable)}")


NMI_INTERVAL_NOTE = ("point value only: NMI scores a whole k-means clustering, not a mean over "
                     "queries; an honest bootstrap would re-run k-means per replicate")


def _with_intervals(values: dict, intervals: dict) -> dict:
    return dict(values, intervals={m: i.as_list() for m, i in intervals.items()})


def judge(ev: EvaluatorConfig, labels, candidate_embeddings, production_embeddings=None, *,
          candidate_is_baseline: bool = False, roles=None) -> tuple[dict, Verdict]:
    """Metrics with bootstrap intervals, the paired difference, and the verdict.

    Args:
      ev: the evaluator config (recall_ks, block_size, recall_threshold, baseline_rule,
        baseline_tolerance, confidence_level, bootstrap_samples, min_eval_classes,
        min_queries).
      labels: [N] class labels of the eval images.
      candidate_embeddings: [N, D] the candidate's embeddings of those images.
      production_embeddings: [N, D'] production's embeddings of the SAME images
        in the same order, or None (no model in production, or the candidate
        is production: ``candidate_is_baseline``).
      roles: [N] "query" / "gallery" / "" per image (In-shop's protocol: queries
        searched against the gallery only), or None: every image queries all others.

    One kNN pass per model gives the means and the per-query vectors; one set
    of bootstrap replicates over the eval queries gives every interval and the
    paired difference candidate - production. Recall@1 is always computed (it
    decides). Returns (the metrics.json fields "protocol" (all-vs-all or query/gallery),
    "candidate", "baseline" and
    "difference" (with a baseline only), "significance" (with the detectable difference),
    "eval_split" (classes, matchable queries, the minimums) and "can_judge"; the Verdict).
    A split below ``evaluator.min_eval_classes`` / ``evaluator.min_queries`` gets
    "can_judge" False and a NOT BLESSED verdict naming the key (and no metrics when no
    query has a match).
    """
    num_classes, num_queries = split_size(labels, roles)
    split = {"num_classes": num_classes, "num_matchable_queries": num_queries,
             "min_eval_classes": ev.min_eval_classes, "min_queries": ev.min_queries}
    refused = cannot_judge(num_classes, num_queries, ev.min_eval_classes, ev.min_queries)
    if refused is not None and num_queries == 0:
        # No metric: with no matchable query they are undefined.
        return {"eval_split": split, "can_judge": False}, refused
    ks = tuple(sorted(set(ev.recall_ks) | {1}))
    candidate = metrics.per_query_metrics(candidate_embeddings, labels, ks=ks,
                                          block_size=ev.block_size, roles=roles)
    result = {"candidate": candidate.summary(metrics.nmi(candidate_embeddings, labels))}
    protocol = "all-vs-all" if candidate.num_gallery is None else "query/gallery"
    base = None
    if production_embeddings is not None:
        base = metrics.per_query_metrics(production_embeddings, labels, ks=ks,
                                         block_size=ev.block_size, roles=roles)
        result["baseline"] = base.summary(metrics.nmi(production_embeddings, labels))
    cmp = significance.compare(candidate.values, base.values if base else None,
                               confidence=ev.confidence_level, samples=ev.bootstrap_samples)
    result["candidate"] = _with_intervals(result["candidate"], cmp.candidate)
    result["protocol"] = protocol
    comparison = None
    if base is not None:
        result["baseline"] = _with_intervals(result["baseline"], cmp.baseline)
        result["difference"] = _with_intervals(
            {m: i.estimate for m, i in cmp.difference.items()}, cmp.difference)
        d = cmp.difference["recall@1"]
        comparison = BaselineComparison(result["baseline"]["recall@1"], d.estimate, d.low,
                                        d.high, cmp.confidence)
    detectable, basis = detectable_difference(cmp, candidate.values["recall@1"].size)
    result["significance"] = {
        "method": "percentile bootstrap over the eval queries; differences paired "
                  "(candidate - baseline, the same resampled queries for both)",
        "confidence_level": cmp.confidence, "bootstrap_samples": cmp.samples,
        "seed": cmp.seed, "nmi": NMI_INTERVAL_NOTE,
        "baseline_rule": ev.baseline_rule, "baseline_tolerance": ev.baseline_tolerance,
        "detectable_difference": detectable, "detectable_difference_basis": basis}
    result["eval_split"], result["can_judge"] = split, refused is None
    # The metrics of a split too small to judge are reported, but they decide nothing.
    verdict = refused or bless(
        result["candidate"]["recall@1"], ev.recall_threshold, baseline=comparison,
        tolerance=ev.baseline_tolerance, rule=ev.baseline_rule,
        candidate_is_baseline=candidate_is_baseline, detectable=detectable)
    return result, verdict


def detectable_difference(cmp: significance.Comparison, num_queries: int) -> tuple[float, str]:
    """The smallest ΔRecall@1 the eval set can tell from noise at the configured confidence.

    With a baseline: the half-width of the paired interval (a difference smaller than it
    has an interval that contains 0). When every paired difference is 0 (the same
    rankings) that width is 0 and says nothing about the set, so, as without a
    baseline, the half-width of the candidate's own Recall@1 interval stands in: an
    upper bound, since pairing only narrows the interval. Never less than one query's
    hit (1 / queries): an interval of width 0 (every query hit by both) resolves nothing
    finer.
    """
    one_query = 1.0 / num_queries
    if cmp.difference is not None and cmp.difference["recall@1"].width > 0:
        return (max(cmp.difference["recall@1"].width / 2.0, one_query),
                "half-width of the paired interval (at least one query)")
    return (max(cmp.candidate["recall@1"].width / 2.0, one_query),
            "half-width of the candidate's Recall@1 interval, an upper bound (at least one "
            "query)")
