"""CGD (Combination of Global Descriptors) and a simple reference embedding model.

Written with ``tf_keras`` (Keras 2; TFT 1.16 needs it) and free of TFX imports.

    pixels [N, S, S, 3] float32 RGB 0..255
      -> backbone preprocessing (caffe: RGB->BGR, ImageNet mean subtracted)
      -> backbone feature map [N, h, w, C]
      -> CGD: one global descriptor per letter of ``cfg.descriptors``
         (S = SPoC/mean, M = MAC/max, G = GeM), each Dense(D/n, no bias) -> L2,
         concatenated -> L2                              => "embedding" [N, D]
      -> auxiliary head on the first raw descriptor:
         BatchNorm -> Dense(classes) -> / temperature   => "logits" [N, classes]

Both outputs are float32 whatever the mixed-precision policy.
Paper: Jun et al., "Combination of Multiple Global Descriptors for Image
Retrieval", arXiv:1903.10663.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras
from tf_keras import layers

from trainer import keras_autograph

# Before any model is traced: AutoGraph would rewrite all of tf_keras's layer code on
# every first trace (keras_autograph's doc: 18 s for the demo model's first predict).
keras_autograph.skip_tf_keras()

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_NOTOP_FILE)
IMAGENET_NOTOP_MD5 = "4d473c1dd8becc155b73f8504c6f6626"  # as tf_keras.applications.ResNet50
# Keras ResNet50 layers whose stride goes between stage 3 and stage 4 (conv5).
LAST_STRIDE_LAYERS = ("conv5_block1_0_conv", "conv5_block1_1_conv")


# --------------------------------------------------------------------------- layers

@tf_keras.saving.register_keras_serializable(package="cgd")
class CaffePreprocess(layers.Layer):
    """The ResNet50 input preprocessing: RGB 0..255 -> BGR minus the ImageNet mean."""

    def call(self, pixels):
        return tf_keras.applications.resnet50.preprocess_input(pixels)


@tf_keras.saving.register_keras_serializable(package="cgd")
class GeneralizedMeanPooling2D(layers.Layer):
    """GeM: (mean over h, w of clamp(x, eps)^p)^(1/p); p=1 is SPoC, p->inf is MAC.

    The clamp comes before the power so zeros and negatives give finite values
    and gradients. ``trainable_p`` learns p (as in Radenovic et al.).
    """

    def __init__(self, p=3.0, trainable_p=False, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.initial_p = float(p)
        self.trainable_p = bool(trainable_p)
        self.eps = float(eps)

    def build(self, input_shape):
        self.p = self.add_weight(
            name="p", shape=(), initializer=tf_keras.initializers.Constant(self.initial_p),
            trainable=self.trainable_p)

    def call(self, x):
        x = tf.maximum(x, self.eps)
        mean = tf.reduce_mean(tf.pow(x, self.p), axis=[1, 2])
        return tf.pow(mean, 1.0 / self.p)

    def get_config(self):
        return {**super().get_config(), "p": self.initial_p,
                "trainable_p": self.trainable_p, "eps": self.eps}


@tf_keras.saving.register_keras_serializable(package="cgd")
class L2Normalize(layers.Layer):
    """x / ||x||_2 along the last axis (tf.math.l2_normalize; keeps the sign of every component)."""

    def call(self, x):
        return tf.math.l2_normalize(x, axis=-1)


# --------------------------------------------------------------------------- backbones

def build_backbone(cfg, image_size: int) -> tf_keras.Model:
    """The backbone named by ``cfg.backbone``: preprocessed image -> feature map."""
    weights = backbone_weights_file(cfg)  # fails fast, before building anything
    if cfg.backbone == "resnet50":
        backbone = resnet50_backbone(image_size, cfg.remove_last_stride)
    elif cfg.backbone == "small":
        backbone = small_backbone(image_size, cfg.remove_last_stride)
    else:
        raise ValueError(f"unknown backbone {cfg.backbone!r} (expected 'resnet50' or 'small')")
    if weights:
        backbone.load_weights(weights)
    if cfg.freeze_batchnorm:
        freeze_batchnorm(backbone, affine=cfg.freeze_batchnorm_affine)
    return backbone


def resnet50_backbone(image_size: int, remove_last_stride: bool) -> tf_keras.Model:
    """Keras ResNet50 without its top, random init; optionally with stride 1 in conv5."""
    model = tf_keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    return without_last_stride(model) if remove_last_stride else model


def without_last_stride(model: tf_keras.Model) -> tf_keras.Model:
    """A copy of a Keras ResNet50 with stride 1 between stages 3 and 4 (2x larger conv5 map)."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] in LAST_STRIDE_LAYERS:
            layer["config"]["strides"] = (1, 1)
    copy = tf_keras.Model.from_config(config)
    copy.set_weights(model.get_weights())  # strides do not change any weight shape
    return copy


def small_backbone(image_size: int, remove_last_stride: bool = False) -> tf_keras.Model:
    """A tiny ResNet-style net for tests and the demo: 16x downsampling (8x without the
    last stride), 128 channels, about 0.3 M parameters.

    stem conv(32, /2) -> residual blocks 32 (/2), 64 (/2), 128 (/2, or /1).
    """
    inputs = tf_keras.Input((image_size, image_size, 3))
    x = conv_bn_relu(inputs, 32, strides=2, name="stem")
    x = residual_block(x, 32, strides=2, name="block1")
    x = residual_block(x, 64, strides=2, name="block2")
    x = residual_block(x, 128, strides=1 if remove_last_stride else 2, name="block3")
    return tf_keras.Model(inputs, x, name="small")


def conv_bn_relu(x, filters, strides=1, name=None):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def residual_block(x, filters, strides, name):
    """conv-bn-relu, conv-bn, plus a 1x1 projection shortcut, then ReLU."""
    shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                             name=f"{name}_proj")(x)
    shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    x = conv_bn_relu(x, filters, strides=strides, name=f"{name}_a")
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_b_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_b_bn")(x)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def keras_models_dir() -> str:
    """Keras's download cache for model weights (``$KERAS_HOME/models``, else ~/.keras/models)."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(base, "models")


def imagenet_weights_file(cfg, download=None) -> str:
    """The Keras ResNet-50 "notop" ImageNet weights: configured path, Keras cache, download.

    ``cfg.imagenet_weights_path`` wins when set (and must exist); else the Keras cache;
    else Keras's own downloader fetches it once into the cache, unless ``cfg.offline``.
    ``download`` replaces the downloader (tests never touch the network).
    """
    where = (f"put {IMAGENET_NOTOP_FILE} in {keras_models_dir()} (the Keras cache) or set "
             f"trainer.imagenet_weights_path; it is at {IMAGENET_NOTOP_URL}")
    if cfg.imagenet_weights_path:
        if not os.path.isfile(cfg.imagenet_weights_path):
            raise FileNotFoundError(
                f"ImageNet weights not found at {cfg.imagenet_weights_path!r} "
                f"(trainer.imagenet_weights_path): expected the Keras ResNet-50 notop file "
                f"{IMAGENET_NOTOP_FILE}")
        return cfg.imagenet_weights_path
    cached = os.path.join(keras_models_dir(), IMAGENET_NOTOP_FILE)
    if os.path.isfile(cached):
        return cached
    if cfg.offline:
        raise FileNotFoundError(f"ImageNet weights {IMAGENET_NOTOP_FILE} are not in the Keras "
                                f"cache and trainer.offline is true: {where}")
    download = download or tf_keras.utils.get_file
    try:
        return download(IMAGENET_NOTOP_FILE, IMAGENET_NOTOP_URL, cache_subdir="models",
                        file_hash=IMAGENET_NOTOP_MD5)
    except Exception as e:  # no network, proxy, disk: all end the same way for the user
        raise FileNotFoundError(f"could not download the ImageNet weights "
                                f"({type(e).__name__}: {e}): {where}") from None


def backbone_weights_file(cfg, download=None) -> str | None:
    """The weights file of ``cfg.backbone_weights``: None (random init), the ImageNet notop
    file (imagenet_weights_file) or a backbone checkpoint."""
    if cfg.backbone_weights == "none":
        return None
    if cfg.backbone_weights == "imagenet":
        if cfg.backbone != "resnet50":
            raise ValueError(f"backbone_weights 'imagenet' needs backbone 'resnet50', "
                             f"got {cfg.backbone!r}")
        return imagenet_weights_file(cfg, download)
    if cfg.backbone_weights == "checkpoint":
        path = cfg.checkpoint_path
        if not path or not (os.path.exists(path) or os.path.exists(path + ".index")):
            raise FileNotFoundError(
                f"backbone checkpoint not found at {path!r} (trainer.checkpoint_path): expected "
                f"a Keras weights file of the {cfg.backbone} backbone (.h5, or a TF "
                f"checkpoint prefix with its .index file)")
        return path
    raise ValueError(f"unknown backbone_weights {cfg.backbone_weights!r}")


def _inference_mode(training=None) -> bool:
    return False


def freeze_batchnorm(backbone: tf_keras.Model, affine: bool = False) -> None:
    """Freeze the BatchNorm statistics of ``backbone`` (and gamma/beta too if ``affine``).

    Keras 2's ``trainable = False`` on BatchNorm freezes both the statistics and
    gamma/beta; the reference recipe (leftthomas/CGD's ``set_bn_eval``) freezes only
    the statistics. BatchNormalization.call asks ``_get_training_value`` whether to
    use batch statistics and update the running ones: answering False always keeps
    the running statistics, while gamma and beta stay trainable variables.
    """
    for layer in backbone.submodules:
        if isinstance(layer, layers.BatchNormalization):
            layer._get_training_value = _inference_mode
            layer.frozen_statistics = True
            if affine:
                layer.trainable = False


# --------------------------------------------------------------------------- heads

def global_descriptor(letter: str, cfg):
    """The pooling layer of one CGD descriptor letter, computed in float32."""
    if letter == "S":
        return layers.GlobalAveragePooling2D(name="spoc", dtype="float32")
    if letter == "M":
        return layers.GlobalMaxPooling2D(name="mac", dtype="float32")
    if letter == "G":
        return GeneralizedMeanPooling2D(cfg.gem_p, cfg.gem_trainable, name="gem",
                                        dtype="float32")
    raise ValueError(f"unknown descriptor {letter!r} (expected S, M or G)")


def classification_head(descriptor, num_classes: int, temperature: float):
    """BN -> Dense(classes) -> logits / temperature (float32)."""
    x = layers.BatchNormalization(name="head_bn")(descriptor)
    x = layers.Dense(num_classes, name="head_fc")(x)
    return layers.Rescaling(1.0 / temperature, dtype="float32", name="logits")(x)


def cgd_heads(features, cfg, num_classes: int):
    """CGD embedding and auxiliary logits from a backbone feature map."""
    branch_dim = cfg.embedding_dim // len(cfg.descriptors)
    raw, branches = [], []
    for letter in cfg.descriptors:
        pool = global_descriptor(letter, cfg)
        descriptor = pool(features)
        raw.append(descriptor)
        x = layers.Dense(branch_dim, use_bias=False, name=f"{pool.name}_fc")(descriptor)
        branches.append(L2Normalize(dtype="float32", name=f"{pool.name}_l2")(x))
    x = branches[0] if len(branches) == 1 else layers.Concatenate(name="concat")(branches)
    embedding = L2Normalize(dtype="float32", name="embedding")(x)
    return embedding, classification_head(raw[0], num_classes, cfg.temperature)


def reference_heads(features, cfg, num_classes: int):
    """GAP -> Dense(D) -> L2, with the same classification head on the pooled features."""
    pooled = layers.GlobalAveragePooling2D(name="gap", dtype="float32")(features)
    x = layers.Dense(cfg.embedding_dim, name="embedding_fc")(pooled)
    embedding = L2Normalize(dtype="float32", name="embedding")(x)
    return embedding, classification_head(pooled, num_classes, cfg.temperature)


# --------------------------------------------------------------------------- models

def build_model(cfg, num_classes: int, image_size: int) -> tf_keras.Model:
    """pixels [N, S, S, 3] RGB 0..255 -> {"embedding": [N, D] unit norm, "logits": [N, classes]}.

    ``cfg`` carries the TrainerConfig attributes. Both outputs are float32.
    """
    pixels = tf_keras.Input((image_size, image_size, 3), dtype="float32", name="pixels")
    x = CaffePreprocess(name="preprocess", dtype="float32")(pixels)
    features = build_backbone(cfg, image_size)(x)
    if cfg.model == "cgd":
        embedding, logits = cgd_heads(features, cfg, num_classes)
    elif cfg.model == "reference":
        embedding, logits = reference_heads(features, cfg, num_classes)
    else:
        raise ValueError(f"unknown model {cfg.model!r} (expected 'cgd' or 'reference')")
    name = f"{cfg.model}_{cfg.backbone}" + (f"_{cfg.descriptors}" if cfg.model == "cgd" else "")
    return tf_keras.Model(pixels, {"embedding": embedding, "logits": logits}, name=name)


def embedding_model(model: tf_keras.Model) -> tf_keras.Model:
    """The same weights with only the embedding output (what is exported and served)."""
    return tf_keras.Model(model.inputs, model.get_layer("embedding").output,
                          name=f"{model.name}_embedding")
