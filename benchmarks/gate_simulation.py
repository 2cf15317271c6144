"""The gate's error rates: how often the baseline rule refuses an equally good candidate,
and how often it blesses a worse one, at 60, 600 and 8,000 eval queries.

Pure NumPy, through the project's own functions: ``significance.bootstrap_means`` and
``percentile_interval`` (the paired bootstrap the RecallEvaluator runs) and
``verdict.bless`` (the rule). Nothing is trained; the per-query hits are simulated.

The model of two models' hits on the same eval queries:

* each query has its own hit probability ``p_i ~ Beta(1.5, 0.5)`` (mean 0.75, like the
  demo's Recall@1; most queries easy, some hard for every model);
* production hits ``h_i ~ Bernoulli(p_i)``;
* an equally good candidate shares production's outcome on a query with probability
  ``share`` and otherwise draws its own ``Bernoulli(p_i)``: the same Recall@1 in
  expectation, correlated as two trainings of one recipe are. The share of queries on
  which the two differ is ``(1 - share) * E[2 p (1 - p)] = (1 - share) / 4``;
* a candidate ``delta`` worse is the equally good one with each of its hits turned into a
  miss with probability ``delta / 0.75`` (``delta`` lower in expectation).

Two sharings: 0.6 (10 % of the queries differ) and 0.2 (20 % differ: the demo's retrained
candidate, whose 95 % interval on 60 queries was 0.233 wide, implies about 22 %).

    python benchmarks/gate_simulation.py [--quick] [--trials N] [--samples B]

``--quick`` (100 trials, 500 replicates) runs in about a minute on 2 cores; the default
(1,000 trials, 1,000 replicates) in about 15.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from components.recall_evaluator import significance  # noqa: E402
from components.recall_evaluator.verdict import (  # noqa: E402
    NON_INFERIOR, NOT_SIGNIFICANTLY_WORSE, BaselineComparison, bless)

QUERIES = (60, 600, 8000)
SHARES = (0.6, 0.2)
WORSE_BY = 0.05
MEAN_P = 0.75
# (rule, tolerance, confidence): the old default first, then non-inferiority choices.
CHOICES = (
    (NOT_SIGNIFICANTLY_WORSE, 0.0, 0.95),
    (NON_INFERIOR, 0.01, 0.95),
    (NON_INFERIOR, 0.02, 0.90),
    (NON_INFERIOR, 0.02, 0.95),
    (NON_INFERIOR, 0.03, 0.95),
    (NON_INFERIOR, 0.05, 0.95),
)


def paired_hits(rng, n: int, share: float, worse_by: float):
    """(candidate, production) 0/1 hits on the same n queries."""
    p = rng.beta(1.5, 0.5, size=n)
    production = rng.random(n) < p
    own = rng.random(n) < p
    candidate = np.where(rng.random(n) < share, production, own)
    if worse_by:
        candidate &= rng.random(n) >= worse_by / MEAN_P
    return candidate.astype(np.float64), production.astype(np.float64)


def verdicts(candidate, production, samples: int, seed: int):
    """{choice: blessed} for one simulated eval set, one set of paired replicates."""
    diff = candidate - production
    replicates = significance.bootstrap_means(diff, samples, seed)
    out = {}
    for rule, tolerance, confidence in CHOICES:
        interval = significance.percentile_interval(replicates, diff.mean(), confidence)
        comparison = BaselineComparison(production.mean(), interval.estimate, interval.low,
                                        interval.high, confidence)
        out[(rule, tolerance, confidence)] = bless(
            candidate.mean(), 0.0, baseline=comparison, tolerance=tolerance, rule=rule).blessed
    return out


def simulate(trials: int, samples: int, seed: int = 0) -> dict:
    """{(share, n, scenario, choice): rate}; scenario "equal" -> refused, "worse" -> blessed."""
    rng = np.random.default_rng(seed)
    rates = {}
    for share, n in itertools.product(SHARES, QUERIES):
        for scenario, worse_by in (("equal", 0.0), ("worse", WORSE_BY)):
            counts = dict.fromkeys(CHOICES, 0)
            for t in range(trials):
                blessed = verdicts(*paired_hits(rng, n, share, worse_by), samples, seed=t)
                for choice, b in blessed.items():
                    counts[choice] += (not b) if scenario == "equal" else b
            for choice, c in counts.items():
                rates[(share, n, scenario, choice)] = c / trials
    return rates


def table(rates: dict) -> str:
    head = "| rule | tolerance | confidence | " + " | ".join(
        f"{what} n={n:,} (share {share})" for share in SHARES
        for what in ("equal refused", "5 pts worse blessed") for n in QUERIES) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(SHARES) * len(QUERIES))]
    for choice in CHOICES:
        rule, tolerance, confidence = choice
        cells = [f"{rates[(share, n, scenario, choice)]:.1%}" for share in SHARES
                 for scenario in ("equal", "worse") for n in QUERIES]
        lines.append(f"| {rule} | {tolerance:.2f} | {confidence:.2f} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 trials, 500 replicates")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap replicates")
    args = parser.parse_args(argv)
    trials, samples = (100, 500) if args.quick else (args.trials, args.samples)
    start = time.perf_counter()
    rates = simulate(trials, samples)
    elapsed = time.perf_counter() - start
    print(f"# {trials} simulated eval sets per cell, {samples} bootstrap replicates each; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{elapsed:.0f} s")
    print(table(rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
