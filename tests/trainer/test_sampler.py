"""P x K sampling invariants, determinism and augmentation."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from trainer import augmentation, sampler


def _image_set(seed=0, n_classes=7, size=8):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 9, size=n_classes)  # includes singleton and small classes
    labels = np.repeat(np.arange(10, 10 + n_classes), counts)
    images = rng.integers(0, 256, (len(labels), size, size, 3)).astype(np.uint8)
    return sampler.ImageSet(images, labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_batch_has_p_distinct_classes_of_k_images(seed):
    data = _image_set(seed)
    eligible = {c for c in np.unique(data.labels) if (data.labels == c).sum() >= 2}
    p, k = 3, 4
    batches = sampler.pk_index_batches(data.labels, p, k, seed)
    for _ in range(50):
        index = next(batches)
        labels = data.labels[index]
        assert len(index) == p * k
        classes, counts = np.unique(labels, return_counts=True)
        assert len(classes) == p and (counts == k).all()
        assert set(classes) <= eligible  # a singleton class is never drawn
        # Distinct images whenever the class has enough of them.
        for c in classes:
            chosen = index[labels == c]
            if (data.labels == c).sum() >= k:
                assert len(set(chosen)) == k


def test_too_few_classes_is_a_clear_error():
    data = _image_set(0, n_classes=2)
    with pytest.raises(ValueError, match="classes_per_batch"):
        next(sampler.pk_index_batches(data.labels, 5, 2, 0))


def test_dataset_is_deterministic_for_a_seed_and_shapes_are_static():
    data = _image_set(3)
    take = lambda s: [(x.numpy(), y["embedding"].numpy()) for x, y in  # noqa: E731
                      sampler.pk_dataset(data, 3, 2, seed=s, label_offset=10).take(3)]
    a, b, c = take(5), take(5), take(6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any((xa != xc).any() for (xa, _), (xc, _) in zip(a, c))
    x, y = next(iter(sampler.pk_dataset(data, 3, 2, seed=0, label_offset=10)))
    assert x.shape == (6, 8, 8, 3) and x.dtype == tf.float32
    np.testing.assert_array_equal(y["logits"].numpy(), y["embedding"].numpy() - 10)


def test_without_augmentation_pixels_are_the_stored_images():
    data = _image_set(4)
    x, y = next(iter(sampler.pk_dataset(data, 2, 2, seed=0, random_crop=False,
                                        random_flip=False)))
    stored = {tuple(img.ravel()) for img in data.images.astype(np.float32)}
    assert all(tuple(img.ravel()) in stored for img in x.numpy())


def test_augmentation_keeps_range_and_flip_mirrors():
    images = tf.constant(np.tile(np.arange(8, dtype=np.uint8)[None, None, :, None] * 30,
                                 (4, 8, 1, 3)))
    flipped = augmentation.augment(images, tf.constant([1, 2], tf.int64), random_crop=False,
                              random_flip=True).numpy()
    for out in flipped:  # each image is either itself or its mirror
        assert (out == images[0].numpy()).all() or (out == images[0].numpy()[:, ::-1]).all()
    cropped = augmentation.augment(images, tf.constant([3, 4], tf.int64), True, False).numpy()
    assert cropped.shape == (4, 8, 8, 3) and cropped.min() >= 0 and cropped.max() <= 255


def _previous_pk_index_batches(labels, p, k, seed, start_step=0):
    """pk_index_batches as it was before the class grouping became one sort."""
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    usable = sorted(c for c, idx in by_class.items() if len(idx) >= 2)
    for step in itertools.count(start_step):
        rng = np.random.default_rng([seed, step])
        classes = rng.choice(usable, size=p, replace=False)
        yield np.concatenate([
            rng.choice(by_class[c], size=k, replace=len(by_class[c]) < k) for c in classes])


@pytest.mark.parametrize("seed", [0, 1])
def test_the_index_stream_is_unchanged_so_older_runs_resume_identically(seed):
    labels = np.random.default_rng(seed).permutation(_image_set(seed, n_classes=12).labels)
    new = sampler.pk_index_batches(labels, 4, 3, seed, start_step=5)
    old = _previous_pk_index_batches(labels, 4, 3, seed, start_step=5)
    for a, b in itertools.islice(zip(new, old), 30):
        np.testing.assert_array_equal(a, b)


def test_load_image_set_with_a_wrong_count_is_an_error(tmp_path):
    data = _image_set(5)
    sampler.write_examples(str(tmp_path / "a.gz"), data.images, data.labels)
    loaded = sampler.load_image_set(str(tmp_path / "a.gz"), 8, count=len(data))
    np.testing.assert_array_equal(loaded.images, data.images)
    np.testing.assert_array_equal(loaded.labels, data.labels)
    for wrong in (len(data) - 1, len(data) + 1):
        with pytest.raises(ValueError, match="counted"):
            sampler.load_image_set(str(tmp_path / "a.gz"), 8, count=wrong)
