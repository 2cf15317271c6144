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
* Margins: each margin loss has its own default (``DEFAULT_MARGINS``, also its
  signature default); ``trainer.margin: null`` selects it and a number overrides it
  (``resolve_margin``).

References: Hermans et al. 2017 (arXiv 1703.07737, batch-hard); Yu et al. 2018
(arXiv 1807.11206, HAP2S); Schroff et al. 2015 (FaceNet, semi-hard); Song et al. 2016
(lifted structure); Sohn 2016 (N-pair); Wang et al. 2017 (angular); Hadsell et al.
2006 (contrastive).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import tensorflow as tf

# Distances below this (squared: _D2_EPS) are reported as exactly 0. It bounds the
# sqrt derivative 1/(2 sqrt(d2)) by 5e5, so gradients stay finite, and it is far
# below any distance that matters for ranking.
_D2_EPS = 1e-12

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

# Default margin of every configurable loss (core.names.LOSSES), in distance units;
# None: the loss has no margin. Used when ``trainer.margin`` is null, and as the
# functions' signature defaults. batch_hard / hap2s: CGD's 0.1 on unit vectors;
# semi_hard: FaceNet's 0.2 (FaceNet and TFA apply it to squared distances, here to
# plain ones); lifted: Song et al.'s alpha = 1.0; contrastive 0.5 (about half the
# typical distance between unit vectors of different classes). batch_hard_soft is
# listed with batch_hard's value but ignores it (softplus, no hinge).
DEFAULT_MARGINS: dict[str, Optional[float]] = {
    "batch_hard": 0.1,
    "batch_hard_soft": 0.1,
    "hap2s_exp": 0.1,
    "hap2s_poly": 0.1,
    "semi_hard": 0.2,
    "lifted": 1.0,
    "contrastive": 0.5,
    "angular": None,
    "npairs": None,
}

# N-pairs logits are similarities divided by this (core.config.yaml's default).
DEFAULT_NPAIRS_TEMPERATURE = 0.1


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


def batch_hard_triplet_loss(labels, embeddings, margin=DEFAULT_MARGINS["batch_hard"],
                            soft=False):
    """Batch-hard triplet loss (Hermans et al. 2017).

    ``L = mean_a [m + max_p D_ap - min_n D_an]_+``, or with ``soft=True``
    ``mean_a softplus(max_p D_ap - min_n D_an)``; the soft margin replaces the hinge
    and its margin, so ``margin`` is ignored when ``soft`` is True.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D].
      margin: hinge margin m >= 0 (distance units).
      soft: use the softplus ("soft margin") form.

    Returns:
      float32 scalar, mean over valid anchors (see module docstring); 0.0 if none.
    """
    labels, embeddings = _prepare(labels, embeddings)
    d = pairwise_distances(embeddings)
    pos, neg, valid = _anchor_masks(labels)
    gap = _masked_max(d, pos) - _masked_min(d, neg)  # [B]
    per_anchor = tf.nn.softplus(gap) if soft else tf.nn.relu(gap + margin)
    return _mean_over_valid(per_anchor, valid)


def hap2s_loss(labels, embeddings, margin=DEFAULT_MARGINS["hap2s_exp"], weighting="exp",
               sigma=0.5, alpha=10.0):
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
      sigma: temperature of the exp weighting (> 0); unused for "poly".
      alpha: exponent of the poly weighting (> 0); unused for "exp".

    Returns:
      float32 scalar, mean over valid anchors; 0.0 if none.
    """
    labels, embeddings = _prepare(labels, embeddings)
    d = pairwise_distances(embeddings)
    pos, neg, valid = _anchor_masks(labels)
    if weighting == "exp":
        logit_p, logit_n = d / sigma, -d / sigma
    elif weighting == "poly":
        log1p_d = tf.math.log1p(d)
        logit_p, logit_n = alpha * log1p_d, -2.0 * alpha * log1p_d
    else:
        raise ValueError(f"weighting must be 'exp' or 'poly', got {weighting!r}")
    w_p = tf.stop_gradient(_masked_softmax(logit_p, pos))  # [B, B], rows sum to 1
    w_n = tf.stop_gradient(_masked_softmax(logit_n, neg))
    d_p = tf.reduce_sum(w_p * d, axis=1)
    d_n = tf.reduce_sum(w_n * d, axis=1)
    return _mean_over_valid(tf.nn.relu(d_p - d_n + margin), valid)


def semi_hard_triplet_loss(labels, embeddings, margin=DEFAULT_MARGINS["semi_hard"]):
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
      margin: hinge margin m >= 0 (distance units; default 0.2).

    Returns:
      float32 scalar; 0.0 if no anchor is valid.

    Memory: builds [B, B, B] booleans/floats (B = 128: 2M entries).
    """
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


def lifted_structured_loss(labels, embeddings, margin=DEFAULT_MARGINS["lifted"]):
    """Smooth lifted structured loss (Song et al. 2016, eq. 4).

    For a positive pair (i, j):
    ``J_ij = D_ij + log(sum_{k in N(i)} exp(m - D_ik) + sum_{l in N(j)} exp(m - D_jl))``
    and the loss is ``1/2 [J_ij]_+^2`` averaged over the anchor's positives, then over
    valid anchors (the paper's ``1/(2|P|) sum_P [J_ij]_+^2`` for P x K batches). The two
    log-sum-exps are computed per row and combined with a stable logaddexp.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D].
      margin: alpha in the paper, in distance units.

    Returns:
      float32 scalar; 0.0 if no anchor is valid.
    """
    labels, embeddings = _prepare(labels, embeddings)
    d = pairwise_distances(embeddings)
    pos, neg, valid = _anchor_masks(labels)
    lse = _masked_logsumexp(margin - d, neg)  # [B]: log sum_{k in N(i)} exp(m - D_ik)
    li, lj = lse[:, None], lse[None, :]
    hi = tf.maximum(li, lj)
    j = d + hi + tf.math.log(tf.exp(li - hi) + tf.exp(lj - hi))  # [B, B]
    per_pair = 0.5 * tf.square(tf.nn.relu(j))
    return _mean_over_valid(_masked_mean(per_pair, pos), valid)


def npairs_loss(labels, embeddings, l2_reg=0.002, temperature=DEFAULT_NPAIRS_TEMPERATURE):
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
      l2_reg: weight of the embedding-norm penalty.
      temperature: divides the similarities (> 0); ``trainer.npairs_temperature``.

    Returns:
      float32 scalar; 0.0 if no anchor is valid.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    labels, embeddings = _prepare(labels, embeddings)
    pos, _, valid = _anchor_masks(labels)
    sim = tf.matmul(embeddings, embeddings, transpose_b=True) / temperature  # [B, B]
    others = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    log_z = _masked_logsumexp(sim, others)  # [B]
    # CE = -sum_j t_aj (s_aj - log_z) = log_z - mean_{p in P(a)} s_ap (sum t = 1).
    ce = log_z - _masked_mean(sim, pos)
    reg = 0.5 * l2_reg * tf.reduce_sum(tf.square(embeddings), axis=1)
    return _mean_over_valid(ce + reg, valid)


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
    if not 0.0 < degrees < 90.0:
        raise ValueError(f"degrees must be in (0, 90), got {degrees}")
    labels, embeddings = _prepare(labels, embeddings)
    pos, neg, valid = _anchor_masks(labels)
    t = math.tan(math.radians(degrees)) ** 2
    g = tf.matmul(embeddings, embeddings, transpose_b=True)  # [B, B]
    # (e_a + e_p) . e_n = g[a, n] + g[p, n]  -> [a, p, n]
    f = 4.0 * t * (g[:, None, :] + g[None, :, :]) - 2.0 * (1.0 + t) * g[:, :, None]
    mask = tf.logical_and(pos[:, :, None], neg[:, None, :])
    per_pair = _masked_logsumexp(f, mask, axis=2, add_one=True)  # [a, p]
    return _mean_over_valid(_masked_mean(per_pair, pos), valid)


def contrastive_loss(labels, embeddings, margin=DEFAULT_MARGINS["contrastive"]):
    """Contrastive loss (Hadsell et al. 2006) on non-squared distances.

    Per anchor: ``mean_p D_ap^2 + mean_n [m - D_an]_+^2`` (the two means are taken
    separately, so the many negatives do not drown the few positives), then the mean
    over valid anchors.

    Args:
      labels: int [B] or [B, 1].
      embeddings: float [B, D].
      margin: negatives closer than m are pushed away.

    Returns:
      float32 scalar; 0.0 if no anchor is valid.
    """
    labels, embeddings = _prepare(labels, embeddings)
    d = pairwise_distances(embeddings)
    pos, neg, valid = _anchor_masks(labels)
    per_anchor = (_masked_mean(tf.square(d), pos)
                  + _masked_mean(tf.square(tf.nn.relu(margin - d)), neg))
    return _mean_over_valid(per_anchor, valid)


# ------------------------------------------------------------------------ registry

# Names as in the config (core.names.LOSSES); values take (labels, embeddings,
# **hyperparameters).
LOSS_FUNCTIONS: dict[str, Callable[..., tf.Tensor]] = {
    "batch_hard": batch_hard_triplet_loss,
    "batch_hard_soft": functools.partial(batch_hard_triplet_loss, soft=True),
    "hap2s_exp": functools.partial(hap2s_loss, weighting="exp"),
    "hap2s_poly": functools.partial(hap2s_loss, weighting="poly"),
    "semi_hard": semi_hard_triplet_loss,
    "lifted": lifted_structured_loss,
    "npairs": npairs_loss,
    "angular": angular_loss,
    "contrastive": contrastive_loss,
}


def resolve_margin(cfg) -> Optional[float]:
    """The margin ``cfg.loss`` uses: ``cfg.margin`` if set, else ``DEFAULT_MARGINS``.

    Args:
      cfg: the trainer config (attributes ``loss`` and ``margin``; ``margin`` None
        means "the loss's own default").

    Returns:
      The margin, or None for a loss without one (angular, npairs), whatever
      ``cfg.margin`` says.
    """
    if cfg.loss not in DEFAULT_MARGINS:
        raise ValueError(f"trainer.loss must be one of {sorted(LOSS_FUNCTIONS)}, got {cfg.loss!r}")
    default = DEFAULT_MARGINS[cfg.loss]
    if default is None or cfg.margin is None:
        return default
    return float(cfg.margin)


def _hyperparameters(cfg) -> dict:
    """The keyword arguments LOSS_FUNCTIONS[cfg.loss] takes from the trainer config."""
    name = cfg.loss
    margin = resolve_margin(cfg)  # also rejects an unknown name
    if name == "batch_hard":
        return {"margin": margin}
    if name == "batch_hard_soft":
        return {}  # softplus has no margin
    if name == "hap2s_exp":
        return {"margin": margin, "sigma": cfg.hap2s_sigma}
    if name == "hap2s_poly":
        return {"margin": margin, "alpha": cfg.hap2s_alpha}
    if name in ("semi_hard", "lifted", "contrastive"):
        return {"margin": margin}
    if name == "npairs":
        return {"temperature": cfg.npairs_temperature}  # no margin; l2_reg keeps its default
    if name == "angular":
        return {"degrees": cfg.angular_degrees}
    raise ValueError(f"trainer.loss must be one of {sorted(LOSS_FUNCTIONS)}, got {name!r}")


def ranking_loss_from_config(trainer_cfg) -> LossFn:
    """The ranking loss named by ``trainer_cfg.loss``, hyperparameters bound.

    Args:
      trainer_cfg: an object with attributes ``loss``, ``margin`` (None: the loss's
        default), ``npairs_temperature``, ``hap2s_sigma``, ``hap2s_alpha`` and
        ``angular_degrees`` (``core.config.TrainerConfig``).

    Returns:
      ``fn(labels, embeddings) -> float32 scalar``, named ``<loss>_loss`` (Keras uses
      the name in metric logs).

    Margins (``resolve_margin``): batch_hard, hap2s_*, semi_hard, lifted and
    contrastive use ``trainer_cfg.margin``, or their ``DEFAULT_MARGINS`` entry when it
    is None; batch_hard_soft, npairs and angular have none (npairs uses
    ``npairs_temperature``, angular ``angular_degrees``).
    """
    kwargs = _hyperparameters(trainer_cfg)
    base = LOSS_FUNCTIONS[trainer_cfg.loss]

    def loss(labels, embeddings):
        return base(labels, embeddings, **kwargs)

    loss.__name__ = f"{trainer_cfg.loss}_loss"
    loss.__qualname__ = loss.__name__
    return loss
