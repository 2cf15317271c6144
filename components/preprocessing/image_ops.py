"""Image preprocessing shared by Transform (training) and serving signatures.

Pure TensorFlow, no TFX: decode JPEG/PNG (grayscale and CMYK become RGB),
pad to a centred square with a fill colour, resize to ``size`` x ``size``.

The transformed image is kept as uint8 and stored as a serialized uint8
tensor (``tf.io.serialize_tensor``), ``size*size*3`` bytes plus a ~20-byte
header: 190 KB per example at the stored 252 px (3.1 GB for Cars196's 16k
images before gzip), 4x less than float32, and exact (no second lossy
encoding): the Trainer and the evaluator's transform graph read it with
``parse_images``, a copy, where a re-encoded JPEG would cost a decode per image
and lose detail. Transform writes it at
``transform.compression_level`` (stored by default;
components/preprocessing/transform_executor.py). The backbone's own
preprocessing (mean subtraction) happens inside the model.
"""

from __future__ import annotations

import tensorflow as tf


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG bytes (scalar string) -> uint8 [H, W, 3] RGB."""
    # decode_image handles JPEG (incl. grayscale and Adobe CMYK) and PNG;
    # channels=3 converts grayscale and CMYK to RGB.
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def pad_to_square(image: tf.Tensor, pad_value) -> tf.Tensor:
    """[H, W, C] -> [L, L, C] with L = max(H, W), image centred, border = pad_value per channel.

    With an odd difference the extra row/column goes after the image
    (bottom/right), as ``(L - H) // 2`` before.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.maximum(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    fill = tf.cast(tf.reshape(tf.constant(pad_value), [1, 1, -1]), image.dtype)
    # Bands of the fill colour around the image, in its own dtype: tf.pad only fills
    # with a scalar, and shifting the image by the fill in int32 costs 4x the memory and
    # several passes over a photo-sized image.
    rows = tf.concat([tf.tile(fill, [top, width, 1]), image,
                      tf.tile(fill, [side - height - top, width, 1])], axis=0)
    return tf.concat([tf.tile(fill, [side, left, 1]), rows,
                      tf.tile(fill, [side, side - width - left, 1])], axis=1)


def resize_square(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [L, L, 3] -> uint8 [size, size, 3], bilinear with antialiasing."""
    # The resize kernel reads uint8 directly (converting each pixel to float32 as a
    # cast would, exactly): no float32 copy of the whole square first.
    resized = tf.image.resize(image, [size, size], method=tf.image.ResizeMethod.BILINEAR,
                              antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def preprocess_pixels(image: tf.Tensor, size: int, pad_value) -> tf.Tensor:
    """uint8 [H, W, 3] -> uint8 [size, size, 3]: pad to square, then resize."""
    return resize_square(pad_to_square(image, pad_value), size)


def crop_to_box(image: tf.Tensor, box: tf.Tensor, margin: float = 0.0) -> tf.Tensor:
    """[H, W, C] -> the part inside ``box`` (ymin, xmin, ymax, xmax, normalised, as TFDS).

    ``margin`` widens the box on each side by that fraction of its height/width,
    clipped to the image; the crop keeps at least one pixel. [0, 0, 1, 1] is the
    whole image (what serving feeds: clients send images already cropped).
    """
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    box = tf.cast(tf.reshape(box, [4]), tf.float32)
    dy, dx = (box[2] - box[0]) * margin, (box[3] - box[1]) * margin
    y0 = tf.clip_by_value(tf.floor((box[0] - dy) * height), 0.0, height - 1.0)
    x0 = tf.clip_by_value(tf.floor((box[1] - dx) * width), 0.0, width - 1.0)
    y1 = tf.clip_by_value(tf.math.ceil((box[2] + dy) * height), y0 + 1.0, height)
    x1 = tf.clip_by_value(tf.math.ceil((box[3] + dx) * width), x0 + 1.0, width)
    y0, x0, y1, x1 = (tf.cast(v, tf.int32) for v in (y0, x0, y1, x1))
    return image[y0:y1, x0:x1]


def preprocess_bytes(image_bytes: tf.Tensor, size: int, pad_value, boxes=None,
                     margin: float = 0.0) -> tf.Tensor:
    """Batch of encoded images, string [N] -> uint8 [N, size, size, 3].

    With ``boxes`` (float [N, 4]) each image is first cropped to its box (crop_to_box).
    """
    spec = tf.TensorSpec([size, size, 3], tf.uint8)
    if boxes is None:
        return tf.map_fn(lambda b: preprocess_pixels(decode_rgb(b), size, pad_value),
                         image_bytes, fn_output_signature=spec)
    return tf.map_fn(
        lambda args: preprocess_pixels(crop_to_box(decode_rgb(args[0]), args[1], margin),
                                       size, pad_value),
        (image_bytes, tf.cast(boxes, tf.float32)), fn_output_signature=spec)


def center_crop(images: tf.Tensor, size: int) -> tf.Tensor:
    """[N, S, S, C] -> [N, size, size, C], the centre (the evaluation and serving view)."""
    images = tf.convert_to_tensor(images)
    offset = (tf.shape(images)[1] - size) // 2
    return images[:, offset:offset + size, offset:offset + size]


def serialize_images(images: tf.Tensor) -> tf.Tensor:
    """uint8 [N, S, S, 3] -> string [N], one serialized tensor per image."""
    return tf.map_fn(tf.io.serialize_tensor, images, fn_output_signature=tf.string)


def parse_images(serialized: tf.Tensor, size: int) -> tf.Tensor:
    """Inverse of serialize_images: string [N] -> uint8 [N, size, size, 3]."""
    return tf.map_fn(
        lambda s: tf.ensure_shape(tf.io.parse_tensor(s, tf.uint8), [size, size, 3]),
        serialized, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
