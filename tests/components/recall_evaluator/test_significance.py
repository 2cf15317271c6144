"""Bootstrap intervals over queries and the paired difference, where the answer is known."""

import numpy as np
import pytest

from components.recall_evaluator import significance as S


def bernoulli(rng, p, n):
    return (rng.random(n) < p).astype(np.float64)


def correlated_pair(rng, n, p=0.8, flip=0.05):
    """Two models' per-query hits that agree on all but ~flip of the queries."""
    a = bernoulli(rng, p, n)
    b = a.copy()
    swap = rng.random(n) < flip
    b[swap] = 1.0 - b[swap]
    return a, b


# --------------------------------------------------------------------------
# Coverage and width: the intervals mean what they say
# --------------------------------------------------------------------------

def test_interval_of_a_bernoulli_mean_covers_the_truth_at_the_nominal_rate():
    p, n, trials = 0.3, 400, 300
    rng = np.random.default_rng(123)
    covered = sum(S.bootstrap_interval(bernoulli(rng, p, n), 0.95, samples=500,
                                       seed=t).contains(p) for t in range(trials))
    # Nominal 95 %; the binomial spread of 300 trials is about +-1.3 %.
    assert 0.91 <= covered / trials <= 0.985, covered


def test_paired_interval_covers_the_true_difference_at_the_nominal_rate():
    # Candidate hit prob 0.75, production 0.80, strongly correlated queries.
    n, trials, covered = 500, 300, 0
    rng = np.random.default_rng(7)
    for t in range(trials):
        u = rng.random(n)
        production = (u < 0.80).astype(float)
        candidate = (u < 0.75).astype(float)
        noise = rng.random(n) < 0.1  # a few queries decided independently
        candidate[noise] = (rng.random(noise.sum()) < 0.75)
        production[noise] = (rng.random(noise.sum()) < 0.80)
        covered += S.paired_difference(candidate, production, 0.95, samples=500,
                                       seed=t).contains(-0.05)
    assert 0.91 <= covered / trials <= 0.985, covered


def test_width_matches_the_binomial_noise_of_8000_queries():
    hits = bernoulli(np.random.default_rng(0), 0.8, 8000)
    interval = S.bootstrap_interval(hits, 0.95, samples=2000)
    half = S.normal_interval_halfwidth(interval.estimate, 8000, 0.95)  # ~0.0088
    assert interval.width / 2 == pytest.approx(half, rel=0.12)
    assert interval.contains(interval.estimate)
    assert S.bootstrap_interval(hits, 0.80, samples=2000).width < interval.width


def test_paired_interval_is_narrower_than_the_unpaired_one_for_correlated_models():
    a, b = correlated_pair(np.random.default_rng(3), 8000)
    paired = S.paired_difference(a, b, 0.95, samples=1000, seed=0)
    # Unpaired: each model's queries resampled independently.
    unpaired_reps = S.bootstrap_means(a, 1000, seed=1) - S.bootstrap_means(b, 1000, seed=2)
    unpaired = S.percentile_interval(unpaired_reps, a.mean() - b.mean(), 0.95)
    assert paired.estimate == pytest.approx(unpaired.estimate)
    assert paired.width < 0.5 * unpaired.width


# --------------------------------------------------------------------------
# The paired difference
# --------------------------------------------------------------------------

def test_identical_models_differ_by_exactly_zero_in_every_replicate():
    a = np.random.default_rng(1).random(3000)
    d = S.paired_difference(a, a.copy())
    assert (d.estimate, d.low, d.high) == (0.0, 0.0, 0.0)
    c = S.compare({"recall@1": a, "map@r": a}, {"recall@1": a.copy(), "map@r": a.copy()})
    assert all((i.estimate, i.low, i.high) == (0.0, 0.0, 0.0) for i in c.difference.values())


def test_clearly_worse_marginal_and_better_differences():
    rng = np.random.default_rng(5)
    production = bernoulli(rng, 0.8, 8000)
    worse = production.copy()
    worse[rng.choice(np.flatnonzero(production == 1), 400, replace=False)] = 0.0  # -0.05
    d = S.paired_difference(worse, production)
    assert d.estimate == pytest.approx(-0.05) and d.high < 0
    # Marginal: 20 queries gained, 30 lost (-0.00125): inside the noise.
    marginal = production.copy()
    marginal[rng.choice(np.flatnonzero(production == 0), 20, replace=False)] = 1.0
    marginal[rng.choice(np.flatnonzero(production == 1), 30, replace=False)] = 0.0
    d = S.paired_difference(marginal, production)
    assert d.estimate == pytest.approx(-10 / 8000) and d.contains(0.0)
    d = S.paired_difference(production, worse)
    assert d.low > 0


def test_a_small_eval_set_cannot_tell_a_few_queries_apart():
    # 48 queries, candidate misses 3 more than production (0.1250 vs 0.1875):
    # a difference of -0.0625 that 48 queries cannot distinguish from noise.
    production = np.zeros(48)
    production[:9] = 1.0
    candidate = production.copy()
    candidate[:3] = 0.0
    d = S.paired_difference(candidate, production)
    assert d.estimate == pytest.approx(-0.0625) and d.high >= 0.0


def test_compare_shares_one_set_of_replicates():
    rng = np.random.default_rng(11)
    a, b = correlated_pair(rng, 2000)
    ap_a, ap_b = rng.random(2000), rng.random(2000)
    c = S.compare({"recall@1": a, "map@r": ap_a}, {"recall@1": b, "map@r": ap_b, "extra": ap_b},
                  confidence=0.9, samples=300, seed=4)
    # Same replicates as each metric alone (up to the rounding of one wider matrix product).
    for got, alone in ((c.candidate["recall@1"], S.bootstrap_interval(a, 0.9, 300, seed=4)),
                       (c.baseline["map@r"], S.bootstrap_interval(ap_b, 0.9, 300, seed=4)),
                       (c.difference["recall@1"], S.paired_difference(a, b, 0.9, 300, seed=4))):
        assert got.estimate == pytest.approx(alone.estimate, abs=1e-12)
        assert [got.low, got.high] == pytest.approx([alone.low, alone.high], abs=1e-12)
    assert set(c.difference) == {"recall@1", "map@r"}  # only metrics both have
    assert set(c.baseline) == {"recall@1", "map@r", "extra"}
    assert (c.confidence, c.samples, c.seed) == (0.9, 300, 4)
    alone = S.compare({"recall@1": a})
    assert alone.baseline is None and alone.difference is None


def test_replicates_equal_a_plain_loop_over_the_resampled_indices():
    values = np.random.default_rng(2).random((257, 3))
    reps = S.bootstrap_means(values, samples=50, seed=9)
    idx = np.concatenate(list(S.resampled_indices(257, 50, seed=9)))
    assert idx.shape == (50, 257)
    expected = np.stack([values[i].mean(axis=0) for i in idx])
    np.testing.assert_allclose(reps, expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------
# Determinism, speed, validation
# --------------------------------------------------------------------------

def test_deterministic_given_the_seed():
    a, b = correlated_pair(np.random.default_rng(0), 5000)
    assert S.paired_difference(a, b, seed=3) == S.paired_difference(a, b, seed=3)
    np.testing.assert_array_equal(S.bootstrap_means(a, 200, seed=3),
                                  S.bootstrap_means(a, 200, seed=3))
    assert S.bootstrap_interval(a, seed=3) != S.bootstrap_interval(a, seed=4)
    c1 = S.compare({"recall@1": a}, {"recall@1": b}, seed=8)
    c2 = S.compare({"recall@1": a}, {"recall@1": b}, seed=8)
    assert c1 == c2


@pytest.mark.parametrize("call, message", [
    (lambda: S.bootstrap_interval([], 0.95), "non-empty"),
    (lambda: S.bootstrap_interval([0.1, np.nan]), "NaN"),
    (lambda: S.bootstrap_interval([0.1, 0.2], confidence=1.0), "confidence"),
    (lambda: S.bootstrap_interval([0.1, 0.2], samples=0), "samples"),
    (lambda: S.paired_difference([1.0, 0.0], [1.0]), "same queries"),
    (lambda: S.compare({"recall@1": np.ones(3)}, {"recall@1": np.ones(4)}), "same queries"),
])
def test_invalid_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_module_is_pure_numpy():
    import ast
    from pathlib import Path
    tree = ast.parse(Path(S.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "dataclasses", "math", "typing", "numpy", "statistics"}
