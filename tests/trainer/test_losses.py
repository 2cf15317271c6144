"""trainer/losses.py against independent NumPy references (loops, float64).

The references below follow the papers' formulas literally (no masked softmax, no
log-sum-exp tricks, distances from np.linalg.norm) and share no code with the
TensorFlow implementation. Each returns per-anchor values with NaN for anchors that
have no positive or no negative (semi-hard: one value per positive pair, TFA's unit of
averaging); ``_reduce`` takes the mean over the others (0.0 if none), which is the
semantics documented in trainer/losses.py.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from trainer import losses as L

# ------------------------------------------------------------------ NumPy references


def _dist(x):
    b = len(x)
    d = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            d[i, j] = np.linalg.norm(x[i] - x[j])
    return d


def _pos_neg(y, a):
    pos = [j for j in range(len(y)) if j != a and y[j] == y[a]]
    neg = [j for j in range(len(y)) if y[j] != y[a]]
    return pos, neg


def _reduce(per_anchor):
    per_anchor = np.asarray(per_anchor, dtype=np.float64)
    ok = ~np.isnan(per_anchor)
    return float(per_anchor[ok].mean()) if ok.any() else 0.0


def ref_batch_hard(y, x, margin, soft):
    d, out = _dist(x), []
    for a in range(len(y)):
        pos, neg = _pos_neg(y, a)
        if not pos or not neg:
            out.append(np.nan)
            continue
        gap = max(d[a, p] for p in pos) - min(d[a, n] for n in neg)
        out.append(math.log1p(math.exp(gap)) if soft else max(0.0, margin + gap))
    return out


def ref_hap2s(y, x, margin, weighting, sigma, alpha):
    d, out = _dist(x), []
    for a in range(len(y)):
        pos, neg = _pos_neg(y, a)
        if not pos or not neg:
            out.append(np.nan)
            continue
        if weighting == "exp":
            wp = [math.exp(d[a, p] / sigma) for p in pos]
            wn = [math.exp(-d[a, n] / sigma) for n in neg]
        else:
            wp = [(d[a, p] + 1.0) ** alpha for p in pos]
            wn = [(d[a, n] + 1.0) ** (-2.0 * alpha) for n in neg]
        d_p = sum(w * d[a, p] for w, p in zip(wp, pos)) / sum(wp)
        d_n = sum(w * d[a, n] for w, n in zip(wn, neg)) / sum(wn)
        out.append(max(0.0, d_p - d_n + margin))
    return out


def ref_semi_hard(y, x, margin):
    """TFA's triplet_semihard_loss on non-squared distances, one entry per positive pair.

    Unlike the other references this returns one value per ordered positive pair
    (a, p) of a valid anchor (NaN once for an anchor without positive or negative),
    so that ``_reduce``'s mean is TFA's mean over positive pairs.
    """
    d, out = _dist(x), []
    for a in range(len(y)):
        pos, neg = _pos_neg(y, a)
        if not pos or not neg:
            out.append(np.nan)
            continue
        for p in pos:
            farther = [d[a, n] for n in neg if d[a, n] > d[a, p]]
            d_n = min(farther) if farther else max(d[a, n] for n in neg)
            out.append(max(0.0, d[a, p] - d_n + margin))
    return out


def tfa_semihard_numpy(y, x, margin, distance):
    """tfa.losses.triplet_semihard_loss transliterated to NumPy, vectorized as TFA does
    it (pair rows tiled B times, masked min/max by shifting), with TFA's
    ``distance_metric`` as a function ``distance(x) -> [B, B]``. An independent second
    reading of TFA, next to the loop in ``ref_semi_hard``.
    """
    b = len(y)
    dist = distance(x)
    same = y[:, None] == y[None, :]
    diff = ~same
    rows = np.tile(dist, (b, 1))  # row p * b + a holds dist[a, :]
    mask = np.tile(diff, (b, 1)) & (rows > dist.T.reshape(-1, 1))  # ... and D_an > D_ap
    has_semi = (mask.sum(axis=1) > 0).reshape(b, b).T  # [a, p]
    row_max = rows.max(axis=1, keepdims=True)
    outside = (((rows - row_max) * mask).min(axis=1, keepdims=True) + row_max).reshape(b, b).T
    row_min = dist.min(axis=1, keepdims=True)
    inside = np.tile(((dist - row_min) * diff).max(axis=1, keepdims=True) + row_min, (1, b))
    loss_mat = margin + dist - np.where(has_semi, outside, inside)
    positives = same.astype(np.float64) - np.eye(b)
    return float(np.maximum(loss_mat * positives, 0.0).sum() / positives.sum())


def ref_lifted(y, x, margin):
    d, out = _dist(x), []
    for a in range(len(y)):
        pos, neg = _pos_neg(y, a)
        if not pos or not neg:
            out.append(np.nan)
            continue
        terms = []
        for p in pos:
            _, neg_p = _pos_neg(y, p)
            s = sum(math.exp(margin - d[a, k]) for k in neg)
            s += sum(math.exp(margin - d[p, k]) for k in neg_p)
            j = d[a, p] + math.log(s)
            terms.append(0.5 * max(0.0, j) ** 2)
        out.append(np.mean(terms))
    return out


def ref_npairs(y, x, l2_reg, temperature):
    out = []
    for a in range(len(y)):
        pos, neg = _pos_neg(y, a)
        if not pos or not neg:
            out.append(np.nan)
            continue
        others = [j for j in range(len(y)) if j != a]
        z = sum(math.exp(x[a] @ x[j] / temperature) for j in others)
        ce = -np.mean([math.log(math.exp(x[a] @ x[p] / temperature) / z) for p in pos])
        out.append(ce + 0.5 * l2_reg * float(x[a] @ x[a]))
    return out


def ref_angular(y, x, degrees):
    t = math.tan(math.radians(degrees)) ** 2
    out = []
    for a in range(len(y)):
        pos, neg = _pos_neg(y, a)
        if not pos or not neg:
            out.append(np.nan)
            continue
        terms = []
        for p in pos:
            s = sum(math.exp(4 * t * (x[a] + x[p]) @ x[n] - 2 * (1 + t) * x[a] @ x[p])
                    for n in neg)
            terms.append(math.log(1.0 + s))
        out.append(np.mean(terms))
    return out


def ref_contrastive(y, x, margin):
    d, out = _dist(x), []
    for a in range(len(y)):
        pos, neg = _pos_neg(y, a)
        if not pos or not neg:
            out.append(np.nan)
            continue
        out.append(np.mean([d[a, p] ** 2 for p in pos])
                   + np.mean([max(0.0, margin - d[a, n]) ** 2 for n in neg]))
    return out


# name -> (TF loss with non-default hyperparameters, matching reference per anchor)
CASES = {
    "batch_hard": (lambda y, x: L.batch_hard_triplet_loss(y, x, margin=0.3),
                   lambda y, x: ref_batch_hard(y, x, 0.3, False)),
    "batch_hard_soft": (lambda y, x: L.batch_hard_soft_triplet_loss(y, x),
                        lambda y, x: ref_batch_hard(y, x, None, True)),
    "hap2s_exp": (lambda y, x: L.hap2s_loss(y, x, margin=0.2, weighting="exp", sigma=0.4),
                  lambda y, x: ref_hap2s(y, x, 0.2, "exp", 0.4, None)),
    "hap2s_poly": (lambda y, x: L.hap2s_loss(y, x, margin=0.2, weighting="poly", alpha=7.0),
                   lambda y, x: ref_hap2s(y, x, 0.2, "poly", None, 7.0)),
    "semi_hard": (lambda y, x: L.semi_hard_triplet_loss(y, x, margin=0.4),
                  lambda y, x: ref_semi_hard(y, x, 0.4)),
    "lifted": (lambda y, x: L.lifted_structured_loss(y, x, margin=0.8),
               lambda y, x: ref_lifted(y, x, 0.8)),
    "npairs": (lambda y, x: L.npairs_loss(y, x, l2_reg=0.01, temperature=0.2),
               lambda y, x: ref_npairs(y, x, 0.01, 0.2)),
    "angular": (lambda y, x: L.angular_loss(y, x, degrees=40.0),
                lambda y, x: ref_angular(y, x, 40.0)),
    "contrastive": (lambda y, x: L.contrastive_loss(y, x, margin=0.7),
                    lambda y, x: ref_contrastive(y, x, 0.7)),
}
NAMES = sorted(CASES)


# ------------------------------------------------------------------------- batches


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_batch(kind, seed, p=4, k=4, dim=8):
    """(labels int64 [B], embeddings float32 [B, dim]) of a named kind."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(p), k)
    x = _unit(rng.normal(size=(p * k, dim)))
    if kind == "random":
        # Random labels: uneven class sizes, possibly singletons (no positive).
        y = rng.integers(0, 5, size=14)
        x = _unit(rng.normal(size=(14, dim)))
    elif kind == "duplicates":
        # Zero distances: a same-class duplicate (D_ap = 0) and cross-class ones
        # (D_an = 0), exactly equal rows.
        x[1] = x[0]
        x[k] = x[0]
        x[2 * k + 1] = x[3 * k]
    elif kind == "unnormalized":
        x = x * rng.uniform(0.3, 3.0, size=(p * k, 1))
    elif kind != "pk":
        raise ValueError(kind)
    return y.astype(np.int64), x.astype(np.float32)


KINDS = ["pk", "random", "duplicates", "unnormalized"]
SEEDS = [0, 1, 2, 3]


def _value(fn, y, x):
    out = fn(tf.constant(y), tf.constant(x))
    assert out.dtype == tf.float32 and out.shape == ()
    return float(out)


def _grad(fn, y, x):
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = fn(tf.constant(y), xv)
    return float(loss), tape.gradient(loss, xv).numpy()


# --------------------------------------------------------------- equality to NumPy


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_reference(name, kind, seed):
    y, x = make_batch(kind, seed)
    tf_fn, ref_fn = CASES[name]
    expected = _reduce(ref_fn(y, x.astype(np.float64)))
    np.testing.assert_allclose(_value(tf_fn, y, x), expected, rtol=1e-5, atol=1e-5)


def test_pairwise_distances_exact_zero_and_accurate():
    y, x = make_batch("duplicates", 0)
    d = L.pairwise_distances(tf.constant(x)).numpy()
    ref = _dist(x.astype(np.float64))
    np.testing.assert_allclose(d, ref, atol=1e-6)
    assert d[0, 1] == 0.0 and d[0, 4] == 0.0 and np.all(np.diag(d) == 0.0)
    np.testing.assert_array_equal(d, d.T)


# ----------------------------------------------------------------------- gradients


def _hard_batches():
    y, x = make_batch("duplicates", 5)
    same = np.tile(_unit(np.ones((1, 8))), (8, 1)).astype(np.float32)  # all D = 0
    # Dyadic values: |a|^2 + |b|^2 - 2 a.b is exactly 0 for equal rows, the case where
    # an unguarded sqrt has an infinite derivative.
    exact = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 0, 2, 3, 3]] * 0.5
    return {
        "duplicates": (y, x),
        "all_identical": (np.repeat(np.arange(4), 2), same),
        "exact_duplicates": (np.repeat(np.arange(4), 2), exact),
        # Far from unit norm: masked logits (self-similarity, same-class "negatives")
        # would overflow exp() if masking happened after it.
        "large_scale": (y, 30.0 * x),
        "singletons": (np.arange(6), x[:6]),
        "one_class": (np.zeros(6, np.int64), x[:6]),
    }


@pytest.mark.parametrize("batch", sorted(_hard_batches()))
@pytest.mark.parametrize("name", NAMES)
def test_gradients_finite(name, batch):
    y, x = _hard_batches()[batch]
    loss, g = _grad(CASES[name][0], y, x)
    assert np.isfinite(loss)
    assert np.all(np.isfinite(g)), f"{name} gradient not finite on {batch}"
    if batch in ("singletons", "one_class"):
        assert loss == 0.0 and np.all(g == 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_finite_under_xla(name):
    # XLA does not special-case sqrt'(0) * 0 the way eager TF 2.16 does, so this is
    # the test that needs the dummy-argument guard in pairwise_distances.
    y, x = _hard_batches()["exact_duplicates"]
    xv, fn = tf.Variable(x), CASES[name][0]

    @tf.function(jit_compile=True)
    def loss_and_grad():
        with tf.GradientTape() as tape:
            loss = fn(tf.constant(y), xv)
        return loss, tape.gradient(loss, xv)

    loss, g = loss_and_grad()
    assert np.isfinite(float(loss)) and np.all(np.isfinite(g.numpy()))
    np.testing.assert_allclose(float(loss), _value(fn, y, x), rtol=1e-5, atol=1e-6)


def _ref_loss(name):
    ref = CASES[name][1]
    return lambda y, x: _reduce(ref(y, x))


# HAP2S is excluded: its weights are stop_gradient constants by design, so its
# gradient is not the derivative of the loss value (checked analytically below).
@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("hap2s")])
def test_gradient_matches_finite_differences(name):
    y, x = make_batch("pk", 11, p=3, k=3, dim=4)
    _, g = _grad(CASES[name][0], y, x)
    x64, ref, eps = x.astype(np.float64), _ref_loss(name), 1e-6
    fd = np.zeros_like(x64)
    for i in range(x64.shape[0]):
        for j in range(x64.shape[1]):
            up, down = x64.copy(), x64.copy()
            up[i, j] += eps
            down[i, j] -= eps
            fd[i, j] = (ref(y, up) - ref(y, down)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("weighting", ["exp", "poly"])
@pytest.mark.parametrize("seed", [0, 1])
def test_hap2s_gradient_treats_weights_as_constants(weighting, seed):
    """dL/dx = sum over pairs of (w / sum w) dD/dx, weights held fixed."""
    y, x = make_batch("pk", seed)
    sigma, alpha, margin = 0.4, 7.0, 0.5  # large margin: most hinges active
    _, g = _grad(lambda yy, xx: L.hap2s_loss(yy, xx, margin, weighting, sigma, alpha), y, x)
    x64 = x.astype(np.float64)
    d = _dist(x64)
    expected = np.zeros_like(x64)
    anchors = [a for a in range(len(y)) if all(_pos_neg(y, a))]
    for a in anchors:
        pos, neg = _pos_neg(y, a)
        if weighting == "exp":
            wp = np.array([math.exp(d[a, p] / sigma) for p in pos])
            wn = np.array([math.exp(-d[a, n] / sigma) for n in neg])
        else:
            wp = np.array([(d[a, p] + 1) ** alpha for p in pos])
            wn = np.array([(d[a, n] + 1) ** (-2 * alpha) for n in neg])
        wp, wn = wp / wp.sum(), wn / wn.sum()
        if wp @ d[a, pos] - wn @ d[a, neg] + margin <= 0:
            continue
        for sign, ws, others in ((1.0, wp, pos), (-1.0, wn, neg)):
            for w, j in zip(ws, others):
                unit = (x64[a] - x64[j]) / d[a, j]  # dD_aj / dx_a
                expected[a] += sign * w * unit / len(anchors)
                expected[j] -= sign * w * unit / len(anchors)
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------- edge cases


def test_batch_hard_hand_computed_with_singleton():
    # 1-D points; class 2 is a singleton at 1.0 (a negative for everyone, no anchor).
    y = np.array([0, 0, 1, 1, 2])
    x = np.array([[0.0], [2.0], [2.5], [3.0], [1.0]], np.float32)
    # anchors: 0.1+2-1=1.1, 0.1+2-0.5=1.6, 0.1+0.5-0.5=0.1, [0.1+0.5-1]+=0
    got = _value(lambda a, b: L.batch_hard_triplet_loss(a, b, margin=0.1), y, x)
    assert got == pytest.approx((1.1 + 1.6 + 0.1 + 0.0) / 4, abs=1e-6)  # not / 5


@pytest.mark.parametrize("name", NAMES)
def test_anchor_without_positive_is_excluded(name):
    y, x = make_batch("pk", 7, p=3, k=3)
    y = np.append(y, 99)  # a singleton class: a negative for all, never an anchor
    x = np.vstack([x, _unit(np.ones((1, x.shape[1])))]).astype(np.float32)
    per_anchor = np.asarray(CASES[name][1](y, x.astype(np.float64)))
    assert np.isnan(per_anchor[-1]) and not np.isnan(per_anchor[:-1]).any()
    got = _value(CASES[name][0], y, x)
    np.testing.assert_allclose(got, per_anchor[:-1].mean(), rtol=1e-5, atol=1e-6)
    # The divisor is the 9 valid anchors (semi_hard: their 18 positive pairs), not 10.
    if per_anchor[:-1].sum() > 1e-3:
        assert abs(got - per_anchor[:-1].sum() / len(y)) > 1e-5


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("labels", ["singletons", "one_class"])
def test_no_valid_anchor_gives_zero(name, labels):
    x = make_batch("pk", 3)[1][:6]
    y = np.arange(6) if labels == "singletons" else np.full(6, 4)
    assert _value(CASES[name][0], y, x) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_column_labels_float16_embeddings_and_dynamic_shapes(name):
    y, x = make_batch("random", 4)
    fn = CASES[name][0]
    base = _value(fn, y, x.astype(np.float16).astype(np.float32))
    # [B, 1] labels and float16 (mixed precision) embeddings: same float32 result.
    assert _value(fn, y[:, None], x.astype(np.float16)) == pytest.approx(base, abs=1e-6)
    graph_fn = tf.function(fn, input_signature=[tf.TensorSpec([None], tf.int64),
                                                tf.TensorSpec([None, None], tf.float32)])
    np.testing.assert_allclose(float(graph_fn(y, x)), _value(fn, y, x), rtol=1e-6, atol=1e-6)


def test_mismatched_batch_sizes_raise():
    with pytest.raises(ValueError, match="labels has 3"):
        L.batch_hard_triplet_loss(np.arange(3), np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="weighting"):
        L.hap2s_loss(np.arange(4), np.zeros((4, 2), np.float32), 0.1, weighting="linear")
    with pytest.raises(ValueError, match="degrees"):
        L.angular_loss(np.arange(4), np.zeros((4, 2), np.float32), degrees=90.0)


# ------------------------------------------------------ semi-hard as TFA defines it


def _tfa_batches():
    """Batches with at least two classes (where TFA's loss is defined), zero distances
    included: duplicates, exactly equal dyadic rows, all points identical."""
    batches = {f"{kind}-{seed}": make_batch(kind, seed) for kind in KINDS for seed in SEEDS}
    hard = _hard_batches()
    for name in ("duplicates", "all_identical", "exact_duplicates", "large_scale"):
        batches[f"hard-{name}"] = hard[name]
    return batches


@pytest.mark.parametrize("margin", [0.05, 0.2, 1.0])
@pytest.mark.parametrize("batch", sorted(_tfa_batches()))
def test_semi_hard_is_tfa_with_non_squared_distances(batch, margin):
    y, x = _tfa_batches()[batch]
    x64 = x.astype(np.float64)
    tfa = tfa_semihard_numpy(y, x64, margin, _dist)
    # The two independent NumPy readings (loop, vectorized TFA) agree ...
    assert _reduce(ref_semi_hard(y, x64, margin)) == pytest.approx(tfa, rel=1e-9, abs=1e-12)
    # ... and the TensorFlow loss is TFA's with distance_metric = non-squared L2.
    got = _value(lambda a, b: L.semi_hard_triplet_loss(a, b, margin), y, x)
    np.testing.assert_allclose(got, tfa, rtol=1e-5, atol=1e-6)


def test_semi_hard_hand_computed():
    # 1-D dyadic points, exact distances. Classes {0: 0.0, 1.0} and {1: -1.0, 1.5}.
    y = np.array([0, 0, 1, 1])
    x = np.array([[0.0], [1.0], [-1.0], [1.5]], np.float32)
    # (0,1): D_ap 1; negatives at 1 (a tie: not farther) and 1.5 -> 1.5: 1 - 1.5 + .75
    # (1,0): D_ap 1; negatives at 2, 0.5 -> 2: [1 - 2 + .75]+ = 0
    # (2,3): D_ap 2.5; negatives at 1, 2, none farther -> the farthest, 2: 2.5 - 2 + .75
    # (3,2): D_ap 2.5; negatives at 1.5, 0.5 -> the farthest, 1.5: 2.5 - 1.5 + .75
    expected = (0.25 + 0.0 + 1.25 + 1.75) / 4
    got = _value(lambda a, b: L.semi_hard_triplet_loss(a, b, margin=0.75), y, x)
    assert got == pytest.approx(expected, abs=1e-6)
    # Not the hardest-negative fallback ((0.25 + 2.25 + 2.75) / 4), not a ">=" tie rule.
    assert got != pytest.approx((0.25 + 0.0 + 2.25 + 2.75) / 4, abs=1e-3)
    assert got != pytest.approx((0.75 + 0.0 + 1.25 + 1.75) / 4, abs=1e-3)
    assert tfa_semihard_numpy(y, x.astype(np.float64), 0.75, _dist) == pytest.approx(expected)


def test_semi_hard_averages_over_pairs_not_anchors():
    # Uneven classes: a 4-member class has 12 ordered pairs, a 2-member class 2.
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    x = _unit(np.random.default_rng(3).normal(size=(7, 5))).astype(np.float32)
    entries = ref_semi_hard(y, x.astype(np.float64), 0.2)  # per pair; NaN: singleton
    terms = [v for v in entries if not np.isnan(v)]
    anchor_means, i = [], 0
    for a in range(len(y)):
        pos, neg = _pos_neg(y, a)
        n = len(pos) if pos and neg else 1
        if pos and neg:
            anchor_means.append(np.mean(entries[i:i + n]))
        i += n
    assert i == len(entries) and len(terms) == 14
    got = _value(lambda a, b: L.semi_hard_triplet_loss(a, b, 0.2), y, x)
    assert got == pytest.approx(np.mean(terms), abs=1e-6)
    assert abs(np.mean(terms) - np.mean(anchor_means)) > 1e-3  # the distinction matters


@pytest.mark.parametrize("batch", sorted(_hard_batches()))
def test_semi_hard_gradients_finite_under_xla(batch):
    y, x = _hard_batches()[batch]
    xv = tf.Variable(x)

    @tf.function(jit_compile=True)
    def loss_and_grad():
        with tf.GradientTape() as tape:
            loss = L.semi_hard_triplet_loss(tf.constant(y), xv)
        return loss, tape.gradient(loss, xv)

    loss, g = loss_and_grad()
    assert np.isfinite(float(loss)) and np.all(np.isfinite(g.numpy()))
    np.testing.assert_allclose(float(loss), _value(L.semi_hard_triplet_loss, y, x),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- N-pairs temperature


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.05, 0.1, 1.0])
def test_npairs_temperature_matches_numpy(temperature, seed):
    y, x = make_batch("pk", seed)
    expected = _reduce(ref_npairs(y, x.astype(np.float64), 0.002, temperature))
    got = _value(lambda a, b: L.npairs_loss(a, b, temperature=temperature), y, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_npairs_small_temperature_separates_clusters_from_random(seed):
    rng = np.random.default_rng(seed)
    p, k, dim = 4, 4, 8
    y = np.repeat(np.arange(p), k)
    clustered = _unit(np.eye(dim)[y] + 0.1 * rng.normal(size=(p * k, dim))).astype(np.float32)
    scattered = _unit(rng.normal(size=(p * k, dim))).astype(np.float32)

    def loss(x, t):
        return _value(lambda a, b: L.npairs_loss(a, b, l2_reg=0.0, temperature=t), y, x)

    gap_1 = loss(scattered, 1.0) - loss(clustered, 1.0)
    gap_small = loss(scattered, 0.1) - loss(clustered, 0.1)
    assert gap_1 > 0 and gap_small > 4 * gap_1
    # At temperature 1 cosine logits in [-1, 1] keep good clusters far from the floor
    # log(K - 1) of a perfect softmax; at 0.1 they reach it.
    floor = math.log(k - 1)
    assert loss(clustered, 1.0) > floor + 0.8
    assert loss(clustered, 0.1) < floor + 0.1


def test_npairs_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        L.npairs_loss(np.arange(4), np.zeros((4, 2), np.float32), temperature=0.0)


# ---------------------------------------------------------------- limiting cases


@pytest.mark.parametrize("kind", ["pk", "random", "unnormalized"])
@pytest.mark.parametrize("seed", SEEDS)
def test_hap2s_exp_tends_to_batch_hard_as_sigma_to_zero(kind, seed):
    y, x = make_batch(kind, seed)
    hard = _value(lambda a, b: L.batch_hard_triplet_loss(a, b, margin=0.1), y, x)
    soft = _value(lambda a, b: L.hap2s_loss(a, b, margin=0.1, weighting="exp", sigma=1e-3),
                  y, x)
    assert soft == pytest.approx(hard, abs=1e-3)
    # ... and is far from it at the default sigma (the test has teeth).
    default = _value(lambda a, b: L.hap2s_exp_loss(a, b, margin=0.1), y, x)
    assert abs(default - hard) > 1e-2


@pytest.mark.parametrize("kind", ["pk", "random", "unnormalized"])
@pytest.mark.parametrize("seed", SEEDS)
def test_hap2s_poly_tends_to_batch_hard_as_alpha_grows(kind, seed):
    # It does: log w = alpha log(1 + D) is monotone in D, so the weights concentrate
    # on the farthest positive / nearest negative. A sample at gap g behind the
    # hardest one shifts D_P by at most g exp(-alpha g / (1 + D)) <= (1 + D) / (e alpha),
    # i.e. ~2e-4 per sample on unit vectors (D <= 2) at alpha = 5000.
    y, x = make_batch(kind, seed)
    hard = _value(lambda a, b: L.batch_hard_triplet_loss(a, b, margin=0.1), y, x)
    poly = _value(lambda a, b: L.hap2s_loss(a, b, margin=0.1, weighting="poly", alpha=5000.0),
                  y, x)
    assert poly == pytest.approx(hard, abs=1e-3)


# -------------------------------------------------------------- training & config


@pytest.mark.parametrize("name", NAMES)
def test_gradient_descent_decreases_loss(name):
    y, x = make_batch("pk", 21, p=4, k=3, dim=6)
    xv = tf.Variable(x)
    fn = CASES[name][0]
    first = float(fn(y, xv))
    opt_lr = 0.05
    for _ in range(15):
        with tf.GradientTape() as tape:
            loss = fn(y, xv)
        xv.assign_sub(opt_lr * tape.gradient(loss, xv))
    assert float(fn(y, xv)) < first


def test_registry_implements_exactly_the_configurable_losses():
    from core.names import LOSSES

    assert sorted(L.LOSS_FUNCTIONS) == sorted(LOSSES) and len(set(LOSSES)) == len(LOSSES)


# Every loss's options and defaults, spelled out here rather than read from the signatures
# (the margin table: batch-hard and HAP2S 0.1, semi-hard 0.2, contrastive 0.5,
# lifted 1.0; angular and N-pairs have no margin, batch_hard_soft no option at all).
EXPECTED_OPTIONS = {
    "batch_hard": {"margin": 0.1},
    "batch_hard_soft": {},
    "hap2s_exp": {"margin": 0.1, "sigma": 0.5},
    "hap2s_poly": {"margin": 0.1, "alpha": 10.0},
    "semi_hard": {"margin": 0.2},
    "lifted": {"margin": 1.0},
    "npairs": {"l2_reg": 0.002, "temperature": 0.1},
    "angular": {"degrees": 45.0},
    "contrastive": {"margin": 0.5},
}


def test_each_loss_owns_its_options():
    assert {name: L.loss_options(name) for name in L.LOSS_FUNCTIONS} == EXPECTED_OPTIONS


# name -> the loss called directly with the given options (None: the function's default).
_DIRECT = {
    "batch_hard": lambda y, x, o: L.batch_hard_triplet_loss(y, x, o["margin"]),
    "batch_hard_soft": lambda y, x, o: L.batch_hard_soft_triplet_loss(y, x),
    "hap2s_exp": lambda y, x, o: L.hap2s_loss(y, x, o["margin"], "exp", sigma=o["sigma"]),
    "hap2s_poly": lambda y, x, o: L.hap2s_loss(y, x, o["margin"], "poly", alpha=o["alpha"]),
    "semi_hard": lambda y, x, o: L.semi_hard_triplet_loss(y, x, o["margin"]),
    "lifted": lambda y, x, o: L.lifted_structured_loss(y, x, o["margin"]),
    "npairs": lambda y, x, o: L.npairs_loss(y, x, o["l2_reg"], o["temperature"]),
    "angular": lambda y, x, o: L.angular_loss(y, x, o["degrees"]),
    "contrastive": lambda y, x, o: L.contrastive_loss(y, x, o["margin"]),
}
# Options other than the defaults, each moving every loss that has it.
_SET = {"margin": 0.37, "sigma": 0.3, "alpha": 6.0, "l2_reg": 0.05, "temperature": 0.3,
        "degrees": 35.0}


@pytest.mark.parametrize("name", NAMES)
def test_bind_loss_with_defaults_is_the_function_at_the_expected_defaults(name):
    y, x = make_batch("pk", 2)
    x = 0.2 * x  # distances < 0.4: every margin's hinge is active somewhere
    fn = L.bind_loss({"name": name})
    assert fn.__name__ == f"{name}_loss"
    assert float(fn(y, x)) == float(_DIRECT[name](y, x, EXPECTED_OPTIONS[name]))


@pytest.mark.parametrize("name", NAMES)
def test_each_configured_option_reaches_the_loss(name):
    y, x = make_batch("pk", 2)
    x = 0.2 * x
    default = float(L.bind_loss({"name": name})(y, x))
    for option in EXPECTED_OPTIONS[name]:
        options = dict(EXPECTED_OPTIONS[name], **{option: _SET[option]})
        got = float(L.bind_loss({"name": name, option: _SET[option]})(y, x))
        assert got == float(_DIRECT[name](y, x, options)), option
        assert got != default, option  # the option is not silently dropped


def test_margin_zero_is_an_override_not_a_missing_value():
    y, x = make_batch("pk", 2)
    x = 0.2 * x
    zero = float(L.bind_loss({"name": "batch_hard", "margin": 0})(y, x))
    assert zero == float(L.batch_hard_triplet_loss(y, x, 0.0))
    assert zero != float(L.bind_loss({"name": "batch_hard"})(y, x))


@pytest.mark.parametrize("spec, key, words", [
    ({"name": "batch_hard", "sigma": 0.5}, "trainer.loss.sigma",
     "not an option of loss 'batch_hard' (it takes: margin)"),
    ({"name": "hap2s_exp", "alpha": 3.0}, "trainer.loss.alpha", "margin, sigma"),
    ({"name": "batch_hard_soft", "margin": 0.1}, "trainer.loss.margin", "no options"),
    ({"name": "npairs", "margin": 0.1}, "trainer.loss.margin", "l2_reg, temperature"),
    ({"name": "arcface"}, "trainer.loss.name", "arcface"),
    ({"name": "angular", "degrees": "wide"}, "trainer.loss.degrees", "must be float"),
    ({"name": "hap2s_exp", "sigma": True}, "trainer.loss.sigma", "must be float"),
    ({"name": "hap2s_exp", "sigma": 0.0}, "trainer.loss.sigma", "must be > 0"),
    ({"name": "hap2s_poly", "alpha": -1}, "trainer.loss.alpha", "must be > 0"),
    ({"name": "contrastive", "margin": -0.1}, "trainer.loss.margin", "must be >= 0"),
    ({"name": "angular", "degrees": 90}, "trainer.loss.degrees", "(0, 90)"),
    ({"name": "npairs", "temperature": 0}, "trainer.loss.temperature", "must be > 0"),
    ({"name": "npairs", "l2_reg": -1.0}, "trainer.loss.l2_reg", "must be >= 0"),
])
def test_bind_loss_refuses_naming_the_key(spec, key, words):
    from core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        L.bind_loss(spec)
    assert f"'{key}'" in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_binds_from_the_real_config(name):
    """The real TrainerConfig: the loss by name only (the options' defaults) and with one
    option set, through load_config as a user file gives it."""
    from core.config import load_config

    y, x = make_batch("pk", 2)
    cfg = load_config(overrides={"trainer": {"loss": {"name": name}}}).trainer
    assert cfg.loss == {"name": name} and cfg.loss_name == name
    assert np.isfinite(float(L.bind_loss(cfg.loss)(y, x)))
    for option in EXPECTED_OPTIONS[name]:
        set_cfg = load_config(overrides={"trainer": {"loss": {"name": name,
                                                               option: _SET[option]}}}).trainer
        assert float(L.bind_loss(set_cfg.loss)(y, x)) == float(
            _DIRECT[name](y, x, dict(EXPECTED_OPTIONS[name], **{option: _SET[option]})))
