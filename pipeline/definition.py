"""The pipeline definition: a pure function of the config (penguin-template style).

Not named pipeline.py: the tfx CLI runs local_runner.py with this directory on
sys.path, where a pipeline.py would shadow the `pipeline` package.

Runners (pipeline/local_runner.py, pipeline/kubeflow_runner.py) are thin files that
load a config and call ``create_pipeline``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs as keys

import components.example_gen
from components.example_gen.component import RetrievalExampleGen
from components.preprocessing import transform_executor
from components.gallery_indexer import constants as indexer_keys
from components.gallery_indexer.component import GalleryIndexer
from components.recall_evaluator.component import RecallEvaluator
from core import names
from core.config import Config, TrainerJob, TransformJob
from trainer import losses

PREPROCESSING_FN = "components.preprocessing.tft_module.preprocessing_fn"
RUN_FN = "trainer.task.run_fn"
RAW_SCHEMA = str(Path(components.example_gen.__file__).with_name("schema.pbtxt"))


def code_fingerprint(*packages: str) -> str:
    """Hash of the packages' Python sources.

    Components reference our code by name (run_fn, preprocessing_fn), which
    TFX does not fingerprint; putting this in their parameters makes a code
    change invalidate the cache instead of silently reusing old outputs.
    """
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def create_components(cfg: Config, root: str | None = None,
                      checkpoint_root: str | None = None) -> list:
    """The pipeline's components in execution order.

    ``root`` is the pipeline root when it is not ``pipeline_root(cfg)`` (Kubeflow);
    ``checkpoint_root`` where the Trainer keeps resumable checkpoints (default
    ``<root>/Trainer/.checkpoints``; "" for none).
    """
    if checkpoint_root is None:
        checkpoint_root = os.path.join(root or pipeline_root(cfg), "Trainer", ".checkpoints")
    example_gen = RetrievalExampleGen(
        source_dir=cfg.data.source_dir, split_rule=cfg.data.split_rule(cfg.evaluator),
        file_pattern=cfg.data.file_pattern)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=RAW_SCHEMA)
    # With the schema, TFDV knows `image` is an image (image_domain): without it, every
    # BYTES feature is a categorical string, and its exact top-k/uniques pass keys a
    # Beam combine by every image's bytes, holding the whole split in the orchestrating
    # process (4 GiB at Cars196 scale; docs/benchmarks.md).
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs[keys.EXAMPLES_KEY],
        schema=schema_gen.outputs[keys.SCHEMA_KEY])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs[keys.STATISTICS_KEY],
        schema=schema_gen.outputs[keys.SCHEMA_KEY])
    # TFX's Transform with our executor (components/preprocessing/transform_executor.py: the
    # transformed pixels written at transform.compression_level, local Beam settings). No
    # statistics: the raw examples are checked by StatisticsGen + ExampleValidator, and
    # TFDV's statistics of serialized pixel blobs (their byte length) would cost a second
    # read of the training split and about half of Transform's Beam pipeline, for nobody
    # to read.
    transform = tfx.components.Transform(
        examples=example_gen.outputs[keys.EXAMPLES_KEY],
        schema=schema_gen.outputs[keys.SCHEMA_KEY],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={names.TRANSFORM_JOB_KEY: TransformJob.of(cfg).to_dict(),
                       names.CODE_FINGERPRINT_KEY: code_fingerprint("components/preprocessing")},
        splits_config=tfx.proto.SplitsConfig(
            analyze=["train"], transform=cfg.data.output_splits),
        disable_statistics=True,
    )
    transform.executor_spec = executor_spec.BeamExecutorSpec(transform_executor.Executor)
    # Model selection uses the held-out 'valid' classes; without a hold-out, the
    # training split itself (documented: selection is then optimistic).
    selection_split = "valid" if cfg.data.validation_classes else "train"
    # The loss's options are the loss's to check (core cannot import the trainer): checked
    # here, so that an option the loss does not take fails, naming trainer.loss.<option>,
    # when the pipeline is built rather than when training starts.
    losses.bind_loss(cfg.trainer.loss)
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs[keys.TRANSFORMED_EXAMPLES_KEY],
        transform_graph=transform.outputs[keys.TRANSFORM_GRAPH_KEY],
        schema=schema_gen.outputs[keys.SCHEMA_KEY],
        train_args=tfx.proto.TrainArgs(
            splits=["train"], num_steps=cfg.trainer.epochs * cfg.trainer.steps_per_epoch),
        eval_args=tfx.proto.EvalArgs(splits=[selection_split]),
        # Only what run_fn reads: an edit elsewhere in the config keeps the cache.
        custom_config={
            names.TRAINER_JOB_KEY: TrainerJob.of(cfg).to_dict(),
            names.CHECKPOINT_ROOT_KEY: checkpoint_root,
            names.CODE_FINGERPRINT_KEY: code_fingerprint("trainer", "components/preprocessing"),
        },
    )
    # The baseline is the model in production, read by the evaluator from the
    # serving directory the Pusher writes (components/recall_evaluator/production.py):
    # no ML Metadata resolver, which open-source Kubeflow Pipelines cannot run.
    serving_model_dir = serving_model_base(cfg)
    evaluator = RecallEvaluator(
        examples=example_gen.outputs[keys.EXAMPLES_KEY],
        model=trainer.outputs[keys.MODEL_KEY],
        serving_model_dir=serving_model_dir,
        evaluator_config=dataclasses.asdict(cfg.evaluator),
        code_fingerprint=code_fingerprint("components/recall_evaluator"),
    )
    model, blessing, indexing = (trainer.outputs[keys.MODEL_KEY],
                                 evaluator.outputs[keys.BLESSING_KEY], [])
    if cfg.gallery_index.enabled:
        # The model and its gallery index in one directory, blessed by both gates: the
        # Pusher publishes them as one version (components/gallery_indexer).
        indexer = GalleryIndexer(
            model=model, model_blessing=blessing,
            examples=(example_gen.outputs[keys.EXAMPLES_KEY]
                      if cfg.gallery_index.gallery == names.EVAL_GALLERY else None),
            gallery_index_config=dataclasses.asdict(cfg.gallery_index),
            serving_model_dir=serving_model_dir,
            code_fingerprint=code_fingerprint("components/gallery_indexer", "search",
                                              "components/recall_evaluator"),
        )
        model = indexer.outputs[indexer_keys.INDEXED_MODEL_KEY]
        blessing = indexer.outputs[keys.BLESSING_KEY]
        indexing = [indexer]
    pusher = tfx.components.Pusher(
        model=model,
        model_blessing=blessing,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)),
    )
    return [example_gen, statistics_gen, schema_gen, example_validator, transform, trainer,
            evaluator, *indexing, pusher]


def serving_model_base(cfg: Config) -> str:
    """``<serving_dir>/<model_name>``: where the Pusher writes versions and TF Serving reads."""
    return os.path.join(cfg.pipeline.serving_dir, cfg.serving.model_name)


def pipeline_root(cfg: Config) -> str:
    return os.path.join(cfg.pipeline.root, cfg.pipeline.name)


def create_pipeline(cfg: Config, beam_pipeline_args: list[str] | None = None,
                    metadata_connection_config=None,
                    root: str | None = None, local_metadata: bool = True,
                    checkpoint_root: str | None = None) -> tfx.dsl.Pipeline:
    """The whole pipeline for ``cfg``. Local runs use ML Metadata on SQLite.

    Kubeflow passes ``root`` (shared storage, e.g. gs://) and ``local_metadata=False``:
    the cluster provides ML Metadata, so no connection config is set.
    """
    if metadata_connection_config is None and local_metadata:
        os.makedirs(os.path.dirname(cfg.pipeline.metadata_path), exist_ok=True)
        metadata_connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            cfg.pipeline.metadata_path)
    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline.name,
        pipeline_root=root or pipeline_root(cfg),
        components=create_components(cfg, root, checkpoint_root),
        enable_cache=cfg.pipeline.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(cfg.pipeline.beam_args if beam_pipeline_args is None
                                else beam_pipeline_args),
    )
