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
