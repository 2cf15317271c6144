"""Metric-learning (ranking) losses on a batch of embeddings, in pure TensorFlow.

Every loss has the signature ``loss(labels, embeddings, **hyper) -> scalar float32``:

* ``labels``: integer class ids, shape [B] (or [B, 1], flattened; float labels as
  Keras sometimes passes them work too, they are only compared for equality).
* ``embeddings``: float [B, D]. Usually L2-normalized by the model, but nothing here
  assumes it. Cast to float32 first, so mixed-precision (float16) models get a
  float32 loss.

Shared semantics (the reason every loss goes through ``_anchor_masks`` and
``_mean_over_valid``):

* Every sample in the batch is an anchor. Its positives are the *other* samples with
  the same label, its negatives the samples with a different label.
* An anchor with no positive or no negative in the batch cannot form a triplet/pair
  comparison, so it contributes nothing: the loss is the mean over *valid* anchors
  only (valid = at least one positive and one negative).
* A batch with no valid anchor (e.g. all labels distinct, or all equal) has loss 0.0
  with zero, finite gradients, never NaN.
* Losses defined over pairs in their papers (lifted, contrastive, angular) are averaged
  first over the anchor's pairs, then over anchors. For the P x K batches the trainer
  samples, every anchor has the same number of positives (K - 1) and negatives
  ((P - 1) K), so this equals the papers' mean over pairs. Semi-hard follows
  TensorFlow Addons literally instead: the mean over all positive pairs (a, p) of the
  batch (of valid anchors), the same number for P x K batches.
* Options: a loss's options are the keyword parameters of its ``@register``-ed function,
  and their defaults are the signature's (``loss_options``). The config names a loss and
  overrides some of them, ``trainer.loss: {name: hap2s_exp, margin: 0.1, sigma: 0.5}``;
  ``bind_loss`` refuses an option the function does not take, or a value its own check
  refuses, with a ConfigError naming ``trainer.loss.<option>``. A new loss is one
  ``@register("<name>")`` function here plus its name in ``core.names.LOSSES``.

References: Hermans et al. 2017 (arXiv 1703.07737, batch-hard); Yu et al. 2018
(arXiv 1807.11206, HAP2S); Schroff et al. 2015 (FaceNet, semi-hard); Song et al. 2016
(lifted structure); Sohn 2016 (N-pair); Wang et al. 2017 (angular); Hadsell et al.
2006 (contrastive).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Mapping

import tensorflow as tf

from core.errors import ConfigError

# Distances below this (squared: _D2_EPS) are reported as exactly 0. It bounds the
# sqrt derivative 1/(2 sqrt(d2)) by 5e5, so gradients stay finite, and it is far
# below any distance that matters for ranking.
_D2_EPS = 1e-12

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]



class LossOptionError(ValueError):
    """A loss option out of its range; ``option`` is the keyword parameter's name.

    Raised by the losses' own argument checks, so that ``bind_loss`` can name the config
    key (``trainer.loss.<option>``) while a direct call still gets a plain ValueError.
    """

    def __init__(self, option: str, message: str):
        super().__init__(f"{option} {message}")
        self.option = option
        self.message = message


def _require(ok: bool, option: str, message: str) -> None:
    if not ok:
        raise LossOptionError(option, message)


# --------------------------------------------------------------------------- helpers


def pairwise_distances(embeddings: tf.Tensor) -> tf.Tensor:
    """Non-squared Euclidean distances ``D[i, j] = ||e_i - e_j||_2``.

    Args:
      embeddings: float [B, D].

    Returns:
      float32 [B, B], symmetric, exactly 0 on the diagonal and for coincident rows.

    The Gram expansion ``|a|^2 + |b|^2 - 2 a.b`` is evaluated in float64: in float32
    its cancellation leaves ~1e-7 absolute error in d2 for coincident points, which
    the square root turns into ~3e-4 of fake distance. float64 costs one small
    [B, D] x [D, B] matmul and keeps the error ~1e-8. The square root is safe:
    entries with ``d2 <= 1e-12`` are set to 0 through ``tf.where`` on a dummy
    argument of 1, so neither the value nor the gradient sees sqrt'(0) = inf.
    """
    e = tf.cast(embeddings, tf.float64)
    sq = tf.reduce_sum(tf.square(e), axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * tf.matmul(e, e, transpose_b=True)
    d2 = tf.cast(tf.maximum(d2, 0.0), tf.float32)
    # The diagonal is 0 by definition; rounding would otherwise leave ~1e-16 there.
    d2 = tf.linalg.set_diag(d2, tf.zeros_like(tf.linalg.diag_part(d2)))
    nonzero = d2 > _D2_EPS
    safe_d2 = tf.where(nonzero, d2, tf.ones_like(d2))
    return tf.where(nonzero, tf.sqrt(safe_d2), tf.zeros_like(d2))


def _prepare(labels, embeddings):
    """Flattened labels [B] and float32 embeddings [B, D]."""
    labels = tf.reshape(tf.convert_to_tensor(labels), [-1])
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    if embeddings.shape.rank is not None and embeddings.shape.rank != 2:
        raise ValueError(f"embeddings must be [batch, dim], got shape {embeddings.shape}")
    b_lab, b_emb = labels.shape[0], embeddings.shape[0]
    if b_lab is not None and b_emb is not None and b_lab != b_emb:
        raise ValueError(f"labels has {b_lab} entries but embeddings has {b_emb} rows")
    return labels, embeddings


def _anchor_masks(labels):
    """Positive / negative pair masks and anchor validity.

    Args:
      labels: [B].

    Returns:
      pos: bool [B, B], same label and not the anchor itself.
      neg: bool [B, B], different label.
      valid: bool [B], anchor has at least one positive and one negative.
    """
    same = tf.equal(labels[:, None], labels[None, :])
    not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    pos = tf.logical_and(same, not_self)
    neg = tf.logical_not(same)
    valid = tf.logical_and(tf.reduce_any(pos, axis=1), tf.reduce_any(neg, axis=1))
    return pos, neg, valid


def _mean_over_valid(per_anchor, valid):
    """Mean of per_anchor [B] over valid anchors; 0.0 when there is none.

    ``tf.where`` rather than a multiply, so that whatever an invalid anchor computed
    never reaches the sum (the helpers below also keep it finite, so the zero
    gradient flowing back to it cannot turn into 0 * inf = NaN).
    """
    total = tf.reduce_sum(tf.where(valid, per_anchor, tf.zeros_like(per_anchor)))
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    return total / tf.maximum(count, 1.0)


def _masked_mean(x, mask, axis=-1):
    """Mean of x over entries where mask is True; 0 where the mask is empty."""
    m = tf.cast(mask, x.dtype)
    total = tf.reduce_sum(tf.where(mask, x, tf.zeros_like(x)), axis=axis)
    return total / tf.maximum(tf.reduce_sum(m, axis=axis), 1.0)


def _masked_max(x, mask, axis=-1):
    """Max of x over mask along axis; 0 where the mask is empty (kept finite)."""
    r = tf.reduce_max(tf.where(mask, x, tf.fill(tf.shape(x), x.dtype.min)), axis=axis)
    return tf.where(tf.reduce_any(mask, axis=axis), r, tf.zeros_like(r))


def _masked_min(x, mask, axis=-1):
    """Min of x over mask along axis; 0 where the mask is empty (kept finite)."""
    r = tf.reduce_min(tf.where(mask, x, tf.fill(tf.shape(x), x.dtype.max)), axis=axis)
    return tf.where(tf.reduce_any(mask, axis=axis), r, tf.zeros_like(r))


def _masked_logsumexp(x, mask, axis=-1, add_one=False):
    """``log(sum_{mask} exp(x))`` (``log(1 + sum ...)`` with add_one), numerically stable.

    An empty mask gives 0 (log 1) with add_one and 0 (by convention, callers mark
    such rows invalid) without. Masked entries go through ``exp(-inf) = 0`` rather
    than ``where(mask, exp(x), 0)``: the latter can overflow in the unselected
    branch and give NaN gradients.
    """
    m = _masked_max(x, mask, axis=axis)
    if add_one:
        m = tf.maximum(m, 0.0)
    # The result is invariant to the shift, so its gradient carries no information.
    m = tf.stop_gradient(m)
    shifted = tf.where(mask, x - tf.expand_dims(m, axis), tf.fill(tf.shape(x), -math.inf))
    s = tf.reduce_sum(tf.exp(shifted), axis=axis)
    if add_one:
        s = s + tf.exp(-m)
    # s >= 1 whenever the mask is non-empty (the max term is exp(0)), or with add_one.
    s = tf.where(s > 0.0, s, tf.ones_like(s))
    return m + tf.math.log(s)


def _masked_softmax(logits, mask, axis=-1):
    """Softmax of logits restricted to mask (row max subtracted); all-zero on empty rows."""
    m = tf.stop_gradient(_masked_max(logits, mask, axis=axis))
    shifted = tf.where(mask, logits - tf.expand_dims(m, axis),
                       tf.fill(tf.shape(logits), -math.inf))
    e = tf.exp(shifted)
    s = tf.reduce_sum(e, axis=axis, keepdims=True)
    return e / tf.where(s > 0.0, s, tf.ones_like(s))


# ---------------------------------------------------------------------------- losses

# Names as in the config (core.names.LOSSES) -> the function, filled by ``@register``. Each
# function's keyword parameters after (labels, embeddings) are the loss's options, with
# their defaults: nothing else lists them.
LOSS_FUNCTIONS: dict[str, Callable[..., tf.Tensor]] = {}


def register(name: str):
    """Registers the decorated function as the configurable loss ``name``."""
    def add(fn):
        LOSS_FUNCTIONS[name] = fn
        return fn
    return add



def _batch_hard_gaps(labels, embeddings):
    """``max_p D_ap - min_n D_an`` per anchor [B], and the anchors' validity [B]."""
    labels, embeddings = _prepare(labels, embeddings)
    d = pairwise_distances(embeddings)
    pos, neg, valid = _anchor_masks(labels)
    return _masked_max(d, pos) - _masked_min(d, neg), valid


@register("batch_hard")
def batch_hard_triplet_loss(labels, embeddings, margin=0.1):
    """Batch-hard triplet loss (Hermans et al. 2017): ``mean_a [m + max_p D_ap - min_n D_an]_+``.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D].
      margin: hinge margin m >= 0 (distance units). 0.1: CGD's, on unit vectors.

    Returns:
      float32 scalar, mean over valid anchors (see module docstring); 0.0 if none.
    """
    _require(margin >= 0, "margin", f"must be >= 0, got {margin}")
    gap, valid = _batch_hard_gaps(labels, embeddings)
    return _mean_over_valid(tf.nn.relu(gap + margin), valid)


@register("batch_hard_soft")
def batch_hard_soft_triplet_loss(labels, embeddings):
    """Batch-hard triplet loss with the soft margin (Hermans et al. 2017):
    ``mean_a softplus(max_p D_ap - min_n D_an)``. The softplus replaces the hinge and its
    margin, so this loss has no options.

    Returns:
      float32 scalar, mean over valid anchors; 0.0 if none.
    """
    gap, valid = _batch_hard_gaps(labels, embeddings)
    return _mean_over_valid(tf.nn.softplus(gap), valid)


def hap2s_loss(labels, embeddings, margin, weighting, sigma=None, alpha=None):
    """Hard-Aware Point-to-Set loss, HAP2S (Yu et al. 2018, arXiv 1807.11206).

    Point-to-set distances ``D_P(a) = sum_p w_p D_ap / sum_p w_p`` over the anchor's
    positives and ``D_N(a)`` likewise over its negatives;
    ``L = mean_a [D_P(a) - D_N(a) + m]_+``.

    Weights (harder samples weigh more: far positives, near negatives):

    * ``weighting="exp"`` (HAP2S_E): ``w_p = exp(D_ap / sigma)``,
      ``w_n = exp(-D_an / sigma)``. As sigma -> 0 this tends to batch-hard.
    * ``weighting="poly"`` (HAP2S_P): ``w_p = (D_ap + 1)^alpha``,
      ``w_n = (D_an + 1)^(-2 alpha)``. As alpha -> inf this tends to batch-hard too.

    Both are evaluated as a masked softmax of log-weights with the row max subtracted,
    so large ``1/sigma`` or ``alpha`` (or unnormalized embeddings) cannot overflow.

    Gradient choice: the weights are treated as constants (``tf.stop_gradient``);
    gradients flow only through the distances ``D_ap`` and ``D_an`` in the weighted
    sums. This makes the weights a *soft mining* step, the smooth analogue of
    batch-hard's argmax selection (which carries no gradient either): every positive
    is pulled in and every negative pushed away, with strength proportional to its
    weight, and the gradient tends to batch-hard's as sigma -> 0. Differentiating
    through the weights instead would push *easy* positives (``D_ap < D_P - sigma``)
    away from the anchor, the opposite of what the weighting is meant to do. The loss
    value is the same either way.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D].
      margin: hinge margin m >= 0.
      weighting: "exp" or "poly".
      sigma: temperature of the exp weighting (> 0); for "exp" only.
      alpha: exponent of the poly weighting (> 0); for "poly" only.

    Returns:
      float32 scalar, mean over valid anchors; 0.0 if none.

    The configurable losses are ``hap2s_exp_loss`` and ``hap2s_poly_loss``, which hold
    the defaults and take only their own weighting's parameter.
    """
    _require(margin >= 0, "margin", f"must be >= 0, got {margin}")
    if weighting == "exp":
        _require(sigma is not None and sigma > 0, "sigma", f"must be > 0, got {sigma}")
    elif weighting == "poly":
        _require(alpha is not None and alpha > 0, "alpha", f"must be > 0, got {alpha}")
    else:
        raise ValueError(f"weighting must be 'exp' or 'poly', got {weighting!r}")
    labels, embeddings = _prepare(labels, embeddings)
    d = pairwise_distances(embeddings)
    pos, neg, valid = _anchor_masks(labels)
    if weighting == "exp":
        logit_p, logit_n = d / sigma, -d / sigma
    else:
        log1p_d = tf.math.log1p(d)
        logit_p, logit_n = alpha * log1p_d, -2.0 * alpha * log1p_d
    w_p = tf.stop_gradient(_masked_softmax(logit_p, pos))  # [B, B], rows sum to 1
    w_n = tf.stop_gradient(_masked_softmax(logit_n, neg))
    d_p = tf.reduce_sum(w_p * d, axis=1)
    d_n = tf.reduce_sum(w_n * d, axis=1)
    return _mean_over_valid(tf.nn.relu(d_p - d_n + margin), valid)


@register("hap2s_exp")
def hap2s_exp_loss(labels, embeddings, margin=0.1, sigma=0.5):
    """HAP2S_E: ``hap2s_loss`` with exponential weights ``exp(+-D / sigma)``.

    margin 0.1 as batch-hard's (CGD's, on unit vectors); sigma 0.5, the paper's choice.
    """
    return hap2s_loss(labels, embeddings, margin, "exp", sigma=sigma)


@register("hap2s_poly")
def hap2s_poly_loss(labels, embeddings, margin=0.1, alpha=10.0):
    """HAP2S_P: ``hap2s_loss`` with polynomial weights ``(D + 1)^alpha``, ``(D + 1)^(-2 alpha)``.

    margin 0.1 as batch-hard's; alpha 10, the paper's choice.
    """
    return hap2s_loss(labels, embeddings, margin, "poly", alpha=alpha)


@register("semi_hard")
def semi_hard_triplet_loss(labels, embeddings, margin=0.2):
    """Triplet loss with semi-hard negative mining, as TensorFlow Addons defines it.

    ``tfa.losses.triplet_semihard_loss`` (after FaceNet, Schroff et al. 2015): for every
    ordered positive pair (a, p), ``a != p`` with the same label, the negative is the
    closest one *farther* than the positive, ``D_an* = min {D_an : D_an > D_ap}``
    (strict, so a negative at exactly ``D_ap`` is not semi-hard); when no negative is
    farther, the *farthest* negative, ``D_an* = max_n D_an`` (TFA's
    ``negatives_inside``). The loss is the mean over all positive pairs of the batch of
    ``[D_ap - D_an* + m]_+`` (not a mean per anchor first: for uneven class sizes the
    two differ; for P x K batches they agree).

    Differences from TFA, all deliberate:

    * Distances are non-squared Euclidean with the safe square root of
      ``pairwise_distances``, as in every loss here; TFA's default
      ``distance_metric="L_2"`` uses *squared* distances (TFA with a non-squared L2
      ``distance_metric`` callable computes exactly this loss). The mining picks the
      same negatives either way (sqrt is monotone); the hinge and the margin's scale
      differ.
    * Degenerate batches follow this module's rules: pairs whose anchor has no
      negative (a one-class batch) are left out and a batch with no such pair gives
      0.0, where TFA uses a "farthest negative" of 0 there and divides 0 by 0 when
      there is no positive pair at all.
    * float16 embeddings are computed, and returned, in float32.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D].
      margin: hinge margin m >= 0 (distance units). 0.2: FaceNet's, which FaceNet and
        TFA apply to squared distances and this loss to plain ones.

    Returns:
      float32 scalar; 0.0 if no anchor is valid.

    Memory: builds [B, B, B] booleans/floats (B = 128: 2M entries).
    """
    _require(margin >= 0, "margin", f"must be >= 0, got {margin}")
    labels, embeddings = _prepare(labels, embeddings)
    d = pairwise_distances(embeddings)
    pos, neg, valid = _anchor_masks(labels)
    d_ap = d[:, :, None]  # [a, p, 1]
    d_an = d[:, None, :]  # [a, 1, n]
    farther = tf.logical_and(neg[:, None, :], d_an > d_ap)  # [a, p, n]
    d_an_3 = tf.broadcast_to(d_an, tf.shape(farther))
    semi = _masked_min(d_an_3, farther)  # [a, p]
    farthest = _masked_max(d, neg)  # [a]
    chosen = tf.where(tf.reduce_any(farther, axis=2), semi, farthest[:, None])
    per_pair = tf.nn.relu(d - chosen + margin)  # [a, p]
    pairs = tf.logical_and(pos, valid[:, None])
    total = tf.reduce_sum(tf.where(pairs, per_pair, tf.zeros_like(per_pair)))
    return total / tf.maximum(tf.reduce_sum(tf.cast(pairs, tf.float32)), 1.0)


@register("lifted")
def lifted_structured_loss(labels, embeddings, margin=1.0):
    """Smooth lifted structured loss (Song et al. 2016, eq. 4).

    For a positive pair (i, j):
    ``J_ij = D_ij + log(sum_{k in N(i)} exp(m - D_ik) + sum_{l in N(j)} exp(m - D_jl))``
    and the loss is ``1/2 [J_ij]_+^2`` averaged over the anchor's positives, then over
    valid anchors (the paper's ``1/(2|P|) sum_P [J_ij]_+^2`` for P x K batches). The two
    log-sum-exps are computed per row and combined with a stable logaddexp.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D].
      margin: alpha in the paper (>= 0), in distance units; 1.0, the paper's.

    Returns:
      float32 scalar; 0.0 if no anchor is valid.
    """
    _require(margin >= 0, "margin", f"must be >= 0, got {margin}")
    labels, embeddings = _prepare(labels, embeddings)
    d = pairwise_distances(embeddings)
    pos, neg, valid = _anchor_masks(labels)
    lse = _masked_logsumexp(margin - d, neg)  # [B]: log sum_{k in N(i)} exp(m - D_ik)
    li, lj = lse[:, None], lse[None, :]
    hi = tf.maximum(li, lj)
    j = d + hi + tf.math.log(tf.exp(li - hi) + tf.exp(lj - hi))  # [B, B]
    per_pair = 0.5 * tf.square(tf.nn.relu(j))
    return _mean_over_valid(_masked_mean(per_pair, pos), valid)


@register("npairs")
def npairs_loss(labels, embeddings, l2_reg=0.002, temperature=0.1):
    """Multi-class N-pair loss (Sohn 2016) generalized to P x K batches, with a temperature.

    Logits are scaled similarities ``s_aj = (e_a . e_j) / temperature`` over every
    *other* sample j (the anchor's self-similarity is left out of the softmax). On the
    model's L2-normalized embeddings ``e_a . e_j`` is the cosine similarity, confined
    to [-1, 1]: without the temperature the softmax can never become confident (in a
    32 x 4 batch even perfect clusters, positives at similarity 1 and negatives at
    -1/31, keep a loss of 3.85 at temperature 1, against the floor ``log(K - 1)`` = 1.10
    that temperature 0.1 reaches within 0.002).

    The target distribution is the anchor's same-class indicator row normalized to sum
    to 1 (uniform over its positives; with K = 2 this is Sohn's one-positive softmax).
    Per anchor: ``CE(targets, softmax(s_a)) + 0.5 * l2_reg * ||e_a||^2``; the L2 term
    (which keeps dot-product logits of unnormalized embeddings from growing without
    bound; a constant for normalized ones) uses the scale of
    ``tf.contrib.losses.metric_learning.npairs_loss``. Mean over valid anchors.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D] (normally L2-normalized; not normalized here).
      l2_reg: weight of the embedding-norm penalty (>= 0).
      temperature: divides the similarities (> 0).

    Returns:
      float32 scalar; 0.0 if no anchor is valid.
    """
    _require(temperature > 0, "temperature", f"must be > 0, got {temperature}")
    _require(l2_reg >= 0, "l2_reg", f"must be >= 0, got {l2_reg}")
    labels, embeddings = _prepare(labels, embeddings)
    pos, _, valid = _anchor_masks(labels)
    sim = tf.matmul(embeddings, embeddings, transpose_b=True) / temperature  # [B, B]
    others = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    log_z = _masked_logsumexp(sim, others)  # [B]
    # CE = -sum_j t_aj (s_aj - log_z) = log_z - mean_{p in P(a)} s_ap (sum t = 1).
    ce = log_z - _masked_mean(sim, pos)
    reg = 0.5 * l2_reg * tf.reduce_sum(tf.square(embeddings), axis=1)
    return _mean_over_valid(ce + reg, valid)


@register("angular")
def angular_loss(labels, embeddings, degrees=45.0):
    """Angular loss in its N-pair form (Wang et al. 2017, eq. 8).

    For anchor a, positive p and the anchor's negatives n, with ``t = tan^2(degrees)``:
    ``f_apn = 4 t (e_a + e_p) . e_n - 2 (1 + t) e_a . e_p`` and
    ``l_ap = log(1 + sum_n exp(f_apn))``, averaged over the anchor's positives and then
    over valid anchors. Only the angular term: the paper's best variant adds the
    N-pair loss (lambda = 2), which is ``npairs_loss`` here.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D] (the paper uses L2-normalized features).
      degrees: angle bound alpha, in (0, 90) degrees.

    Returns:
      float32 scalar; 0.0 if no anchor is valid.

    Memory: builds [B, B, B] (B = 128: 2M entries).
    """
    _require(0.0 < degrees < 90.0, "degrees", f"must be in (0, 90), got {degrees}")
    labels, embeddings = _prepare(labels, embeddings)
    pos, neg, valid = _anchor_masks(labels)
    t = math.tan(math.radians(degrees)) ** 2
    g = tf.matmul(embeddings, embeddings, transpose_b=True)  # [B, B]
    # (e_a + e_p) . e_n = g[a, n] + g[p, n]  -> [a, p, n]
    f = 4.0 * t * (g[:, None, :] + g[None, :, :]) - 2.0 * (1.0 + t) * g[:, :, None]
    mask = tf.logical_and(pos[:, :, None], neg[:, None, :])
    per_pair = _masked_logsumexp(f, mask, axis=2, add_one=True)  # [a, p]
    return _mean_over_valid(_masked_mean(per_pair, pos), valid)


@register("contrastive")
def contrastive_loss(labels, embeddings, margin=0.5):
    """Contrastive loss (Hadsell et al. 2006) on non-squared distances.

    Per anchor: ``mean_p D_ap^2 + mean_n [m - D_an]_+^2`` (the two means are taken
    separately, so the many negatives do not drown the few positives), then the mean
    over valid anchors.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D].
      margin: negatives closer than m (>= 0) are pushed away; 0.5, about half the
        typical distance between unit vectors of different classes.

    Returns:
      float32 scalar; 0.0 if no anchor is valid.
    """
    _require(margin >= 0, "margin", f"must be >= 0, got {margin}")
    labels, embeddings = _prepare(labels, embeddings)
    d = pairwise_distances(embeddings)
    pos, neg, valid = _anchor_masks(labels)
    per_anchor = (_masked_mean(tf.square(d), pos)
                  + _masked_mean(tf.square(tf.nn.relu(margin - d)), neg))
    return _mean_over_valid(per_anchor, valid)


# ------------------------------------------------------------------------ registry

# The config key a loss's options sit under.
LOSS_KEY = "trainer.loss"


def loss_options(name: str) -> dict[str, Any]:
    """The options of loss ``name`` and their defaults: its function's keyword parameters."""
    if name not in LOSS_FUNCTIONS:
        raise ConfigError(f"'{LOSS_KEY}.name' must be one of {sorted(LOSS_FUNCTIONS)}, "
                          f"got {name!r}")
    # Every parameter after (labels, embeddings) is an option.
    params = list(inspect.signature(LOSS_FUNCTIONS[name]).parameters.values())[2:]
    return {p.name: p.default for p in params}


def _coerce_option(name: str, key: str, value: Any, default: Any) -> Any:
    """``value`` in the type of the option's default (an int is a float where a float is due)."""
    dotted = f"{LOSS_KEY}.{key}"
    if isinstance(default, float) and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise ConfigError(f"'{dotted}' must be {type(default).__name__} (the default of loss "
                          f"{name!r} is {default!r}), got {type(value).__name__} {value!r}")
    return value


# A tiny P x K batch (2 classes x 2 images) on which ``bind_loss`` runs a loss once, so that
# the loss's own argument checks judge the configured values before any training.
_PROBE_LABELS = (0, 0, 1, 1)
_PROBE_EMBEDDINGS = ((1.0, 0.0), (0.8, 0.6), (0.0, 1.0), (-0.6, 0.8))


def bind_loss(spec: Mapping[str, Any]) -> LossFn:
    """The loss ``spec`` names, with its options bound and checked.

    Args:
      spec: ``{"name": <a LOSS_FUNCTIONS key>, <option>: <value>, ...}``
        (``trainer.loss``); an option left out keeps its signature default.

    Returns:
      ``fn(labels, embeddings) -> float32 scalar``, named ``<name>_loss`` (Keras uses the
      name in metric logs).

    Raises:
      ConfigError: naming ``trainer.loss.<key>`` for an unknown loss, an option the loss
        does not take, a value of the wrong type, or one the loss's own check refuses.
    """
    name = spec.get("name")
    defaults = loss_options(name)
    kwargs = {}
    for key, value in spec.items():
        if key == "name":
            continue
        if key not in defaults:
            takes = ", ".join(defaults) if defaults else "no options"
            raise ConfigError(f"'{LOSS_KEY}.{key}' is not an option of loss {name!r} "
                              f"(it takes: {takes})")
        kwargs[key] = _coerce_option(name, key, value, defaults[key])
    base = LOSS_FUNCTIONS[name]
    try:
        base(tf.constant(_PROBE_LABELS), tf.constant(_PROBE_EMBEDDINGS), **kwargs)
    except LossOptionError as e:
        raise ConfigError(f"'{LOSS_KEY}.{e.option}' {e.message} (loss {name!r})") from None

    def loss(labels, embeddings):
        return base(labels, embeddings, **kwargs)

    loss.__name__ = f"{name}_loss"
    loss.__qualname__ = loss.__name__
    return loss
