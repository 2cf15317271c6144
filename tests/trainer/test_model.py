"""trainer/model.py: CGD heads, pooling math, backbones, weights, precision, export.

Uses the small backbone at 32-64 px and random weights; ResNet-50 is built only
at 64 px with a fake (random) ImageNet notop file. Nothing is downloaded.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from core.config import load_config
from trainer import model as M

IMAGENET_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def trainer_cfg(**overrides):
    """A validated TrainerConfig: the small backbone, random init, unless overridden."""
    base = {"backbone": "small", "backbone_weights": "none", "embedding_dim": 24,
            "descriptors": "SG", "remove_last_stride": False, "freeze_batchnorm": False}
    return load_config(overrides={"trainer": {**base, **overrides}}).trainer


def pixels(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def _seed():
    tf_keras.utils.set_random_seed(1)


# --------------------------------------------------------------------------- CGD outputs

@pytest.mark.parametrize("descriptors", ["S", "M", "G", "SM", "SG", "MG", "SMG", "GS", "GMS"])
def test_cgd_outputs(descriptors):
    cfg = trainer_cfg(descriptors=descriptors)
    model = M.build_model(cfg, num_classes=5, image_size=32)
    out = model(pixels(), training=False)

    assert set(out) == {"embedding", "logits"}
    emb, logits = out["embedding"].numpy(), out["logits"].numpy()
    assert emb.shape == (4, 24) and emb.dtype == np.float32
    assert logits.shape == (4, 5) and logits.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert (emb < 0).any(), "L2 normalisation must keep negative components"

    # One Dense(D/n, no bias) branch per letter, in the configured order, summing to D.
    names = {"S": "spoc", "M": "mac", "G": "gem"}
    fcs = [model.get_layer(f"{names[d]}_fc") for d in descriptors]
    assert sum(fc.units for fc in fcs) == cfg.embedding_dim
    assert all(fc.units == 24 // len(descriptors) and not fc.use_bias for fc in fcs)
    concat_order = [layer.name for layer in model.layers if layer.name.endswith("_l2")]
    assert concat_order == [f"{names[d]}_l2" for d in descriptors]

    # The auxiliary head reads the FIRST raw descriptor (before its Dense).
    first_pool = model.get_layer(names[descriptors[0]])
    assert model.get_layer("head_bn").input is first_pool.output


def test_each_branch_is_unit_norm_and_logits_use_temperature():
    cfg = trainer_cfg(descriptors="SMG", embedding_dim=30, temperature=0.25)
    model = M.build_model(cfg, num_classes=3, image_size=32)
    probe = tf_keras.Model(model.input, {name: model.get_layer(name).output
                                         for name in ("spoc_l2", "mac_l2", "gem_l2",
                                                      "head_fc", "logits", "embedding")})
    out = {k: v.numpy() for k, v in probe(pixels()).items()}
    for name in ("spoc_l2", "mac_l2", "gem_l2"):
        assert out[name].shape == (4, 10)
        np.testing.assert_allclose(np.linalg.norm(out[name], axis=1), 1.0, atol=1e-5)
    concat = np.concatenate([out["spoc_l2"], out["mac_l2"], out["gem_l2"]], axis=1)
    np.testing.assert_allclose(out["embedding"], concat / np.sqrt(3.0), atol=1e-6)
    np.testing.assert_allclose(out["logits"], out["head_fc"] / 0.25, rtol=1e-6)


def test_reference_model():
    model = M.build_model(trainer_cfg(model="reference", embedding_dim=16), 7, 32)
    out = model(pixels(3))
    assert out["embedding"].shape == (3, 16) and out["logits"].shape == (3, 7)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=1e-5)
    assert model.get_layer("head_bn").input is model.get_layer("gap").output


def test_embedding_model_keeps_only_the_embedding():
    model = M.build_model(trainer_cfg(), 5, 32)
    emb_model = M.embedding_model(model)
    x = pixels()
    np.testing.assert_allclose(emb_model(x).numpy(), model(x)["embedding"].numpy(), atol=1e-6)
    assert emb_model.input.name.startswith("pixels") and len(emb_model.outputs) == 1


# --------------------------------------------------------------------------- pooling math

def test_pooling_layers_match_numpy():
    x = np.random.default_rng(3).normal(0.5, 1.0, (2, 5, 6, 7)).astype(np.float32)
    eps, p = 1e-6, 3.0
    want = np.mean(np.maximum(x, eps) ** p, axis=(1, 2)) ** (1 / p)
    gem = M.GeneralizedMeanPooling2D(p=p, eps=eps)
    np.testing.assert_allclose(gem(x).numpy(), want, rtol=1e-5)

    cfg = trainer_cfg(gem_p=p)
    spoc, mac = M.global_descriptor("S", cfg), M.global_descriptor("M", cfg)
    np.testing.assert_allclose(spoc(x).numpy(), x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mac(x).numpy(), x.max(axis=(1, 2)), rtol=1e-6)

    relu = np.maximum(x, 0.0)  # GeM clamps, so p=1 equals SPoC on a non-negative map
    np.testing.assert_allclose(M.GeneralizedMeanPooling2D(p=1.0)(relu).numpy(),
                               relu.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    # Large p approaches MAC.
    np.testing.assert_allclose(M.GeneralizedMeanPooling2D(p=60.0)(relu).numpy(),
                               relu.max(axis=(1, 2)), rtol=0.1)


def test_gem_p_trainable_flag_and_config_round_trip():
    fixed = M.GeneralizedMeanPooling2D(p=3.0, trainable_p=False)
    fixed.build((None, 4, 4, 8))
    assert not fixed.trainable_weights and len(fixed.non_trainable_weights) == 1
    learned = M.GeneralizedMeanPooling2D.from_config(
        M.GeneralizedMeanPooling2D(p=2.5, trainable_p=True, eps=1e-5, name="g").get_config())
    learned.build((None, 4, 4, 8))
    assert len(learned.trainable_weights) == 1 and float(learned.p) == 2.5
    assert learned.eps == 1e-5 and learned.name == "g"


def test_gem_gradient_is_finite_with_zeros_and_negatives():
    gem = M.GeneralizedMeanPooling2D(p=3.0, trainable_p=True)
    x = tf.constant(np.stack([np.zeros((3, 3, 4)),
                              -np.ones((3, 3, 4)),
                              np.random.default_rng(0).normal(size=(3, 3, 4))]), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = gem(x)
        loss = tf.reduce_sum(y)
    assert np.isfinite(y.numpy()).all()
    for grad in tape.gradient(loss, [x, gem.p]):
        assert np.isfinite(grad.numpy()).all()
    assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, x)[2]))) > 0


# --------------------------------------------------------------------------- backbones

def test_preprocessing_is_the_backbone_own_inside_the_model():
    model = M.build_model(trainer_cfg(), 5, 32)
    x = pixels()
    manual = x[..., ::-1] - IMAGENET_MEAN_BGR  # RGB -> BGR, ImageNet mean subtracted
    np.testing.assert_allclose(model.get_layer("preprocess")(x).numpy(), manual, atol=1e-4)

    backbone = model.get_layer("small")
    seen = tf_keras.Model(model.input, backbone.get_output_at(0))(x).numpy()
    np.testing.assert_allclose(seen, backbone(manual).numpy(), rtol=1e-4, atol=1e-4)
    # ... and not the seed's /255 - 0.5 scaling.
    assert not np.allclose(seen, backbone(x / 255.0 - 0.5).numpy(), atol=1e-3)


def test_small_backbone_shapes_and_last_stride():
    cfg = trainer_cfg()
    assert M.build_backbone(cfg, 64).output_shape == (None, 4, 4, 128)
    no_stride = M.build_backbone(trainer_cfg(remove_last_stride=True), 64)
    assert no_stride.output_shape == (None, 8, 8, 128)
    assert 100_000 < no_stride.count_params() < 1_000_000


def bn_layers(model):
    return [l for l in model.submodules if isinstance(l, tf_keras.layers.BatchNormalization)]


def one_training_step(backbone):
    x = tf.constant(pixels() - 120.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(backbone(x, training=True)))
    grads = tape.gradient(loss, backbone.trainable_weights)
    tf_keras.optimizers.SGD(0.5).apply_gradients(zip(grads, backbone.trainable_weights))


@pytest.mark.parametrize("affine", [False, True])
def test_frozen_batchnorm_keeps_statistics_and_trains_gamma_beta_unless_affine(affine):
    frozen = M.build_backbone(trainer_cfg(freeze_batchnorm=True,
                                          freeze_batchnorm_affine=affine), 32)
    bns = bn_layers(frozen)
    assert bns and all(getattr(bn, "frozen_statistics", False) for bn in bns)
    x = pixels() - 120.0
    # Statistics are frozen: inference-mode normalisation even when training=True.
    np.testing.assert_allclose(frozen(x, training=True).numpy(),
                               frozen(x, training=False).numpy(), atol=1e-5)
    before = [(bn.moving_mean.numpy().copy(), bn.gamma.numpy().copy()) for bn in bns]
    one_training_step(frozen)
    for bn, (mean, gamma) in zip(bns, before):
        np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
        assert np.array_equal(bn.gamma.numpy(), gamma) == affine, bn.name
    assert any(l.trainable_weights for l in frozen.layers)  # convolutions still train


def test_unfrozen_batchnorm_updates_its_statistics():
    free = M.build_backbone(trainer_cfg(freeze_batchnorm=False), 32)
    bns = bn_layers(free)
    assert bns and not any(getattr(bn, "frozen_statistics", False) for bn in bns)
    before = [bn.moving_mean.numpy().copy() for bn in bns]
    one_training_step(free)
    assert any(not np.array_equal(bn.moving_mean.numpy(), m) for bn, m in zip(bns, before))


def test_checkpoint_weights_load(tmp_path):
    source = M.build_backbone(trainer_cfg(), 32)
    path = str(tmp_path / "small_backbone.h5")
    source.save_weights(path)
    cfg = trainer_cfg(backbone_weights="checkpoint", checkpoint_path=path)
    loaded = M.build_model(cfg, 5, 32).get_layer("small")
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_missing_weights_fail_fast_with_clear_errors(tmp_path):
    missing = str(tmp_path / "nowhere" / M.IMAGENET_NOTOP_FILE)
    cfg = trainer_cfg(backbone="resnet50", backbone_weights="imagenet",
                      imagenet_weights_path=missing)
    with pytest.raises(FileNotFoundError) as err:
        M.build_model(cfg, 5, 64)
    assert missing in str(err.value) and "trainer.imagenet_weights_path" in str(err.value)

    ckpt = str(tmp_path / "ckpt.h5")
    with pytest.raises(FileNotFoundError, match="ckpt.h5"):
        M.build_model(trainer_cfg(backbone_weights="checkpoint", checkpoint_path=ckpt), 5, 32)
    with pytest.raises(ValueError, match="resnet50"):
        M.build_model(trainer_cfg(backbone_weights="imagenet"), 5, 32)


def imagenet_cfg(**overrides):
    return trainer_cfg(backbone="resnet50", backbone_weights="imagenet", **overrides)


def test_imagenet_weights_come_from_the_keras_cache_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = tmp_path / "models" / M.IMAGENET_NOTOP_FILE
    cached.parent.mkdir()
    cached.write_bytes(b"h5")

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although the file is cached")

    assert M.imagenet_weights_file(imagenet_cfg(), download=no_download) == str(cached)


def test_imagenet_weights_are_downloaded_once_by_keras_unless_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    calls = []

    def fake_get_file(fname, origin, cache_subdir, file_hash):
        calls.append((fname, origin, cache_subdir, file_hash))
        return str(tmp_path / cache_subdir / fname)

    path = M.imagenet_weights_file(imagenet_cfg(), download=fake_get_file)
    assert calls == [(M.IMAGENET_NOTOP_FILE, M.IMAGENET_NOTOP_URL, "models",
                      M.IMAGENET_NOTOP_MD5)]
    assert path == str(tmp_path / "models" / M.IMAGENET_NOTOP_FILE)

    with pytest.raises(FileNotFoundError) as offline:
        M.imagenet_weights_file(imagenet_cfg(offline=True), download=fake_get_file)
    assert len(calls) == 1  # offline: never downloads
    for part in (M.IMAGENET_NOTOP_FILE, str(tmp_path / "models"), "trainer.offline"):
        assert part in str(offline.value)


def test_a_failed_download_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    with pytest.raises(FileNotFoundError) as err:
        M.imagenet_weights_file(imagenet_cfg(), download=no_network)
    message = str(err.value)
    assert "name resolution" in message and M.IMAGENET_NOTOP_FILE in message
    assert "trainer.imagenet_weights_path" in message and M.IMAGENET_NOTOP_URL in message


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
    """A random-init ResNet50 notop saved as the Keras notop h5 file, and its backbone."""
    tf_keras.utils.set_random_seed(7)
    resnet = M.resnet50_backbone(64, remove_last_stride=False)
    path = tmp_path_factory.mktemp("keras_models") / M.IMAGENET_NOTOP_FILE
    resnet.save_weights(str(path))
    return str(path), resnet


@pytest.mark.slow
def test_resnet50_imagenet_weights_last_stride_and_frozen_bn(fake_imagenet):
    path, reference = fake_imagenet
    assert reference.output_shape == (None, 2, 2, 2048)  # stride 32 at 64 px

    cfg = trainer_cfg(backbone="resnet50", backbone_weights="imagenet",
                      imagenet_weights_path=path, remove_last_stride=True,
                      freeze_batchnorm=True, descriptors="SMG", embedding_dim=48)
    model = M.build_model(cfg, 5, 64)
    backbone = model.get_layer("resnet50")
    assert backbone.output_shape == (None, 4, 4, 2048)  # stride 16: conv5 map doubled
    for name in M.LAST_STRIDE_LAYERS:
        assert tuple(backbone.get_layer(name).strides) == (1, 1)
    assert len(backbone.get_weights()) == len(reference.get_weights())
    for a, b in zip(reference.get_weights(), backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    bns = [l for l in backbone.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    assert len(bns) == 53 and all(getattr(bn, "frozen_statistics", False)
                                  and bn.trainable for bn in bns)  # gamma/beta still train

    out = model(pixels(2, 64))
    assert out["embedding"].shape == (2, 48) and out["logits"].shape == (2, 5)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- precision, saving

@pytest.fixture
def mixed_precision():
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("model_kind", ["cgd", "reference"])
def test_mixed_float16_outputs_are_float32(mixed_precision, model_kind):
    model = M.build_model(trainer_cfg(model=model_kind, descriptors="SMG"), 5, 32)
    assert model.get_layer("small").layers[1].compute_dtype == "float16"
    out = model(pixels())
    assert out["embedding"].dtype == tf.float32 and out["logits"].dtype == tf.float32
    np.testing.assert_allclose(np.linalg.norm(out["embedding"].numpy(), axis=1), 1.0, atol=1e-5)
    assert np.isfinite(out["logits"].numpy()).all()


def test_keras_and_saved_model_round_trip(tmp_path):
    cfg = trainer_cfg(descriptors="GSM", gem_trainable=True, embedding_dim=12)
    model = M.build_model(cfg, 4, 32)
    x = pixels()
    want = model(x)

    keras_path = str(tmp_path / "model.keras")
    model.save(keras_path)
    restored = tf_keras.models.load_model(keras_path)
    got = restored(x)
    for key in ("embedding", "logits"):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), atol=1e-5)
    assert restored.get_layer("gem").trainable_p

    # A SavedModel serving signature over the embedding model (a plain tf.Module that
    # tracks only the variables: Keras' own SavedModel export traces every layer, slowly).
    embed = M.embedding_model(model)
    module = tf.Module()
    module.weights = list(embed.variables)
    module.serve = tf.function(
        lambda batch: {"embedding": embed(batch, training=False)},
        input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="pixels")],
        autograph=False)
    export_dir = str(tmp_path / "saved_model")
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
    serving = tf.saved_model.load(export_dir).signatures["serving_default"]
    served = serving(pixels=tf.constant(x))["embedding"]
    np.testing.assert_allclose(served.numpy(), want["embedding"].numpy(), atol=1e-5)
