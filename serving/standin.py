"""A stand-in SavedModel with the trainer's export contract (no training needed).

``serving_default``: images string [N] -> embedding float32 [N, dim];
``pixels``: uint8 [N, H, W, 3] -> embedding. Decode, resize to ``size``, a fixed
random projection (``seed``), L2 norm. Used by the serving tests and benchmark,
and handy to try ``cgd serve`` without running the pipeline.
"""

from __future__ import annotations

import numpy as np

from core.names import (EMBEDDING_OUTPUT, IMAGES_INPUT, PIXELS_INPUT, PIXELS_SIGNATURE,
                        SERVING_SIGNATURE)


def write_stand_in_model(export_dir: str, size: int = 32, dim: int = 128, seed: int = 0) -> None:
    import tensorflow as tf

    class StandIn(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.RandomState(seed)
            self.w = tf.Variable(rng.randn(size * size * 3, dim).astype(np.float32),
                                 trainable=False)

        def _embed(self, x):
            x = tf.reshape(x / 255.0, [-1, size * size * 3])
            return {EMBEDDING_OUTPUT: tf.math.l2_normalize(tf.matmul(x, self.w), axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
        def serve_images(self, images):
            def one(data):
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
                return tf.image.resize(tf.cast(image, tf.float32), [size, size])
            return self._embed(tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(
                [size, size, 3], tf.float32)))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                    name=PIXELS_INPUT)])
        def serve_pixels(self, pixels):
            return self._embed(tf.image.resize(tf.cast(pixels, tf.float32), [size, size]))

    module = StandIn()
    tf.saved_model.save(module, str(export_dir), signatures={
        SERVING_SIGNATURE: module.serve_images, PIXELS_SIGNATURE: module.serve_pixels})
