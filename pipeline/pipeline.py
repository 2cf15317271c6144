"""The pipeline: a pure function of the config (penguin-template style).

Runners (pipeline/local_runner.py, kubeflow/runner.py) are thin files that
load a config and call ``create_pipeline``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfx import v1 as tfx

import components.cars196
from components.cars196.component import Cars196ExampleGen
from pipeline.config import Config

PREPROCESSING_FN = "components.transform.preprocessing.preprocessing_fn"
RAW_SCHEMA = str(Path(components.cars196.__file__).with_name("schema.pbtxt"))


def create_components(cfg: Config, file_pattern: str = "*") -> list:
    """The pipeline's components in execution order."""
    example_gen = Cars196ExampleGen(
        source_dir=cfg.data.source_dir, split_rule=cfg.data.split_rule(),
        file_pattern=file_pattern)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=RAW_SCHEMA)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"image_size": cfg.transform.image_size,
                       "pad_value": list(cfg.transform.pad_value)},
        splits_config=tfx.proto.SplitsConfig(
            analyze=["train"], transform=cfg.data.output_splits),
    )
    return [example_gen, statistics_gen, schema_gen, example_validator, transform]


def create_pipeline(cfg: Config, beam_pipeline_args: list[str] | None = None,
                    metadata_connection_config=None, file_pattern: str = "*") -> tfx.dsl.Pipeline:
    """The whole pipeline for ``cfg``. Local runs use ML Metadata on SQLite."""
    if metadata_connection_config is None:
        os.makedirs(os.path.dirname(cfg.pipeline.metadata_path), exist_ok=True)
        metadata_connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            cfg.pipeline.metadata_path)
    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline.name,
        pipeline_root=os.path.join(cfg.pipeline.root, cfg.pipeline.name),
        components=create_components(cfg, file_pattern),
        enable_cache=cfg.pipeline.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(cfg.pipeline.beam_args if beam_pipeline_args is None
                                else beam_pipeline_args),
    )
