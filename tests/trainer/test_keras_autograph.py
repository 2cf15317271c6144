"""tf_keras's own code is not rewritten by AutoGraph; ours still is."""

import tensorflow as tf
import tf_keras
from tensorflow.python.autograph.core import config as autograph_config
from tensorflow.python.autograph.impl import conversion

from trainer import keras_autograph, model


def _tf_keras_rules():
    return [rule for rule in autograph_config.CONVERSION_RULES
            if isinstance(rule, autograph_config.DoNotConvert)
            and rule.matches(keras_autograph.MODULE)]


def test_importing_the_model_puts_tf_keras_on_the_do_not_convert_list_once():
    assert len(_tf_keras_rules()) == 1
    keras_autograph.skip_tf_keras()
    keras_autograph.skip_tf_keras()
    assert len(_tf_keras_rules()) == 1


def test_tf_keras_layers_run_as_written_and_our_layers_are_still_converted():
    conv = tf_keras.layers.Conv2D(4, 3)
    assert conversion.is_allowlisted(conv.call)
    assert conversion.is_allowlisted(tf_keras.layers.BatchNormalization().call)
    assert not conversion.is_allowlisted(model.GeneralizedMeanPooling2D().call)
    assert not conversion.is_allowlisted(model.L2Normalize().call)


def test_python_control_flow_in_our_code_is_still_converted_in_a_traced_model():
    # A data-dependent Python ``if`` only works in a tf.function when AutoGraph converts it.
    class SignFlip(tf_keras.layers.Layer):
        def call(self, x):
            if tf.reduce_sum(x) < 0:
                return -x
            return x

    inputs = tf_keras.Input((3,))
    net = tf_keras.Model(inputs, SignFlip()(tf_keras.layers.Dense(3, use_bias=False)(inputs)))
    traced = tf.function(lambda x: net(x))
    out = traced(tf.constant([[-1.0, -2.0, -3.0]])).numpy()
    assert (out.sum() >= 0)
