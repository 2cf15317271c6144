"""The blessing rule, as a pure function, and the evaluation behind it (no TFX imports).

The gate knows noise: with a production model, the candidate is compared on
the same eval queries through the PAIRED bootstrap interval of the difference
ΔRecall@1 = candidate - production (``significance.compare``). It is refused
only when it is significantly worse by more than the tolerance, i.e. when the
upper bound of the two-sided interval is below ``-tolerance``. A difference
inside the noise is blessed.

``bless`` is the rule alone (numbers in, Verdict out). ``judge`` computes what
it needs from embeddings (metrics, per-query vectors, bootstrap intervals) and
the metrics.json fields; the executor only reads, embeds and writes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from components.recall_evaluator import metrics, significance
from core.config import EvaluatorConfig


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


def bless(candidate_r1: float, threshold: float, *,
          baseline: Optional[BaselineComparison] = None, tolerance: float = 0.0,
          candidate_is_baseline: bool = False) -> Verdict:
    """Decide whether the candidate may be pushed.

    In order:

    1. ``candidate_is_baseline`` (its files are production's, a cached rerun):
       not blessed, "ALREADY SERVING"; the stock Pusher would push a copy.
    2. ``candidate_r1 < threshold``: not blessed, whatever the baseline.
    3. No ``baseline`` (no model in production yet): blessed on the threshold.
    4. ``baseline.high < -tolerance`` (significantly worse than production by
       more than ``tolerance`` at ``baseline.confidence``): not blessed.
    5. Otherwise blessed: better, or a difference the eval set cannot tell
       from noise, or worse by no more than the tolerance.

    Args:
      candidate_r1: the candidate's Recall@1 on the eval split.
      threshold: the minimum Recall@1 (``evaluator.recall_threshold``).
      baseline: the comparison with production on the same queries, or None.
      tolerance: ``evaluator.baseline_tolerance`` (>= 0), in Recall@1 units.
      candidate_is_baseline: the candidate's SavedModel equals production's.
    """
    if candidate_is_baseline:
        return Verdict(False, f"ALREADY SERVING: the candidate is the blessed baseline "
                              f"(Recall@1 {candidate_r1:.4f}); not pushed again")
    if candidate_r1 < threshold:
        return Verdict(False, f"NOT BLESSED: Recall@1 {candidate_r1:.4f} is below the "
                              f"threshold {threshold:.4f}")
    if baseline is None:
        return Verdict(True, f"BLESSED: Recall@1 {candidate_r1:.4f} meets the threshold "
                             f"{threshold:.4f}; no blessed baseline yet (first model)")
    b = baseline
    interval = (f"difference {b.difference:+.4f} [{_percent(b.confidence)} CI "
                f"{b.low:+.4f}, {b.high:+.4f}]")
    if b.high < -tolerance:
        return Verdict(False, f"NOT BLESSED: Recall@1 {candidate_r1:.4f} is significantly "
                              f"below the blessed baseline's {b.baseline_r1:.4f}: {interval}, "
                              f"worse by more than the tolerance {tolerance:.4f}")
    if b.low > 0:
        judgement = "significantly better"
    elif b.high < 0:
        judgement = "worse, but within the tolerance"
    else:
        judgement = "not significantly worse"
    return Verdict(True, f"BLESSED: Recall@1 {candidate_r1:.4f} vs production "
                         f"{b.baseline_r1:.4f}: {interval}, {judgement} "
                         f"(tolerance {tolerance:.4f})")


NMI_INTERVAL_NOTE = ("point value only: NMI scores a whole k-means clustering, not a mean over "
                     "queries; an honest bootstrap would re-run k-means per replicate")


def _with_intervals(values: dict, intervals: dict) -> dict:
    return dict(values, intervals={m: i.as_list() for m, i in intervals.items()})


def judge(ev: EvaluatorConfig, labels, candidate_embeddings, production_embeddings=None, *,
          candidate_is_baseline: bool = False, roles=None) -> tuple[dict, Verdict]:
    """Metrics with bootstrap intervals, the paired difference, and the verdict.

    Args:
      ev: the evaluator config (recall_ks, block_size, recall_threshold,
        baseline_tolerance, confidence_level, bootstrap_samples).
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
    "difference" (with a baseline only), "significance"; the Verdict).
    """
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
    result["significance"] = {
        "method": "percentile bootstrap over the eval queries; differences paired "
                  "(candidate - baseline, the same resampled queries for both)",
        "confidence_level": cmp.confidence, "bootstrap_samples": cmp.samples,
        "seed": cmp.seed, "nmi": NMI_INTERVAL_NOTE}
    verdict = bless(result["candidate"]["recall@1"], ev.recall_threshold, baseline=comparison,
                    tolerance=ev.baseline_tolerance,
                    candidate_is_baseline=candidate_is_baseline)
    return result, verdict
