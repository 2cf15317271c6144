"""One typed, validated configuration for the whole product.

Defaults live in ``core/config.yaml`` (shipped with the package); a user file
overrides only the keys it names. ``load_config`` is the single edge where YAML
becomes a typed ``Config``: every key is checked for existence, type and range,
and errors name the dotted key and the file. Nothing downstream re-validates.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from core.dataset_spec import DatasetSpec, all_specs, dataset_names, shared_options, spec_for
from core.errors import ConfigError
from core.names import EVAL_GALLERY, GALLERY_INDEX_KINDS, LOSSES

DEFAULTS_FILE = Path(__file__).with_name("config.yaml")
DEMO_FILE = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"

KUBEFLOW_TARGETS = ("kfp", "vertex")
CROP_PROTOCOLS = ("none", "bbox")
# Vertex AI's names for the accelerators it schedules (aiplatform AcceleratorType).
VERTEX_ACCELERATORS = (
    "NVIDIA_TESLA_T4", "NVIDIA_TESLA_V100", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_P4",
    "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB", "NVIDIA_L4", "NVIDIA_H100_80GB",
    "NVIDIA_H100_MEGA_80GB", "NVIDIA_H200_141GB",
)
# Google Cloud's formats: a project ID (optionally domain-scoped, "example.com:proj"), a
# region ("us-central1", "europe-west4"; Vertex AI Pipelines runs in regions only) and a
# service account's email. The region list itself is the SDK's (kubeflow/vertex.py).
GCP_PROJECT_PATTERN = r"(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
GCP_REGION_PATTERN = r"[a-z]+(?:-[a-z]+)+[0-9]+"
SERVICE_ACCOUNT_PATTERN = r"[^@\s]+@[^@\s]+\.[^@\s]+"
# A Kubernetes namespace is a DNS-1123 label; multi-user KFP reads it as the profile.
K8S_NAMESPACE_PATTERN = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


def _path(names: tuple[str, ...] = (), **kw):
    """A field holding a filesystem path: expanded and made absolute at load (relative to
    the file that sets it). ``names``: values that name something rather than a path
    (gallery_index.gallery's "eval"), kept as they are."""
    return dataclasses.field(metadata={"path": True, "names": names}, **kw)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    name: str
    root: str = _path()
    metadata_path: str = _path()
    serving_dir: str = _path()
    enable_cache: bool
    beam_args: list[str]

    def check(self, err):
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            err("name", "must be non-empty and use only letters, digits, '-' and '_'")


# evaluator.baseline_rule: how the paired interval of ΔRecall@1 (candidate - production)
# decides. non_inferior: bless only when its LOWER bound is >= -baseline_tolerance (the
# candidate proves it is at most the tolerance worse); not_significantly_worse: refuse only
# when its UPPER bound is < -baseline_tolerance (production must prove the candidate worse).
BASELINE_RULES = ("non_inferior", "not_significantly_worse")


def retrieval_split(class_id_1based: int, train_classes, eval_classes,
                    validation_classes: int) -> str | None:
    """Class-disjoint retrieval split of a 1-based class: 'train', 'valid', 'eval' or None.

    The last ``validation_classes`` classes of the train range are held out as
    'valid' (model selection); the eval classes are never used for selection.
    """
    t0, t1 = int(train_classes[0]), int(train_classes[1])
    if t0 <= class_id_1based <= t1:
        return "valid" if class_id_1based > t1 - int(validation_classes) else "train"
    if int(eval_classes[0]) <= class_id_1based <= int(eval_classes[1]):
        return "eval"
    return None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The ``data`` section. What each dataset is (class ranges or its own protocol, boxes,
    its options) is its spec's (``components/datasets/<name>/spec.py``); the fields from
    ``labels_csv`` on are datasets' options, each checked by the spec that takes it."""
    dataset: str
    source_dir: str = _path()
    file_pattern: str
    train_classes: Optional[list[int]]
    eval_classes: Optional[list[int]]
    validation_classes: int
    on_corrupt_image: str
    num_shards: int
    labels_csv: str
    eval_fraction: float
    split_seed: int

    def check(self, err):
        if self.dataset not in dataset_names():
            err("dataset", f"must be one of {list(dataset_names())}, got {self.dataset!r}")
        if self.spec.class_ranges is not None:
            num_classes = self.spec.class_ranges.num_classes
            for key in ("train_classes", "eval_classes"):
                lo_hi = getattr(self, key)
                if lo_hi is not None and (len(lo_hi) != 2
                                          or not 1 <= lo_hi[0] <= lo_hi[1] <= num_classes):
                    err(key, f"must be [first, last] with 1 <= first <= last <= {num_classes} "
                             f"({self.dataset} has {num_classes} classes), got {lo_hi}")
            t, e = self.train_range, self.eval_range
            if t[0] <= e[1] and e[0] <= t[1]:
                err("eval_classes", f"overlaps train_classes {t}: retrieval needs class-disjoint "
                                    "splits")
            n_train = t[1] - t[0] + 1
            if not 0 <= self.validation_classes < n_train:
                err("validation_classes",
                    f"must be in [0, {n_train - 1}] (train has {n_train} classes)")
        else:
            for key in ("train_classes", "eval_classes"):
                if getattr(self, key) is not None:
                    err(key, f"must be null for dataset {self.dataset!r}, which is split by its "
                             "own protocol (see the README's dataset table)")
            if self.validation_classes < 0:
                err("validation_classes", "must be >= 0")
        for option in self.spec.options:
            problem = option.problem(getattr(self, option.name))
            if problem:
                err(option.name, problem)
        for name, (default, owners) in shared_options().items():
            if name not in self.source_options and getattr(self, name) != default:
                err(name, f"is an option of dataset {', '.join(map(repr, owners))} only "
                          f"(dataset is {self.dataset!r}); remove it")
        if not self.file_pattern or self.file_pattern.startswith("/"):
            err("file_pattern", "must be a non-empty pattern relative to source_dir")
        if self.on_corrupt_image not in ("skip", "fail"):
            err("on_corrupt_image", f"must be 'skip' or 'fail', got {self.on_corrupt_image!r}")
        if self.num_shards < 0:
            err("num_shards", "must be >= 0")

    @property
    def spec(self) -> DatasetSpec:
        """The chosen dataset's spec (``components/datasets/<dataset>/spec.py``)."""
        return spec_for(self.dataset)

    @property
    def split_by_class_ranges(self) -> bool:
        return self.spec.class_ranges is not None

    @property
    def train_range(self) -> Optional[list[int]]:
        """The 1-based inclusive training class range (the dataset's standard one unless
        set); None for datasets split by their own protocol."""
        if not self.split_by_class_ranges:
            return None
        return list(self.train_classes or self.spec.class_ranges.train)

    @property
    def eval_range(self) -> Optional[list[int]]:
        if not self.split_by_class_ranges:
            return None
        return list(self.eval_classes or self.spec.class_ranges.eval)

    def split_of_class(self, class_id_1based: int) -> str | None:
        """The output split ('train', 'valid', 'eval') of a 1-based class, or None
        (class-range datasets only)."""
        return retrieval_split(class_id_1based, self.train_range, self.eval_range,
                               self.validation_classes)

    def split_rule(self, evaluator: "EvaluatorConfig") -> dict:
        """The JSON-able rule the ExampleGen executor applies: which source, how to split
        (class ranges, or the dataset's protocol with the last ``validation_classes``
        training classes held out), the corrupt-image policy, the source's options, and
        the least a split must hold to judge a model (``evaluator.min_eval_classes`` and
        ``min_queries``, for the 'eval' and 'valid' splits; ingestion fails below them)."""
        return {"dataset": self.dataset,
                "min_classes": evaluator.min_eval_classes,
                "min_queries": evaluator.min_queries,
                "train_classes": self.train_range,
                "eval_classes": self.eval_range,
                "validation_classes": self.validation_classes,
                "output_splits": self.output_splits,
                "on_corrupt_image": self.on_corrupt_image,
                "source_options": self.source_options}

    @property
    def source_options(self) -> dict:
        """Keyword options of the dataset's source: the ones its spec declares."""
        return {option.name: getattr(self, option.name) for option in self.spec.options}

    @property
    def output_splits(self) -> list[str]:
        return ["train", "valid", "eval"] if self.validation_classes else ["train", "eval"]

    @property
    def num_train_classes(self) -> Optional[int]:
        """Classes the classification head sees (training minus hold-out) of a class-range
        dataset; None for the others (the Trainer counts them in the data)."""
        if not self.split_by_class_ranges:
            return None
        return self.train_range[1] - self.train_range[0] + 1 - self.validation_classes


# A ranking loss needs a negative class: the least a 'train' split can hold.
MIN_TRAIN_CLASSES = 2


def class_range_split_problems(data: DataConfig,
                               evaluator: "EvaluatorConfig") -> list[tuple[str, str]]:
    """(dotted key, problem) of a class-range split that cannot train or judge, known at load.

    The class counts of cars196 and cub200 follow from the configured ranges; the images
    per class (and so the queries) are known only at ingestion, which checks the rest
    (``components/example_gen/sources.py``).
    """
    if not data.split_by_class_ranges:
        return []
    problems = []
    need = evaluator.min_eval_classes
    (t0, t1), (e0, e1) = data.train_range, data.eval_range
    if e1 - e0 + 1 < need:
        problems.append(("data.eval_classes", (
            f"{data.eval_range} has {e1 - e0 + 1} class(es), fewer than "
            f"evaluator.min_eval_classes {need}: the eval split could not judge a model "
            "(one class: every neighbour matches); widen data.eval_classes")))
    held_out = data.validation_classes
    if 0 < held_out < need:
        problems.append(("data.validation_classes", (
            f"{held_out} held-out class(es) cannot select a model (fewer than "
            f"evaluator.min_eval_classes {need}); use 0 (no hold-out: selection on the "
            f"training classes) or at least {need}")))
    left = t1 - t0 + 1 - held_out
    if left < MIN_TRAIN_CLASSES:
        problems.append(("data.validation_classes", (
            f"{held_out} leaves {left} of the {t1 - t0 + 1} classes of data.train_classes "
            f"{data.train_range} for training, fewer than {MIN_TRAIN_CLASSES} (a ranking "
            "loss needs a negative class); lower data.validation_classes or widen "
            "data.train_classes")))
    return problems


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    image_size: int
    pad_value: list[int]
    crop: str
    crop_margin: float
    compression_level: int

    def check(self, err):
        if not 0 <= self.compression_level <= 9:
            err("compression_level", f"must be a gzip level in [0, 9], got "
                f"{self.compression_level}")
        if not 16 <= self.image_size <= 1024:
            err("image_size", f"must be in [16, 1024], got {self.image_size}")
        if len(self.pad_value) != 3 or not all(0 <= v <= 255 for v in self.pad_value):
            err("pad_value", f"must be three values in [0, 255], got {self.pad_value}")
        if self.crop not in CROP_PROTOCOLS:
            err("crop", f"must be one of {list(CROP_PROTOCOLS)}, got {self.crop!r}")
        if not 0 <= self.crop_margin <= 1:
            err("crop_margin", f"must be in [0, 1] (a fraction of the box size), got "
                f"{self.crop_margin}")


def _parse_loss(value: Any, dotted: str, source: str) -> dict:
    """``trainer.loss``: a mapping ``{name: <loss>, <option>: <value>, ...}``, or just the
    name (all options at their defaults). Option values are scalars; which options a loss
    takes is the loss's to say (trainer.losses.bind_loss)."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: '{dotted}' must be a mapping {{name: <loss>, "
                          f"<option>: <value>, ...}} or a loss name, got "
                          f"{type(value).__name__} {value!r}")
    if value.get("name") not in LOSSES:
        raise ConfigError(f"{source}: '{dotted}.name' must be one of {list(LOSSES)}, got "
                          f"{value.get('name')!r}")
    for key, option in value.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{source}: '{dotted}.{key}' is not an option name")
        if key != "name" and (option is None or not isinstance(option, (bool, int, float, str))):
            raise ConfigError(f"{source}: '{dotted}.{key}' must be a number, a string or a "
                              f"boolean, got {type(option).__name__} {option!r}")
    return dict(value)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    model: str
    backbone: str
    backbone_weights: str
    imagenet_weights_path: str = _path()
    checkpoint_path: str = _path()
    offline: bool
    remove_last_stride: bool
    freeze_batchnorm: bool
    freeze_batchnorm_affine: bool
    input_size: int
    descriptors: str
    embedding_dim: int
    gem_p: float
    gem_trainable: bool
    classification_loss_weight: float
    temperature: float
    label_smoothing: float
    # {"name": <core.names.LOSSES entry>, <option>: <value>, ...}: the ranking loss and the
    # options it is given. The options are the loss's (trainer/losses.py: its function's
    # keyword parameters); core cannot import the trainer, so here only the shape and the
    # name are checked, and trainer.losses.bind_loss checks the options (pipeline
    # construction calls it, so a wrong option fails before any component runs).
    loss: dict = dataclasses.field(metadata={"parse": _parse_loss})
    classes_per_batch: int
    images_per_class: int
    optimizer: str
    learning_rate: float
    lr_schedule: str
    epochs: int
    steps_per_epoch: int
    early_stopping_patience: int
    model_selection: str
    random_crop: bool
    random_flip: bool
    class_hue_rotation: float
    mixed_precision: str
    jit_compile: bool
    steps_per_execution: int
    seed: int
    sampler_memory_budget_mb: int

    def check(self, err):
        choices = {
            "model": ("cgd", "reference"),
            "backbone": ("resnet50", "small"),
            "backbone_weights": ("none", "imagenet", "checkpoint"),
            "optimizer": ("adam", "sgd"),
            "lr_schedule": ("constant", "cosine", "step"),
            "model_selection": ("best", "last"),
            "mixed_precision": ("auto", "on", "off"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                err(key, f"must be one of {list(allowed)}, got {getattr(self, key)!r}")
        d = self.descriptors
        if not d or set(d) - set("SMG") or len(set(d)) != len(d):
            err("descriptors", f"must be an ordered combination of distinct S, M, G, got {d!r}")
        elif self.embedding_dim % len(d):
            err("embedding_dim", f"{self.embedding_dim} is not divisible by {len(d)} descriptors")
        if self.embedding_dim < 2:
            err("embedding_dim", "must be >= 2")
        if self.sampler_memory_budget_mb < 1:
            err("sampler_memory_budget_mb", f"must be >= 1, got {self.sampler_memory_budget_mb}")
        if self.backbone_weights == "checkpoint" and not self.checkpoint_path:
            err("checkpoint_path", "must be set when backbone_weights is 'checkpoint'")
        positive = ("gem_p", "temperature", "learning_rate")
        for key in positive:
            if not getattr(self, key) > 0:
                err(key, f"must be > 0, got {getattr(self, key)}")
        if not 0 <= self.label_smoothing < 1:
            err("label_smoothing", "must be in [0, 1)")
        if self.classification_loss_weight < 0:
            err("classification_loss_weight", "must be >= 0")
        if not 0 <= self.class_hue_rotation <= 0.5:
            err("class_hue_rotation", f"must be in [0, 0.5] (a fraction of a turn), got "
                                      f"{self.class_hue_rotation}")
        if self.input_size < 0 or 0 < self.input_size < 16:
            err("input_size", f"must be 0 (= transform.image_size) or >= 16, got {self.input_size}")
        if self.steps_per_execution < 1:
            err("steps_per_execution", "must be >= 1")
        if self.backbone_weights == "imagenet" and self.backbone != "resnet50":
            err("backbone_weights", f"'imagenet' needs backbone 'resnet50', got "
                f"{self.backbone!r} (use none or checkpoint)")
        if self.classes_per_batch < 2:
            err("classes_per_batch", "must be >= 2 (a batch needs negatives)")
        if self.images_per_class < 2:
            err("images_per_class", "must be >= 2 (a batch needs positives)")
        for key in ("epochs", "steps_per_epoch"):
            if getattr(self, key) < 1:
                err(key, "must be >= 1")
        if self.early_stopping_patience < 0:
            err("early_stopping_patience", "must be >= 0")

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.images_per_class

    @property
    def loss_name(self) -> str:
        return self.loss["name"]


# The flat per-loss keys of the old trainer section, now options of the loss itself.
_MOVED_LOSS_KEYS = {
    "trainer.margin": "margin",
    "trainer.hap2s_sigma": "sigma",
    "trainer.hap2s_alpha": "alpha",
    "trainer.npairs_temperature": "temperature",
    "trainer.angular_degrees": "degrees",
}
# Mappings that replace the default as a whole instead of being merged key by key: a loss's
# options belong to that loss, so a file choosing another loss must not inherit them.
_REPLACED_WHOLE = {"trainer.loss"}


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
    recall_ks: list[int]
    recall_threshold: float
    baseline_rule: str
    baseline_tolerance: float
    confidence_level: float
    bootstrap_samples: int
    min_eval_classes: int
    min_queries: int
    ranking_queries: int
    block_size: int

    def check(self, err):
        if self.baseline_rule not in BASELINE_RULES:
            err("baseline_rule", f"must be one of {list(BASELINE_RULES)}, "
                                 f"got {self.baseline_rule!r}")
        # One class: every neighbour is a match and Recall@K is 1 for any model.
        if self.min_eval_classes < 2:
            err("min_eval_classes", f"must be >= 2 (with one class every neighbour matches), "
                                    f"got {self.min_eval_classes}")
        if self.min_queries < 1:
            err("min_queries", f"must be >= 1, got {self.min_queries}")
        if not self.recall_ks or any(k < 1 for k in self.recall_ks):
            err("recall_ks", f"must be a non-empty list of positive integers, got {self.recall_ks}")
        if not 0 <= self.recall_threshold <= 1:
            err("recall_threshold", "must be in [0, 1]")
        if not 0 <= self.baseline_tolerance <= 1:
            err("baseline_tolerance", "must be in [0, 1]")
        if not 0.5 <= self.confidence_level < 1:
            err("confidence_level", f"must be in [0.5, 1), got {self.confidence_level}")
        if self.bootstrap_samples < 100:
            err("bootstrap_samples", f"must be >= 100, got {self.bootstrap_samples}")
        if self.ranking_queries < 1 or self.block_size < 1:
            err("ranking_queries" if self.ranking_queries < 1 else "block_size", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    model_name: str
    host: str
    grpc_port: int
    rest_port: int
    poll_seconds: float
    max_request_bytes: int
    max_batch_size: int
    batch_timeout_ms: float

    def check(self, err):
        for key in ("grpc_port", "rest_port"):
            if not 0 <= getattr(self, key) <= 65535:
                err(key, "must be a port in [0, 65535]")
        if not self.model_name or "/" in self.model_name:
            err("model_name", "must be non-empty and contain no '/'")
        if self.poll_seconds <= 0 or self.max_request_bytes <= 0:
            err("poll_seconds" if self.poll_seconds <= 0 else "max_request_bytes", "must be > 0")
        if self.max_batch_size < 0:
            err("max_batch_size", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class GalleryIndexConfig:
    """The gallery index the pipeline builds for a candidate and pushes with it (#25);
    search/index.py reads every key but enabled and gallery (the pipeline's)."""
    enabled: bool
    gallery: str = _path(names=(EVAL_GALLERY,))
    kind: str
    exact_below: int
    nlist: int
    nprobe: int
    pq_m: int
    hnsw_m: int
    ef_search: int
    recall_k: int
    recall_floor: float
    recall_queries: int
    seed: int

    def check(self, err):
        if not self.gallery.strip():
            err("gallery", f"must be {EVAL_GALLERY!r} (the eval split) or the path of a "
                           "folder of images or of a CSV catalogue")
        if self.kind not in GALLERY_INDEX_KINDS:
            err("kind", f"must be one of {list(GALLERY_INDEX_KINDS)}, got {self.kind!r}")
        for key, low in (("exact_below", 0), ("nlist", 0), ("pq_m", 0), ("nprobe", 1),
                         ("ef_search", 1), ("recall_k", 1), ("recall_queries", 1),
                         ("seed", 0)):
            if getattr(self, key) < low:
                err(key, f"must be >= {low}, got {getattr(self, key)}")
        if not 2 <= self.hnsw_m <= 256:
            err("hnsw_m", f"must be in [2, 256] (graph links per node), got {self.hnsw_m}")
        if self.nlist and self.nprobe > self.nlist:
            err("nprobe", f"{self.nprobe} must be <= nlist {self.nlist} (lists probed per "
                          "query)")
        if not 0.0 <= self.recall_floor <= 1.0:
            err("recall_floor", f"must be in [0, 1], got {self.recall_floor}")


@dataclasses.dataclass(frozen=True)
class KubeflowConfig:
    target: str
    image: str
    pipeline_root: str
    gpus: int
    gpu_limit_resource: str
    vertex_accelerator: str
    vertex_project: str
    vertex_location: str
    vertex_service_account: str
    memory: str
    cpu: str
    gpu_node_selector: list[str]
    volumes: list[str]
    beam_args: list[str]
    host: str
    namespace: str
    schedule_cron: str

    def check(self, err):
        if self.target not in KUBEFLOW_TARGETS:
            err("target", f"must be one of {', '.join(KUBEFLOW_TARGETS)}, got {self.target!r}")
        if self.gpus < 0:
            err("gpus", "must be >= 0")
        if self.target == "vertex" and self.gpus and \
                self.vertex_accelerator not in VERTEX_ACCELERATORS:
            err("vertex_accelerator", f"must be one of Vertex AI's accelerator types "
                f"({', '.join(VERTEX_ACCELERATORS)}), got {self.vertex_accelerator!r}")
        # Empty project and service account are allowed here: submit/schedule take flags.
        for key, pattern, example in (
                ("vertex_project", GCP_PROJECT_PATTERN, "my-project-123"),
                ("vertex_location", GCP_REGION_PATTERN, "us-central1"),
                ("vertex_service_account", SERVICE_ACCOUNT_PATTERN,
                 "pipelines@my-project.iam.gserviceaccount.com")):
            value = getattr(self, key)
            if (value or key == "vertex_location") and not re.fullmatch(pattern, value):
                err(key, f"must look like {example!r}, got {value!r}")
        for i, item in enumerate(self.gpu_node_selector):
            label, sep, value = item.partition("=")
            if not sep or not label or not value:
                err(f"gpu_node_selector[{i}]", f"must be LABEL=VALUE (e.g. "
                    f"cloud.google.com/gke-accelerator=nvidia-tesla-t4), got {item!r}")
        for i, item in enumerate(self.volumes):
            claim, sep, mount_path = item.partition(":")
            if not sep or not claim or not mount_path.startswith("/"):
                err(f"volumes[{i}]", f"must be PVC_NAME:/absolute/mount/path, got {item!r}")
        if self.namespace and not re.fullmatch(K8S_NAMESPACE_PATTERN, self.namespace):
            err("namespace", "must be a Kubernetes namespace (lowercase letters, digits and "
                f"'-', at most 63), got {self.namespace!r}")


@dataclasses.dataclass(frozen=True)
class TransformJob:
    """What Transform reads, and only that: its custom_config (as TrainerJob for the Trainer).

    The transform section is all of it: preprocessing_fn reads the size, padding and crop
    protocol, the executor the gzip level. Typed, so that a key renamed here cannot leave
    a reader looking up a string that no longer exists.
    """
    transform: TransformConfig

    @classmethod
    def of(cls, cfg: "Config") -> "TransformJob":
        return cls(cfg.transform)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TransformJob":
        """The inverse of ``to_dict`` (values written by ``of`` from a validated Config)."""
        return cls(TransformConfig(**values["transform"]))


@dataclasses.dataclass(frozen=True)
class TrainerJob:
    """What the Trainer reads, and only that: its custom_config.

    TFX's cache key includes a component's parameters, so giving the Trainer the
    whole config would rerun training after an edit of, say, a serving port.
    """
    trainer: TrainerConfig
    transform: TransformConfig
    # The training classes come from the data (the train split's labels), not from here.
    # Model selection: on the held-out 'valid' split when data.validation_classes > 0, which
    # must then hold evaluator.min_eval_classes classes and min_queries matchable queries
    # (a one-class split scores every epoch 1.0); else on the training split.
    validation_classes: int
    min_valid_classes: int
    min_valid_queries: int

    @classmethod
    def of(cls, cfg: "Config") -> "TrainerJob":
        return cls(cfg.trainer, cfg.transform, cfg.data.validation_classes,
                   cfg.evaluator.min_eval_classes, cfg.evaluator.min_queries)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainerJob":
        """The inverse of ``to_dict`` (values written by ``of`` from a validated Config)."""
        return cls(TrainerConfig(**values["trainer"]), TransformConfig(**values["transform"]),
                   int(values["validation_classes"]), int(values["min_valid_classes"]),
                   int(values["min_valid_queries"]))


@dataclasses.dataclass(frozen=True)
class Config:
    pipeline: PipelineConfig
    data: DataConfig
    transform: TransformConfig
    trainer: TrainerConfig
    evaluator: EvaluatorConfig
    serving: ServingConfig
    kubeflow: KubeflowConfig
    gallery_index: GalleryIndexConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **sections: Mapping[str, Any]) -> "Config":
        """A copy with some keys changed, validated like a loaded file.

        Example: ``cfg.replace(trainer={"epochs": 1})``.
        """
        merged = _merge(self.to_dict(), sections, "", "<replace>")
        return _build(merged, "<replace>", base_dir=None)


def load_config(path: str | os.PathLike | None = None, overrides: Mapping | None = None) -> Config:
    """Load the defaults, overlay ``path`` (YAML) and ``overrides``, validate.

    Raises:
        ConfigError: naming the file and dotted key of the first problem.
    """
    merged = _read_yaml(DEFAULTS_FILE)
    base_dir = None
    source = str(DEFAULTS_FILE)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        merged = _merge(merged, _read_yaml(path), "", str(path))
        base_dir = path.resolve().parent
        source = str(path)
    if overrides:
        merged = _merge(merged, overrides, "", "<overrides>")
    return _build(merged, source, base_dir)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, at any depth.

    PyYAML keeps the last of two equal keys without a word, so a file with two `trainer:`
    blocks would silently lose the first one's settings. The document's node tree is
    checked (with the keys' line numbers) before it is constructed.
    """

    def __init__(self, stream, source: str):
        super().__init__(stream)
        self.source = source

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        self._check_unique_keys(node, "")
        return self.construct_document(node)

    def _check_unique_keys(self, node, prefix: str) -> None:
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_unique_keys(item, f"{prefix}[{i}]")
            return
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor": overridable
                continue
            if isinstance(key_node, yaml.ScalarNode):
                dotted = f"{prefix}.{key_node.value}" if prefix else key_node.value
                first = seen.setdefault((key_node.tag, key_node.value), key_node)
                if first is not key_node:
                    raise ConfigError(
                        f"{self.source}: duplicate key '{dotted}' at lines "
                        f"{first.start_mark.line + 1} and {key_node.start_mark.line + 1} "
                        "(YAML would keep only the last one: merge them into one)")
            else:
                dotted = prefix
            self._check_unique_keys(value_node, dotted)


def _read_yaml(path: Path) -> dict:
    try:
        with open(path) as f:
            loader = _UniqueKeyLoader(f, str(path))
            try:
                data = loader.get_single_data() or {}
            finally:
                loader.dispose()
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def _unknown_key(key: Any, base: Mapping, prefix: str, source: str) -> ConfigError:
    """The error for a key that is not in ``base``: the closest known key if one is close
    (a typo), else the keys known there."""
    dotted = f"{prefix}{key}"
    close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1, cutoff=0.75)
    if close:
        return ConfigError(f"{source}: unknown key '{dotted}' (did you mean "
                           f"'{prefix}{close[0]}'?)")
    where = f"the keys of '{prefix[:-1]}'" if prefix else "the sections"
    return ConfigError(f"{source}: unknown key '{dotted}' ({where} are: "
                       f"{', '.join(sorted(map(str, base)))})")


def _merge(base: dict, update: Mapping, prefix: str, source: str) -> dict:
    out = dict(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if dotted in _MOVED_LOSS_KEYS:
            raise ConfigError(
                f"{source}: '{dotted}' is gone: a loss owns its options; use trainer.loss: "
                f"{{name: ..., {_MOVED_LOSS_KEYS[dotted]}: {value!r}}} (the options each "
                "loss takes are its function's keyword parameters, trainer/losses.py)")
        if key not in base:
            raise _unknown_key(key, base, prefix, source)
        if dotted in _REPLACED_WHOLE:
            out[key] = value
        elif isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: '{dotted}' must be a mapping")
            out[key] = _merge(base[key], value, dotted + ".", source)
        else:
            out[key] = value
    return out


def _coerce(value: Any, hint: Any, dotted: str, source: str) -> Any:
    def bad():
        raise ConfigError(
            f"{source}: '{dotted}' must be {getattr(hint, '__name__', hint)}, "
            f"got {type(value).__name__} {value!r}")

    origin = typing.get_origin(hint)
    if origin is typing.Union and type(None) in typing.get_args(hint):  # Optional[X]
        if value is None:
            return None
        (inner,) = [h for h in typing.get_args(hint) if h is not type(None)]
        return _coerce(value, inner, dotted, source)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            bad()
        return [_coerce(v, item_hint, f"{dotted}[{i}]", source) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad()
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad()
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            bad()
        return value
    raise TypeError(f"unsupported config type {hint} for {dotted}")


def _build(merged: dict, source: str, base_dir: Path | None) -> Config:
    sections = {}
    hints = typing.get_type_hints(Config)
    for section, cls in hints.items():
        values = merged[section]
        field_hints = typing.get_type_hints(cls)
        kwargs = {}
        for field in dataclasses.fields(cls):
            dotted = f"{section}.{field.name}"
            if field.name not in values:
                raise ConfigError(f"{source}: missing key '{dotted}'")
            parse = field.metadata.get("parse")
            value = (parse(values[field.name], dotted, source) if parse
                     else _coerce(values[field.name], field_hints[field.name], dotted, source))
            if (field.metadata.get("path") and value and "://" not in value
                    and value not in field.metadata["names"]):
                # Local paths become absolute; URLs (gs://, s3://, hdfs://) stay as they are.
                value = os.path.expanduser(value)
                if not os.path.isabs(value):
                    value = str((base_dir or Path.cwd()) / value)
                value = os.path.normpath(value)
            kwargs[field.name] = value
        obj = cls(**kwargs)

        def err(key, message, _section=section):
            raise ConfigError(f"{source}: '{_section}.{key}' {message}")

        obj.check(err)
        sections[section] = obj
    cfg = Config(**sections)
    if cfg.transform.crop == "bbox" and not cfg.data.spec.has_boxes:
        raise ConfigError(
            f"{source}: 'transform.crop' bbox needs bounding boxes, which dataset "
            f"{cfg.data.dataset!r} does not have (datasets with boxes: "
            f"{', '.join(s.name for s in all_specs() if s.has_boxes)}); use crop: none")
    if cfg.trainer.input_size > cfg.transform.image_size:
        raise ConfigError(
            f"{source}: 'trainer.input_size' {cfg.trainer.input_size} must be <= "
            f"'transform.image_size' {cfg.transform.image_size} (training crops the stored "
            "image; 0 = no crop)")
    for key, problem in class_range_split_problems(cfg.data, cfg.evaluator):
        raise ConfigError(f"{source}: '{key}' {problem}")
    return cfg
