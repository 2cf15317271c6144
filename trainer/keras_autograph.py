"""Keep AutoGraph out of tf_keras's own code (no TFX imports).

TensorFlow's AutoGraph converts the Python code a ``tf.function`` calls, except
modules on its do-not-convert list (``tensorflow/python/autograph/core/config.py``),
which names ``keras`` but not ``tf_keras``: Keras 2 as a separate package, which
TF 2.16 needs for ``TF_USE_LEGACY_KERAS=1``. So every first trace of a tf_keras
model (``predict``, ``fit``, the SavedModel export) rewrites the call of every
layer and of the tf_keras functions it reaches, about 1,300 conversions: measured
on the demo's small model on 2 cores, the first ``predict`` took 18.0 s and the
first training step 25.5 s, against 1.4 s and 7.4 s with tf_keras on the list;
steps after tracing are as fast either way (docs/benchmarks.md, "Tracing").
tf_keras is Keras 2's code, which TensorFlow ran unconverted as ``keras`` up to
2.15; our own layers (``trainer.model``) are still converted.
"""

from __future__ import annotations

from tensorflow.python.autograph.core import config as autograph_config

MODULE = "tf_keras"


def skip_tf_keras() -> None:
    """Put tf_keras on AutoGraph's do-not-convert list (idempotent)."""
    rules = tuple(autograph_config.CONVERSION_RULES)
    if any(isinstance(rule, autograph_config.DoNotConvert) and rule.matches(MODULE)
           for rule in rules):
        return
    autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert(MODULE),) + rules
