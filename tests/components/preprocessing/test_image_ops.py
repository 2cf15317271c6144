"""Pad-to-square and resize against an independent PIL/NumPy implementation."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.preprocessing import image_ops

# Bilinear with antialiasing in TF vs PIL's BILINEAR resampling (which also
# widens its filter on downscaling): same filter family, different rounding
# and edge handling. Stated tolerance: mean |diff| <= 1.5 and 99th pct <= 8
# grey levels (of 255).
MEAN_TOL, P99_TOL = 1.5, 8


def pil_pad_and_resize(image: Image.Image, size: int, fill) -> np.ndarray:
    w, h = image.size
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), tuple(fill))
    canvas.paste(image.convert("RGB"), ((side - w) // 2, (side - h) // 2))
    return np.asarray(canvas.resize((size, size), Image.BILINEAR))


def _jpeg(array: np.ndarray, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _smooth_image(h, w, seed):
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC))


@pytest.mark.parametrize("h, w, size", [(90, 160, 64), (150, 70, 64), (41, 100, 32), (64, 64, 48)])
def test_pad_and_resize_matches_pil(h, w, size):
    fill = (10, 128, 240)
    encoded = _jpeg(_smooth_image(h, w, seed=h * w))
    ours = image_ops.preprocess_bytes(tf.constant([encoded]), size, fill)[0].numpy()
    reference = pil_pad_and_resize(Image.open(io.BytesIO(encoded)), size, fill)
    diff = np.abs(ours.astype(int) - reference.astype(int))
    assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
    assert diff.mean() <= MEAN_TOL and np.percentile(diff, 99) <= P99_TOL, (diff.mean(),
                                                                         np.percentile(diff, 99))


def test_padding_is_centred_with_the_fill_colour():
    image = np.full((10, 30, 3), 200, np.uint8)  # landscape: pad 10 rows above and below
    padded = image_ops.pad_to_square(tf.constant(image), [1, 2, 3]).numpy()
    assert padded.shape == (30, 30, 3)
    assert (padded[:10] == [1, 2, 3]).all() and (padded[20:] == [1, 2, 3]).all()
    assert (padded[10:20] == 200).all()
    odd = image_ops.pad_to_square(tf.constant(np.zeros((3, 6, 3), np.uint8)), [9, 9, 9]).numpy()
    assert (odd[:, :, 0] == 9).sum(axis=1).tolist() == [6, 0, 0, 0, 6, 6]  # 1 above, 2 below


def test_grayscale_and_cmyk_become_rgb():
    array = _smooth_image(40, 60, seed=3)
    for mode in ("L", "CMYK"):
        decoded = image_ops.decode_rgb(tf.constant(_jpeg(array, mode))).numpy()
        reference = np.asarray(Image.open(io.BytesIO(_jpeg(array, mode))).convert("RGB"))
        assert decoded.shape == (40, 60, 3)
        assert np.abs(decoded.astype(int) - reference.astype(int)).mean() < 2


def test_png_is_decoded():
    array = _smooth_image(20, 30, seed=4)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    assert (image_ops.decode_rgb(tf.constant(buf.getvalue())).numpy() == array).all()


def test_serialize_round_trip_is_exact():
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8))
    back = image_ops.parse_images(image_ops.serialize_images(images), 8)
    assert (back.numpy() == images.numpy()).all()


def _previous_pad_and_resize(image: tf.Tensor, size: int, pad_value):
    """The first implementation (int32 shift by the fill, tf.pad, float32 resize), kept as
    the reference the faster one must equal bit for bit: stored data and served models
    must not change with it. Returns (square, resized)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.maximum(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    fill = tf.cast(tf.reshape(tf.constant(pad_value), [1, 1, -1]), tf.int32)
    padded = tf.pad(tf.cast(image, tf.int32) - fill,
                    [[top, side - height - top], [left, side - width - left], [0, 0]])
    square = tf.cast(padded + fill, image.dtype)
    resized = tf.image.resize(tf.cast(square, tf.float32), [size, size],
                              method=tf.image.ResizeMethod.BILINEAR, antialias=True)
    return square, tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


@pytest.mark.parametrize("h, w", [(480, 640), (450, 800), (700, 525), (333, 1000), (1, 7),
                                  (7, 1), (5, 5), (101, 37), (252, 252)])
def test_pad_and_resize_equal_the_previous_implementation_exactly(h, w):
    fill = [124, 116, 104]
    image = tf.constant(np.random.default_rng(h * w).integers(0, 256, (h, w, 3))
                        .astype(np.uint8))
    for size in (252, 32):
        square, resized = _previous_pad_and_resize(image, size, fill)
        np.testing.assert_array_equal(image_ops.pad_to_square(image, fill).numpy(),
                                      square.numpy())
        np.testing.assert_array_equal(image_ops.preprocess_pixels(image, size, fill).numpy(),
                                      resized.numpy())
