"""Training-batch augmentation: class-consistent hue rotation and keeping the last epoch."""

import numpy as np
import pytest
import tensorflow as tf

from trainer import augmentation, sampler, task


def _constant_images(colours):
    """One 4 x 4 image of a single colour per row of ``colours``."""
    colours = np.asarray(colours, np.float32)
    return np.broadcast_to(colours[:, None, None, :], (len(colours), 4, 4, 3)).copy()


def _rotate(colours, labels, seed=(5, 6), max_turn=0.5):
    out = augmentation.class_hue_rotation(
        tf.constant(_constant_images(colours)), tf.constant(labels, tf.int64),
        tf.constant(seed, tf.int64), max_turn).numpy()
    return out[:, 0, 0, :]


# Low-chroma colours: a rotation about the grey axis never leaves 0..255, no clipping.
MUTED = [[140, 120, 120], [120, 140, 120], [120, 120, 140], [130, 125, 110]]


def test_every_image_of_a_class_gets_the_same_rotation_and_classes_get_their_own():
    labels = [7, 7, 9, 9, 7, 3]
    colours = [MUTED[0]] * 6
    out = _rotate(colours, labels)
    np.testing.assert_allclose(out[0], out[1], atol=1e-3)
    np.testing.assert_allclose(out[0], out[4], atol=1e-3)
    np.testing.assert_allclose(out[2], out[3], atol=1e-3)
    # Same input colour, different classes: different random angles.
    assert np.abs(out[0] - out[2]).max() > 1.0
    assert np.abs(out[0] - out[5]).max() > 1.0
    # The same rotation for a class also maps its different colours consistently: a
    # linear map, so differences of inputs rotate like the inputs.
    two = _rotate([MUTED[1], MUTED[2]], [4, 4])
    one = _rotate([MUTED[1]], [4])
    assert np.linalg.norm(two[0] - two[1]) == pytest.approx(
        np.linalg.norm(np.subtract(MUTED[1], MUTED[2])), rel=1e-4)
    np.testing.assert_allclose(two[0], one[0], atol=1e-3)  # the class's angle, not position


def test_a_rotation_about_the_grey_axis_keeps_brightness_and_saturation_and_greys():
    colours = MUTED + [[90, 90, 90], [200, 200, 200]]
    out = _rotate(colours, [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(out.mean(axis=1), np.mean(colours, axis=1), atol=1e-3)
    chroma = lambda c: np.linalg.norm(c - c.mean(axis=1, keepdims=True), axis=1)
    np.testing.assert_allclose(chroma(out), chroma(np.asarray(colours, np.float32)),
                               atol=1e-3)
    np.testing.assert_allclose(out[4:], np.asarray(colours[4:], np.float32), atol=1e-3)
    assert np.abs(out[:4] - np.asarray(MUTED)).max() > 1.0  # the colours did turn


def _hue_angle(rgb):
    """The angle of a colour in the chroma plane (red 0, green 120, blue 240 degrees)."""
    r, g, b = np.asarray(rgb, np.float64).T
    return np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)) % 360


def test_the_hue_turns_by_the_drawn_angle_and_a_zero_turn_is_the_identity():
    assert _hue_angle([[200, 40, 40], [40, 200, 40], [40, 40, 200]]) == pytest.approx(
        [0, 120, 240])
    red = [[200, 40, 40]]
    np.testing.assert_allclose(_rotate(red, [0], max_turn=0.0)[0], red[0], atol=1e-4)
    for seed in range(5):
        # One class: its angle is the first of the batch's stateless draws.
        turn = tf.random.stateless_uniform([1], tf.constant([seed, 9], tf.int64),
                                           -0.5, 0.5).numpy()[0]
        out = _rotate(MUTED[:1], [0], seed=(seed, 9))
        turned = (_hue_angle(out) - _hue_angle(MUTED[:1]))[0] % 360
        assert turned == pytest.approx((360 * turn) % 360, abs=0.05)


def test_the_same_seed_gives_the_same_colours():
    labels = [1, 1, 2, 2]
    first = _rotate(MUTED, labels, seed=(1, 2))
    np.testing.assert_array_equal(first, _rotate(MUTED, labels, seed=(1, 2)))
    assert np.abs(first - _rotate(MUTED, labels, seed=(8, 8))).max() > 1.0


@pytest.mark.parametrize("hue_rotation", [0.0, 0.5])
def test_pk_batches_rotate_each_class_as_one_only_when_asked(hue_rotation):
    # Six classes of four images, every image the same colour: after the batch's
    # augmentation, images of one class share a colour; classes differ only with hue.
    labels = np.repeat(np.arange(6), 4)
    images = _constant_images([MUTED[0]] * len(labels)).astype(np.uint8)
    data = sampler.ImageSet(images, labels)
    dataset = sampler.pk_dataset(data, 3, 4, seed=11, random_crop=False, random_flip=False,
                                 hue_rotation=hue_rotation)
    for pixels, targets in dataset.take(3):
        colour = pixels.numpy()[:, 0, 0, :]
        batch_labels = targets["embedding"].numpy()
        per_class = {c: colour[batch_labels == c] for c in np.unique(batch_labels)}
        for rows in per_class.values():
            np.testing.assert_allclose(rows, np.repeat(rows[:1], len(rows), 0), atol=1e-3)
        firsts = np.stack([rows[0] for rows in per_class.values()])
        spread = np.abs(firsts - firsts[0]).max()
        if hue_rotation:
            assert spread > 1.0
        else:
            assert spread == 0.0
            np.testing.assert_array_equal(colour, np.float32(MUTED[0]) + 0 * colour)


class _Model:
    stop_training = False

    def __init__(self):
        self.weights = [np.zeros(1)]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [w.copy() for w in weights]


@pytest.mark.parametrize("keep_last, expected", [(False, 1), (True, 2)])
def test_model_selection_keeps_the_best_or_the_last_epoch(keep_last, expected, monkeypatch):
    valid = sampler.ImageSet(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4))
    callback = task.ValidationRecall(valid, patience=0, keep_last=keep_last)
    callback.model, callback.params = _Model(), {"epochs": 3}
    scores = iter([0.5, 0.9, 0.6])  # epoch 2 is the best, epoch 3 the last
    monkeypatch.setattr(callback, "recall_at_1", lambda: next(scores))
    for epoch in range(3):
        callback.model.weights = [np.full(1, float(epoch))]
        callback.on_epoch_end(epoch, {"loss": 1.0})
    callback.on_train_end()
    assert callback.model.weights[0][0] == expected  # each epoch's weights hold its index
    assert callback.selected_epoch == expected
    assert callback.best_epoch == 1
